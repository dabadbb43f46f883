"""Caffe's weights (tinyalex.caffemodel): the test writes small nets in Caffe's wire format
itself, from caffe.proto's field numbers (NetParameter.layer = 100 / layers = 2,
LayerParameter name = 1, type = 2, blobs = 7; V1LayerParameter name = 4, type = 5,
blobs = 6; BlobProto shape = 7, data = 5 packed, num..width = 1..4; BlobShape dim = 1
packed), and the reader must give the blobs back bit for bit, in the old and new layouts."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from tinyalex import caffemodel
from tinyalex.net import build


# ----------------------------------------------------------------- a minimal protobuf writer
def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, payload, wire: int = 2) -> bytes:
    key = varint(number << 3 | wire)
    if wire == 2:
        return key + varint(len(payload)) + payload
    if wire == 0:
        return key + varint(payload)
    return key + payload  # 1 and 5: fixed-size bytes


def blob(array, legacy: bool = False, packed: bool = True) -> bytes:
    a = np.asarray(array, "<f4")
    if packed:
        data = field(5, a.tobytes())
    else:  # one fixed32 per number, as a writer may do for short fields
        data = b"".join(field(5, struct.pack("<f", v), wire=5) for v in a.ravel())
    if legacy:  # the old 4-D shape, (1, 1, out, in) for an inner product, as Caffe had it
        dims = (1,) * (4 - a.ndim) + a.shape
        return b"".join(field(k, d, wire=0) for k, d in zip((1, 2, 3, 4), dims)) + data
    shape = field(1, b"".join(varint(d) for d in a.shape))  # BlobShape.dim, packed
    return field(7, shape) + data


def layer(name: str, type_: str, blobs: list, v1: bool = False) -> bytes:
    if v1:  # V1LayerParameter: name 4, type 5 (an enum: CONVOLUTION = 4, INNER_PRODUCT = 14)
        enum = {"Convolution": 4, "InnerProduct": 14, "ReLU": 18}[type_]
        body = field(4, name.encode()) + field(5, enum, wire=0)
        body += b"".join(field(6, b) for b in blobs)
        return field(2, body)
    body = field(1, name.encode()) + field(2, type_.encode()) + field(3, b"data")
    body += b"".join(field(7, b) for b in blobs)
    return field(100, body)


def write_net(path, net, v1=False, legacy=False, bgr=True):
    """net's weights as a Caffe NetParameter (conv1's channels in BGR order when bgr)."""
    parts = [field(1, b"tiny")]
    for name, lyr in net.layers:
        if not lyr.params:
            parts.append(layer(name, "ReLU", [], v1) if name.startswith("relu") else b"")
            continue
        W, b = lyr.params["W"], lyr.params["b"]
        if name == "conv1" and bgr:
            W = W[:, ::-1]
        kind = "Convolution" if W.ndim == 4 else "InnerProduct"
        parts.append(layer(name, kind, [blob(W, legacy), blob(b, legacy)], v1))
    path.write_bytes(b"".join(parts))


# ----------------------------------------------------------------- the tests
def test_varint_round_trip():
    for n in (0, 1, 127, 128, 300, 2**31 - 1, 2**40 + 5):
        assert caffemodel.read_varint(varint(n), 0) == (n, len(varint(n)))
    with pytest.raises(ValueError, match="truncated"):
        caffemodel.read_varint(b"\x80", 0)


@pytest.mark.parametrize("v1,legacy", [(False, False), (True, True), (False, True)])
def test_reads_a_small_net_bit_for_bit(tmp_path, v1, legacy):
    """alexnet-mini (groups, every layer kind with weights) written as a caffemodel, new
    (layer/shape) or old (layers/4-D) layout, reads back exactly, conv1 turned BGR -> RGB."""
    net = build("alexnet-mini", 10, input_size=56, init="pytorch", seed=1)
    path = tmp_path / "mini.caffemodel"
    write_net(path, net, v1=v1, legacy=legacy)
    layers = caffemodel.read_caffemodel(path)
    assert list(layers) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    assert layers["conv2"][0].shape == net.params["conv2.W"].shape  # groups: C/G inputs
    back = build("alexnet-mini", 10, input_size=56, init="paper", seed=7)
    caffemodel.load_into(back, layers, bgr=True)
    for name, value in net.params.items():
        np.testing.assert_array_equal(back.params[name], value, err_msg=name)


def test_unpacked_floats_and_double_data(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    assert np.array_equal(caffemodel.parse_blob(blob(a, packed=False)), a)
    doubles = field(7, field(1, varint(2) + varint(3))) + field(8, (a.astype("<f8")).tobytes())
    assert np.array_equal(caffemodel.parse_blob(doubles), a)


def test_mean_binaryproto(tmp_path):
    """(1, 3, S, S) BGR -> (S, S, 3) RGB."""
    bgr = np.random.default_rng(0).uniform(0, 255, (1, 3, 4, 4)).astype(np.float32)
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(blob(bgr, legacy=True))
    rgb = caffemodel.read_mean(path)
    assert rgb.shape == (4, 4, 3)
    np.testing.assert_array_equal(rgb[..., 0], bgr[0, 2])
    np.testing.assert_array_equal(rgb[..., 2], bgr[0, 0])


def test_clear_errors(tmp_path):
    bad = tmp_path / "bad.caffemodel"
    bad.write_bytes(b"\x0a\xff\xff")
    with pytest.raises(ValueError, match="not a Caffe NetParameter"):
        caffemodel.read_caffemodel(bad)
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(field(1, b"x"))
    with pytest.raises(ValueError, match="no layer with weights"):
        caffemodel.read_caffemodel(empty)
    net = build("alexnet-mini", 10, input_size=56)
    with pytest.raises(KeyError, match="no layer 'conv1'"):
        caffemodel.load_into(net, {"fc8": [np.zeros((10, 1024))]})


def test_import_caffe_command(tmp_path, capsys):
    """The command on a bad file: one line, exit 2."""
    from tinyalex.commands import cli
    from tinyalex.commands.weights import main

    bad = tmp_path / "x.caffemodel"
    bad.write_bytes(b"nonsense")
    assert cli.run(main, ["import-caffe", str(bad), str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1


@pytest.mark.slow
def test_bvlc_alexnet_sized_file_through_the_command(tmp_path):
    """A full-size stand-in for bvlc_alexnet.caffemodel (random weights, V1 layout as the
    real file, 60,965,224 parameters) -> a checkpoint of the paper net with Caffe's LRN
    and preprocessing; its logits are the written net's on the channel-reversed input."""
    from tinyalex import checkpoint, pretrained
    from tinyalex.commands.weights import main

    net = build("alexnet", 1000, lrn_convention="caffe", init="caffe", seed=3)
    path = tmp_path / "bvlc_alexnet.caffemodel"
    write_net(path, net, v1=True, legacy=True, bgr=False)  # the file's net reads BGR
    out = tmp_path / "caffe.npz"
    assert main(["import-caffe", str(path), str(out)]) == 0
    ckpt = checkpoint.load(out)
    assert ckpt.meta["net"]["kwargs"] == {"lrn_convention": "caffe"}
    assert ckpt.meta["data"]["preprocessing"] == "caffe" and ckpt.meta["data"]["crop"] == 227
    ours = checkpoint.build_net(ckpt)
    assert ours.num_params() == 60_965_224
    x = np.random.default_rng(0).standard_normal((1, 3, 227, 227)).astype(np.float32)
    np.testing.assert_allclose(ours.forward(x, False), net.forward(x[:, ::-1].copy(), False),
                               rtol=1e-5, atol=1e-6)
    aug = pretrained.augmenter(ckpt)
    assert aug.crop == 227 and aug.mean_mode == "channel"
