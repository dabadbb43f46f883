"""Textbook NumPy layers: the second reference of ``python -m tinyalex.bench``.

The way most course code writes a CNN in NumPy (cs231n's ``im2col.py`` and ``layers.py``
style): im2col by one big fancy-index gather, col2im by ``np.add.at``, max pooling as
im2col over single-channel planes with ``argmax`` down the columns, LRN channel by
channel, ReLU and dropout by boolean masks. The benchmark times each of tinyalex's layers
against its textbook twin; tests/test_textbook.py checks the two compute the same values
(float64), so the speed-up compares equal work. Not package API: nothing imports it but
the benchmark and its test.

Each class has the same constructor arguments and ``forward(x, train)`` / ``backward(dout)``
contract as the tinyalex layer it mirrors (``textbook_twin(layer)`` builds one sharing the
layer's parameters).
"""

from __future__ import annotations

import numpy as np

from ..layers import (
    Conv2D,
    Dropout,
    Flatten,
    Linear,
    LocalResponseNorm,
    MaxPool2D,
    ReLU,
)


def im2col_indices(C: int, H: int, W: int, kh: int, kw: int, stride: int, pad: int):
    """Index arrays (k, i, j), each (C*kh*kw, OH*OW), with cols = x_pad[:, k, i, j]."""
    OH, OW = (H + 2 * pad - kh) // stride + 1, (W + 2 * pad - kw) // stride + 1
    i0 = np.tile(np.repeat(np.arange(kh), kw), C)
    i1 = stride * np.repeat(np.arange(OH), OW)
    j0 = np.tile(np.arange(kw), kh * C)
    j1 = stride * np.tile(np.arange(OW), OH)
    i = i0.reshape(-1, 1) + i1.reshape(1, -1)
    j = j0.reshape(-1, 1) + j1.reshape(1, -1)
    k = np.repeat(np.arange(C), kh * kw).reshape(-1, 1)
    return k, i, j


def im2col(x, kh: int, kw: int, stride: int, pad: int):
    """(N, C, H, W) -> (C*kh*kw, N*OH*OW), columns ordered (n, oh, ow), by fancy indexing."""
    N, C, H, W = x.shape
    x_pad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k, i, j = im2col_indices(C, H, W, kh, kw, stride, pad)
    cols = x_pad[:, k, i, j]                                # (N, C*kh*kw, OH*OW)
    return cols.transpose(1, 0, 2).reshape(C * kh * kw, -1)


def col2im(cols, x_shape, kh: int, kw: int, stride: int, pad: int):
    """The transpose of im2col by np.add.at (unbuffered: overlapping fields add up)."""
    N, C, H, W = x_shape
    x_pad = np.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=cols.dtype)
    k, i, j = im2col_indices(C, H, W, kh, kw, stride, pad)
    per_image = cols.reshape(C * kh * kw, N, -1).transpose(1, 0, 2)
    np.add.at(x_pad, (slice(None), k, i, j), per_image)
    return x_pad[:, :, pad:pad + H, pad:pad + W]


