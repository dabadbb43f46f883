"""Numba twins of kernels/winograd.py's transforms for F(2x2, 5x5) (the 5x5 stride-1 pad-2
convolution, conv2): 6x6 patches and frequency arrays, 36 products per tile where im2col
does 100 multiplications per 2x2 outputs' worth. kernels/winograd_numba.py runs them
batch-parallel as its own F(2x2, 3x3) transforms; tests/test_winograd.py proves each equal
to its readable twin.

They run channels-last. The image is turned to H x W x C, so that a tile's 6x6 patch of
all C channels is six rows of 6C contiguous floats, and each 1-D pass of a transform
(``_bt6_rows``, ``_b6_rows``, ``_at6_rows``, ``_a6_rows``: winograd.F2_5's matrices written
out, their zeros skipped) is a few loops over channels, which LLVM vectorises. Their
frequency arrays are (36, G, tiles, C/G or F/G), the transpose of winograd.py's (36, C or
F, tiles) per group: the GEMMs take them as M^T = V^T U^T. Against the same transforms
written per tile on scalars (36 values to a tile, more than the registers hold), measured
(2-core EPYC, one pass of the paper net's conv2, 2 images of 27x27): input 1.79 -> 0.69 ms,
output 7.6 -> 1.44, output gradient 2.09 -> 1.96, input gradient 1.89 -> 0.69; conv2
forward + backward, batch 128: small net 246 -> 213 ms, paper net 935 -> 856. Two things
keep the loops vectorised: every row is its own 1-D C-contiguous view (a slice of a
strided array compiles to code LLVM does not vectorise), and the loop indices are unsigned
(numba checks a signed index for wrap-around; kernels/conv.py's im2col says more).
"""

from __future__ import annotations

import numba
import numpy as np

from .conv import _U  # unsigned indices: kernels/conv.py says why


# Integer multiples as sums: numba would turn 4 * (a float32) into a float64.
@numba.njit(inline="always")
def _x2(v):
    return v + v


@numba.njit(inline="always")
def _x4(v):
    return _x2(v + v)


# The filter's transforms run once a call (forward, and again in backward) on the weights,
# not per tile: float64 constants.
# As the 3x3 ones (kernels/winograd_numba.py), a filter's 25 taps are first laid out as
# rows of C channels, and each 1-D pass is a loop over channels that LLVM vectorises
# (written per (f, c) on scalars, 256 x 48 filters took 1.2 ms each way; now 0.7).
@numba.njit(inline="always")
def _g5_rows(w0, w1, w2, w3, w4, o0, o1, o2, o3, o4, o5, n):
    """o = G w on rows: the filter transform, one direction (5 -> 6), n channels."""
    for e in range(_U(n)):
        even, odd = w0[e] + w2[e] + w4[e], w1[e] + w3[e]
        ev = w0[e] / 24 + w2[e] / 6 + w4[e] * (2 / 3)
        od = w1[e] / 12 + w3[e] / 3
        o0[e] = w0[e] / 4
        o1[e] = -(even + odd) / 6
        o2[e] = (odd - even) / 6
        o3[e] = ev + od
        o4[e] = ev - od
        o5[e] = w4[e]


@numba.njit(inline="always")
def _gt5_rows(u0, u1, u2, u3, u4, u5, o0, o1, o2, o3, o4, n):
    """o = G^T u on rows: the filter gradient's transform, one direction (6 -> 5)."""
    for e in range(_U(n)):
        s12, d12 = (u1[e] + u2[e]) / 6, (u2[e] - u1[e]) / 6
        s34, d34 = u3[e] + u4[e], u3[e] - u4[e]
        o0[e] = u0[e] / 4 - s12 + s34 / 24
        o1[e] = d12 + d34 / 12
        o2[e] = s34 / 6 - s12
        o3[e] = d12 + d34 / 3
        o4[e] = s34 * (2 / 3) - s12 + u5[e]


