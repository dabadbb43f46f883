"""Max pooling for any window and stride, including the paper's overlapping 3/2 (§3.4).

    y[n, c, oh, ow] = max_{0 <= i, j < z} x[n, c, oh*s + i, ow*s + j]
    OH = (H - z) // s + 1     (55 -> 27, 27 -> 13, 13 -> 6 for z=3, s=2)

With s < z neighbouring windows overlap (the paper found z=3, s=2 0.4% better in top-1
than z=s=2). Forward stores, for every output, which of its z*z window positions won
(argmax = i*z + j, the first maximum in row-major order); backward sends dout there, adding
up where overlapping windows picked the same pixel.
"""

from __future__ import annotations

from ..backend import get_array_module
from ..kernels import dispatch
from ..kernels.shapes import pool_output_size  # OH above; net.py imports it from here
from .base import Layer


def maxpool_forward(x, window: int, stride: int):
    """x (N, C, H, W) -> (y (N, C, OH, OW), argmax (N, C, OH, OW) int32 in [0, z*z))."""
    xp = get_array_module(x)
    N, C, H, W = x.shape
    OH, OW = pool_output_size(H, window, stride), pool_output_size(W, window, stride)
    candidates = xp.stack([x[:, :, i:i + stride * OH:stride, j:j + stride * OW:stride]
                           for i in range(window) for j in range(window)])
    argmax = candidates.argmax(axis=0).astype(xp.int32)
    return xp.take_along_axis(candidates, argmax[None], axis=0)[0], argmax


def maxpool_backward(dout, argmax, x_shape: tuple, window: int, stride: int):
    """dout, argmax (N, C, OH, OW) -> dx x_shape: dout added at each window's winner."""
    xp = get_array_module(dout)
    OH, OW = dout.shape[2:]
    dx = xp.zeros(x_shape, dtype=dout.dtype)
    for i in range(window):
        for j in range(window):
            # Within one (i, j) offset the targets are distinct pixels, so += is exact.
            dx[:, :, i:i + stride * OH:stride, j:j + stride * OW:stride] += \
                dout * (argmax == i * window + j)
    return dx


class MaxPool2D(Layer):
    """Max pooling, NCHW, no padding.

    Shapes: x (N, C, H, W) -> y (N, C, OH, OW); cache: argmax (N, C, OH, OW) int32, x.shape.
    """

    def __init__(self, window: int = 3, stride: int = 2):
        super().__init__()
        self.window, self.stride = window, stride

    def forward(self, x, train=True):
        forward = dispatch.maxpool_forward(x) or maxpool_forward  # Numba, CuPy, or the above
        y, argmax = forward(x, self.window, self.stride)
        self.cache = (argmax, x.shape)
        return y

    def backward(self, dout):
        argmax, x_shape = self.cache
        backward = dispatch.maxpool_backward(dout) or maxpool_backward
        return backward(dout, argmax, x_shape, self.window, self.stride)

    def output_shape(self, input_shape):
        C, H, W = input_shape
        return (C, pool_output_size(H, self.window, self.stride),
                pool_output_size(W, self.window, self.stride))

    def flops(self, input_shape):
        C, OH, OW = self.output_shape(input_shape)
        return C * OH * OW * (self.window ** 2 - 1)

    def __repr__(self):
        return f"MaxPool2D({self.window}, stride={self.stride})"
