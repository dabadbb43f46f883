"""Trained weights from elsewhere, as tinyalex checkpoints, with the preprocessing they need.

Two public ImageNet-1k AlexNets exist. torchvision's ``alexnet(weights="DEFAULT")`` (56.5%
top-1) is the one-column net of "One weird trick" (``net.alexnet_owt``: no LRN, no groups);
Caffe's bvlc_alexnet (57.1% top-1) is the paper's two-column net (§3.5, ``net.alexnet``
with ``lrn_convention="caffe"``), read by ``tinyalex.caffemodel``. Either becomes a
checkpoint that predict, evaluate, figures and export take like one of tinyalex's own.

The preprocessing belongs to the weights, and the checkpoint records it (meta["data"]
["preprocessing"] and data/mean, data/std):

    paper        x = pixel - mean image of the training set (§2), RGB 0..255
    torchvision  resize 256, centre crop 224, x = (pixel / 255 - m) / s, RGB,
                 m = (0.485, 0.456, 0.406), s = (0.229, 0.224, 0.225)
                 (= (pixel - 255 m) / (255 s): data/mean = 255 m, data/std = 255 s)
    caffe        256 px, centre crop 227, x = pixel - Caffe's ImageNet mean, BGR 0..255;
                 the BGR order is folded into conv1 (its input channels reversed: exact),
                 so the checkpoint takes RGB like every tinyalex net

torch is imported inside the functions that read or write a .pth only.
"""

from __future__ import annotations

import numpy as np

from . import checkpoint as ckpt_mod
from .data.subsets import imagenet_classes
from .net import build

#: tinyalex layer -> torchvision's module path in models/alexnet.py (features.N, classifier.N).
TORCHVISION_LAYERS = {"conv1": "features.0", "conv2": "features.3", "conv3": "features.6",
                      "conv4": "features.8", "conv5": "features.10", "fc6": "classifier.1",
                      "fc7": "classifier.4", "fc8": "classifier.6"}

#: The preprocessing each source's weights were trained with (0..255 scale, RGB order).
PREPROCESSING = {
    "torchvision": dict(size=256, crop=224, mean=(123.675, 116.28, 103.53),
                        std=(58.395, 57.12, 57.375)),
    # caffe/python/caffe/imagenet/ilsvrc_2012_mean.npy averaged over pixels, BGR -> RGB
    "caffe": dict(size=256, crop=227, mean=(122.67891434, 116.66876762, 104.00698793),
                  std=None),
}


# --------------------------------------------------------------------------- torchvision
def torchvision_key(name: str) -> str:
    """tinyalex's "conv1.W" -> torchvision's "features.0.weight"."""
    layer, param = name.rsplit(".", 1)
    return f"{TORCHVISION_LAYERS[layer]}.{ {'W': 'weight', 'b': 'bias'}[param]}"


def from_torchvision(state_dict: dict, dtype=np.float32):
    """torchvision's AlexNet state_dict (name -> array or tensor) -> the ``alexnet-owt``
    tinyalex net with those weights. The classes are fc8's rows (1000 for ImageNet).

    The layouts are the same (conv W (F, C, kh, kw), linear W (out, in), fc6's inputs in
    C, H, W order as both flatten), so the import is a copy under new names. KeyError names
    missing or unexpected keys, ValueError a wrong shape.
    """
    expected = {torchvision_key(f"{layer}.{p}") for layer in TORCHVISION_LAYERS for p in "Wb"}
    missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise KeyError(f"not torchvision's AlexNet: missing keys {missing}, unexpected "
                       f"keys {unexpected}")
    num_classes = int(state_dict["classifier.6.weight"].shape[0])
    net = build("alexnet-owt", num_classes, dtype=dtype)
    net.load_params({name: to_array(state_dict[torchvision_key(name)]) for name in net.params})
    return net


def to_torchvision(net) -> dict:
    """An ``alexnet-owt`` net's params -> torchvision's state_dict keys (NumPy arrays)."""
    from .backend import to_numpy

    return {torchvision_key(name): np.array(to_numpy(v)) for name, v in net.params.items()}


def to_array(value) -> np.ndarray:
    """A NumPy array or a torch tensor (detached, on the CPU) -> a NumPy array."""
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def read_pth(path) -> dict:
    """A saved state_dict (.pth) -> {key: tensor}, loaded the safe way.

    A .pth is a pickle: ``torch.load(weights_only=True)`` unpickles tensors and plain
    containers only, never code. Anything but a flat mapping of tensors is refused.
    ImportError when torch is missing, ValueError for a file that is not a state_dict.
    """
    try:
        import torch
    except ImportError:
        raise ImportError("reading a .pth needs PyTorch: pip install torch --index-url "
                          "https://download.pytorch.org/whl/cpu") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except Exception as err:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path} is not a weights-only state_dict ({first})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state_dict")
    bad = sorted(k for k, v in obj.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise ValueError(f"{path}: not a tensor: {', '.join(map(str, bad[:5]))}")
    return obj


def write_pth(path, state_dict: dict) -> None:
    """{key: array} -> a .pth of tensors that torchvision's ``load_state_dict`` takes."""
    import torch

    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state_dict.items()},
               path)