class TextbookConv2D:
    """out = W @ im2col(x) + b per group; dW = dout_r @ cols.T; dx = col2im(W.T @ dout_r)."""

    def __init__(self, layer: Conv2D):
        self.layer = layer
        self.grads = {}

    def forward(self, x, train=True):
        L = self.layer
        k, s, p, G = L.kernel_size, L.stride, L.padding, L.groups
        N = x.shape[0]
        F, OH, OW = L.output_shape(x.shape[1:])
        cols = im2col(x, k, k, s, p)
        Wg = L.params["W"].reshape(G, F // G, -1)
        Kg = Wg.shape[2]
        out = np.concatenate([Wg[g] @ cols[g * Kg:(g + 1) * Kg] for g in range(G)])
        out += L.params["b"].reshape(F, 1)
        self.cache = (x, cols)
        return out.reshape(F, N, OH, OW).transpose(1, 0, 2, 3)

    def backward(self, dout):
        L = self.layer
        x, cols = self.cache
        k, s, p, G = L.kernel_size, L.stride, L.padding, L.groups
        F = dout.shape[1]
        Wg = L.params["W"].reshape(G, F // G, -1)
        Kg, Fg = Wg.shape[2], F // G
        dout_r = dout.transpose(1, 0, 2, 3).reshape(F, -1)
        self.grads["b"] = dout.sum(axis=(0, 2, 3))
        self.grads["W"] = np.concatenate(
            [dout_r[g * Fg:(g + 1) * Fg] @ cols[g * Kg:(g + 1) * Kg].T for g in range(G)]
        ).reshape(L.params["W"].shape)
        if not L.need_input_grad:  # a net's first layer: tinyalex skips dx, so equal work does
            return None
        dcols = np.concatenate([Wg[g].T @ dout_r[g * Fg:(g + 1) * Fg] for g in range(G)])
        return col2im(dcols, x.shape, k, k, s, p)


class TextbookMaxPool2D:
    """Max pooling as im2col over (N*C, 1, H, W) planes; argmax down each column."""

    def __init__(self, layer: MaxPool2D):
        self.window, self.stride = layer.window, layer.stride

    def forward(self, x, train=True):
        N, C, H, W = x.shape
        z, s = self.window, self.stride
        OH, OW = (H - z) // s + 1, (W - z) // s + 1
        cols = im2col(x.reshape(N * C, 1, H, W), z, z, s, 0)   # (z*z, N*C*OH*OW)
        argmax = np.argmax(cols, axis=0)
        out = cols[argmax, np.arange(cols.shape[1])]
        self.cache = (x.shape, cols.shape, argmax)
        return out.reshape(N, C, OH, OW)

    def backward(self, dout):
        (N, C, H, W), cols_shape, argmax = self.cache
        z, s = self.window, self.stride
        dcols = np.zeros(cols_shape, dtype=dout.dtype)
        dcols[argmax, np.arange(cols_shape[1])] = dout.ravel()
        return col2im(dcols, (N * C, 1, H, W), z, z, s, 0).reshape(N, C, H, W)


class TextbookLRN:
    """LRN channel by channel: s_i = k + a sum_j x_j^2 over i's window; y_i = x_i s_i^-beta."""

    def __init__(self, layer: LocalResponseNorm):
        self.size, self.a, self.beta, self.k = layer.size, layer.coefficient, layer.beta, layer.k

    def forward(self, x, train=True):
        C = x.shape[1]
        before, after = self.size // 2, (self.size - 1) // 2
        s = np.empty_like(x)
        for i in range(C):
            lo, hi = max(0, i - before), min(C, i + after + 1)
            s[:, i] = self.k + self.a * np.sum(x[:, lo:hi] ** 2, axis=1)
        y = x * s ** (-self.beta)
        self.cache = (x, y, s)
        return y

    def backward(self, dout):
        x, y, s = self.cache
        C = x.shape[1]
        before, after = self.size // 2, (self.size - 1) // 2
        t = dout * y / s
        dx = dout * s ** (-self.beta)
        for j in range(C):  # x_j feeds s_i for every i whose window holds j
            lo, hi = max(0, j - after), min(C, j + before + 1)
            dx[:, j] -= 2 * self.a * self.beta * x[:, j] * np.sum(t[:, lo:hi], axis=1)
        return dx


class TextbookReLU:
    def __init__(self, layer=None):
        pass

    def forward(self, x, train=True):
        self.mask = x > 0
        return x * self.mask

    def backward(self, dout):
        return dout * self.mask


class TextbookDropout:
    """Inverted dropout with a fresh Bernoulli mask (or the layer's fixed_mask)."""

    def __init__(self, layer: Dropout):
        self.layer = layer

    def forward(self, x, train=True):
        L = self.layer
        keep = L.fixed_mask if L.fixed_mask is not None else L.rng.random(x.shape) >= L.p
        scale = 1 / (1 - L.p) if L.mode == "inverted" else 1.0
        self.mask = keep * scale
        return (x * self.mask).astype(x.dtype)

    def backward(self, dout):
        return (dout * self.mask).astype(dout.dtype)


class TextbookLinear:
    def __init__(self, layer: Linear):
        self.layer = layer
        self.grads = {}

    def forward(self, x, train=True):
        self.x = x
        return x @ self.layer.params["W"].T + self.layer.params["b"]

    def backward(self, dout):
        self.grads["W"] = dout.T @ self.x
        self.grads["b"] = dout.sum(axis=0)
        return dout @ self.layer.params["W"]


class TextbookFlatten:
    def __init__(self, layer=None):
        pass

    def forward(self, x, train=True):
        self.shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        return dout.reshape(self.shape)


TWINS = {Conv2D: TextbookConv2D, MaxPool2D: TextbookMaxPool2D,
         LocalResponseNorm: TextbookLRN, ReLU: TextbookReLU, Dropout: TextbookDropout,
         Linear: TextbookLinear, Flatten: TextbookFlatten}


def textbook_twin(layer):
    """The textbook version of a tinyalex layer, sharing its parameters (None if none)."""
    twin = TWINS.get(type(layer))
    return twin(layer) if twin is not None else None
