"""Numba twins of layers/pool.py: max pooling forward (with its argmax) and backward, one
task per (image, channel) plane. tests/test_kernels_cpu.py proves them equal to the
readable bodies, ties included."""

from __future__ import annotations

import numba
import numpy as np

from .shapes import pool_output_size
from .threads import JIT


@numba.njit(**JIT)
def _maxpool_forward(x, y, argmax, window, stride):
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    for plane in numba.prange(N * C):
        n, c = plane // C, plane % C
        for oh in range(OH):
            for ow in range(OW):
                best = x[n, c, oh * stride, ow * stride]
                best_k = 0
                for i in range(window):
                    for j in range(window):
                        v = x[n, c, oh * stride + i, ow * stride + j]
                        if v > best:  # strict: the first maximum wins, as np.argmax
                            best = v
                            best_k = i * window + j
                y[n, c, oh, ow] = best
                argmax[n, c, oh, ow] = best_k


def maxpool_forward(x, window, stride):
    """Twin of tinyalex.layers.pool.maxpool_forward."""
    N, C, H, W = x.shape
    OH, OW = pool_output_size(H, window, stride), pool_output_size(W, window, stride)
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    argmax = np.empty((N, C, OH, OW), dtype=np.int32)
    _maxpool_forward(np.ascontiguousarray(x), y, argmax, window, stride)
    return y, argmax


@numba.njit(**JIT)
def _maxpool_backward(dout, argmax, dx, window, stride):
    N, C, OH, OW = dout.shape
    for plane in numba.prange(N * C):
        n, c = plane // C, plane % C
        dx[n, c] = 0
        for oh in range(OH):
            for ow in range(OW):
                k = argmax[n, c, oh, ow]
                dx[n, c, oh * stride + k // window, ow * stride + k % window] += dout[n, c, oh, ow]


def maxpool_backward(dout, argmax, x_shape, window, stride):
    """Twin of tinyalex.layers.pool.maxpool_backward."""
    dx = np.empty(x_shape, dtype=dout.dtype)
    _maxpool_backward(np.ascontiguousarray(dout), np.ascontiguousarray(argmax), dx,
                      window, stride)
    return dx
