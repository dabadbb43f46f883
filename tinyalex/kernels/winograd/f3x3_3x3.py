"""F(3x3, 3x3) (``readable.F3_3``) for the 3x3 stride-1 pad-1 convolutions on small maps
(the small net's conv3-5, 6x6): 3x3 output tiles from 5x5 patches, 25 products per tile
where F(2x2, 3x3) does 16 per 2x2 tile: 1.44x fewer multiplications on 6x6 maps (2x2 tiles
of 3x3 fit them exactly). batch.py takes it where it does the fewest multiplications.

Channels-last, as F(3x3, 5x5)'s (transforms.py says how and why): every 1-D pass is a few
loops over the C (or F) channels of a row, readable.F3_3's matrices written out and their
zeros skipped. The frequency arrays are (25, G, tiles, C/G or F/G). tests/test_winograd.py
proves each transform equal to its readable twin.
"""

from __future__ import annotations

import numba
import numpy as np

from ..jit import U
from . import readable
from .transforms import Transforms, from_hwc, to_hwc


# The filter's transforms run once a call on the weights: float64 constants.
@numba.njit(inline="always")
def _g_rows(w0, w1, w2, o0, o1, o2, o3, o4, n):
    """o = G w on rows: the filter transform, one direction (3 -> 5), n channels."""
    for e in range(U(n)):
        o0[e] = w0[e] / 2
        o1[e] = (w0[e] + w1[e] + w2[e]) / 2
        o2[e] = (w0[e] - w1[e] + w2[e]) / 6
        o3[e] = w0[e] / 6 + w1[e] / 3 + w2[e] * (2 / 3)
        o4[e] = w2[e]


@numba.njit(inline="always")
def _gt_rows(u0, u1, u2, u3, u4, o0, o1, o2, n):
    """o = G^T u on rows: the filter gradient's transform, one direction (5 -> 3)."""
    for e in range(U(n)):
        o0[e] = u0[e] / 2 + u1[e] / 2 + u2[e] / 6 + u3[e] / 6
        o1[e] = u1[e] / 2 - u2[e] / 6 + u3[e] / 3
        o2[e] = u1[e] / 2 + u2[e] / 6 + u3[e] * (2 / 3) + u4[e]


@numba.njit(nogil=True, cache=True)
def filter_transform(W, U, f0, f1):
    """U[5i + j, f, c] = (G g G^T)[i, j]: W (F, C, 3, 3) -> U (25, F, C), filters f0..f1."""
    C = W.shape[1]
    taps = np.empty((9, C), dtype=U.dtype)     # g[a, b] of every channel: row 3a + b
    half = np.empty((15, C), dtype=U.dtype)    # G g: row 3i + b
    for f in range(f0, f1):
        taps[:] = W[f].reshape(C, 9).T
        for b in range(3):  # G down each column of g
            _g_rows(taps[b], taps[3 + b], taps[6 + b],
                    half[b], half[3 + b], half[6 + b], half[9 + b], half[12 + b], C)
        for i in range(5):  # then along each row
            h = 3 * i
            _g_rows(half[h], half[h + 1], half[h + 2],
                    U[5 * i, f], U[5 * i + 1, f], U[5 * i + 2, f], U[5 * i + 3, f],
                    U[5 * i + 4, f], C)


@numba.njit(nogil=True, cache=True)
def filter_gradient(dU, dW, f0, f1):
    """dW = G^T dU G per filter: dU (25, F, C) -> dW (F, C, 3, 3), filters f0..f1."""
    C = dW.shape[1]
    half = np.empty((15, C), dtype=dW.dtype)   # G^T dU: row 5a + j
    taps = np.empty((9, C), dtype=dW.dtype)    # dW[a, b]: row 3a + b
    for f in range(f0, f1):
        for j in range(5):  # G^T down each column of dU
            _gt_rows(dU[j, f], dU[5 + j, f], dU[10 + j, f], dU[15 + j, f], dU[20 + j, f],
                     half[j], half[5 + j], half[10 + j], C)
        for a in range(3):  # then along each row
            h = 5 * a
            _gt_rows(half[h], half[h + 1], half[h + 2], half[h + 3], half[h + 4],
                     taps[3 * a], taps[3 * a + 1], taps[3 * a + 2], C)
        dW[f].reshape(C, 9)[:] = taps.T


@numba.njit(inline="always")
def _bt_rows(s0, s1, s2, s3, s4, o0, o1, o2, o3, o4, n):
    """o = B^T s on rows: o_k[e] = sum_i B^T[k, i] s_i[e], e < n (the input transform)."""
    k = o0.dtype.type
    for e in range(U(n)):
        o0[e] = k(2) * (s0[e] - s2[e]) - s1[e] + s3[e]
    for e in range(U(n)):
        o1[e] = k(2) * s1[e] + s2[e] - s3[e]
    for e in range(U(n)):
        o2[e] = k(2) * (s2[e] - s1[e]) + s2[e] - s3[e]
    for e in range(U(n)):
        o3[e] = s3[e] - s1[e]
    for e in range(U(n)):
        o4[e] = k(2) * (s1[e] - s3[e]) - s2[e] + s4[e]


