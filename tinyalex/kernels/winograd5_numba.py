"""Numba twins of kernels/winograd.py's transforms for the 5x5 stride-1 pad-2 convolution
(conv2), by F(3x3, 5x5) (``winograd.F3_5``): 3x3 output tiles from 7x7 patches, 49
products per tile. kernels/winograd_numba.py runs them batch-parallel as its other
transforms; tests/test_winograd.py proves each equal to its readable twin.

Why F(3x3, 5x5) and not the readable body's F(2x2, 5x5) (36 products per 2x2 tile): on the
paper net's 27x27 maps 9 x 9 tiles fit exactly, 1.78x fewer multiplications than F(2x2,
5x5)'s 14 x 14 tiles (a row and a column of them hang over the edge); on the small net's
13x13, 1.44x. Its frequency arrays hold 49 floats per 9 outputs where F(2x2, 5x5)'s hold
36 per 4, so the transforms move 1.65x fewer bytes too. Its float32 error is about F(2x2,
5x5)'s (winograd.F3_5 says which points keep it so). Measured (2-core AVX-512 EPYC, batch
128, fwd / bwd ms, best of 5, in one process alternating): the paper net's conv2 221 / 402
-> 114 / 224; the small net's (best / median of 9) 53 / 98 and 57 / 113 -> 45 / 87 and
46 / 95.

They run channels-last. The image is turned to H x W x C, so that a tile's 7x7 patch of
all C channels is seven rows of 7C contiguous floats, and each 1-D pass of a transform
(``_bt_rows``, ``_b_rows``, ``_at_rows``, ``_a_rows``: winograd.F3_5's matrices written
out, their zeros skipped) is a few loops over channels, which LLVM vectorises. B^T and A^T
are integers; ``k`` is the arrays' own float type, so that k(5) * v stays float32 (numba
would make 5 * (a float32) a float64). The frequency arrays are (49, G, tiles, C/G or F/G),
the transpose of winograd.py's (49, C or F, tiles) per group: the GEMMs take them as M^T =
V^T U^T. Against the same transforms written per tile on scalars (36 values to a tile,
more than the registers hold), measured with F(2x2, 5x5) (2-core EPYC, one pass of the
paper net's conv2, 2 images of 27x27): input 1.79 -> 0.69 ms, output 7.6 -> 1.44, output
gradient 2.09 -> 1.96, input gradient 1.89 -> 0.69. Two things keep the loops vectorised:
every row is its own 1-D C-contiguous view (a slice of a strided array compiles to code
LLVM does not vectorise), and the loop indices are unsigned (numba checks a signed index
for wrap-around; kernels/conv.py's im2col says more).
"""

from __future__ import annotations

import numba
import numpy as np

from .conv import _U  # unsigned indices: kernels/conv.py says why


# The filter's transforms run once a call (forward, and again in backward) on the weights,
# not per tile: float64 constants. As the 3x3 ones (kernels/winograd_numba.py), a filter's
# 25 taps are first laid out as rows of C channels, and each 1-D pass is a loop over
# channels that LLVM vectorises (measured with F(2x2, 5x5): written per (f, c) on scalars,
# 256 x 48 filters took 1.2 ms each way; laid out as rows, 0.7).
@numba.njit(inline="always")
def _g_rows(w0, w1, w2, w3, w4, o0, o1, o2, o3, o4, o5, o6, n):
    """o = G w on rows: the filter transform, one direction (5 -> 7), n channels."""
    for e in range(_U(n)):
        o0[e] = w0[e] / 2
        o1[e] = (w0[e] + w1[e] + w2[e] + w3[e] + w4[e]) / 6
        o2[e] = (w0[e] - w1[e] + w2[e] - w3[e] + w4[e]) / 18
        o3[e] = w0[e] * (2 / 9) + w1[e] / 9 + w2[e] / 18 + w3[e] / 36 + w4[e] / 72
        o4[e] = w0[e] * (2 / 15) - w1[e] / 15 + w2[e] / 30 - w3[e] / 60 + w4[e] / 120
        o5[e] = w0[e] / 90 + w1[e] / 45 + w2[e] * (2 / 45) + w3[e] * (4 / 45) + w4[e] * (8 / 45)
        o6[e] = w4[e] / 4


