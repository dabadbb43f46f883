"""Numba twins of kernels/winograd.py's transforms for F(2x2, 5x5) (the 5x5 stride-1 pad-2
convolution, conv2): 6x6 patches and frequency arrays, 36 products per tile where im2col
does 100 multiplications per 2x2 outputs' worth. kernels/winograd_numba.py runs them
batch-parallel exactly as its own F(2x2, 3x3) transforms; tests/test_winograd.py proves
each equal to its readable twin.

Each transform is two passes of a 1-D one (``_bt6``, ``_b6``, ``_at6``, ``_a6``, ``_g5``,
``_gt5``: winograd.F2_5's matrices written out, their zeros skipped), first down the
columns of the tile into a small scratch array, then along its rows.
"""

from __future__ import annotations

import numba
import numpy as np


# Integer multiples as sums: numba would turn 4 * (a float32) into a float64.
@numba.njit(inline="always")
def _x2(v):
    return v + v


@numba.njit(inline="always")
def _x4(v):
    return _x2(v + v)


@numba.njit(inline="always")
def _bt6(d):
    """B^T d: the input transform, one direction (6 -> 6)."""
    d0, d1, d2, d3, d4, d5 = d
    return (_x4(d0 - d2) - d2 + d4, d3 + d4 - _x4(d1 + d2), _x4(d1 - d2) + d4 - d3,
            _x2(d3 - d1) + d4 - d2, _x2(d1 - d3) + d4 - d2, _x4(d1 - d3) - d3 + d5)


@numba.njit(inline="always")
def _b6(v):
    """B v: the input gradient's transform, one direction (6 -> 6)."""
    v0, v1, v2, v3, v4, v5 = v
    return (_x4(v0), _x4(v2 - v1 + v5) + _x2(v4 - v3), -(_x4(v0 + v1 + v2) + v0 + v3 + v4),
            v1 - v2 + _x2(v3 - v4) - _x4(v5) - v5, v0 + v1 + v2 + v3 + v4, v5)


@numba.njit(inline="always")
def _at6(m):
    """A^T m: the output transform, one direction (6 -> 2)."""
    m0, m1, m2, m3, m4, m5 = m
    return m0 + m1 + m2 + m3 + m4, m1 - m2 + _x2(m3 - m4) + m5


@numba.njit(inline="always")
def _a6(u0, u1):
    """A u: the output gradient's transform, one direction (2 -> 6)."""
    return u0, u0 + u1, u0 - u1, u0 + _x2(u1), u0 - _x2(u1), u1


# The filter's transforms run once per step on the weights, not per tile: float64 constants.
@numba.njit(inline="always")
def _g5(w0, w1, w2, w3, w4):
    """G v: the filter transform, one direction (5 -> 6)."""
    even, odd = w0 + w2 + w4, w1 + w3
    e = w0 / 24 + w2 / 6 + w4 * (2 / 3)
    o = w1 / 12 + w3 / 3
    return w0 / 4, -(even + odd) / 6, (odd - even) / 6, e + o, e - o, w4


@numba.njit(inline="always")
def _gt5(u0, u1, u2, u3, u4, u5):
    """G^T v: the filter gradient's transform, one direction (6 -> 5)."""
    s12, d12 = (u1 + u2) / 6, (u2 - u1) / 6
    s34, d34 = u3 + u4, u3 - u4
    return (u0 / 4 - s12 + s34 / 24, d12 + d34 / 12, s34 / 6 - s12, d12 + d34 / 3,
            s34 * (2 / 3) - s12 + u5)


@numba.njit(nogil=True, cache=True)
def _filter(W, U):
    """U[6i + j, f, c] = (G g G^T)[i, j]: W (F, C, 5, 5) -> U (36, F, C)."""
    F, C = W.shape[0], W.shape[1]
    cols = np.empty((6, 5), dtype=U.dtype)  # G g
    for f in range(F):
        for c in range(C):
            g = W[f, c]
            for k in range(5):
                (cols[0, k], cols[1, k], cols[2, k], cols[3, k], cols[4, k],
                 cols[5, k]) = _g5(g[0, k], g[1, k], g[2, k], g[3, k], g[4, k])
            for i in range(6):
                (U[6 * i, f, c], U[6 * i + 1, f, c], U[6 * i + 2, f, c], U[6 * i + 3, f, c],
                 U[6 * i + 4, f, c], U[6 * i + 5, f, c]) = _g5(
                    cols[i, 0], cols[i, 1], cols[i, 2], cols[i, 3], cols[i, 4])


