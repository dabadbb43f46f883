"""Numba twins of the hot loops: im2col/col2im, max pooling with argmax, LRN fused.

Each function has exactly the signature and result of the readable NumPy body it replaces
(named in its docstring), and tests/test_kernels_cpu.py proves them equal. All loops are
``parallel=True`` over an axis whose iterations write disjoint memory, and ``cache=True`` so
the compile cost is paid once per machine.
"""

from __future__ import annotations

import numba
import numpy as np

JIT = dict(parallel=True, cache=True)


def _out_size(size, kernel, stride, pad):
    return (size + 2 * pad - kernel) // stride + 1


# ---------------------------------------------------------------- im2col / col2im (conv.py)

@numba.njit(inline="always")
def _valid_range(out_size, stride, offset, size):
    """The o in [lo, hi) with 0 <= o*stride + offset < size (offset = kernel tap - pad)."""
    lo = 0
    while lo < out_size and lo * stride + offset < 0:
        lo += 1
    hi = out_size
    while hi > lo and (hi - 1) * stride + offset >= size:
        hi -= 1
    return lo, hi


@numba.njit(**JIT)
def _im2col(x, cols, kh, kw, stride, pad, OH, OW):
    N, C, H, W = x.shape
    for row in numba.prange(C * kh * kw):
        c = row // (kh * kw)
        i = (row // kw) % kh
        j = row % kw
        lo, hi = _valid_range(OW, stride, j - pad, W)
        for n in range(N):
            base = n * OH * OW
            for oh in range(OH):
                h = oh * stride - pad + i
                dst = base + oh * OW
                if h < 0 or h >= H:
                    cols[row, dst:dst + OW] = 0
                    continue
                cols[row, dst:dst + lo] = 0
                cols[row, dst + hi:dst + OW] = 0
                for ow in range(lo, hi):
                    cols[row, dst + ow] = x[n, c, h, ow * stride - pad + j]


def im2col(x, kh, kw, stride, pad):
    """Twin of tinyalex.layers.conv.im2col: (N, C, H, W) -> (C*kh*kw, N*OH*OW)."""
    N, C, H, W = x.shape
    OH, OW = _out_size(H, kh, stride, pad), _out_size(W, kw, stride, pad)
    cols = np.empty((C * kh * kw, N * OH * OW), dtype=x.dtype)
    _im2col(np.ascontiguousarray(x), cols, kh, kw, stride, pad, OH, OW)
    return cols


@numba.njit(**JIT)
def _col2im(cols, dx, kh, kw, stride, pad, OH, OW):
    N, C, H, W = dx.shape
    for c in numba.prange(C):  # each channel of dx is written by its own rows only
        dx[:, c] = 0
        for i in range(kh):
            for j in range(kw):
                row = (c * kh + i) * kw + j
                lo, hi = _valid_range(OW, stride, j - pad, W)
                for n in range(N):
                    base = n * OH * OW
                    for oh in range(OH):
                        h = oh * stride - pad + i
                        if h < 0 or h >= H:
                            continue
                        src = base + oh * OW
                        for ow in range(lo, hi):
                            dx[n, c, h, ow * stride - pad + j] += cols[row, src + ow]


def col2im(cols, x_shape, kh, kw, stride, pad):
    """Twin of tinyalex.layers.conv.col2im: (C*kh*kw, N*OH*OW) -> x_shape."""
    N, C, H, W = x_shape
    OH, OW = _out_size(H, kh, stride, pad), _out_size(W, kw, stride, pad)
    dx = np.empty(x_shape, dtype=cols.dtype)
    _col2im(np.ascontiguousarray(cols), dx, kh, kw, stride, pad, OH, OW)
    return dx


# ---------------------------------------------------------------------- max pool (pool.py)

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
    OH, OW = (H - window) // stride + 1, (W - window) // stride + 1
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


# ----------------------------------------------------------------------------- LRN (lrn.py)

# Vectorising these loops needs LLVM to reorder float arithmetic a little; the results stay
# within a few ulps of the readable body (tests: 2e-6 float32, 1e-14 float64).
LRN_JIT = dict(parallel=True, cache=True, fastmath={"nsz", "arcp", "contract", "reassoc"})


@numba.njit(inline="always")
def _inverse_power(s, beta):
    """s ** -beta, with the paper's beta = 0.75 done by two square roots (pow is slow)."""
    if beta == 0.75:
        return 1.0 / np.sqrt(s * np.sqrt(s))
    return s ** (-beta)


@numba.njit(**LRN_JIT)
def _lrn_forward(x, y, s, before, after, a, beta, k):
    # One (n, h) row of every channel per task; the squares of that row are kept in a
    # small buffer and each window is summed directly (no running sum to drift).
    N, C, H, W = x.shape
    for job in numba.prange(N * H):
        n, h = job // H, job % H
        sq = np.empty((C, W), x.dtype)
        for c in range(C):
            for w in range(W):
                sq[c, w] = x[n, c, h, w] * x[n, c, h, w]
        acc = np.empty(W, x.dtype)
        for c in range(C):
            lo, hi = max(0, c - before), min(C - 1, c + after)
            acc[:] = sq[lo]
            for j in range(lo + 1, hi + 1):  # row by row: the w loop vectorises
                for w in range(W):
                    acc[w] += sq[j, w]
            for w in range(W):
                sc = k + a * acc[w]
                s[n, c, h, w] = sc
                y[n, c, h, w] = x[n, c, h, w] * _inverse_power(sc, beta)


def lrn_forward(x, size, a, beta, k):
    """Twin of tinyalex.layers.lrn.lrn_forward: returns (y, s)."""
    x = np.ascontiguousarray(x)
    y, s = np.empty_like(x), np.empty_like(x)
    _lrn_forward(x, y, s, size // 2, (size - 1) // 2, x.dtype.type(a), x.dtype.type(beta),
                 x.dtype.type(k))
    return y, s


@numba.njit(**LRN_JIT)
def _lrn_backward(dout, x, y, s, dx, before, after, a, beta):
    # before/after are the TRANSPOSED window: x_c feeds s_i for i in [c - before, c + after].
    # t_i = dout_i * y_i / s_i is computed once per row into a buffer, then window-summed.
    N, C, H, W = x.shape
    coef = 2 * a * beta
    for job in numba.prange(N * H):
        n, h = job // H, job % H
        t = np.empty((C, W), x.dtype)
        for c in range(C):
            for w in range(W):
                t[c, w] = dout[n, c, h, w] * y[n, c, h, w] / s[n, c, h, w]
        for c in range(C):  # (summing row by row, as in forward, measured slower here)
            lo, hi = max(0, c - before), min(C - 1, c + after)
            for w in range(W):
                acc = t[lo, w]
                for i in range(lo + 1, hi + 1):
                    acc += t[i, w]
                dx[n, c, h, w] = (dout[n, c, h, w] * _inverse_power(s[n, c, h, w], beta)
                                  - coef * x[n, c, h, w] * acc)


def lrn_backward(dout, x, y, s, size, a, beta):
    """Twin of tinyalex.layers.lrn.lrn_backward."""
    dout = np.ascontiguousarray(dout)
    dx = np.empty_like(dout)
    t = dout.dtype.type
    _lrn_backward(dout, x, y, s, dx, (size - 1) // 2, size // 2, t(a), t(beta))
    return dx
