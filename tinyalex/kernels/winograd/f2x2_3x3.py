"""F(2x2, 3x3) (``readable.F2_3``): 2x2 output tiles from 4x4 patches, 16 products per tile,
2.25x fewer multiplications than im2col. Its transforms are written out for one 4x4 tile
at a time on scalars (the tile fits the registers), in NCHW planes: the frequency arrays
are (16, C or F, tiles), as readable.py's. The paper net's conv1 runs it on its
space-to-depth maps (kernels/space_to_depth_numba.py reads x into ``plane_to_tiles``);
tests/test_winograd.py proves each transform equal to its readable twin.
"""

from __future__ import annotations

import numba
import numpy as np

from ..jit import U
from . import readable
from .transforms import Transforms


@numba.njit(inline="always")
def _bt(d0, d1, d2, d3):
    """B^T v for a 4-vector (the input transform, one direction)."""
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3


@numba.njit(inline="always")
def _b(v0, v1, v2, v3):
    """B v (the input gradient's transform, one direction)."""
    return v0, v1 - v2 + v3, v1 + v2 - v0, -v3


@numba.njit(inline="always")
def _at(m0, m1, m2, m3):
    """A^T v: 4 -> 2 (the output transform, one direction)."""
    return m0 + m1 + m2, m1 - m2 - m3


@numba.njit(inline="always")
def _a(u0, u1):
    """A u: 2 -> 4 (the output gradient's transform, one direction)."""
    return u0, u0 + u1, u0 - u1, -u1


@numba.njit(inline="always")
def _g_rows(s0, s1, s2, o0, o1, o2, o3, n):
    """o = G s on rows: 3 -> 4 (the filter transform, one direction, n channels at once)."""
    for e in range(U(n)):
        o0[e] = s0[e]
    for e in range(U(n)):
        h = 0.5 * (s0[e] + s2[e])
        o1[e] = h + 0.5 * s1[e]
        o2[e] = h - 0.5 * s1[e]
    for e in range(U(n)):
        o3[e] = s2[e]


@numba.njit(inline="always")
def _gt_rows(u0, u1, u2, u3, o0, o1, o2, n):
    """o = G^T u on rows: 4 -> 3 (the filter gradient's transform, one direction)."""
    for e in range(U(n)):
        h = 0.5 * (u1[e] + u2[e])
        o0[e] = u0[e] + h
        o1[e] = 0.5 * (u1[e] - u2[e])
        o2[e] = h + u3[e]


# The filter transforms run once a call (forward, and again in backward), before the tasks:
# a filter's nine taps are first laid out as nine rows of C channels, so that each 1-D pass
# is a loop over channels that LLVM vectorises. The filters are split among the workers
# (Transforms.filter), each kernel call doing filters f0..f1; not numba's parallel layer,
# which does not survive a fork (a data-loader worker can still run these).
@numba.njit(nogil=True, cache=True)
def filter_transform(W, U, f0, f1):
    """U[4i + j, f, c] = (G g G^T)[i, j]: W (F, C, 3, 3) -> U (16, F, C), filters f0..f1."""
    C = W.shape[1]
    taps = np.empty((9, C), dtype=U.dtype)     # g[a, b] of every channel: row 3a + b
    half = np.empty((12, C), dtype=U.dtype)    # G g: row 3i + b
    for f in range(f0, f1):
        taps[:] = W[f].reshape(C, 9).T
        for b in range(3):  # G down each column of g
            _g_rows(taps[b], taps[3 + b], taps[6 + b],
                    half[b], half[3 + b], half[6 + b], half[9 + b], C)
        for i in range(4):  # then along each row
            _g_rows(half[3 * i], half[3 * i + 1], half[3 * i + 2],
                    U[4 * i, f], U[4 * i + 1, f], U[4 * i + 2, f], U[4 * i + 3, f], C)


@numba.njit(nogil=True, cache=True)
def filter_gradient(dU, dW, f0, f1):
    """dW = G^T dU G per filter: dU (16, F, C) -> dW (F, C, 3, 3), filters f0..f1."""
    C = dW.shape[1]
    half = np.empty((12, C), dtype=dW.dtype)   # G^T dU: row 4a + j
    taps = np.empty((9, C), dtype=dW.dtype)    # dW[a, b]: row 3a + b
    for f in range(f0, f1):
        for j in range(4):  # G^T down each column of dU
            _gt_rows(dU[j, f], dU[4 + j, f], dU[8 + j, f], dU[12 + j, f],
                     half[j], half[4 + j], half[8 + j], C)
        for a in range(3):  # then along each row
            _gt_rows(half[4 * a], half[4 * a + 1], half[4 * a + 2], half[4 * a + 3],
                     taps[3 * a], taps[3 * a + 1], taps[3 * a + 2], C)
        dW[f].reshape(C, 9)[:] = taps.T


@numba.njit(inline="always")
def plane_to_tiles(plane, V, c, t, th, tw):
    """V[:, c, t...] for the th x tw tiles of one padded plane, from tile number t on."""
    for ty in range(th):
        r = 2 * ty
        for tx in range(tw):
            q = 2 * tx
            # rows of B^T d, then B^T applied to each of their columns
            a0, a1, a2, a3 = _bt(plane[r, q], plane[r + 1, q], plane[r + 2, q],
                                 plane[r + 3, q])
            b0, b1, b2, b3 = _bt(plane[r, q + 1], plane[r + 1, q + 1],
                                 plane[r + 2, q + 1], plane[r + 3, q + 1])
            c0, c1, c2, c3 = _bt(plane[r, q + 2], plane[r + 1, q + 2],
                                 plane[r + 2, q + 2], plane[r + 3, q + 2])
            e0, e1, e2, e3 = _bt(plane[r, q + 3], plane[r + 1, q + 3],
                                 plane[r + 2, q + 3], plane[r + 3, q + 3])
            V[0, c, t], V[1, c, t], V[2, c, t], V[3, c, t] = _bt(a0, b0, c0, e0)
            V[4, c, t], V[5, c, t], V[6, c, t], V[7, c, t] = _bt(a1, b1, c1, e1)
            V[8, c, t], V[9, c, t], V[10, c, t], V[11, c, t] = _bt(a2, b2, c2, e2)
            V[12, c, t], V[13, c, t], V[14, c, t], V[15, c, t] = _bt(a3, b3, c3, e3)
            t += 1