@numba.njit(nogil=True, cache=True)
def _filter_grad(dU, dW):
    """dW = G^T dU G per filter: dU (36, F, C) -> dW (F, C, 5, 5)."""
    F, C = dW.shape[0], dW.shape[1]
    cols = np.empty((5, 6), dtype=dW.dtype)  # G^T dU
    for f in range(F):
        for c in range(C):
            for j in range(6):
                (cols[0, j], cols[1, j], cols[2, j], cols[3, j], cols[4, j]) = _gt5(
                    dU[j, f, c], dU[6 + j, f, c], dU[12 + j, f, c], dU[18 + j, f, c],
                    dU[24 + j, f, c], dU[30 + j, f, c])
            for k in range(5):
                (dW[f, c, k, 0], dW[f, c, k, 1], dW[f, c, k, 2], dW[f, c, k, 3],
                 dW[f, c, k, 4]) = _gt5(cols[k, 0], cols[k, 1], cols[k, 2], cols[k, 3],
                                        cols[k, 4], cols[k, 5])


def winograd_filter(W):
    """Twin of winograd.filter_transform for 5x5 filters."""
    W = np.ascontiguousarray(W)
    U = np.empty((36,) + W.shape[:2], dtype=W.dtype)
    _filter(W, U)
    return U


def winograd_filter_grad(dU, dtype):
    """Twin of winograd.filter_gradient for F(2x2, 5x5)."""
    dU = np.ascontiguousarray(dU)
    dW = np.empty(dU.shape[1:] + (5, 5), dtype=dU.dtype)
    _filter_grad(dU, dW)
    return dW.astype(dtype, copy=False)


# The per-tile transforms below keep a tile's 36 values in scalars (tuples of six), not in
# a scratch array: an array's loads and stores kept them out of registers, and the output
# transform ran at 58 ns per (tile, filter) against 20 written out (2-core EPYC).

@numba.njit(inline="always")
def _column(a0, a1, a2, a3, a4, a5, i):
    """(a0[i], ..., a5[i]): the i-th entries of six tuples or arrays."""
    return a0[i], a1[i], a2[i], a3[i], a4[i], a5[i]


@numba.njit(inline="always")
def _put_row(V, k, c, t, v):
    """V[k + j, c, t] = v[j], j < 6: row k // 6 of a tile's 6x6."""
    V[k, c, t], V[k + 1, c, t], V[k + 2, c, t], V[k + 3, c, t], V[k + 4, c, t], \
        V[k + 5, c, t] = v


@numba.njit(inline="always")
def _put_column(V, j, c, t, v):
    """V[6i + j, c, t] = v[i], i < 6: column j of a tile's 6x6."""
    V[j, c, t], V[6 + j, c, t], V[12 + j, c, t], V[18 + j, c, t], V[24 + j, c, t], \
        V[30 + j, c, t] = v


@numba.njit(inline="always")
def _get_column(V, j, c, t):
    """(V[6i + j, c, t] for i < 6): column j of a tile's 6x6."""
    return (V[j, c, t], V[6 + j, c, t], V[12 + j, c, t], V[18 + j, c, t], V[24 + j, c, t],
            V[30 + j, c, t])


@numba.njit(nogil=True, cache=True)
def _input(x, V):
    """V[6i + j, c, t] = (B^T d_t B)[i, j]: x (n, C, H, W) -> V (36, C, n*th*tw)."""
    N, C, H, W = x.shape
    th, tw = (H + 1) // 2, (W + 1) // 2
    plane = np.zeros((2 * th + 4, 2 * tw + 4), dtype=x.dtype)  # pad 2, zeros stay
    for n in range(N):
        for c in range(C):
            for r in range(H):
                for q in range(W):
                    plane[r + 2, q + 2] = x[n, c, r, q]
            t = n * th * tw
            for ty in range(th):
                p0, p1, p2 = plane[2 * ty], plane[2 * ty + 1], plane[2 * ty + 2]
                p3, p4, p5 = plane[2 * ty + 3], plane[2 * ty + 4], plane[2 * ty + 5]
                for tx in range(tw):
                    q = 2 * tx
                    # B^T down each column of the patch, then along each row of the result
                    d0 = _bt6(_column(p0, p1, p2, p3, p4, p5, q))
                    d1 = _bt6(_column(p0, p1, p2, p3, p4, p5, q + 1))
                    d2 = _bt6(_column(p0, p1, p2, p3, p4, p5, q + 2))
                    d3 = _bt6(_column(p0, p1, p2, p3, p4, p5, q + 3))
                    d4 = _bt6(_column(p0, p1, p2, p3, p4, p5, q + 4))
                    d5 = _bt6(_column(p0, p1, p2, p3, p4, p5, q + 5))
                    for i in range(6):
                        _put_row(V, 6 * i, c, t, _bt6(_column(d0, d1, d2, d3, d4, d5, i)))
                    t += 1