@numba.njit(inline="always")
def _gt_rows(u0, u1, u2, u3, u4, u5, u6, o0, o1, o2, o3, o4, n):
    """o = G^T u on rows: the filter gradient's transform, one direction (7 -> 5)."""
    for e in range(_U(n)):
        s = u1[e] / 6
        o0[e] = u0[e] / 2 + s + u2[e] / 18 + u3[e] * (2 / 9) + u4[e] * (2 / 15) + u5[e] / 90
        o1[e] = s - u2[e] / 18 + u3[e] / 9 - u4[e] / 15 + u5[e] / 45
        o2[e] = s + u2[e] / 18 + u3[e] / 18 + u4[e] / 30 + u5[e] * (2 / 45)
        o3[e] = s - u2[e] / 18 + u3[e] / 36 - u4[e] / 60 + u5[e] * (4 / 45)
        o4[e] = s + u2[e] / 18 + u3[e] / 72 + u4[e] / 120 + u5[e] * (8 / 45) + u6[e] / 4


@numba.njit(nogil=True, cache=True)
def _filter(W, U, f0, f1):
    """U[7i + j, f, c] = (G g G^T)[i, j]: W (F, C, 5, 5) -> U (49, F, C), filters f0..f1."""
    C = W.shape[1]
    taps = np.empty((25, C), dtype=U.dtype)    # g[a, b] of every channel: row 5a + b
    half = np.empty((35, C), dtype=U.dtype)    # G g: row 5i + b
    for f in range(f0, f1):
        taps[:] = W[f].reshape(C, 25).T
        for b in range(5):  # G down each column of g
            _g_rows(taps[b], taps[5 + b], taps[10 + b], taps[15 + b], taps[20 + b],
                    half[b], half[5 + b], half[10 + b], half[15 + b], half[20 + b],
                    half[25 + b], half[30 + b], C)
        for i in range(7):  # then along each row
            h = 5 * i
            _g_rows(half[h], half[h + 1], half[h + 2], half[h + 3], half[h + 4],
                    U[7 * i, f], U[7 * i + 1, f], U[7 * i + 2, f], U[7 * i + 3, f],
                    U[7 * i + 4, f], U[7 * i + 5, f], U[7 * i + 6, f], C)


@numba.njit(nogil=True, cache=True)
def _filter_grad(dU, dW, f0, f1):
    """dW = G^T dU G per filter: dU (49, F, C) -> dW (F, C, 5, 5), filters f0..f1."""
    C = dW.shape[1]
    half = np.empty((35, C), dtype=dW.dtype)   # G^T dU: row 7a + j
    taps = np.empty((25, C), dtype=dW.dtype)   # dW[a, b]: row 5a + b
    for f in range(f0, f1):
        for j in range(7):  # G^T down each column of dU
            _gt_rows(dU[j, f], dU[7 + j, f], dU[14 + j, f], dU[21 + j, f], dU[28 + j, f],
                     dU[35 + j, f], dU[42 + j, f],
                     half[j], half[7 + j], half[14 + j], half[21 + j], half[28 + j], C)
        for a in range(5):  # then along each row
            h = 7 * a
            _gt_rows(half[h], half[h + 1], half[h + 2], half[h + 3], half[h + 4],
                     half[h + 5], half[h + 6], taps[5 * a], taps[5 * a + 1],
                     taps[5 * a + 2], taps[5 * a + 3], taps[5 * a + 4], C)
        dW[f].reshape(C, 25)[:] = taps.T


@numba.njit(inline="always")
def _bt_rows(s0, s1, s2, s3, s4, s5, s6, o0, o1, o2, o3, o4, o5, o6, n):
    """o = B^T s on rows: o_k[e] = sum_i B^T[k, i] s_i[e], e < n (the input transform)."""
    k = o0.dtype.type
    for e in range(_U(n)):
        o0[e] = k(2) * s0[e] - s1[e] - k(10) * s2[e] + k(5) * s3[e] + k(8) * s4[e] - k(4) * s5[e]
    for e in range(_U(n)):
        o1[e] = k(9) * s3[e] + k(4) * (s4[e] - s5[e]) - k(2) * s1[e] - s2[e]
    for e in range(_U(n)):
        o2[e] = k(2) * s1[e] - k(3) * s2[e] - k(7) * s3[e] + k(12) * s4[e] - k(4) * s5[e]
    for e in range(_U(n)):
        o3[e] = k(2) * (s1[e] + s5[e]) + k(3) * (s2[e] - s4[e]) - k(4) * s3[e]
    for e in range(_U(n)):
        o4[e] = k(2) * (s5[e] - s1[e]) + k(5) * (s2[e] - s4[e])
    for e in range(_U(n)):
        o5[e] = s1[e] - k(5) * s3[e] + k(4) * s5[e]
    for e in range(_U(n)):
        o6[e] = s2[e] - k(2) * s1[e] + k(10) * s3[e] - k(5) * s4[e] - k(8) * s5[e] + k(4) * s6[e]


