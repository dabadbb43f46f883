"""F(5x5, 3x3) (``readable.F5_3``) for the 3x3 stride-1 pad-1 convolutions on larger maps
(the paper net's conv3-5, 13x13): 5x5 output tiles from 7x7 patches, 49 products per 25
outputs where F(3x3, 3x3) does 25 per 9. On 13x13 maps both hang over the edge by two, and
F(5x5, 3x3) does 1.42x fewer multiplications; on 6x6 maps 1.96x more, so those keep F(3x3,
3x3) (batch.py picks by the map's size).

It has F(3x3, 5x5)'s seven points, and so its B^T: the input transforms are transforms.py's
seven-point ones, with 5x5 tiles and pad 1. The rest is written out as F(3x3, 5x5)'s,
channels-last, on rows of C (or F) channels; A^T is integer (up to 16, the points +-1/2
scaled). The frequency arrays are (49, G, tiles, C/G or F/G). tests/test_winograd.py proves
each transform equal to its readable twin.
"""

from __future__ import annotations

import numba
import numpy as np

from ..jit import U
from . import readable
from .transforms import Transforms, from_hwc, input7, input7_grad, to_hwc


# The filter's transforms run once a call on the weights: float64 constants.
@numba.njit(inline="always")
def _g_rows(w0, w1, w2, o0, o1, o2, o3, o4, o5, o6, n):
    """o = G w on rows: the filter transform, one direction (3 -> 7), n channels."""
    for e in range(U(n)):
        o0[e] = w0[e] / 2
        o1[e] = (w0[e] + w1[e] + w2[e]) / 6
        o2[e] = (w0[e] - w1[e] + w2[e]) / 18
        o3[e] = w0[e] / 18 + w1[e] / 36 + w2[e] / 72
        o4[e] = w0[e] / 30 - w1[e] / 60 + w2[e] / 120
        o5[e] = w0[e] / 90 + w1[e] / 45 + w2[e] * (2 / 45)
        o6[e] = w2[e] / 4


@numba.njit(inline="always")
def _gt_rows(u0, u1, u2, u3, u4, u5, u6, o0, o1, o2, n):
    """o = G^T u on rows: the filter gradient's transform, one direction (7 -> 3)."""
    for e in range(U(n)):
        o0[e] = u0[e] / 2 + u1[e] / 6 + u2[e] / 18 + u3[e] / 18 + u4[e] / 30 + u5[e] / 90
        o1[e] = u1[e] / 6 - u2[e] / 18 + u3[e] / 36 - u4[e] / 60 + u5[e] / 45
        o2[e] = (u1[e] / 6 + u2[e] / 18 + u3[e] / 72 + u4[e] / 120 + u5[e] * (2 / 45)
                 + u6[e] / 4)


@numba.njit(nogil=True, cache=True)
def filter_transform(W, U, f0, f1):
    """U[7i + j, f, c] = (G g G^T)[i, j]: W (F, C, 3, 3) -> U (49, F, C), filters f0..f1."""
    C = W.shape[1]
    taps = np.empty((9, C), dtype=U.dtype)     # g[a, b] of every channel: row 3a + b
    half = np.empty((21, C), dtype=U.dtype)    # G g: row 3i + b
    for f in range(f0, f1):
        taps[:] = W[f].reshape(C, 9).T
        for b in range(3):  # G down each column of g
            _g_rows(taps[b], taps[3 + b], taps[6 + b], half[b], half[3 + b], half[6 + b],
                    half[9 + b], half[12 + b], half[15 + b], half[18 + b], C)
        for i in range(7):  # then along each row
            h = 3 * i
            _g_rows(half[h], half[h + 1], half[h + 2],
                    U[7 * i, f], U[7 * i + 1, f], U[7 * i + 2, f], U[7 * i + 3, f],
                    U[7 * i + 4, f], U[7 * i + 5, f], U[7 * i + 6, f], C)


@numba.njit(nogil=True, cache=True)
def filter_gradient(dU, dW, f0, f1):
    """dW = G^T dU G per filter: dU (49, F, C) -> dW (F, C, 3, 3), filters f0..f1."""
    C = dW.shape[1]
    half = np.empty((21, C), dtype=dW.dtype)   # G^T dU: row 7a + j
    taps = np.empty((9, C), dtype=dW.dtype)    # dW[a, b]: row 3a + b
    for f in range(f0, f1):
        for j in range(7):  # G^T down each column of dU
            _gt_rows(dU[j, f], dU[7 + j, f], dU[14 + j, f], dU[21 + j, f], dU[28 + j, f],
                     dU[35 + j, f], dU[42 + j, f], half[j], half[7 + j], half[14 + j], C)
        for a in range(3):  # then along each row
            h = 7 * a
            _gt_rows(half[h], half[h + 1], half[h + 2], half[h + 3], half[h + 4],
                     half[h + 5], half[h + 6], taps[3 * a], taps[3 * a + 1], taps[3 * a + 2], C)
        dW[f].reshape(C, 9)[:] = taps.T


@numba.njit(inline="always")
def _at_rows(m0, m1, m2, m3, m4, m5, m6, y0, y1, y2, y3, y4, n):
    """y = A^T m on rows: 7 -> 5 (the output transform)."""
    k = y0.dtype.type
    for e in range(U(n)):
        y0[e] = m0[e] + m1[e] + m2[e] + k(16) * (m3[e] + m4[e]) + m5[e]
    for e in range(U(n)):
        y1[e] = m1[e] - m2[e] + k(8) * (m3[e] - m4[e]) + k(2) * m5[e]
    for e in range(U(n)):
        y2[e] = m1[e] + m2[e] + k(4) * (m3[e] + m4[e] + m5[e])
    for e in range(U(n)):
        y3[e] = m1[e] - m2[e] + k(2) * (m3[e] - m4[e]) + k(8) * m5[e]
    for e in range(U(n)):
        y4[e] = m1[e] + m2[e] + m3[e] + m4[e] + k(16) * m5[e] + m6[e]


