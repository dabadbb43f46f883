"""What the Winograd modules share: ``Transforms``, the record of one F(m x m, r x r)'s Numba
transforms that batch.py runs; the copies of an image between NCHW and channels-last
(``to_hwc``, ``from_hwc``); and the seven-point input transforms (``input7``,
``input7_grad``), which F(3x3, 5x5) and F(5x5, 3x3) both run (same points, so the same
B^T: only the tile side m and the padding differ).

Channels-last: the image is turned to H x W x C, so that a tile's a x a patch of all C
channels is a rows of a*C contiguous floats, and each 1-D pass of a transform is a few
loops over channels, which LLVM vectorises. Two things keep them vectorised: every row is
its own 1-D C-contiguous view (a slice of a strided array compiles to code LLVM does not
vectorise), and the loop indices are unsigned (kernels/jit.py). B^T and A^T are integers;
``k``, the arrays' own float type, keeps k(5) * v in float32 (numba would make 5 * (a
float32) a float64).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numba
import numpy as np

from ..jit import U
from ..threads import in_pieces
from . import readable


class Transforms(NamedTuple):
    """One F(m x m, r x r)'s Numba transforms (``alg``, its readable twin's matrices); K =
    (m + r - 1)^2 products per tile. The frequency arrays are (K, C or F, tiles), or, when
    ``channels_last``, (K, G, tiles, C/G or F/G). The filter kernels do filters f0..f1 of
    (W, U, f0, f1) and (dU, dW, f0, f1); ``filter`` and ``filter_grad`` run them on the
    workers. Each module beside this one defines one, as its TRANSFORMS."""
    alg: readable.Winograd
    filter_kernel: Callable
    filter_grad_kernel: Callable
    input: Callable
    input_grad: Callable
    output: Callable
    output_grad: Callable
    channels_last: bool = False

    @property
    def K(self) -> int:
        return self.alg.a ** 2

    @property
    def name(self) -> tuple:
        """(m, r): the algorithm's key in batch.py's tables."""
        return self.alg.m, self.alg.r

    def filter(self, W):
        """Twin of readable.filter_transform(W, alg): W (F, C, r, r) -> U (K, F, C), the
        filters split among the workers (threads.in_pieces)."""
        W = np.ascontiguousarray(W)
        U = np.empty((self.K,) + W.shape[:2], dtype=W.dtype)
        in_pieces(lambda f0, f1: self.filter_kernel(W, U, f0, f1), W.shape[0])
        return U

    def filter_grad(self, dU, dtype):
        """Twin of readable.filter_gradient(dU, dtype, alg): dU (K, F, C) -> dW (F, C, r,
        r), the filters split among the workers."""
        dU = np.ascontiguousarray(dU)
        r = self.alg.r
        dW = np.empty(dU.shape[1:] + (r, r), dtype=dU.dtype)
        in_pieces(lambda f0, f1: self.filter_grad_kernel(dU, dW, f0, f1), dW.shape[0])
        return dW.astype(dtype, copy=False)


# The two copies between NCHW and channels-last are transposes of (C, H*W) planes. Written
# pixel by pixel, one side strides by C or H*W floats, a cache line a float; in blocks of
# 16 channels (a line of the H x W x C side) the 16 rows of the NCHW side stay in L1 while a
# row of pixels goes by.
_HWC_BLOCK = 16


@numba.njit(nogil=True, cache=True)
def to_hwc(image, hwc, pad):
    """hwc[r + pad, (q + pad) C + c] = image[c, r, q]: one (C, H, W) image channels-last
    into the middle of a padded (rows, columns * C) plane."""
    C, H, W = image.shape
    for c0 in range(0, C, _HWC_BLOCK):
        nc = min(_HWC_BLOCK, C - c0)
        for r in range(H):
            row, src = hwc[r + pad], image[c0:c0 + nc, r]
            for q in range(W):
                base = U((q + pad) * C + c0)
                for c in range(U(nc)):
                    row[base + c] = src[c, q]


@numba.njit(nogil=True, cache=True)
def from_hwc(hwc, image, pad, b):
    """image[c, r, q] = hwc[r + pad, (q + pad) C + c] + b[c]: the inverse of to_hwc."""
    C, H, W = image.shape
    for c0 in range(0, C, _HWC_BLOCK):
        nc = min(_HWC_BLOCK, C - c0)
        bias = b[c0:c0 + nc]
        for r in range(H):
            row, dst = hwc[r + pad], image[c0:c0 + nc, r]
            for q in range(W):
                base = U((q + pad) * C + c0)
                for c in range(U(nc)):
                    dst[c, q] = row[base + c] + bias[c]


# The seven points' B^T and B, one direction, on rows of n channels (input7's passes).
@numba.njit(inline="always")
def _bt_rows(s0, s1, s2, s3, s4, s5, s6, o0, o1, o2, o3, o4, o5, o6, n):
    """o = B^T s on rows: o_k[e] = sum_i B^T[k, i] s_i[e], e < n (the input transform)."""
    k = o0.dtype.type
    for e in range(U(n)):
        o0[e] = k(2) * s0[e] - s1[e] - k(10) * s2[e] + k(5) * s3[e] + k(8) * s4[e] - k(4) * s5[e]
    for e in range(U(n)):
        o1[e] = k(9) * s3[e] + k(4) * (s4[e] - s5[e]) - k(2) * s1[e] - s2[e]
    for e in range(U(n)):
        o2[e] = k(2) * s1[e] - k(3) * s2[e] - k(7) * s3[e] + k(12) * s4[e] - k(4) * s5[e]
    for e in range(U(n)):
        o3[e] = k(2) * (s1[e] + s5[e]) + k(3) * (s2[e] - s4[e]) - k(4) * s3[e]
    for e in range(U(n)):
        o4[e] = k(2) * (s5[e] - s1[e]) + k(5) * (s2[e] - s4[e])
    for e in range(U(n)):
        o5[e] = s1[e] - k(5) * s3[e] + k(4) * s5[e]
    for e in range(U(n)):
        o6[e] = s2[e] - k(2) * s1[e] + k(10) * s3[e] - k(5) * s4[e] - k(8) * s5[e] + k(4) * s6[e]


@numba.njit(inline="always")
def _b_rows(v0, v1, v2, v3, v4, v5, v6, o0, o1, o2, o3, o4, o5, o6, n, add):
    """o = B v on rows (the input gradient's transform), or o += B v when add."""
    k = o0.dtype.type
    for e in range(U(n)):
        w = k(2) * v0[e]
        o0[e] = o0[e] + w if add else w
    for e in range(U(n)):
        w = k(2) * (v2[e] + v3[e] - v1[e] - v4[e] - v6[e]) + v5[e] - v0[e]
        o1[e] = o1[e] + w if add else w
    for e in range(U(n)):
        w = k(3) * (v3[e] - v2[e]) + k(5) * v4[e] + v6[e] - k(10) * v0[e] - v1[e]
        o2[e] = o2[e] + w if add else w
    for e in range(U(n)):
        w = k(5) * (v0[e] - v5[e]) + k(9) * v1[e] - k(7) * v2[e] - k(4) * v3[e] + k(10) * v6[e]
        o3[e] = o3[e] + w if add else w
    for e in range(U(n)):
        w = k(8) * v0[e] + k(4) * v1[e] + k(12) * v2[e] - k(3) * v3[e] - k(5) * (v4[e] + v6[e])
        o4[e] = o4[e] + w if add else w
    for e in range(U(n)):
        w = k(2) * (v3[e] + v4[e]) + k(4) * (v5[e] - v0[e] - v1[e] - v2[e]) - k(8) * v6[e]
        o5[e] = o5[e] + w if add else w
    for e in range(U(n)):
        w = k(4) * v6[e]
        o6[e] = o6[e] + w if add else w


@numba.njit(nogil=True, cache=True)
def input7(x, VT, m, pad):
    """VT[7i + j, g, t, c] = (B^T d_t B)[i, j] of channel g C/G + c, d_t the 7x7 patch
    under the m x m tile t of x padded by pad: x (n, C, H, W) -> VT (49, G, n*th*tw, C/G)."""
    N, C, H, W = x.shape
    G, Cg = VT.shape[1], VT.shape[3]
    th, tw = (H + m - 1) // m, (W + m - 1) // m
    hwc = np.zeros((m * th + 7 - m, (m * tw + 7 - m) * C), dtype=x.dtype)  # zeros stay
    half = np.empty((7, 7 * C), dtype=x.dtype)  # B^T d: (k, (j, c))
    for n in range(N):
        to_hwc(x[n], hwc, pad)
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
def input7_grad(dVT, dx, m, pad):
    """dx[n] = the patches dd_t = B dV_t B^T added back where they were read (the adjoint
    of input7): dVT (49, G, n*th*tw, C/G) -> dx (n, C, H, W) (overwritten)."""
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
        from_hwc(hwc, dx[n], pad, zero)