@numba.njit(inline="always")
def _b_rows(v0, v1, v2, v3, v4, v5, v6, o0, o1, o2, o3, o4, o5, o6, n, add):
    """o = B v on rows (the input gradient's transform), or o += B v when add."""
    k = o0.dtype.type
    for e in range(_U(n)):
        w = k(2) * v0[e]
        o0[e] = o0[e] + w if add else w
    for e in range(_U(n)):
        w = k(2) * (v2[e] + v3[e] - v1[e] - v4[e] - v6[e]) + v5[e] - v0[e]
        o1[e] = o1[e] + w if add else w
    for e in range(_U(n)):
        w = k(3) * (v3[e] - v2[e]) + k(5) * v4[e] + v6[e] - k(10) * v0[e] - v1[e]
        o2[e] = o2[e] + w if add else w
    for e in range(_U(n)):
        w = k(5) * (v0[e] - v5[e]) + k(9) * v1[e] - k(7) * v2[e] - k(4) * v3[e] + k(10) * v6[e]
        o3[e] = o3[e] + w if add else w
    for e in range(_U(n)):
        w = k(8) * v0[e] + k(4) * v1[e] + k(12) * v2[e] - k(3) * v3[e] - k(5) * (v4[e] + v6[e])
        o4[e] = o4[e] + w if add else w
    for e in range(_U(n)):
        w = k(2) * (v3[e] + v4[e]) + k(4) * (v5[e] - v0[e] - v1[e] - v2[e]) - k(8) * v6[e]
        o5[e] = o5[e] + w if add else w
    for e in range(_U(n)):
        w = k(4) * v6[e]
        o6[e] = o6[e] + w if add else w


@numba.njit(inline="always")
def _at_rows(m0, m1, m2, m3, m4, m5, m6, y0, y1, y2, n):
    """y = A^T m on rows: 7 -> 3 (the output transform)."""
    k = y0.dtype.type
    for e in range(_U(n)):
        y0[e] = m0[e] + m1[e] + m2[e] + k(4) * (m3[e] + m4[e]) + m5[e]
    for e in range(_U(n)):
        y1[e] = m1[e] - m2[e] + k(2) * (m3[e] - m4[e] + m5[e])
    for e in range(_U(n)):
        y2[e] = m1[e] + m2[e] + m3[e] + m4[e] + k(4) * m5[e] + m6[e]


@numba.njit(inline="always")
def _a_rows(u0, u1, u2, o0, o1, o2, o3, o4, o5, o6, n):
    """o = A u on rows: 3 -> 7 (the output gradient's transform)."""
    k = o0.dtype.type
    for e in range(_U(n)):
        o0[e] = u0[e]
    for e in range(_U(n)):
        o1[e] = u0[e] + u1[e] + u2[e]
    for e in range(_U(n)):
        o2[e] = u0[e] - u1[e] + u2[e]
    for e in range(_U(n)):
        o3[e] = k(4) * u0[e] + k(2) * u1[e] + u2[e]
    for e in range(_U(n)):
        o4[e] = k(4) * u0[e] - k(2) * u1[e] + u2[e]
    for e in range(_U(n)):
        o5[e] = u0[e] + k(2) * u1[e] + k(4) * u2[e]
    for e in range(_U(n)):
        o6[e] = u2[e]


# The two copies between NCHW and channels-last are transposes of (C, H*W) planes. Written
# pixel by pixel, one side strides by C or H*W floats, a cache line a float; in blocks of
# 16 channels (a line of the H x W x C side) the 16 rows of the NCHW side stay in L1 while a
# row of pixels goes by. Measured (one image, 2-core EPYC): 256 x 13 x 13 to channels-last
# 59 -> 12.5 us and back 36 -> 17.7 us; 256 x 27 x 27 232 -> 53 and 155 -> 76 us.
_HWC_BLOCK = 16