@numba.njit(inline="always")
def _a_rows(u0, u1, u2, u3, u4, o0, o1, o2, o3, o4, o5, o6, n):
    """o = A u on rows: 5 -> 7 (the output gradient's transform)."""
    k = o0.dtype.type
    for e in range(U(n)):
        o0[e] = u0[e]
    for e in range(U(n)):
        o1[e] = u0[e] + u1[e] + u2[e] + u3[e] + u4[e]
    for e in range(U(n)):
        o2[e] = u0[e] - u1[e] + u2[e] - u3[e] + u4[e]
    for e in range(U(n)):
        o3[e] = k(16) * u0[e] + k(8) * u1[e] + k(4) * u2[e] + k(2) * u3[e] + u4[e]
    for e in range(U(n)):
        o4[e] = k(16) * u0[e] - k(8) * u1[e] + k(4) * u2[e] - k(2) * u3[e] + u4[e]
    for e in range(U(n)):
        o5[e] = u0[e] + k(2) * u1[e] + k(4) * u2[e] + k(8) * u3[e] + k(16) * u4[e]
    for e in range(U(n)):
        o6[e] = u4[e]


def input_transform(x, VT):
    """VT[7i + j, g, t, c] = (B^T d_t B)[i, j]: x (n, C, H, W) -> VT (49, G, n*th*tw,
    C/G), by the seven-point transform with 5x5 tiles, pad 1."""
    input7(x, VT, 5, 1)


def input_gradient_transform(dVT, dx):
    """The adjoint of input_transform: dVT (49, G, n*th*tw, C/G) -> dx (n, C, H, W) (overwritten)."""
    input7_grad(dVT, dx, 5, 1)


@numba.njit(nogil=True, cache=True)
def output_transform(MT, out, b):
    """out[n, f] = A^T m_t A per tile, cropped, plus b[f]: MT (49, G, n*th*tw, F/G) -> out
    (n, F, H, W)."""
    N, F, H, W = out.shape
    G, Fg = MT.shape[1], MT.shape[3]
    th, tw = (H + 4) // 5, (W + 4) // 5
    hwf = np.empty((5 * th, 5 * tw * F), dtype=out.dtype)
    half = np.empty((5, 7, Fg), dtype=out.dtype)  # A^T m: (p, j, f)
    for n in range(N):
        t = n * th * tw
        for ty in range(th):
            for tx in range(tw):
                for g in range(G):
                    for j in range(7):  # A^T down each column of m
                        _at_rows(MT[j, g, t], MT[7 + j, g, t], MT[14 + j, g, t],
                                 MT[21 + j, g, t], MT[28 + j, g, t], MT[35 + j, g, t],
                                 MT[42 + j, g, t], half[0, j], half[1, j], half[2, j],
                                 half[3, j], half[4, j], Fg)
                    for p in range(5):  # then along each of the five rows
                        row = hwf[5 * ty + p]
                        a = 5 * tx * F + g * Fg
                        h = half[p]
                        _at_rows(h[0], h[1], h[2], h[3], h[4], h[5], h[6], row[a:a + Fg],
                                 row[a + F:a + F + Fg], row[a + 2 * F:a + 2 * F + Fg],
                                 row[a + 3 * F:a + 3 * F + Fg], row[a + 4 * F:a + 4 * F + Fg],
                                 Fg)
                t += 1
        from_hwc(hwf, out[n], 0, b)


@numba.njit(nogil=True, cache=True)
def output_gradient_transform(dout, ZT):
    """ZT[7i + j, g, t, f] = (A dY_t A^T)[i, j] of filter g F/G + f, dY_t the 5x5 tile
    (zeros past the edge): dout (n, F, H, W) -> ZT (49, G, n*th*tw, F/G)."""
    N, F, H, W = dout.shape
    G, Fg = ZT.shape[1], ZT.shape[3]
    th, tw = (H + 4) // 5, (W + 4) // 5
    hwf = np.zeros((5 * th, 5 * tw * F), dtype=dout.dtype)  # zeros past the edge stay
    rows = np.empty((5, 7, Fg), dtype=dout.dtype)  # A along each row of dY: (p, j, f)
    for n in range(N):
        to_hwc(dout[n], hwf, 0)
        t = n * th * tw
        for ty in range(th):
            for tx in range(tw):
                for g in range(G):
                    a = 5 * tx * F + g * Fg
                    for p in range(5):
                        row = hwf[5 * ty + p]
                        rp = rows[p]
                        _a_rows(row[a:a + Fg], row[a + F:a + F + Fg],
                                row[a + 2 * F:a + 2 * F + Fg], row[a + 3 * F:a + 3 * F + Fg],
                                row[a + 4 * F:a + 4 * F + Fg],
                                rp[0], rp[1], rp[2], rp[3], rp[4], rp[5], rp[6], Fg)
                    for j in range(7):  # then down each column
                        _a_rows(rows[0, j], rows[1, j], rows[2, j], rows[3, j], rows[4, j],
                                ZT[j, g, t], ZT[7 + j, g, t], ZT[14 + j, g, t],
                                ZT[21 + j, g, t], ZT[28 + j, g, t], ZT[35 + j, g, t],
                                ZT[42 + j, g, t], Fg)
                t += 1

TRANSFORMS = Transforms(readable.F5_3, filter_transform, filter_gradient, input_transform,
                        input_gradient_transform, output_transform, output_gradient_transform,
                        channels_last=True)
