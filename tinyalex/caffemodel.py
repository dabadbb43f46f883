"""Caffe's trained weights (.caffemodel, .binaryproto) read with a small protobuf wire reader.

A .caffemodel is one protobuf message, ``NetParameter``, as BVLC/caffe's
src/caffe/proto/caffe.proto defines it; only the fields that carry weights are read:

    NetParameter      layer = 100 (LayerParameter), layers = 2 (V1LayerParameter, the
                      older files, bvlc_alexnet's among them)
    LayerParameter    name = 1, type = 2 (string), blobs = 7 (BlobProto)
    V1LayerParameter  name = 4, type = 5 (enum), blobs = 6 (BlobProto)
    BlobProto         shape = 7 (BlobShape: dim = 1, int64), data = 5 (float),
                      double_data = 8, num/channels/height/width = 1..4 (the old 4-D shape)

The protobuf wire format: a message is a sequence of (key, value) with key = field << 3 |
wire type, a varint; wire type 0 is a varint, 1 eight bytes, 2 a length (varint) then
that many bytes (strings, sub-messages, packed repeated numbers), 5 four bytes. Unknown
fields are skipped, so any caffe.proto version reads. Caffe's blobs are C-ordered as
tinyalex's arrays (conv W (F, C/G, kh, kw), inner product W (out, in)), and fc6's inputs
are pool5's (C, H, W) flattened as tinyalex's Flatten: the weights copy over as they are.

bvlc_alexnet was trained on BGR images (OpenCV's order): ``read_alexnet`` reverses conv1's
input channels so that the net takes RGB like every tinyalex net (a permutation: exact).
No protobuf package is needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: NetParameter's fields holding layers: 100 (LayerParameter) and 2 (V1LayerParameter), with
#: each kind's (name, blobs) field numbers.
LAYER_FIELDS = {100: (1, 7), 2: (4, 6)}


def read_varint(buf, pos: int) -> tuple[int, int]:
    """A base-128 varint at buf[pos:] -> (value, position after it): 7 bits a byte, low
    bits first, the high bit set on every byte but the last."""
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated protobuf (a varint runs past the end)")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("malformed protobuf (a varint longer than 10 bytes)")


def fields(buf):
    """Yield (field number, wire type, value) of one message: value an int (wire type 0),
    or a memoryview of the bytes (1: 8 bytes, 2: the delimited bytes, 5: 4 bytes)."""
    buf = memoryview(buf)
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = read_varint(buf, pos)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 2:
            size, pos = read_varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} (field {number})")
        if pos > end:
            raise ValueError("truncated protobuf (a field runs past the end)")
        yield number, wire, value


def _numbers(values: list, dtype) -> np.ndarray:
    """A repeated numeric field's occurrences (packed byte runs and/or single values)."""
    parts = []
    for wire, v in values:
        if wire == 2:
            parts.append(np.frombuffer(v, dtype))
        else:
            parts.append(np.frombuffer(v, dtype) if wire in (1, 5) else np.array([v]))
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def _varints(values: list) -> list[int]:
    """A repeated integer field: packed (wire type 2, varints back to back) or not."""
    out = []
    for wire, v in values:
        if wire != 2:
            out.append(v)
            continue
        pos = 0
        while pos < len(v):
            n, pos = read_varint(v, pos)
            out.append(n)
    return out


def parse_blob(buf) -> np.ndarray:
    """A BlobProto -> its float32 array, shaped by ``shape`` or, in older files, by the
    4-D num/channels/height/width (float64 ``double_data`` is cast to float32)."""
    seen: dict[int, list] = {}
    for number, wire, value in fields(buf):
        seen.setdefault(number, []).append((wire, value))
    data = _numbers(seen.get(5, []), "<f4")
    if not data.size and 8 in seen:
        data = _numbers(seen[8], "<f8").astype(np.float32)
    if 7 in seen:
        dims = []
        for _, shape in seen[7]:
            dims += _varints([(w, v) for n, w, v in fields(shape) if n == 1])
    else:
        dims = [seen[k][-1][1] if k in seen else 0 for k in (1, 2, 3, 4)]
        dims = [d for d in dims if d] or [data.size]
    if int(np.prod(dims)) != data.size:
        raise ValueError(f"blob of shape {dims} holds {data.size} numbers")
    return data.reshape(dims)