@numba.njit(nogil=True, cache=True)
def _to_hwc(image, hwc, pad):
    """hwc[r + pad, (q + pad) C + c] = image[c, r, q]: one (C, H, W) image channels-last
    into the middle of a padded (rows, columns * C) plane."""
    C, H, W = image.shape
    for c0 in range(0, C, _HWC_BLOCK):
        nc = min(_HWC_BLOCK, C - c0)
        for r in range(H):
            row, src = hwc[r + pad], image[c0:c0 + nc, r]
            for q in range(W):
                base = _U((q + pad) * C + c0)
                for c in range(_U(nc)):
                    row[base + c] = src[c, q]


@numba.njit(nogil=True, cache=True)
def _from_hwc(hwc, image, pad, b):
    """image[c, r, q] = hwc[r + pad, (q + pad) C + c] + b[c]: the inverse of _to_hwc."""
    C, H, W = image.shape
    for c0 in range(0, C, _HWC_BLOCK):
        nc = min(_HWC_BLOCK, C - c0)
        bias = b[c0:c0 + nc]
        for r in range(H):
            row, dst = hwc[r + pad], image[c0:c0 + nc, r]
            for q in range(W):
                base = _U((q + pad) * C + c0)
                for c in range(_U(nc)):
                    dst[c, q] = row[base + c] + bias[c]


# The input transforms depend only on the seven points, not on m and r: F(5x5, 3x3)
# (kernels/winograd53_numba.py) runs them too, with its own tile side m and padding.
@numba.njit(nogil=True, cache=True)
def _input7(x, VT, m, pad):
    """VT[7i + j, g, t, c] = (B^T d_t B)[i, j] of channel g C/G + c, d_t the 7x7 patch
    under the m x m tile t of x padded by pad: x (n, C, H, W) -> VT (49, G, n*th*tw, C/G)."""
    N, C, H, W = x.shape
    G, Cg = VT.shape[1], VT.shape[3]
    th, tw = (H + m - 1) // m, (W + m - 1) // m
    hwc = np.zeros((m * th + 7 - m, (m * tw + 7 - m) * C), dtype=x.dtype)  # zeros stay
    half = np.empty((7, 7 * C), dtype=x.dtype)  # B^T d: (k, (j, c))
    for n in range(N):
        _to_hwc(x[n], hwc, pad)
        t = n * th * tw
        for ty in range(th):
            r = m * ty
            for tx in range(tw):
                a, z = m * tx * C, (m * tx + 7) * C
                # B^T down the patch's columns: its seven rows of 7C at once
                _bt_rows(hwc[r, a:z], hwc[r + 1, a:z], hwc[r + 2, a:z], hwc[r + 3, a:z],
                         hwc[r + 4, a:z], hwc[r + 5, a:z], hwc[r + 6, a:z],
                         half[0], half[1], half[2], half[3], half[4], half[5], half[6], 7 * C)
                # then along each row of the result: its seven pixels' channels, per group
                for k in range(7):
                    h = half[k]
                    for g in range(G):
                        o = g * Cg
                        _bt_rows(h[o:o + Cg], h[C + o:C + o + Cg], h[2 * C + o:2 * C + o + Cg],
                                 h[3 * C + o:3 * C + o + Cg], h[4 * C + o:4 * C + o + Cg],
                                 h[5 * C + o:5 * C + o + Cg], h[6 * C + o:6 * C + o + Cg],
                                 VT[7 * k, g, t], VT[7 * k + 1, g, t], VT[7 * k + 2, g, t],
                                 VT[7 * k + 3, g, t], VT[7 * k + 4, g, t], VT[7 * k + 5, g, t],
                                 VT[7 * k + 6, g, t], Cg)
                t += 1


@numba.njit(nogil=True, cache=True)
def _output(MT, out, b):
    """out[n, f] = A^T m_t A per tile, cropped, plus b[f]: MT (49, G, n*th*tw, F/G) -> out
    (n, F, H, W)."""
    N, F, H, W = out.shape
    G, Fg = MT.shape[1], MT.shape[3]
    th, tw = (H + 2) // 3, (W + 2) // 3
    hwf = np.empty((3 * th, 3 * tw * F), dtype=out.dtype)
    half = np.empty((3, 7, Fg), dtype=out.dtype)  # A^T m: (p, j, f)
    for n in range(N):
        t = n * th * tw
        for ty in range(th):
            for tx in range(tw):
                for g in range(G):
                    for j in range(7):  # A^T down each column of m
                        _at_rows(MT[j, g, t], MT[7 + j, g, t], MT[14 + j, g, t],
                                 MT[21 + j, g, t], MT[28 + j, g, t], MT[35 + j, g, t],
                                 MT[42 + j, g, t], half[0, j], half[1, j], half[2, j], Fg)
                    for p in range(3):  # then along each of the three rows
                        row = hwf[3 * ty + p]
                        a = 3 * tx * F + g * Fg
                        h = half[p]
                        _at_rows(h[0], h[1], h[2], h[3], h[4], h[5], h[6], row[a:a + Fg],
                                 row[a + F:a + F + Fg], row[a + 2 * F:a + 2 * F + Fg], Fg)
                t += 1
        _from_hwc(hwf, out[n], 0, b)