@numba.njit(inline="always")
def _b_rows(v0, v1, v2, v3, v4, o0, o1, o2, o3, o4, n, add):
    """o = B v on rows (the input gradient's transform), or o += B v when add."""
    k = o0.dtype.type
    for e in range(U(n)):
        w = k(2) * v0[e]
        o0[e] = o0[e] + w if add else w
    for e in range(U(n)):
        w = k(2) * (v1[e] - v2[e] + v4[e]) - v0[e] - v3[e]
        o1[e] = o1[e] + w if add else w
    for e in range(U(n)):
        w = k(2) * (v2[e] - v0[e]) + v1[e] + v2[e] - v4[e]
        o2[e] = o2[e] + w if add else w
    for e in range(U(n)):
        w = v0[e] - v1[e] - v2[e] + v3[e] - k(2) * v4[e]
        o3[e] = o3[e] + w if add else w
    for e in range(U(n)):
        o4[e] = o4[e] + v4[e] if add else v4[e]


@numba.njit(inline="always")
def _at_rows(m0, m1, m2, m3, m4, y0, y1, y2, n):
    """y = A^T m on rows: 5 -> 3 (the output transform)."""
    k = y0.dtype.type
    for e in range(U(n)):
        y0[e] = m0[e] + m1[e] + m2[e] + m3[e]
    for e in range(U(n)):
        y1[e] = m1[e] - m2[e] + k(2) * m3[e]
    for e in range(U(n)):
        y2[e] = m1[e] + m2[e] + k(4) * m3[e] + m4[e]


@numba.njit(inline="always")
def _a_rows(u0, u1, u2, o0, o1, o2, o3, o4, n):
    """o = A u on rows: 3 -> 5 (the output gradient's transform)."""
    k = o0.dtype.type
    for e in range(U(n)):
        o0[e] = u0[e]
    for e in range(U(n)):
        o1[e] = u0[e] + u1[e] + u2[e]
    for e in range(U(n)):
        o2[e] = u0[e] - u1[e] + u2[e]
    for e in range(U(n)):
        o3[e] = u0[e] + k(2) * u1[e] + k(4) * u2[e]
    for e in range(U(n)):
        o4[e] = u2[e]


@numba.njit(nogil=True, cache=True)
def input_transform(x, VT):
    """VT[5i + j, g, t, c] = (B^T d_t B)[i, j] of channel g C/G + c: x (n, C, H, W) ->
    VT (25, G, n*th*tw, C/G)."""
    N, C, H, W = x.shape
    G, Cg = VT.shape[1], VT.shape[3]
    th, tw = (H + 2) // 3, (W + 2) // 3
    hwc = np.zeros((3 * th + 2, (3 * tw + 2) * C), dtype=x.dtype)  # pad 1, zeros stay
    half = np.empty((5, 5 * C), dtype=x.dtype)  # B^T d: (k, (j, c))
    for n in range(N):
        to_hwc(x[n], hwc, 1)
        t = n * th * tw
        for ty in range(th):
            r = 3 * ty
            for tx in range(tw):
                a, z = 3 * tx * C, (3 * tx + 5) * C
                # B^T down the patch's columns: its five rows of 5C at once
                _bt_rows(hwc[r, a:z], hwc[r + 1, a:z], hwc[r + 2, a:z], hwc[r + 3, a:z],
                         hwc[r + 4, a:z], half[0], half[1], half[2], half[3], half[4], 5 * C)
                # then along each row of the result: its five pixels' channels, per group
                for k in range(5):
                    h = half[k]
                    for g in range(G):
                        o = g * Cg
                        _bt_rows(h[o:o + Cg], h[C + o:C + o + Cg], h[2 * C + o:2 * C + o + Cg],
                                 h[3 * C + o:3 * C + o + Cg], h[4 * C + o:4 * C + o + Cg],
                                 VT[5 * k, g, t], VT[5 * k + 1, g, t], VT[5 * k + 2, g, t],
                                 VT[5 * k + 3, g, t], VT[5 * k + 4, g, t], Cg)
                t += 1


