"""The network: a Sequential of named layers, AlexNet as in §3.5, its init (§5), named params.

Parameters live in one flat mapping of named arrays ("conv1.W", "conv1.b", ..., "fc8.b")
and gradients in a twin mapping with the same names; the optimizer, checkpoints, the
summary and the PyTorch parity tests all work on those names.
"""

from __future__ import annotations

import numpy as np

from .backend import get_array_module, to_numpy
from .layers import (
    Conv2D,
    Dropout,
    Flatten,
    Layer,
    Linear,
    LocalResponseNorm,
    MaxPool2D,
    ReLU,
    SoftmaxCrossEntropy,
)
from .layers.conv import conv_output_size
from .layers.pool import pool_output_size


class Sequential:
    """Layers applied in order. forward(x) -> logits; backward(dlogits) -> dx.

    ``layers`` is a list of (name, layer). ``params``/``grads`` are flat dicts named
    "<layer>.<param>" whose arrays ARE the layers' arrays (update them in place).
    """

    def __init__(self, layers: list[tuple[str, Layer]], input_shape: tuple):
        names = [n for n, _ in layers]
        if len(set(names)) != len(names):
            raise ValueError("layer names must be unique")
        self.layers = list(layers)
        self.input_shape = tuple(input_shape)
        self.shapes()  # fail early if the layers do not fit together

    def forward(self, x, train: bool = True):
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"net expects inputs of shape (N, {', '.join(map(str, self.input_shape))}), "
                             f"got {tuple(x.shape)}")
        for _, layer in self.layers:
            x = layer.forward(x, train)
        return x

    __call__ = forward

    def backward(self, dout, input_grad: bool = True):
        """Gradients into every layer's grads; returns dL/dx (None if input_grad=False,
        which lets the first conv skip a product and a col2im in training)."""
        first = self.layers[0][1]
        if hasattr(first, "need_input_grad"):
            first.need_input_grad = input_grad
        for _, layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

    def features(self, x, upto: str):
        """Activations right after layer ``upto`` (test mode), e.g. "relu7" for the 4096-d codes."""
        for name, layer in self.layers:
            x = layer.forward(x, False)
            if name == upto:
                return x
        raise KeyError(upto)

    @property
    def params(self) -> dict:
        return {f"{n}.{k}": v for n, layer in self.layers for k, v in layer.params.items()}

    @property
    def grads(self) -> dict:
        return {f"{n}.{k}": v for n, layer in self.layers for k, v in layer.grads.items()}

    def __getitem__(self, name: str) -> Layer:
        for n, layer in self.layers:
            if n == name:
                return layer
        raise KeyError(name)

    def num_params(self) -> int:
        return int(sum(v.size for v in self.params.values()))

    def shapes(self) -> list[tuple[str, Layer, tuple, tuple]]:
        """(name, layer, input shape, output shape) for one example, layer by layer."""
        rows, shape = [], self.input_shape
        for name, layer in self.layers:
            out = layer.output_shape(shape)
            rows.append((name, layer, shape, out))
            shape = out
        return rows

    @property
    def dtype(self):
        return next(iter(self.params.values())).dtype

    def astype(self, dtype) -> Sequential:
        for _, layer in self.layers:
            layer.astype(dtype)
        return self

    def to(self, xp) -> Sequential:
        """Move every parameter to the array module xp (numpy or cupy)."""
        for _, layer in self.layers:
            for k, v in layer.params.items():
                layer.params[k] = xp.asarray(v)
            layer.grads = {}
        return self

    def load_params(self, params: dict, strict: bool = True) -> None:
        """Copy named arrays into the net's own (shapes must match; dtype follows the net)."""
        own = self.params
        missing = set(own) - set(params)
        unexpected = set(params) - set(own)
        if strict and (missing or unexpected):
            raise KeyError(f"parameter names differ: missing {sorted(missing)}, "
                           f"unexpected {sorted(unexpected)}")
        for name, value in params.items():
            if name not in own:
                continue
            target = own[name]
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(f"{name}: shape {tuple(value.shape)} != {tuple(target.shape)}")
            xp = get_array_module(target)
            target[...] = xp.asarray(value, dtype=target.dtype)

    def save(self, path) -> None:
        """Parameters to a .npz (readable with numpy alone)."""
        np.savez(path, **{k: to_numpy(v) for k, v in self.params.items()})

    def load(self, path) -> None:
        with np.load(path) as f:
            self.load_params({k: f[k] for k in f.files})

    def __repr__(self):
        lines = [f"  ({n}) {layer!r}" for n, layer in self.layers]
        return "Sequential(\n" + "\n".join(lines) + "\n)"


# --------------------------------------------------------------------------- AlexNet (§3.5)

#: Layers whose biases the paper sets to 1 (§5): "in the second, fourth, and fifth
#: convolutional layers, as well as in the fully-connected hidden layers".
PAPER_BIAS_ONE = ("conv2", "conv4", "conv5", "fc6", "fc7")