@numba.njit(nogil=True, cache=True)
def input_transform(x, V):
    """V[4i + j, c, t] = (B^T d_t B)[i, j]: x (n, C, H, W) -> V (16, C, n*th*tw)."""
    N, C, H, W = x.shape
    th, tw = (H + 1) // 2, (W + 1) // 2
    plane = np.zeros((2 * th + 2, 2 * tw + 2), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for r in range(H):
                for q in range(W):
                    plane[r + 1, q + 1] = x[n, c, r, q]
            plane_to_tiles(plane, V, c, n * th * tw, th, tw)


@numba.njit(nogil=True, cache=True)
def output_transform(M, out, b):
    """out[n, f] = A^T m_t A per tile, cropped, plus b[f]: M (16, F, n*th*tw) -> out
    (n, F, H, W)."""
    N, F, H, W = out.shape
    th, tw = (H + 1) // 2, (W + 1) // 2
    for n in range(N):
        for f in range(F):
            bias = b[f]
            t = n * th * tw
            for ty in range(th):
                for tx in range(tw):
                    p0, p1 = _at(M[0, f, t], M[4, f, t], M[8, f, t], M[12, f, t])
                    q0, q1 = _at(M[1, f, t], M[5, f, t], M[9, f, t], M[13, f, t])
                    s0, s1 = _at(M[2, f, t], M[6, f, t], M[10, f, t], M[14, f, t])
                    u0, u1 = _at(M[3, f, t], M[7, f, t], M[11, f, t], M[15, f, t])
                    y00, y01 = _at(p0, q0, s0, u0)
                    y10, y11 = _at(p1, q1, s1, u1)
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
def output_gradient_transform(dout, Z):
    """Z[4i + j, f, t] = (A dY_t A^T)[i, j], dY_t the 2x2 tile (zeros past the edge):
    dout (n, F, H, W) -> Z (16, F, n*th*tw)."""
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
                    a0, a1, a2, a3 = _a(g00, g10)  # A applied to each column of dY
                    b0, b1, b2, b3 = _a(g01, g11)
                    Z[0, f, t], Z[1, f, t], Z[2, f, t], Z[3, f, t] = _a(a0, b0)
                    Z[4, f, t], Z[5, f, t], Z[6, f, t], Z[7, f, t] = _a(a1, b1)
                    Z[8, f, t], Z[9, f, t], Z[10, f, t], Z[11, f, t] = _a(a2, b2)
                    Z[12, f, t], Z[13, f, t], Z[14, f, t], Z[15, f, t] = _a(a3, b3)
                    t += 1


@numba.njit(inline="always")
def _add_row(plane, r, q, w):
    plane[r, q] += w[0]
    plane[r, q + 1] += w[1]
    plane[r, q + 2] += w[2]
    plane[r, q + 3] += w[3]


@numba.njit(inline="always")
def tiles_to_plane(dV, c, t, th, tw, plane):
    """The adjoint of plane_to_tiles: dd_t = B dV_t B^T of the th x tw tiles from tile
    number t on, added into the (zeroed) padded plane where they were read."""
    for ty in range(th):
        r = 2 * ty
        for tx in range(tw):
            q = 2 * tx
            a0, a1, a2, a3 = _b(dV[0, c, t], dV[4, c, t], dV[8, c, t], dV[12, c, t])
            b0, b1, b2, b3 = _b(dV[1, c, t], dV[5, c, t], dV[9, c, t], dV[13, c, t])
            c0, c1, c2, c3 = _b(dV[2, c, t], dV[6, c, t], dV[10, c, t], dV[14, c, t])
            e0, e1, e2, e3 = _b(dV[3, c, t], dV[7, c, t], dV[11, c, t], dV[15, c, t])
            _add_row(plane, r, q, _b(a0, b0, c0, e0))
            _add_row(plane, r + 1, q, _b(a1, b1, c1, e1))
            _add_row(plane, r + 2, q, _b(a2, b2, c2, e2))
            _add_row(plane, r + 3, q, _b(a3, b3, c3, e3))
            t += 1


@numba.njit(nogil=True, cache=True)
def input_gradient_transform(dV, dx):
    """dx[n, c] = the patches dd_t = B dV_t B^T added back where they were read:
    dV (16, C, n*th*tw) -> dx (n, C, H, W) (overwritten)."""
    N, C, H, W = dx.shape
    th, tw = (H + 1) // 2, (W + 1) // 2
    plane = np.empty((2 * th + 2, 2 * tw + 2), dtype=dx.dtype)
    for n in range(N):
        for c in range(C):
            plane[:] = 0
            tiles_to_plane(dV, c, n * th * tw, th, tw, plane)
            for r in range(H):
                for q in range(W):
                    dx[n, c, r, q] = plane[r + 1, q + 1]

TRANSFORMS = Transforms(readable.F2_3, filter_transform, filter_gradient, input_transform,
                        input_gradient_transform, output_transform, output_gradient_transform)