@numba.njit(nogil=True, cache=True)
def output_transform(MT, out, b):
    """out[n, f] = A^T m_t A per tile, cropped, plus b[f]: MT (25, G, n*th*tw, F/G) -> out
    (n, F, H, W)."""
    N, F, H, W = out.shape
    G, Fg = MT.shape[1], MT.shape[3]
    th, tw = (H + 2) // 3, (W + 2) // 3
    hwf = np.empty((3 * th, 3 * tw * F), dtype=out.dtype)
    half = np.empty((3, 5, Fg), dtype=out.dtype)  # A^T m: (p, j, f)
    for n in range(N):
        t = n * th * tw
        for ty in range(th):
            for tx in range(tw):
                for g in range(G):
                    for j in range(5):  # A^T down each column of m
                        _at_rows(MT[j, g, t], MT[5 + j, g, t], MT[10 + j, g, t],
                                 MT[15 + j, g, t], MT[20 + j, g, t],
                                 half[0, j], half[1, j], half[2, j], Fg)
                    for p in range(3):  # then along each of the three rows
                        row = hwf[3 * ty + p]
                        a = 3 * tx * F + g * Fg
                        h = half[p]
                        _at_rows(h[0], h[1], h[2], h[3], h[4], row[a:a + Fg],
                                 row[a + F:a + F + Fg], row[a + 2 * F:a + 2 * F + Fg], Fg)
                t += 1
        from_hwc(hwf, out[n], 0, b)


@numba.njit(nogil=True, cache=True)
def output_gradient_transform(dout, ZT):
    """ZT[5i + j, g, t, f] = (A dY_t A^T)[i, j] of filter g F/G + f, dY_t the 3x3 tile
    (zeros past the edge): dout (n, F, H, W) -> ZT (25, G, n*th*tw, F/G)."""
    N, F, H, W = dout.shape
    G, Fg = ZT.shape[1], ZT.shape[3]
    th, tw = (H + 2) // 3, (W + 2) // 3
    hwf = np.zeros((3 * th, 3 * tw * F), dtype=dout.dtype)  # zeros past the edge stay
    rows = np.empty((3, 5, Fg), dtype=dout.dtype)  # A along each row of dY: (p, j, f)
    for n in range(N):
        to_hwc(dout[n], hwf, 0)
        t = n * th * tw
        for ty in range(th):
            for tx in range(tw):
                for g in range(G):
                    a = 3 * tx * F + g * Fg
                    for p in range(3):
                        row = hwf[3 * ty + p]
                        rp = rows[p]
                        _a_rows(row[a:a + Fg], row[a + F:a + F + Fg],
                                row[a + 2 * F:a + 2 * F + Fg],
                                rp[0], rp[1], rp[2], rp[3], rp[4], Fg)
                    for j in range(5):  # then down each column
                        _a_rows(rows[0, j], rows[1, j], rows[2, j],
                                ZT[j, g, t], ZT[5 + j, g, t], ZT[10 + j, g, t],
                                ZT[15 + j, g, t], ZT[20 + j, g, t], Fg)
                t += 1


@numba.njit(nogil=True, cache=True)
def input_gradient_transform(dVT, dx):
    """dx[n] = the patches dd_t = B dV_t B^T added back where they were read:
    dVT (25, G, n*th*tw, C/G) -> dx (n, C, H, W) (overwritten)."""
    N, C, H, W = dx.shape
    G, Cg = dVT.shape[1], dVT.shape[3]
    th, tw = (H + 2) // 3, (W + 2) // 3
    hwc = np.empty((3 * th + 2, (3 * tw + 2) * C), dtype=dx.dtype)
    cols = np.empty((5, 5, C), dtype=dx.dtype)  # B dV: (i, j, c)
    zero = np.zeros(C, dtype=dx.dtype)
    for n in range(N):
        hwc[:] = 0
        t = n * th * tw
        for ty in range(th):
            r = 3 * ty
            for tx in range(tw):
                for g in range(G):
                    o, z = g * Cg, (g + 1) * Cg
                    for j in range(5):  # B down each column of dV
                        _b_rows(dVT[j, g, t], dVT[5 + j, g, t], dVT[10 + j, g, t],
                                dVT[15 + j, g, t], dVT[20 + j, g, t],
                                cols[0, j, o:z], cols[1, j, o:z], cols[2, j, o:z],
                                cols[3, j, o:z], cols[4, j, o:z], Cg, False)
                a = 3 * tx * C
                for i in range(5):  # then along each row, added onto the patch's pixels
                    ci = cols[i]
                    row = hwc[r + i]
                    _b_rows(ci[0], ci[1], ci[2], ci[3], ci[4],
                            row[a:a + C], row[a + C:a + 2 * C], row[a + 2 * C:a + 3 * C],
                            row[a + 3 * C:a + 4 * C], row[a + 4 * C:a + 5 * C], C, True)
                t += 1
        from_hwc(hwc, dx[n], 1, zero)

TRANSFORMS = Transforms(readable.F3_3, filter_transform, filter_gradient, input_transform,
                        input_gradient_transform, output_transform, output_gradient_transform,
                        channels_last=True)