def init_paper(net: Sequential, seed=0) -> Sequential:
    """§5: every weight ~ N(0, 0.01^2); biases 1 in conv2, conv4, conv5, fc6, fc7, else 0."""
    rng = np.random.default_rng(seed)
    for name, layer in net.layers:
        if "W" in layer.params:
            W = layer.params["W"]
            W[...] = 0.01 * rng.standard_normal(W.shape, dtype=W.dtype)
            layer.params["b"][...] = 1.0 if name in PAPER_BIAS_ONE else 0.0
    return net


def _alexnet_layers(conv1: Conv2D, fc6_in: int, num_classes: int, width: int,
                    lrn: dict, dropout: float, dtype) -> list:
    c = lambda *a, **k: Conv2D(*a, dtype=dtype, **k)  # noqa: E731
    return [
        ("conv1", conv1), ("relu1", ReLU()), ("lrn1", LocalResponseNorm(**lrn)),
        ("pool1", MaxPool2D(3, 2)),
        ("conv2", c(96, 256, 5, padding=2, groups=2)), ("relu2", ReLU()),
        ("lrn2", LocalResponseNorm(**lrn)), ("pool2", MaxPool2D(3, 2)),
        ("conv3", c(256, 384, 3, padding=1)), ("relu3", ReLU()),
        ("conv4", c(384, 384, 3, padding=1, groups=2)), ("relu4", ReLU()),
        ("conv5", c(384, 256, 3, padding=1, groups=2)), ("relu5", ReLU()),
        ("pool5", MaxPool2D(3, 2)),
        ("flatten", Flatten()),
        ("fc6", Linear(fc6_in, width, dtype=dtype)), ("relu6", ReLU()),
        ("drop6", Dropout(dropout)),
        ("fc7", Linear(width, width, dtype=dtype)), ("relu7", ReLU()),
        ("drop7", Dropout(dropout)),
        ("fc8", Linear(width, num_classes, dtype=dtype)),
    ]


def alexnet(num_classes: int = 1000, seed=0, lrn_convention: str = "paper",
            dropout: float = 0.5, dtype=np.float32) -> Sequential:
    """The paper's net, §3.5 (Figure 2), for 3x227x227 inputs, with the paper's init (§5).

    conv1 96x11x11/4 -> ReLU, LRN, pool 3/2 (96x27x27); conv2 256x5x5 pad 2 groups 2 ->
    ReLU, LRN, pool (256x13x13); conv3 384x3x3; conv4 384x3x3 groups 2; conv5 256x3x3
    groups 2 -> pool (256x6x6); fc6 9216->4096, fc7 4096->4096 (ReLU, dropout 0.5 each);
    fc8 4096->num_classes. 60,965,224 parameters for 1000 classes. (The paper's "224x224"
    input only adds up with 227, as in Caffe.)
    """
    lrn = dict(size=5, alpha=1e-4, beta=0.75, k=2.0, convention=lrn_convention)
    layers = _alexnet_layers(Conv2D(3, 96, 11, stride=4, dtype=dtype), 256 * 6 * 6,
                             num_classes, 4096, lrn, dropout, dtype)
    return init_paper(Sequential(layers, (3, 227, 227)), seed)


def alexnet_small(num_classes: int = 100, input_size: int = 56, seed=0,
                  lrn_convention: str = "paper", dropout: float = 0.5,
                  dtype=np.float32) -> Sequential:
    """AlexNet for 64-px images (Tiny ImageNet; 56-px crops by default).

    Every layer after conv1 is the paper's, with the same widths, LRN, overlapping pools and
    groups. Only conv1 changes: at 1/4 of the paper's resolution an 11x11 stride-4 kernel
    would leave a 13x13 map and pool it away by conv3, so conv1 is 96x5x5 stride 2 pad 2
    (the same 2-3 pixel receptive-field-to-image ratio shrunk with the image). For a 56-px
    crop the maps are 28 -> 13 (pool1) -> 13 -> 6 (pool2) -> 6 -> 2 (pool5), so fc6 sees
    256x2x2 = 1024 inputs; for the full 64 px, 256x3x3.
    """
    lrn = dict(size=5, alpha=1e-4, beta=0.75, k=2.0, convention=lrn_convention)
    side = conv_output_size(input_size, 5, 2, 2)   # conv1
    for _ in ("pool1", "pool2", "pool5"):          # conv2..conv5 keep the size
        side = pool_output_size(side, 3, 2)
    if side < 1:
        raise ValueError(f"input_size {input_size} is too small for alexnet_small")
    conv1 = Conv2D(3, 96, 5, stride=2, padding=2, dtype=dtype)
    layers = _alexnet_layers(conv1, 256 * side * side, num_classes, 4096, lrn, dropout, dtype)
    return init_paper(Sequential(layers, (3, input_size, input_size)), seed)


ARCHITECTURES = {"alexnet": alexnet, "alexnet-small": alexnet_small}


def build(arch: str, num_classes: int, **kwargs) -> Sequential:
    """Build an architecture by name ("alexnet" or "alexnet-small")."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch](num_classes=num_classes, **kwargs)


def train_step(net: Sequential, loss_fn: SoftmaxCrossEntropy, x, y):
    """One forward + backward: returns (loss, logits); gradients land in net.grads."""
    logits = net.forward(x, train=True)
    loss = loss_fn.forward(logits, y)
    net.backward(loss_fn.backward(), input_grad=False)
    return loss, logits