@numba.njit(nogil=True, cache=True)
def _output(M, out, b):
    """out[n, f] = A^T m_t A per tile, cropped, plus b[f]: M (36, F, n*th*tw) -> out
    (n, F, H, W)."""
    N, F, H, W = out.shape
    th, tw = (H + 1) // 2, (W + 1) // 2
    for n in range(N):
        for f in range(F):
            bias = b[f]
            t = n * th * tw
            for ty in range(th):
                for tx in range(tw):
                    # A^T down each column of m, then along each of the two rows
                    a0, b0 = _at6(_get_column(M, 0, f, t))
                    a1, b1 = _at6(_get_column(M, 1, f, t))
                    a2, b2 = _at6(_get_column(M, 2, f, t))
                    a3, b3 = _at6(_get_column(M, 3, f, t))
                    a4, b4 = _at6(_get_column(M, 4, f, t))
                    a5, b5 = _at6(_get_column(M, 5, f, t))
                    y00, y01 = _at6((a0, a1, a2, a3, a4, a5))
                    y10, y11 = _at6((b0, b1, b2, b3, b4, b5))
                    r, q = 2 * ty, 2 * tx
                    out[n, f, r, q] = y00 + bias
                    if q + 1 < W:
                        out[n, f, r, q + 1] = y01 + bias
                    if r + 1 < H:
                        out[n, f, r + 1, q] = y10 + bias
                        if q + 1 < W:
                            out[n, f, r + 1, q + 1] = y11 + bias
                    t += 1


@numba.njit(nogil=True, cache=True)
def _output_grad(dout, Z):
    """Z[6i + j, f, t] = (A dY_t A^T)[i, j], dY_t the 2x2 tile (zeros past the edge):
    dout (n, F, H, W) -> Z (36, F, n*th*tw)."""
    N, F, H, W = dout.shape
    th, tw = (H + 1) // 2, (W + 1) // 2
    zero = dout.dtype.type(0)
    for n in range(N):
        for f in range(F):
            t = n * th * tw
            for ty in range(th):
                for tx in range(tw):
                    r, q = 2 * ty, 2 * tx
                    g00 = dout[n, f, r, q]
                    g01 = dout[n, f, r, q + 1] if q + 1 < W else zero
                    g10 = dout[n, f, r + 1, q] if r + 1 < H else zero
                    g11 = dout[n, f, r + 1, q + 1] if r + 1 < H and q + 1 < W else zero
                    top = _a6(g00, g01)  # A along each row of dY, then down each column
                    bottom = _a6(g10, g11)
                    _put_column(Z, 0, f, t, _a6(top[0], bottom[0]))
                    _put_column(Z, 1, f, t, _a6(top[1], bottom[1]))
                    _put_column(Z, 2, f, t, _a6(top[2], bottom[2]))
                    _put_column(Z, 3, f, t, _a6(top[3], bottom[3]))
                    _put_column(Z, 4, f, t, _a6(top[4], bottom[4]))
                    _put_column(Z, 5, f, t, _a6(top[5], bottom[5]))
                    t += 1


@numba.njit(nogil=True, cache=True)
def _input_grad(dV, dx):
    """dx[n, c] = the patches dd_t = B dV_t B^T added back where they were read:
    dV (36, C, n*th*tw) -> dx (n, C, H, W) (overwritten)."""
    N, C, H, W = dx.shape
    th, tw = (H + 1) // 2, (W + 1) // 2
    plane = np.empty((2 * th + 4, 2 * tw + 4), dtype=dx.dtype)
    for n in range(N):
        for c in range(C):
            plane[:] = 0
            t = n * th * tw
            for ty in range(th):
                r = 2 * ty
                for tx in range(tw):
                    q = 2 * tx
                    # B down each column of dV, then along each row of the result
                    e0 = _b6(_get_column(dV, 0, c, t))
                    e1 = _b6(_get_column(dV, 1, c, t))
                    e2 = _b6(_get_column(dV, 2, c, t))
                    e3 = _b6(_get_column(dV, 3, c, t))
                    e4 = _b6(_get_column(dV, 4, c, t))
                    e5 = _b6(_get_column(dV, 5, c, t))
                    for i in range(6):
                        row = _b6(_column(e0, e1, e2, e3, e4, e5, i))
                        plane[r + i, q] += row[0]
                        plane[r + i, q + 1] += row[1]
                        plane[r + i, q + 2] += row[2]
                        plane[r + i, q + 3] += row[3]
                        plane[r + i, q + 4] += row[4]
                        plane[r + i, q + 5] += row[5]
                    t += 1
            for r in range(H):
                for q in range(W):
                    dx[n, c, r, q] = plane[r + 2, q + 2]