@numba.njit(nogil=True, cache=True)
def _filter(W, U, f0, f1):
    """U[6i + j, f, c] = (G g G^T)[i, j]: W (F, C, 5, 5) -> U (36, F, C), filters f0..f1."""
    C = W.shape[1]
    taps = np.empty((25, C), dtype=U.dtype)    # g[a, b] of every channel: row 5a + b
    half = np.empty((30, C), dtype=U.dtype)    # G g: row 5i + b
    for f in range(f0, f1):
        taps[:] = W[f].reshape(C, 25).T
        for b in range(5):  # G down each column of g
            _g5_rows(taps[b], taps[5 + b], taps[10 + b], taps[15 + b], taps[20 + b],
                     half[b], half[5 + b], half[10 + b], half[15 + b], half[20 + b],
                     half[25 + b], C)
        for i in range(6):  # then along each row
            h = 5 * i
            _g5_rows(half[h], half[h + 1], half[h + 2], half[h + 3], half[h + 4],
                     U[6 * i, f], U[6 * i + 1, f], U[6 * i + 2, f], U[6 * i + 3, f],
                     U[6 * i + 4, f], U[6 * i + 5, f], C)


@numba.njit(nogil=True, cache=True)
def _filter_grad(dU, dW, f0, f1):
    """dW = G^T dU G per filter: dU (36, F, C) -> dW (F, C, 5, 5), filters f0..f1."""
    C = dW.shape[1]
    half = np.empty((30, C), dtype=dW.dtype)   # G^T dU: row 6a + j
    taps = np.empty((25, C), dtype=dW.dtype)   # dW[a, b]: row 5a + b
    for f in range(f0, f1):
        for j in range(6):  # G^T down each column of dU
            _gt5_rows(dU[j, f], dU[6 + j, f], dU[12 + j, f], dU[18 + j, f], dU[24 + j, f],
                      dU[30 + j, f], half[j], half[6 + j], half[12 + j], half[18 + j],
                      half[24 + j], C)
        for a in range(5):  # then along each row
            h = 6 * a
            _gt5_rows(half[h], half[h + 1], half[h + 2], half[h + 3], half[h + 4],
                      half[h + 5], taps[5 * a], taps[5 * a + 1], taps[5 * a + 2],
                      taps[5 * a + 3], taps[5 * a + 4], C)
        dW[f].reshape(C, 25)[:] = taps.T



@numba.njit(inline="always")
def _bt6_rows(s0, s1, s2, s3, s4, s5, o0, o1, o2, o3, o4, o5, n):
    """o = B^T s on rows: o_k[e] = sum_i B^T[k, i] s_i[e], e < n (the input transform)."""
    for e in range(_U(n)):
        o0[e] = _x4(s0[e] - s2[e]) - s2[e] + s4[e]
    for e in range(_U(n)):
        o1[e] = s3[e] + s4[e] - _x4(s1[e] + s2[e])
    for e in range(_U(n)):
        o2[e] = _x4(s1[e] - s2[e]) + s4[e] - s3[e]
    for e in range(_U(n)):
        o3[e] = _x2(s3[e] - s1[e]) + s4[e] - s2[e]
    for e in range(_U(n)):
        o4[e] = _x2(s1[e] - s3[e]) + s4[e] - s2[e]
    for e in range(_U(n)):
        o5[e] = _x4(s1[e] - s3[e]) - s3[e] + s5[e]


@numba.njit(inline="always")
def _b6_rows(v0, v1, v2, v3, v4, v5, o0, o1, o2, o3, o4, o5, n, add):
    """o = B v on rows (the input gradient's transform), or o += B v when add."""
    for e in range(_U(n)):
        w = _x4(v0[e])
        o0[e] = o0[e] + w if add else w
    for e in range(_U(n)):
        w = _x4(v2[e] - v1[e] + v5[e]) + _x2(v4[e] - v3[e])
        o1[e] = o1[e] + w if add else w
    for e in range(_U(n)):
        w = -(_x4(v0[e] + v1[e] + v2[e]) + v0[e] + v3[e] + v4[e])
        o2[e] = o2[e] + w if add else w
    for e in range(_U(n)):
        w = v1[e] - v2[e] + _x2(v3[e] - v4[e]) - _x4(v5[e]) - v5[e]
        o3[e] = o3[e] + w if add else w
    for e in range(_U(n)):
        w = v0[e] + v1[e] + v2[e] + v3[e] + v4[e]
        o4[e] = o4[e] + w if add else w
    for e in range(_U(n)):
        o5[e] = o5[e] + v5[e] if add else v5[e]


