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
    Tanh,
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
        xp = self.xp
        if get_array_module(x) is not xp:  # the input goes where the weights are
            x = xp.asarray(x)
        for _, layer in self.layers:
            x = layer.forward(x, train)
        return x

    __call__ = forward

    def backward(self, dout, input_grad: bool = True, layer_done=None):
        """Gradients into every layer's grads; returns dL/dx (None if input_grad=False,
        which lets the first conv skip a product and a col2im in training). layer_done:
        called as layer_done(name, layer) as soon as each layer's backward is done (the
        data-parallel overlap sends that layer's gradients while the rest goes on)."""
        first = self.layers[0][1]
        if hasattr(first, "need_input_grad"):
            first.need_input_grad = input_grad
        for name, layer in reversed(self.layers):
            dout = layer.backward(dout)
            if layer_done is not None:
                layer_done(name, layer)
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
    def xp(self):
        """The array module (numpy or cupy) the parameters live in."""
        return get_array_module(*self.params.values())

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


def init_pytorch(net: Sequential, seed=0) -> Sequential:
    """PyTorch's default for Conv2d/Linear (torchvision's AlexNet uses it): weights and
    biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = C/groups*kh*kw or in_features.

    Fan-in scaling keeps each layer's output on the scale of its input whatever the
    layer's width; §5's fixed std 0.01 shrinks the signal ~10x per layer here, and the
    net sits at chance (see the README's measurements).
    """
    rng = np.random.default_rng(seed)
    for _, layer in net.layers:
        if "W" in layer.params:
            W, b = layer.params["W"], layer.params["b"]
            bound = 1.0 / np.sqrt(W[0].size)
            W[...] = rng.uniform(-bound, bound, W.shape).astype(W.dtype)
            b[...] = rng.uniform(-bound, bound, b.shape).astype(b.dtype)
    return net


def init_paper_bias0(net: Sequential, seed=0) -> Sequential:
    """§5's weights, N(0, 0.01^2), with every bias 0: what §5 does without its biases of 1
    (the measurement that tells the two apart is in the README)."""
    init_paper(net, seed)
    for _, layer in net.layers:
        if "b" in layer.params:
            layer.params["b"][...] = 0.0
    return net


#: Caffe's bvlc_alexnet (models/bvlc_alexnet/train_val.prototxt): biases 0.1 where §5 says 1
#: ("initialization to 1 gave flat loss", its readme), 0 elsewhere.
CAFFE_BIAS = {"conv2": 0.1, "conv4": 0.1, "conv5": 0.1, "fc6": 0.1, "fc7": 0.1}

#: Caffe's weight std per layer: 0.005 in fc6 and fc7, 0.01 elsewhere (train_val.prototxt).
CAFFE_STD = {"fc6": 0.005, "fc7": 0.005}


def init_caffe(net: Sequential, seed=0) -> Sequential:
    """Caffe's bvlc_alexnet init: W ~ N(0, std^2) with std 0.005 in fc6, fc7 and 0.01
    elsewhere; biases 0.1 in conv2, conv4, conv5, fc6, fc7, else 0 (§5 with 0.1 for 1)."""
    rng = np.random.default_rng(seed)
    for name, layer in net.layers:
        if "W" in layer.params:
            W = layer.params["W"]
            W[...] = CAFFE_STD.get(name, 0.01) * rng.standard_normal(W.shape, dtype=W.dtype)
            layer.params["b"][...] = CAFFE_BIAS.get(name, 0.0)
    return net


INITS = {"paper": init_paper, "paper-bias0": init_paper_bias0, "pytorch": init_pytorch,
         "caffe": init_caffe}


#: The paper's widths (§3.5): conv1..conv5 kernels and the hidden FC units.
PAPER_WIDTHS = (96, 256, 384, 384, 256, 4096)


#: The non-linearities a net can be built with (§3.1; "tanh" for Figure 1's comparison).
ACTIVATIONS = {"relu": ReLU, "tanh": Tanh}


