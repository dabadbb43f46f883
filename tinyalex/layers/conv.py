"""Convolution by im2col, with stride, padding and groups (paper §3.2, §3.5).

A convolution is a matrix product once every receptive field is laid out as a column:

    cols[(c, i, j), (n, oh, ow)] = x_pad[n, c, oh*s + i, ow*s + j]      im2col
    out[n, f, oh, ow]            = sum_k W[f, k] cols[k, (n, oh, ow)] + b[f]

with k = (c, i, j) running over C*kh*kw and OH = (H + 2p - kh) // s + 1. The backward pass
is two more products and the transpose of im2col (col2im, which ADDS overlapping fields):

    dW    = dout_r @ cols.T         dout_r[f, (n, oh, ow)] = dout[n, f, oh, ow]
    dcols = W.T @ dout_r            dx = col2im(dcols)
    db    = dout summed over n, oh, ow

Groups (§3.2, the two-GPU split): channels and kernels are cut into G equal groups and
group g's kernels see only group g's input channels, so W has shape (F, C/G, kh, kw) and
each group is its own product over a contiguous block of rows of cols.

Memory stays bounded as in Caffe: the columns are built for a chunk of the batch at a time
(``COLUMN_BUDGET_BYTES``), and rebuilt in backward instead of cached.

The fast variants (kernels/: im2col, few-taps, Winograd for the 3x3 and 5x5 stride-1 ones,
space-to-depth for the paper's 11x11 stride-4 conv1; kernels/dispatch.py picks one in
Conv2D.forward's first line) compute the same products image by image on each core in
parallel; the bodies below are the reference they are tested against.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from ..kernels import dispatch
from ..kernels.shapes import conv_output_size  # OH above; net.py imports it from here
from .base import Layer

COLUMN_BUDGET_BYTES = 64 * 2**20  # the largest im2col buffer one chunk of the batch may use
GPU_COLUMN_BUDGET_BYTES = 2**30   # on a GPU: fewer, larger cuBLAS products


def im2col(x, kh: int, kw: int, stride: int, pad: int):
    """Receptive fields as columns.

    x: (N, C, H, W) -> cols: (C*kh*kw, N*OH*OW), rows ordered (c, i, j), columns (n, oh, ow).
    """
    xp = get_array_module(x)
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, kh, stride, pad), conv_output_size(W, kw, stride, pad)
    x_pad = xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = xp.empty((C, kh, kw, N, OH, OW), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            window = x_pad[:, :, i:i + stride * OH:stride, j:j + stride * OW:stride]
            cols[:, i, j] = window.transpose(1, 0, 2, 3)
    return cols.reshape(C * kh * kw, N * OH * OW)


def col2im(cols, x_shape: tuple, kh: int, kw: int, stride: int, pad: int):
    """The transpose of im2col: add every column entry back onto the pixel it came from.

    cols: (C*kh*kw, N*OH*OW) -> dx: x_shape = (N, C, H, W). Overlapping fields add up.
    """
    xp = get_array_module(cols)
    N, C, H, W = x_shape
    OH, OW = conv_output_size(H, kh, stride, pad), conv_output_size(W, kw, stride, pad)
    cols = cols.reshape(C, kh, kw, N, OH, OW)
    dx_pad = xp.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            # One (i, j) offset never hits a pixel twice, so a strided += is exact here.
            dx_pad[:, :, i:i + stride * OH:stride, j:j + stride * OW:stride] += \
                cols[:, i, j].transpose(1, 0, 2, 3)
    return dx_pad[:, :, pad:pad + H, pad:pad + W]


def batch_chunks(n: int, per_example_bytes: int, budget: int | None = None):
    """Slices of range(n) whose im2col buffers each fit in the budget (at least one example)."""
    budget = COLUMN_BUDGET_BYTES if budget is None else budget
    step = max(1, budget // max(1, per_example_bytes))
    return [slice(start, min(n, start + step)) for start in range(0, n, step)]


def _budget(xp) -> int:
    return COLUMN_BUDGET_BYTES if xp is np else GPU_COLUMN_BUDGET_BYTES


def conv_forward(x, W, b, stride: int, pad: int, groups: int, im2col=im2col):
    """out = the grouped products W_g @ cols_g of the module docstring, plus b.

    x (N, C, H, W), W (F, C/G, kh, kw), b (F,) -> out (N, F, OH, OW). W is read as G
    matrices of shape (F/G, K/G), K = C*kh*kw; the batch goes in chunks (batch_chunks).
    ``im2col``: the one above (kernels/gpu.py passes its CuPy kernel).
    """
    xp = get_array_module(x)
    N, _, H, Wd = x.shape
    F, _, kh, kw = W.shape
    OH, OW = conv_output_size(H, kh, stride, pad), conv_output_size(Wd, kw, stride, pad)
    G = groups
    Wg = W.reshape(G, F // G, -1)
    Kg, Fg = Wg.shape[2], F // G
    out = xp.empty((N, F, OH, OW), dtype=x.dtype)
    for chunk in batch_chunks(N, Kg * G * OH * OW * x.itemsize, _budget(xp)):
        n = chunk.stop - chunk.start
        cols = im2col(x[chunk], kh, kw, stride, pad)                  # (G*Kg, n*OH*OW)
        for g in range(G):
            y = Wg[g] @ cols[g * Kg:(g + 1) * Kg]                     # (Fg, n*OH*OW)
            out[chunk, g * Fg:(g + 1) * Fg] = y.reshape(Fg, n, OH, OW).transpose(1, 0, 2, 3)
    out += b.reshape(1, F, 1, 1)
    return out


def conv_backward(x, W, dout, stride: int, pad: int, groups: int, need_input_grad: bool = True,
                  im2col=im2col, col2im=col2im):
    """(dW, db, dx) of conv_forward: dW = dout_r @ cols.T and dx = col2im(W.T @ dout_r) per
    group, db = dout summed over n, oh, ow; dx is None when not need_input_grad.

    x (N, C, H, W), W (F, C/G, kh, kw), dout (N, F, OH, OW) -> dW (F, C/G, kh, kw), db (F,),
    dx (N, C, H, W). The columns are rebuilt chunk by chunk, as in forward.
    """
    # float64 accumulation: a float32 sum of N*OH*OW nearly cancelling terms loses
    # digits (measured ~2x further from a float64 run than PyTorch's bias grads)
    db = dout.sum(axis=(0, 2, 3), dtype="float64").astype(dout.dtype)
    xp = get_array_module(dout)
    N = x.shape[0]
    F, OH, OW = dout.shape[1:]
    kh, kw = W.shape[2:]
    G = groups
    Wg = W.reshape(G, F // G, -1)
    Kg, Fg = Wg.shape[2], F // G
    dW = xp.zeros_like(Wg)
    dx = xp.empty_like(x) if need_input_grad else None
    for chunk in batch_chunks(N, 2 * Kg * G * OH * OW * x.itemsize, _budget(xp)):
        n = chunk.stop - chunk.start
        cols = im2col(x[chunk], kh, kw, stride, pad)
        dout_r = dout[chunk].transpose(1, 0, 2, 3).reshape(F, n * OH * OW)
        for g in range(G):
            dW[g] += dout_r[g * Fg:(g + 1) * Fg] @ cols[g * Kg:(g + 1) * Kg].T
        if dx is not None:
            for g in range(G):  # reuse the columns' memory for their gradient
                cols[g * Kg:(g + 1) * Kg] = Wg[g].T @ dout_r[g * Fg:(g + 1) * Fg]
            dx[chunk] = col2im(cols, x[chunk].shape, kh, kw, stride, pad)
    return dW.reshape(W.shape), db, dx


class Conv2D(Layer):
    """2-D convolution, NCHW.

    Shapes: x (N, C, H, W) -> out (N, F, OH, OW); params W (F, C/groups, kh, kw), b (F,);
    cache: x (the columns are rebuilt in backward, chunk by chunk, to bound memory).
    ``need_input_grad = False`` skips dx (a net's first layer: nothing uses it; backward
    then returns None and saves a product and a col2im).
    """

    need_input_grad = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, groups: int = 1, weight_std: float = 0.01,
                 bias: float = 0.0, rng=None, dtype=np.float32):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels {in_channels}->{out_channels} not divisible by "
                             f"groups={groups}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding, self.groups = \
            kernel_size, stride, padding, groups
        rng = np.random.default_rng(rng)
        shape = (out_channels, in_channels // groups, kernel_size, kernel_size)
        self.params["W"] = weight_std * rng.standard_normal(shape, dtype=dtype)
        self.params["b"] = np.full(out_channels, bias, dtype=dtype)

    def output_shape(self, input_shape):
        C, H, W = input_shape
        if C != self.in_channels:
            raise ValueError(f"{self!r} expects {self.in_channels} channels, got {C}")
        k, s, p = self.kernel_size, self.stride, self.padding
        return (self.out_channels, conv_output_size(H, k, s, p), conv_output_size(W, k, s, p))

    def flops(self, input_shape):
        F, OH, OW = self.output_shape(input_shape)
        fan_in = self.in_channels // self.groups * self.kernel_size ** 2
        return 2 * F * OH * OW * fan_in + F * OH * OW

    def forward(self, x, train=True):
        self.output_shape(x.shape[1:])  # checks the channels
        self.cache = x
        W, b, s, p, g = self.params["W"], self.params["b"], self.stride, self.padding, self.groups
        forward = dispatch.conv_forward(x, W, s, p, g) or conv_forward  # a fast variant, or above
        return forward(x, W, b, s, p, g)

    def backward(self, dout):
        x, W, s, p, g = self.cache, self.params["W"], self.stride, self.padding, self.groups
        backward = dispatch.conv_backward(x, W, dout, s, p, g) or conv_backward
        self.grads["W"], self.grads["b"], dx = backward(x, W, dout, s, p, g, self.need_input_grad)
        return dx

    def __repr__(self):
        return (f"Conv2D({self.in_channels}, {self.out_channels}, k={self.kernel_size}, "
                f"s={self.stride}, p={self.padding}, groups={self.groups})")