@numba.njit(inline="always")
def _at6_rows(m0, m1, m2, m3, m4, m5, y0, y1, n):
    """y = A^T m on rows: 6 -> 2 (the output transform)."""
    for e in range(_U(n)):
        y0[e] = m0[e] + m1[e] + m2[e] + m3[e] + m4[e]
    for e in range(_U(n)):
        y1[e] = m1[e] - m2[e] + _x2(m3[e] - m4[e]) + m5[e]


@numba.njit(inline="always")
def _a6_rows(u0, u1, o0, o1, o2, o3, o4, o5, n):
    """o = A u on rows: 2 -> 6 (the output gradient's transform)."""
    for e in range(_U(n)):
        o0[e] = u0[e]
    for e in range(_U(n)):
        o1[e] = u0[e] + u1[e]
    for e in range(_U(n)):
        o2[e] = u0[e] - u1[e]
    for e in range(_U(n)):
        o3[e] = u0[e] + _x2(u1[e])
    for e in range(_U(n)):
        o4[e] = u0[e] - _x2(u1[e])
    for e in range(_U(n)):
        o5[e] = u1[e]


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


@numba.njit(nogil=True, cache=True)
def _input(x, VT):
    """VT[6i + j, g, t, c] = (B^T d_t B)[i, j] of channel g C/G + c: x (n, C, H, W) ->
    VT (36, G, n*th*tw, C/G)."""
    N, C, H, W = x.shape
    G, Cg = VT.shape[1], VT.shape[3]
    th, tw = (H + 1) // 2, (W + 1) // 2
    hwc = np.zeros((2 * th + 4, (2 * tw + 4) * C), dtype=x.dtype)  # pad 2, zeros stay
    half = np.empty((6, 6 * C), dtype=x.dtype)  # B^T d: (k, (j, c))
    for n in range(N):
        _to_hwc(x[n], hwc, 2)
        t = n * th * tw
        for ty in range(th):
            r = 2 * ty
            for tx in range(tw):
                a, z = 2 * tx * C, (2 * tx + 6) * C
                # B^T down the patch's columns: its six rows of 6C at once
                _bt6_rows(hwc[r, a:z], hwc[r + 1, a:z], hwc[r + 2, a:z], hwc[r + 3, a:z],
                          hwc[r + 4, a:z], hwc[r + 5, a:z],
                          half[0], half[1], half[2], half[3], half[4], half[5], 6 * C)
                # then along each row of the result: its six pixels' channels, per group
                for k in range(6):
                    h = half[k]
                    for g in range(G):
                        o = g * Cg
                        _bt6_rows(h[o:o + Cg], h[C + o:C + o + Cg], h[2 * C + o:2 * C + o + Cg],
                                  h[3 * C + o:3 * C + o + Cg], h[4 * C + o:4 * C + o + Cg],
                                  h[5 * C + o:5 * C + o + Cg],
                                  VT[6 * k, g, t], VT[6 * k + 1, g, t], VT[6 * k + 2, g, t],
                                  VT[6 * k + 3, g, t], VT[6 * k + 4, g, t], VT[6 * k + 5, g, t],
                                  Cg)
                t += 1


@numba.njit(nogil=True, cache=True)
def _output(MT, out, b):
    """out[n, f] = A^T m_t A per tile, cropped, plus b[f]: MT (36, G, n*th*tw, F/G) -> out
    (n, F, H, W)."""
    N, F, H, W = out.shape
    G, Fg = MT.shape[1], MT.shape[3]
    th, tw = (H + 1) // 2, (W + 1) // 2
    hwf = np.empty((2 * th, 2 * tw * F), dtype=out.dtype)
    half = np.empty((2, 6, Fg), dtype=out.dtype)  # A^T m: (p, j, f)
    for n in range(N):
        t = n * th * tw
        for ty in range(th):
            for tx in range(tw):
                for g in range(G):
                    for j in range(6):  # A^T down each column of m
                        _at6_rows(MT[j, g, t], MT[6 + j, g, t], MT[12 + j, g, t],
                                  MT[18 + j, g, t], MT[24 + j, g, t], MT[30 + j, g, t],
                                  half[0, j], half[1, j], Fg)
                    for p in range(2):  # then along each of the two rows
                        row = hwf[2 * ty + p]
                        a = 2 * tx * F + g * Fg
                        h = half[p]
                        _at6_rows(h[0], h[1], h[2], h[3], h[4], h[5],
                                  row[a:a + Fg], row[a + F:a + F + Fg], Fg)
                t += 1
        _from_hwc(hwf, out[n], 0, b)


