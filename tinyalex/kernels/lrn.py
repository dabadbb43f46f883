"""Numba twins of layers/lrn.py: LRN forward and backward, each fused into one pass per
image over its channels as (C, H*W) planes. tests/test_kernels_cpu.py proves them equal to
the readable bodies within a few ulps (their sums are reassociated to vectorise)."""

from __future__ import annotations

import numba
import numpy as np

# Vectorising these loops needs LLVM to reorder float arithmetic a little; the results stay
# within a few ulps of the readable body (tests: 2e-6 float32, 1e-14 float64).
LRN_JIT = dict(parallel=True, cache=True, fastmath={"nsz", "arcp", "contract", "reassoc"})


@numba.njit(inline="always")
def _inverse_power(s, beta):
    """s ** -beta, with the paper's beta = 0.75 done by two square roots (pow is slow)."""
    if beta == 0.75:
        return 1.0 / np.sqrt(s * np.sqrt(s))
    return s ** (-beta)


@numba.njit(inline="always")
def _inverse_powers(s_row, out, beta, one):
    """out[w] = s_row[w] ** -beta along one row, for backward. As _inverse_power, but the
    test on beta sits outside the loop over w and ``one`` has the arrays' dtype (a literal
    1 computes in float64): with _inverse_power inside backward's loop LLVM left it scalar."""
    if beta == 0.75:
        for w in range(s_row.shape[0]):
            q = np.sqrt(one / s_row[w])
            out[w] = q * np.sqrt(q)
    else:
        for w in range(s_row.shape[0]):
            out[w] = s_row[w] ** (-beta)


@numba.njit(**LRN_JIT)
def _lrn_forward(x, y, s, before, after, a, beta, k):
    # One image per task, its channels as (C, H*W) planes: the squares of the image are
    # kept in a buffer and each window of planes is summed directly (no running sum to
    # drift), along H*W contiguous floats (a task per (n, h) row would read C rows H*W
    # apart: too many streams for the prefetcher).
    N, C, H, W = x.shape
    P = H * W
    x3, y3, s3 = x.reshape(N, C, P), y.reshape(N, C, P), s.reshape(N, C, P)
    for n in numba.prange(N):
        sq = np.empty((C, P), x.dtype)
        for c in range(C):
            for p in range(P):
                sq[c, p] = x3[n, c, p] * x3[n, c, p]
        acc = np.empty(P, x.dtype)
        for c in range(C):
            lo, hi = max(0, c - before), min(C - 1, c + after)
            acc[:] = sq[lo]
            for j in range(lo + 1, hi + 1):  # plane by plane: the p loop vectorises
                for p in range(P):
                    acc[p] += sq[j, p]
            for p in range(P):
                sc = k + a * acc[p]
                s3[n, c, p] = sc
                y3[n, c, p] = x3[n, c, p] * _inverse_power(sc, beta)


def lrn_forward(x, size, a, beta, k):
    """Twin of tinyalex.layers.lrn.lrn_forward: returns (y, s)."""
    x = np.ascontiguousarray(x)
    y, s = np.empty_like(x), np.empty_like(x)
    _lrn_forward(x, y, s, size // 2, (size - 1) // 2, x.dtype.type(a), x.dtype.type(beta),
                 x.dtype.type(k))
    return y, s


@numba.njit(**LRN_JIT)
def _lrn_backward(dout, x, y, s, dx, before, after, a, beta, one):
    # before/after are the TRANSPOSED window: x_c feeds s_i for i in [c - before, c + after].
    # One image per task as in _lrn_forward: t_i = dout_i * y_i / s_i and s_i ** -beta
    # are computed once per plane into buffers, then the window is summed plane by plane.
    N, C, H, W = x.shape
    P = H * W
    coef = 2 * a * beta
    d3, x3, y3 = dout.reshape(N, C, P), x.reshape(N, C, P), y.reshape(N, C, P)
    s3, dx3 = s.reshape(N, C, P), dx.reshape(N, C, P)
    for n in numba.prange(N):
        t = np.empty((C, P), x.dtype)
        scale = np.empty((C, P), x.dtype)
        for c in range(C):
            for p in range(P):
                t[c, p] = d3[n, c, p] * y3[n, c, p] / s3[n, c, p]
            _inverse_powers(s3[n, c], scale[c], beta, one)
        acc = np.empty(P, x.dtype)
        for c in range(C):
            lo, hi = max(0, c - before), min(C - 1, c + after)
            acc[:] = t[lo]
            for i in range(lo + 1, hi + 1):
                for p in range(P):
                    acc[p] += t[i, p]
            for p in range(P):
                dx3[n, c, p] = d3[n, c, p] * scale[c, p] - coef * x3[n, c, p] * acc[p]


def lrn_backward(dout, x, y, s, size, a, beta):
    """Twin of tinyalex.layers.lrn.lrn_backward."""
    dout, x, y, s = (np.ascontiguousarray(a_) for a_ in (dout, x, y, s))  # read as planes
    dx = np.empty_like(dout)
    t = dout.dtype.type
    _lrn_backward(dout, x, y, s, dx, (size - 1) // 2, size // 2, t(a), t(beta), t(1))
    return dx

