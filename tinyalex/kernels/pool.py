"""Numba twins of layers/pool.py: max pooling forward (with its argmax) and backward, one
task per (image, channel) plane. tests/test_kernels_cpu.py proves them equal to the
readable bodies, ties included."""

from __future__ import annotations

import numba
import numpy as np

from .jit import JIT, U
from .shapes import pool_output_size


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


# The paper's 3x3 windows (§3.4), written out: the loop above compares each value with the
# best so far, a chain of 9 dependent compare-and-branch steps whose branch the CPU cannot
# predict on real data. Here the maximum is a tree of independent max()es, and the argmax
# the first of the nine equal to it, a chain of selects without branches.
@numba.njit(**JIT)
def _maxpool3_forward(x, y, argmax, stride):
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    xf, yf, af = x.reshape(-1), y.reshape(-1), argmax.reshape(-1)
    for plane in numba.prange(N * C):
        src, dst = U(plane * H * W), U(plane * OH * OW)
        for oh in range(U(OH)):
            for ow in range(U(OW)):
                r0 = src + U(oh * stride * W + ow * stride)
                r1 = r0 + U(W)
                r2 = r1 + U(W)
                v0, v1, v2 = xf[r0], xf[r0 + 1], xf[r0 + 2]
                v3, v4, v5 = xf[r1], xf[r1 + 1], xf[r1 + 2]
                v6, v7, v8 = xf[r2], xf[r2 + 1], xf[r2 + 2]
                best = max(max(max(v0, v1), max(v2, v3)),
                           max(max(v4, v5), max(max(v6, v7), v8)))
                k = 8
                k = 7 if v7 == best else k
                k = 6 if v6 == best else k
                k = 5 if v5 == best else k
                k = 4 if v4 == best else k
                k = 3 if v3 == best else k
                k = 2 if v2 == best else k
                k = 1 if v1 == best else k
                k = 0 if v0 == best else k
                yf[dst + U(oh * OW + ow)] = best
                af[dst + U(oh * OW + ow)] = k


def maxpool_forward(x, window, stride):
    """Twin of tinyalex.layers.pool.maxpool_forward."""
    N, C, H, W = x.shape
    OH, OW = pool_output_size(H, window, stride), pool_output_size(W, window, stride)
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    argmax = np.empty((N, C, OH, OW), dtype=np.int32)
    if window == 3:
        _maxpool3_forward(np.ascontiguousarray(x), y, argmax, stride)
    else:
        _maxpool_forward(np.ascontiguousarray(x), y, argmax, window, stride)
    return y, argmax


@numba.njit(**JIT)
def _maxpool_backward(dout, argmax, dx, window, stride):
    # flat planes and unsigned indices (kernels/jit.py says why)
    N, C, OH, OW = dout.shape
    H, W = dx.shape[2], dx.shape[3]
    df, af, xf = dout.reshape(-1), argmax.reshape(-1), dx.reshape(-1)
    for plane in numba.prange(N * C):
        dst, src = U(plane * H * W), U(plane * OH * OW)
        for p in range(U(H * W)):
            xf[dst + p] = 0
        for oh in range(U(OH)):
            for ow in range(U(OW)):
                o = src + U(oh * OW + ow)
                k = af[o]
                i, j = k // window, k % window
                xf[dst + U((oh * stride + i) * W + ow * stride + j)] += df[o]


def maxpool_backward(dout, argmax, x_shape, window, stride):
    """Twin of tinyalex.layers.pool.maxpool_backward."""
    dx = np.empty(x_shape, dtype=dout.dtype)
    _maxpool_backward(np.ascontiguousarray(dout), np.ascontiguousarray(argmax), dx,
                      window, stride)
    return dx