def read_caffemodel(path) -> dict[str, list[np.ndarray]]:
    """A .caffemodel -> {layer name: [blobs]} for every layer that has blobs, in file
    order (weights first, then the bias, as Caffe stores them)."""
    buf = Path(path).read_bytes()
    out = {}
    try:
        for number, wire, value in fields(buf):
            if number not in LAYER_FIELDS or wire != 2:
                continue
            name_field, blob_field = LAYER_FIELDS[number]
            name, blobs = None, []
            for n, w, v in fields(value):
                if n == name_field and w == 2:
                    name = bytes(v).decode("utf-8", "replace")
                elif n == blob_field and w == 2:
                    blobs.append(parse_blob(v))
            if blobs:
                out[name] = blobs
    except ValueError as err:
        raise ValueError(f"{path} is not a Caffe NetParameter ({err})") from None
    if not out:
        raise ValueError(f"{path} holds no layer with weights (is it a .caffemodel?)")
    return out


def load_into(net, layers: dict, bgr: bool = True) -> None:
    """Copy Caffe's blobs into a tinyalex net whose layers have the same names (conv1 ...
    fc8, as in bvlc_alexnet). Each blob must hold as many numbers as the parameter; the
    old 4-D shapes ((1, 1, out, in) for an inner product) are reshaped to tinyalex's.
    ``bgr``: the file's net was trained on BGR input; conv1's channels are reversed."""
    params = {}
    own = net.params
    for name in sorted({k.rsplit(".", 1)[0] for k in own}):
        if name not in layers:
            raise KeyError(f"the caffemodel has no layer {name!r} (it has "
                           f"{', '.join(layers)})")
        blobs = layers[name]
        for key, blob in zip(("W", "b"), blobs[:2]):
            target = own[f"{name}.{key}"].shape
            if blob.size != int(np.prod(target)):
                raise ValueError(f"{name}.{key}: the caffemodel's blob has shape "
                                 f"{blob.shape}, the net's is {target}")
            params[f"{name}.{key}"] = blob.reshape(target)
    first = net.layers[0][0]
    if bgr:  # input channel c of the file's conv1 sees BGR channel c: RGB is 2 - c
        params[f"{first}.W"] = params[f"{first}.W"][:, ::-1]
    net.load_params(params)


def read_alexnet(path, dtype=np.float32):
    """bvlc_alexnet.caffemodel -> ``alexnet(lrn_convention="caffe")`` (§3.5 with Caffe's
    LRN, k = 1 and alpha/n) with its weights, taking RGB input."""
    from .net import alexnet

    layers = read_caffemodel(path)
    if "fc8" not in layers:
        raise KeyError(f"{path}: no layer fc8: not bvlc_alexnet (layers {', '.join(layers)})")
    num_classes = int(layers["fc8"][-1].size)
    net = alexnet(num_classes, lrn_convention="caffe", dtype=dtype)
    load_into(net, layers, bgr=True)
    return net


def read_mean(path) -> np.ndarray:
    """Caffe's mean image (a BlobProto .binaryproto, (1, 3, S, S) BGR) -> (S, S, 3) RGB
    float32, as tinyalex's data/mean."""
    try:
        blob = parse_blob(Path(path).read_bytes())
    except ValueError as err:
        raise ValueError(f"{path} is not a Caffe BlobProto ({err})") from None
    if blob.ndim != 4 or blob.shape[:2] != (1, 3) or blob.shape[2] != blob.shape[3]:
        raise ValueError(f"{path}: a mean image is (1, 3, S, S), this blob is {blob.shape}")
    return np.ascontiguousarray(blob[0, ::-1].transpose(1, 2, 0))