# --------------------------------------------------------------------------- checkpoints
def imagenet_labels(num_classes: int) -> tuple[list, list]:
    """(wnids, names) of the 1000 ILSVRC-2012 classes in their standard order (the order
    of torchvision's and Caffe's fc8), or "0".."K-1" for another number of classes."""
    if num_classes != 1000:
        return [str(i) for i in range(num_classes)], [str(i) for i in range(num_classes)]
    table = sorted(imagenet_classes().items(), key=lambda kv: kv[1][0])
    return [w for w, _ in table], [name for _, (_, name) in table]


def imported_checkpoint(net, arch: str, preprocessing: str, source: dict, kwargs=None,
                        mean=None, path="imported.npz"):
    """An imported net as an in-memory ``checkpoint.Checkpoint`` that evaluate, predict,
    figures and export take (``save_imported`` writes it).

    meta["data"]["preprocessing"] names the source's preprocessing (``PREPROCESSING``);
    data/mean is its per-channel mean (or ``mean``, an (S, S, 3) RGB mean image),
    data/std its per-channel std when it has one; PCA colour is off (eigenvalues 0).
    """
    spec = PREPROCESSING[preprocessing]
    classes, names = imagenet_labels(net.params["fc8.b"].shape[0])
    data = {"mean": np.asarray(spec["mean"] if mean is None else mean, np.float32),
            "pca_eigvals": np.zeros(3, np.float32), "pca_eigvecs": np.eye(3, dtype=np.float32)}
    if spec["std"] is not None:
        data["std"] = np.asarray(spec["std"], np.float32)
    meta = {"arch": arch, "net": {"arch": arch, "num_classes": len(classes),
                                  "kwargs": dict(kwargs or {})},
            "classes": classes, "names": names, "source": source,
            "data": {"kind": "imported", "preprocessing": preprocessing, "size": spec["size"],
                     "crop": spec["crop"],
                     "mean_mode": "pixel" if data["mean"].ndim == 3 else "channel"},
            "format": ckpt_mod.FORMAT}
    return ckpt_mod.Checkpoint(path, dict(net.params), {}, data, meta)


def save_imported(path, net, arch: str, preprocessing: str, source: dict, kwargs=None,
                  mean=None):
    """Write ``imported_checkpoint(...)`` to path (atomically); returns the path."""
    ckpt = imported_checkpoint(net, arch, preprocessing, source, kwargs, mean, path)
    return ckpt_mod.save(path, ckpt.params, ckpt.meta, data=ckpt.data)


def import_torchvision(src, out):
    """FILE.pth (a torchvision AlexNet state_dict) -> an alexnet-owt checkpoint at out.
    ImportError without torch; KeyError/ValueError for a file that is not one."""
    from pathlib import Path

    net = from_torchvision(read_pth(src))
    return save_imported(out, net, "alexnet-owt", "torchvision",
                         {"kind": "torchvision", "file": Path(src).name},
                         kwargs={"input_size": 224})


def import_caffe(src, out, mean=None):
    """bvlc_alexnet.caffemodel (and optionally its mean .binaryproto) -> a checkpoint of
    the paper's net with Caffe's LRN (k = 1, alpha/n) at out."""
    from pathlib import Path

    from . import caffemodel

    net = caffemodel.read_alexnet(src)
    mean_image = caffemodel.read_mean(mean) if mean is not None else None
    return save_imported(out, net, "alexnet", "caffe", {"kind": "caffe", "file": Path(src).name},
                         kwargs={"lrn_convention": "caffe"}, mean=mean_image)


def open_trained(path, workdir):
    """A trained checkpoint from a file the data lookup found (``find_kind("weights")``):
    a tinyalex .npz as it is, a torchvision .pth or a .caffemodel imported once into
    workdir (reused when it is there)."""
    from pathlib import Path

    path, workdir = Path(path), Path(workdir)
    if path.suffix == ".npz":
        return ckpt_mod.load(path)
    out = workdir / f"{path.stem}.npz"
    if not out.is_file():
        (import_caffe if path.suffix == ".caffemodel" else import_torchvision)(path, out)
    return ckpt_mod.load(out)


class Normalized:
    """An Augmenter followed by a division by a per-channel std, (B, 3, c, c) / std:
    torchvision's Normalize on the 0..255 scale. Everything else is the Augmenter's."""

    def __init__(self, augmenter, std):
        self.augmenter = augmenter
        self.std = np.asarray(std, augmenter.dtype).reshape(3, 1, 1)

    def __getattr__(self, name):
        return getattr(self.augmenter, name)

    def center(self, images, rng=None, rows=None):
        return self.augmenter.center(images) / self.std

    def ten_crop(self, images, rng=None, rows=None):
        return self.augmenter.ten_crop(images) / self.std

    def train(self, images, rng, rows=None):
        return self.augmenter.train(images, rng, rows) / self.std

    __call__ = train


def augmenter(ckpt, **overrides):
    """The test-time preprocessing a checkpoint's weights need: ``checkpoint.augmenter``
    (mean, crop), divided by data/std when the checkpoint has one (torchvision's)."""
    aug = ckpt_mod.augmenter(ckpt, **overrides)
    std = ckpt.data.get("std")
    return aug if std is None else Normalized(aug, std)