def _alexnet_layers(conv1_kernel: tuple, input_size: int, num_classes: int, widths: tuple,
                    lrn: dict | None, dropout: float, dtype, activation: str = "relu",
                    pool: tuple = (3, 2)) -> list:
    """The §3.5 stack after the input; conv1_kernel = (size, stride, pad).

    The ablations of the paper's claims change one thing each: ``activation`` "tanh"
    instead of ReLU (§3.1, layers then named tanh1..tanh7), ``lrn=None`` drops lrn1 and
    lrn2 (§3.3), ``pool`` (window, stride) = (2, 2) for non-overlapping pooling (§3.4).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of "
                         f"{', '.join(ACTIVATIONS)}")
    c1, c2, c3, c4, c5, fc = widths
    k, s, p = conv1_kernel
    z, zs = pool
    side = conv_output_size(input_size, k, s, p)
    for _ in ("pool1", "pool2", "pool5"):  # conv2..conv5 keep the size
        side = pool_output_size(side, z, zs)
    if side < 1:
        raise ValueError(f"input_size {input_size} is too small for this net")

    def conv(*a, **kw):
        return Conv2D(*a, dtype=dtype, **kw)

    def act(i):
        return (f"{activation}{i}", ACTIVATIONS[activation]())

    def norm(i):
        return [(f"lrn{i}", LocalResponseNorm(**lrn))] if lrn is not None else []

    return [
        ("conv1", conv(3, c1, k, stride=s, padding=p)), act(1), *norm(1),
        ("pool1", MaxPool2D(z, zs)),
        ("conv2", conv(c1, c2, 5, padding=2, groups=2)), act(2), *norm(2),
        ("pool2", MaxPool2D(z, zs)),
        ("conv3", conv(c2, c3, 3, padding=1)), act(3),
        ("conv4", conv(c3, c4, 3, padding=1, groups=2)), act(4),
        ("conv5", conv(c4, c5, 3, padding=1, groups=2)), act(5),
        ("pool5", MaxPool2D(z, zs)),
        ("flatten", Flatten()),
        ("fc6", Linear(c5 * side * side, fc, dtype=dtype)), act(6),
        ("drop6", Dropout(dropout)),
        ("fc7", Linear(fc, fc, dtype=dtype)), act(7),
        ("drop7", Dropout(dropout)),
        ("fc8", Linear(fc, num_classes, dtype=dtype)),
    ]


#: The LRN conventions a net can be built with: the paper's (§3.3, a = alpha, k = 2),
#: "alpha/n" (a = alpha / n, k = 2: PyTorch's formula with the paper's k) and "caffe"
#: (a = alpha / n, k = 1: Caffe's LRNParameter defaults, as bvlc_alexnet runs).
LRN_CONVENTIONS = ("paper", "alpha/n", "caffe")


def _lrn(convention: str) -> dict:
    """§3.3's constants n=5, alpha=1e-4, beta=0.75; k=2 (the paper's) or 1 (Caffe's)."""
    if convention not in LRN_CONVENTIONS:
        raise ValueError(f"unknown lrn_convention {convention!r}; choose one of "
                         f"{', '.join(LRN_CONVENTIONS)}")
    if convention == "caffe":
        return dict(size=5, alpha=1e-4, beta=0.75, k=1.0, convention="alpha/n")
    return dict(size=5, alpha=1e-4, beta=0.75, k=2.0, convention=convention)


def alexnet(num_classes: int = 1000, seed=0, lrn_convention: str = "paper",
            dropout: float = 0.5, init: str = "paper", dtype=np.float32) -> Sequential:
    """The paper's net, §3.5 (Figure 2), for 3x227x227 inputs, with the paper's init (§5).

    conv1 96x11x11/4 -> ReLU, LRN, pool 3/2 (96x27x27); conv2 256x5x5 pad 2 groups 2 ->
    ReLU, LRN, pool (256x13x13); conv3 384x3x3; conv4 384x3x3 groups 2; conv5 256x3x3
    groups 2 -> pool (256x6x6); fc6 9216->4096, fc7 4096->4096 (ReLU, dropout 0.5 each);
    fc8 4096->num_classes. 60,965,224 parameters for 1000 classes. (The paper's "224x224"
    input only adds up with 227, as in Caffe.)

    ``lrn_convention="caffe"`` with ``init="caffe"`` is Caffe's bvlc_alexnet exactly
    (models/bvlc_alexnet/deploy.prototxt): LRN k = 1 with alpha/n, biases 0.1, fc std 0.005.
    """
    layers = _alexnet_layers((11, 4, 0), 227, num_classes, PAPER_WIDTHS,
                             _lrn(lrn_convention), dropout, dtype)
    return _init(Sequential(layers, (3, 227, 227)), init, seed)


def alexnet_small(num_classes: int = 100, input_size: int = 56, seed=0,
                  lrn_convention: str = "paper", dropout: float = 0.5, init: str = "paper",
                  width: float = 1.0, activation: str = "relu", lrn: bool = True,
                  pool: tuple = (3, 2), dtype=np.float32) -> Sequential:
    """AlexNet for 64-px images (Tiny ImageNet; 56-px crops by default).

    Every layer after conv1 is the paper's, with the same widths, LRN, overlapping pools and
    groups. Only conv1 changes: at 1/4 of the paper's resolution an 11x11 stride-4 kernel
    would leave a 13x13 map and pool it away by conv3, so conv1 is 96x5x5 stride 2 pad 2
    (the same 2-3 pixel receptive-field-to-image ratio shrunk with the image). For a 56-px
    crop the maps are 28 -> 13 (pool1) -> 13 -> 6 (pool2) -> 6 -> 2 (pool5), so fc6 sees
    256x2x2 = 1024 inputs; for the full 64 px, 256x3x3.

    ``width`` scales every layer's number of kernels and hidden units (1.0 = the paper's).
    ``activation`` ("relu" or "tanh"), ``lrn`` (False drops lrn1, lrn2) and ``pool``
    ((window, stride); (2, 2) is non-overlapping) build the variants of the paper's
    ablations (``tinyalex.experiments``); the defaults are the paper's net.
    """
    widths = tuple(max(2, 2 * round(w * width / 2)) for w in PAPER_WIDTHS)  # even: groups=2
    layers = _alexnet_layers((5, 2, 2), input_size, num_classes, widths,
                             _lrn(lrn_convention) if lrn else None, dropout, dtype,
                             activation=activation, pool=tuple(pool))
    return _init(Sequential(layers, (3, input_size, input_size)), init, seed)


def _init(net: Sequential, init: str, seed) -> Sequential:
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
    return INITS[init](net, seed)


def alexnet_mini(num_classes: int = 100, input_size: int = 56, **kwargs) -> Sequential:
    """alexnet_small at a quarter of the width (24-64-96-96-64 kernels, 1024 hidden units):
    every kind of layer of the paper, ~1.5 M parameters, for quick experiments, the
    notebooks and the tests on a laptop CPU."""
    return alexnet_small(num_classes, input_size, width=0.25, **kwargs)


# ------------------------------------------------------- torchvision's AlexNet ("one weird trick")


def adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
    """The (start, stop) rows of each of ``out`` bins over ``size`` rows, as PyTorch's
    adaptive pooling: start = floor(i * size / out), stop = ceil((i + 1) * size / out).
    Bins overlap when size % out != 0 and repeat rows when size < out."""
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


class AdaptiveAvgPool2D(Layer):
    """torchvision's AdaptiveAvgPool2d: (N, C, H, W) -> (N, C, out, out), each output the
    mean of its bin, bins from ``adaptive_bins``. The identity when H = W = out (224-px
    inputs of alexnet-owt give 6x6 maps); cache: the input shape.

        y[n, c, i, j] = mean(x[n, c, h0(i):h1(i), w0(j):w1(j)])
        dx[n, c, h, w] = sum over the bins (i, j) holding (h, w) of dy[n, c, i, j] / |bin|
    """

    def __init__(self, out: int = 6):
        super().__init__()
        self.out = int(out)

    def forward(self, x, train=True):
        self.cache = x.shape
        H, W = x.shape[2:]
        if (H, W) == (self.out, self.out):
            return x
        xp = get_array_module(x)
        y = xp.empty(x.shape[:2] + (self.out, self.out), x.dtype)
        for i, (h0, h1) in enumerate(adaptive_bins(H, self.out)):
            for j, (w0, w1) in enumerate(adaptive_bins(W, self.out)):
                y[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
        return y

    def backward(self, dout):
        shape = self.cache
        H, W = shape[2:]
        if (H, W) == (self.out, self.out):
            return dout
        xp = get_array_module(dout)
        dx = xp.zeros(shape, dout.dtype)
        for i, (h0, h1) in enumerate(adaptive_bins(H, self.out)):
            for j, (w0, w1) in enumerate(adaptive_bins(W, self.out)):
                count = (h1 - h0) * (w1 - w0)
                dx[:, :, h0:h1, w0:w1] += (dout[:, :, i, j] / count)[:, :, None, None]
        return dx

    def output_shape(self, input_shape):
        return (input_shape[0], self.out, self.out)

    def __repr__(self):
        return f"AdaptiveAvgPool2D({self.out})"


#: torchvision's widths: conv1..conv5 kernels and the hidden FC units (models/alexnet.py).
OWT_WIDTHS = (64, 192, 384, 256, 256, 4096)


def alexnet_owt(num_classes: int = 1000, input_size: int = 224, seed=0, dropout: float = 0.5,
                init: str = "pytorch", lrn_convention=None, dtype=np.float32) -> Sequential:
    """torchvision's AlexNet (models/alexnet.py), the one-column net of Krizhevsky's "One
    weird trick" (2014), not the paper's: 61,100,840 parameters for 1000 classes.

    conv1 64x11x11/4 pad 2 -> ReLU, pool 3/2; conv2 192x5x5 pad 2 -> ReLU, pool; conv3
    384x3x3; conv4 256x3x3; conv5 256x3x3 -> ReLU, pool (256x6x6 at 224 px); the adaptive
    average pool to 6x6 (the identity at 224 px, torchvision's answer at other sizes); then
    dropout, fc6 9216->4096, ReLU, dropout, fc7, ReLU, fc8. Against §3.5: no LRN, no groups
    (one GPU), other widths, and dropout before fc6 and fc7 where the paper has it after fc6
    and fc7 (drop5 feeds fc6, drop6 feeds fc7). ``lrn_convention`` is ignored (no LRN).
    Import torchvision's trained weights with ``python -m tinyalex.weights``.
    """
    c1, c2, c3, c4, c5, fc = OWT_WIDTHS
    side = conv_output_size(input_size, 11, 4, 2)
    for _ in range(3):
        side = pool_output_size(side, 3, 2)
    if side < 1:
        raise ValueError(f"input_size {input_size} is too small for this net")

    def conv(*a, **kw):
        return Conv2D(*a, dtype=dtype, **kw)

    layers = [
        ("conv1", conv(3, c1, 11, stride=4, padding=2)), ("relu1", ReLU()),
        ("pool1", MaxPool2D(3, 2)),
        ("conv2", conv(c1, c2, 5, padding=2)), ("relu2", ReLU()), ("pool2", MaxPool2D(3, 2)),
        ("conv3", conv(c2, c3, 3, padding=1)), ("relu3", ReLU()),
        ("conv4", conv(c3, c4, 3, padding=1)), ("relu4", ReLU()),
        ("conv5", conv(c4, c5, 3, padding=1)), ("relu5", ReLU()), ("pool5", MaxPool2D(3, 2)),
        ("avgpool", AdaptiveAvgPool2D(6)), ("flatten", Flatten()),
        ("drop5", Dropout(dropout)), ("fc6", Linear(c5 * 6 * 6, fc, dtype=dtype)),
        ("relu6", ReLU()),
        ("drop6", Dropout(dropout)), ("fc7", Linear(fc, fc, dtype=dtype)), ("relu7", ReLU()),
        ("fc8", Linear(fc, num_classes, dtype=dtype)),
    ]
    return _init(Sequential(layers, (3, input_size, input_size)), init, seed)


ARCHITECTURES = {"alexnet": alexnet, "alexnet-small": alexnet_small, "alexnet-mini": alexnet_mini,
                 "alexnet-owt": alexnet_owt}


def build(arch: str, num_classes: int, **kwargs) -> Sequential:
    """Build an architecture by name ("alexnet" or "alexnet-small")."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch](num_classes=num_classes, **kwargs)