@numba.njit(nogil=True, cache=True)
def _output_grad(dout, ZT):
    """ZT[6i + j, g, t, f] = (A dY_t A^T)[i, j] of filter g F/G + f, dY_t the 2x2 tile
    (zeros past the edge): dout (n, F, H, W) -> ZT (36, G, n*th*tw, F/G)."""
    N, F, H, W = dout.shape
    G, Fg = ZT.shape[1], ZT.shape[3]
    th, tw = (H + 1) // 2, (W + 1) // 2
    hwf = np.zeros((2 * th, 2 * tw * F), dtype=dout.dtype)  # zeros past the edge stay
    rows = np.empty((2, 6, Fg), dtype=dout.dtype)  # A along each row of dY: (p, j, f)
    for n in range(N):
        _to_hwc(dout[n], hwf, 0)
        t = n * th * tw
        for ty in range(th):
            for tx in range(tw):
                for g in range(G):
                    a = 2 * tx * F + g * Fg
                    for p in range(2):
                        row = hwf[2 * ty + p]
                        rp = rows[p]
                        _a6_rows(row[a:a + Fg], row[a + F:a + F + Fg],
                                 rp[0], rp[1], rp[2], rp[3], rp[4], rp[5], Fg)
                    for j in range(6):  # then down each column
                        _a6_rows(rows[0, j], rows[1, j],
                                 ZT[j, g, t], ZT[6 + j, g, t], ZT[12 + j, g, t],
                                 ZT[18 + j, g, t], ZT[24 + j, g, t], ZT[30 + j, g, t], Fg)
                t += 1


@numba.njit(nogil=True, cache=True)
def _input_grad(dVT, dx):
    """dx[n] = the patches dd_t = B dV_t B^T added back where they were read:
    dVT (36, G, n*th*tw, C/G) -> dx (n, C, H, W) (overwritten)."""
    N, C, H, W = dx.shape
    G, Cg = dVT.shape[1], dVT.shape[3]
    th, tw = (H + 1) // 2, (W + 1) // 2
    hwc = np.empty((2 * th + 4, (2 * tw + 4) * C), dtype=dx.dtype)
    cols = np.empty((6, 6, C), dtype=dx.dtype)  # B dV: (i, j, c)
    zero = np.zeros(C, dtype=dx.dtype)
    for n in range(N):
        hwc[:] = 0
        t = n * th * tw
        for ty in range(th):
            r = 2 * ty
            for tx in range(tw):
                for g in range(G):
                    o, z = g * Cg, (g + 1) * Cg
                    for j in range(6):  # B down each column of dV
                        _b6_rows(dVT[j, g, t], dVT[6 + j, g, t], dVT[12 + j, g, t],
                                 dVT[18 + j, g, t], dVT[24 + j, g, t], dVT[30 + j, g, t],
                                 cols[0, j, o:z], cols[1, j, o:z], cols[2, j, o:z],
                                 cols[3, j, o:z], cols[4, j, o:z], cols[5, j, o:z], Cg, False)
                a = 2 * tx * C
                for i in range(6):  # then along each row, added onto the patch's pixels
                    ci = cols[i]
                    row = hwc[r + i]
                    _b6_rows(ci[0], ci[1], ci[2], ci[3], ci[4], ci[5],
                             row[a:a + C], row[a + C:a + 2 * C], row[a + 2 * C:a + 3 * C],
                             row[a + 3 * C:a + 4 * C], row[a + 4 * C:a + 5 * C],
                             row[a + 5 * C:a + 6 * C], C, True)
                t += 1
        _from_hwc(hwc, dx[n], 2, zero)