@numba.njit(nogil=True, cache=True)
def _output_grad(dout, ZT):
    """ZT[7i + j, g, t, f] = (A dY_t A^T)[i, j] of filter g F/G + f, dY_t the 3x3 tile
    (zeros past the edge): dout (n, F, H, W) -> ZT (49, G, n*th*tw, F/G)."""
    N, F, H, W = dout.shape
    G, Fg = ZT.shape[1], ZT.shape[3]
    th, tw = (H + 2) // 3, (W + 2) // 3
    hwf = np.zeros((3 * th, 3 * tw * F), dtype=dout.dtype)  # zeros past the edge stay
    rows = np.empty((3, 7, Fg), dtype=dout.dtype)  # A along each row of dY: (p, j, f)
    for n in range(N):
        _to_hwc(dout[n], hwf, 0)
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
                                rp[0], rp[1], rp[2], rp[3], rp[4], rp[5], rp[6], Fg)
                    for j in range(7):  # then down each column
                        _a_rows(rows[0, j], rows[1, j], rows[2, j],
                                ZT[j, g, t], ZT[7 + j, g, t], ZT[14 + j, g, t],
                                ZT[21 + j, g, t], ZT[28 + j, g, t], ZT[35 + j, g, t],
                                ZT[42 + j, g, t], Fg)
                t += 1


@numba.njit(nogil=True, cache=True)
def _input7_grad(dVT, dx, m, pad):
    """dx[n] = the patches dd_t = B dV_t B^T added back where they were read (the adjoint
    of _input7): dVT (49, G, n*th*tw, C/G) -> dx (n, C, H, W) (overwritten)."""
    N, C, H, W = dx.shape
    G, Cg = dVT.shape[1], dVT.shape[3]
    th, tw = (H + m - 1) // m, (W + m - 1) // m
    hwc = np.empty((m * th + 7 - m, (m * tw + 7 - m) * C), dtype=dx.dtype)
    cols = np.empty((7, 7, C), dtype=dx.dtype)  # B dV: (i, j, c)
    zero = np.zeros(C, dtype=dx.dtype)
    for n in range(N):
        hwc[:] = 0
        t = n * th * tw
        for ty in range(th):
            r = m * ty
            for tx in range(tw):
                for g in range(G):
                    o, z = g * Cg, (g + 1) * Cg
                    for j in range(7):  # B down each column of dV
                        _b_rows(dVT[j, g, t], dVT[7 + j, g, t], dVT[14 + j, g, t],
                                dVT[21 + j, g, t], dVT[28 + j, g, t], dVT[35 + j, g, t],
                                dVT[42 + j, g, t],
                                cols[0, j, o:z], cols[1, j, o:z], cols[2, j, o:z],
                                cols[3, j, o:z], cols[4, j, o:z], cols[5, j, o:z],
                                cols[6, j, o:z], Cg, False)
                a = m * tx * C
                for i in range(7):  # then along each row, added onto the patch's pixels
                    ci = cols[i]
                    row = hwc[r + i]
                    _b_rows(ci[0], ci[1], ci[2], ci[3], ci[4], ci[5], ci[6],
                            row[a:a + C], row[a + C:a + 2 * C], row[a + 2 * C:a + 3 * C],
                            row[a + 3 * C:a + 4 * C], row[a + 4 * C:a + 5 * C],
                            row[a + 5 * C:a + 6 * C], row[a + 6 * C:a + 7 * C], C, True)
                t += 1
        _from_hwc(hwc, dx[n], pad, zero)


def _input(x, VT):
    """F(3x3, 5x5)'s input transform: _input7 with 3x3 tiles, pad 2."""
    _input7(x, VT, 3, 2)


def _input_grad(dVT, dx):
    """F(3x3, 5x5)'s input gradient transform: _input7_grad with 3x3 tiles, pad 2."""
    _input7_grad(dVT, dx, 3, 2)
