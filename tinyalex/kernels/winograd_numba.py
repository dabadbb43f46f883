"""Numba twins of kernels/winograd.py, batch-parallel as in kernels/conv.py: the drivers
that run any F(m x m, r x r)'s transforms and products (``winograd_forward``,
``winograd_backward``), with kernels/winograd33_numba.py's F(3x3, 3x3) for the 3x3 stride-1
pad-1 convolutions (conv3-5) and kernels/winograd5_numba.py's F(3x3, 5x5) for the 5x5 pad-2
one (conv2); and F(2x2, 3x3)'s transforms, which the paper net's conv1 runs on its
space-to-depth maps (kernels/space_to_depth_numba.py). kernels/registry.py decides where
each applies (winograd.applies, TINYALEX_NO_WINOGRAD).

``conv_forward`` and ``conv_backward`` have the signature and result of the readable
Conv2D bodies (layers/conv.py, tested in tests/test_winograd.py); each transform below
equals its readable twin in kernels/winograd.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numba
import numpy as np

from . import winograd
from . import winograd5_numba as w5
from . import winograd33_numba as w33
from . import winograd53_numba as w53
from .conv import _U, CONV_MAX_TASKS, _add_channel_sums
from .threads import in_pieces, run_tasks, sum_in_task_order, timed

# F(2x2, 3x3): 16 products of 2.25x fewer multiplications in all. These four loops are
# the transforms of winograd.py, written out for one 4x4 tile at a time on scalars; the
# products are BLAS, per task as in kernels/conv.py.

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
    for e in range(_U(n)):
        o0[e] = s0[e]
    for e in range(_U(n)):
        h = 0.5 * (s0[e] + s2[e])
        o1[e] = h + 0.5 * s1[e]
        o2[e] = h - 0.5 * s1[e]
    for e in range(_U(n)):
        o3[e] = s2[e]


@numba.njit(inline="always")
def _gt_rows(u0, u1, u2, u3, o0, o1, o2, n):
    """o = G^T u on rows: 4 -> 3 (the filter gradient's transform, one direction)."""
    for e in range(_U(n)):
        h = 0.5 * (u1[e] + u2[e])
        o0[e] = u0[e] + h
        o1[e] = 0.5 * (u1[e] - u2[e])
        o2[e] = h + u3[e]


# The filter transforms run once a call (forward, and again in backward), before the tasks:
# a filter's nine taps are first laid out as nine rows of C channels, so that each 1-D pass
# is a loop over channels that LLVM vectorises; written per (f, c) on scalars they took 46
# ns a pair (conv3 of both nets, 384 x 256 filters: 4.7 -> 1.0 ms; its gradient 1.9 ->
# 0.55 ms). The filters are split among the workers (threads.in_pieces), each kernel call
# doing filters f0..f1; not numba's parallel layer, which does not survive a fork (a
# data-loader worker can still run these).
@numba.njit(nogil=True, cache=True)
def _winograd_filter(W, U, f0, f1):
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
def _winograd_filter_grad(dU, dW, f0, f1):
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
def _plane_to_tiles(plane, V, c, t, th, tw):
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
def _winograd_input(x, V):
    """V[4i + j, c, t] = (B^T d_t B)[i, j]: x (n, C, H, W) -> V (16, C, n*th*tw)."""
    N, C, H, W = x.shape
    th, tw = (H + 1) // 2, (W + 1) // 2
    plane = np.zeros((2 * th + 2, 2 * tw + 2), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for r in range(H):
                for q in range(W):
                    plane[r + 1, q + 1] = x[n, c, r, q]
            _plane_to_tiles(plane, V, c, n * th * tw, th, tw)


@numba.njit(nogil=True, cache=True)
def _winograd_output(M, out, b):
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
def _winograd_output_grad(dout, Z):
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
def _tiles_to_plane(dV, c, t, th, tw, plane):
    """The adjoint of _plane_to_tiles: dd_t = B dV_t B^T of the th x tw tiles from tile
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
def _winograd_input_grad(dV, dx):
    """dx[n, c] = the patches dd_t = B dV_t B^T added back where they were read:
    dV (16, C, n*th*tw) -> dx (n, C, H, W) (overwritten)."""
    N, C, H, W = dx.shape
    th, tw = (H + 1) // 2, (W + 1) // 2
    plane = np.empty((2 * th + 2, 2 * tw + 2), dtype=dx.dtype)
    for n in range(N):
        for c in range(C):
            plane[:] = 0
            _tiles_to_plane(dV, c, n * th * tw, th, tw, plane)
            for r in range(H):
                for q in range(W):
                    dx[n, c, r, q] = plane[r + 1, q + 1]


# Tiles per product. Measured (2-core EPYC, batch 128, forward + backward ms) for 64 / 256 /
# 512 / 1024: small net's conv3 (6x6) 205 / 179 / 177 / 336 (1024 leaves one task, one
# core); paper net's conv5 (13x13) 684 / 688 / 513 / 569. With F(3x3, 3x3)'s 4 tiles an
# image the small net's 6x6 layers have 512 tiles in all: at least two tasks, or one core
# does the layer (conv3 forward 26 -> 37 ms).
WINOGRAD_MIN_COLUMNS = 512


def _winograd_tasks(N: int, tiles_per_image: int) -> list:
    """Fixed slices of range(N), as many as keep each product at WINOGRAD_MIN_COLUMNS
    tiles (at most CONV_MAX_TASKS) but at least two, an even number where there are
    several so that two workers finish together. Not a function of the thread count: the
    dW partial sums, and so the results, are the same on any machine."""
    count = max(min(N, 2),
                min(N, CONV_MAX_TASKS, N * tiles_per_image // WINOGRAD_MIN_COLUMNS))
    if count > 2:
        count -= count % 2
    bounds = [N * t // count for t in range(count + 1)]
    return [slice(bounds[t], bounds[t + 1]) for t in range(count)]


class _Transforms(NamedTuple):
    """One F(m x m, r x r)'s Numba transforms (``alg``); K = (m + r - 1)^2 products per
    tile. The frequency arrays are (K, C or F, tiles), or, when ``channels_last``, (K, G,
    tiles, C/G or F/G) (kernels/winograd5_numba.py). The filter kernels do filters f0..f1
    of (W, U, f0, f1) and (dU, dW, f0, f1); ``filter`` and ``filter_grad`` run them."""
    alg: winograd.Winograd
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
        """(m, r): the key of WINOGRAD_PASS_TILES."""
        return self.alg.m, self.alg.r

    def filter(self, W):
        """Twin of winograd.filter_transform(W, alg): W (F, C, r, r) -> U (K, F, C), the
        filters split among the workers (threads.in_pieces)."""
        W = np.ascontiguousarray(W)
        U = np.empty((self.K,) + W.shape[:2], dtype=W.dtype)
        in_pieces(lambda f0, f1: self.filter_kernel(W, U, f0, f1), W.shape[0])
        return U

    def filter_grad(self, dU, dtype):
        """Twin of winograd.filter_gradient(dU, dtype, alg): dU (K, F, C) -> dW (F, C, r,
        r), the filters split among the workers."""
        dU = np.ascontiguousarray(dU)
        r = self.alg.r
        dW = np.empty(dU.shape[1:] + (r, r), dtype=dU.dtype)
        in_pieces(lambda f0, f1: self.filter_grad_kernel(dU, dW, f0, f1), dW.shape[0])
        return dW.astype(dtype, copy=False)


TRANSFORMS = {
    3: _Transforms(winograd.F2_3, _winograd_filter, _winograd_filter_grad, _winograd_input,
                   _winograd_input_grad, _winograd_output, _winograd_output_grad),
    "3 by 3x3 tiles": _Transforms(winograd.F3_3, w33._filter, w33._filter_grad, w33._input,
                                  w33._input_grad, w33._output, w33._output_grad,
                                  channels_last=True),
    5: _Transforms(winograd.F3_5, w5._filter, w5._filter_grad, w5._input, w5._input_grad,
                   w5._output, w5._output_grad, channels_last=True),
    "3 by 5x5 tiles": _Transforms(winograd.F5_3, w53._filter, w53._filter_grad, w53._input,
                                  w53._input_grad, w53._output, w53._output_grad,
                                  channels_last=True),
}


# The 3x3 layers ran F(3x3, 3x3) (kernels/winograd33_numba.py) on every map size: 1.44x
# fewer multiplications than F(2x2, 3x3) on the small net's 6x6 maps and 1.25x on the paper
# net's 13x13, and its channels-last transforms move 25 floats per 9 outputs where F(2x2,
# 3x3)'s move 16 per 4. Measured (2-core AVX-512 EPYC, batch 128, fwd / bwd ms, best of 5,
# fresh processes alternating), F(2x2, 3x3) -> F(3x3, 3x3): small net's conv3 26.5 / 51 ->
# 22.2 / 40, conv4 22.8 / 44 -> 19.0 / 35, conv5 16 / 31 -> 14 / 27; the paper net's conv3
# 139-152 / 278-309 -> 115-119 / 229-238, conv4 122-135 / 278-284 -> 101-103 / 198, conv5
# 110-142 / 200-284 -> 84 / 156-161. On 13x13 maps F(5x5, 3x3) (kernels/winograd53_numba.py)
# does 1.42x fewer multiplications again, 49 floats per 25 outputs; measured as above but in
# one process alternating, F(3x3, 3x3) -> F(5x5, 3x3): the paper net's conv3 128 / 251 ->
# 101 / 190, conv4 108 / 209 -> 85 / 159, conv5 79 / 159 -> 64 / 121. So each layer takes
# the transforms of fewest multiplications on its map (``_transforms``). F(2x2, 3x3)'s
# per-plane transforms stay for the paper net's conv1 (kernels/space_to_depth_numba.py
# reads x into them).
CANDIDATES = {3: (TRANSFORMS["3 by 3x3 tiles"], TRANSFORMS["3 by 5x5 tiles"]),
              5: (TRANSFORMS[5],)}


def _transforms(r: int, H: int, W: int) -> _Transforms:
    """The transforms of a same-size r x r convolution on an H x W map: of CANDIDATES[r],
    the one of fewest multiplications there (the first on a tie). F(3x3, 3x3) or F(5x5,
    3x3) for 3x3 (the small net's 6x6 maps or the paper net's 13x13), F(3x3, 5x5) for 5x5."""
    return max(CANDIDATES[r], key=lambda tf: tf.alg.fewer_multiplications(H, W))


def algorithm(r: int, H: int, W: int) -> winograd.Winograd:
    """The F(m x m, r x r) this file runs for a same-size r x r convolution on H x W."""
    return _transforms(r, H, W).alg


class _Frequencies:
    """One task's frequency arrays of C or F rows (V, dV; M, Z), for passes of up to
    ``most`` tiles, in its transforms' layout: (K, rows, T) planes off 4 KiB strides
    (_planes), or, channels-last, a contiguous (K, G, T, rows/G) array per pass (its rows
    must be C-contiguous for the transforms' loops to vectorise)."""

    def __init__(self, tf: _Transforms, rows: int, most: int, groups: int, dtype):
        self.tf, self.rows, self.groups = tf, rows, groups
        self.memory = (np.empty(tf.K * rows * most, dtype=dtype) if tf.channels_last
                       else _planes(tf.K, rows, most, dtype))

    def of(self, T: int):
        """The array for a pass of T tiles."""
        if self.tf.channels_last:
            size = self.tf.K * self.rows * T
            return self.memory[:size].reshape(self.tf.K, self.groups, T,
                                              self.rows // self.groups)
        return self.memory[:, :, :T]


def _by_group(tf: _Transforms, A, groups: int):
    """A frequency array as its groups' GEMM operands, a view: (K, G, rows/G, T), or
    channels-last (K, G, T, rows/G) as it is."""
    if tf.channels_last:
        return A
    K, rows, T = A.shape
    return A.reshape(K, groups, rows // groups, T)


def _transposed(A):
    """The (K, G) stack of A's blocks, each transposed (a view; BLAS reads it as is)."""
    return A.transpose(0, 1, 3, 2)


def _laid_out_transposed(A):
    """_transposed(A) as a contiguous array, NumPy's copy of the K blocks split among the
    workers (it releases the GIL): conv3's F(3x3, 3x3) U, 9.8 MB, 2.2 ms on one thread,
    1.2-1.3 on two, as fast as a blocked Numba transpose."""
    K, G, R, S = A.shape
    AT = np.empty((K, G, S, R), dtype=A.dtype)
    in_pieces(lambda k0, k1: np.copyto(AT[k0:k1], _transposed(A[k0:k1])), K)
    return AT


def _planes(K: int, rows: int, T: int, dtype):
    """An empty (K, rows, T) array whose K planes start 64 bytes past a multiple of 4 KiB
    from each other: the transforms touch all K planes at once, and planes a multiple of
    4 KiB apart fall into the same few L1 cache sets. Measured (2-core EPYC, the F(2x2, 5x5)
    output transform of 10 13x13 images, 256 filters): 8.7 -> 2.9 ms; the small net's
    conv3 by F(2x2, 3x3), forward + backward: 177 -> 105 ms."""
    size = rows * T
    itemsize = np.dtype(dtype).itemsize
    gap = (64 - size * itemsize) % 4096 // itemsize
    return np.empty((K, size + gap), dtype=dtype)[:, :size].reshape(K, rows, T)


# Tiles per pass, by filter size: a task runs its images in passes of about this many
# tiles, so that its V and M (or Z), (K, C or F, tiles), stay small: the paper net's conv2
# (5x5, 27x27) had 8 images a task, 80 MB of planes per worker, and took the step's peak
# RSS from 2.55 GiB (conv2 by im2col) to 2.80 (PyTorch's: 2.8). Passes of 512 tiles: 2.67
# GiB, as fast (38.5 against 38.7 img/s). The 5x5 frequency arrays are 9x the output's
# size, and their transforms write them at the memory's speed once a pass outgrows the
# caches: the small net's conv2 (13x13, 49 tiles an image, 50 KB of V and Z a tile),
# forward + backward, interleaved, best of 9 (2-core AVX-512 EPYC): 49 / 98 / 147 / 196 /
# 512 tiles a pass, 192 / 169 / 166 / 180 / 210 ms; with each pass's products in one call,
# forward and backward, best (median) of 11: 49 tiles 62 (66) and 83 (86) ms, 98 tiles 54
# (58) and 84 (90), 160 tiles 58 (59) and 88 (98), 250 tiles 64 (70) and 133 (137). The
# paper net's conv2 (196 tiles an image) and the 3x3 layers were within the noise from
# 128 to 512. Those were F(2x2, 5x5)'s; F(3x3, 5x5)'s (70 KB of V and Z a tile), batch 128,
# best (median) of 9, forward and backward: the small net's conv2 (25 tiles an image)
# 25 tiles 36 (47) and 82 (98) ms, 50 tiles 45 (46) and 87 (95), 75 tiles 46 (48) and
# 90 (102), 100 tiles 49 (55) and 96 (113); the paper net's (81 tiles an image), one image
# a pass against two: 119 (125) and 244 (254) against 151 (161) and 309 (326). F(5x5,
# 3x3)'s (9 tiles a 13x13 image, 125 KB of V and Z a tile at conv3) in passes of 512
# tiles took the paper net's peak RSS from 2.69 to 2.83 GiB (PyTorch's: 2.88); in passes
# of 256, 2.69-2.74 GiB, as fast (step A/B, 4 rounds: 54-59 img/s either way).
WINOGRAD_PASS_TILES = {(2, 3): 512, (3, 3): 512, (3, 5): 50, (5, 3): 256}


def _passes(chunk: slice, tiles_per_image: int, tf: _Transforms) -> list:
    """A task's images in passes of at most WINOGRAD_PASS_TILES[tf.name] tiles (at least
    one image)."""
    per_pass = max(1, WINOGRAD_PASS_TILES[tf.name] // tiles_per_image)
    return [slice(start, min(chunk.stop, start + per_pass))
            for start in range(chunk.start, chunk.stop, per_pass)]


class Plan(NamedTuple):
    """A convolution's transforms, the channels of V (C) and the output's size (H, W):
    the same-size ones' from x (``same_size``), a strided one's from
    kernels/space_to_depth_numba.py, whose input transforms read x through space-to-depth."""
    tf: _Transforms
    C: int
    H: int
    W: int


def same_size(x, W) -> Plan:
    """The plan of a same-size convolution (pad r//2) of x by r x r filters W."""
    C, H, Wd = x.shape[1:]
    return Plan(_transforms(W.shape[2], H, Wd), C, H, Wd)


def winograd_forward(x, W, b, groups, plan: Plan):
    """Twin of winograd.conv_forward: x (N, C, H, W), W (F, C/G, r, r), b (F,) -> out
    (N, F, H, W). Per pass of a task: V (K, C, T) and M (K, F, T) for its T tiles, K*G
    GEMMs."""
    N = x.shape[0]
    tf, C, H, Wd = plan
    F = W.shape[0]
    Fg, Cg = F // groups, C // groups
    th, tw = winograd.tiles(H, Wd, tf.alg.m)
    Ub = tf.filter(W).reshape(tf.K, groups, Fg, Cg)
    if tf.channels_last:
        # U^T laid out, not a transposed view: OpenBLAS packs a transposed operand slower,
        # and at the 5x5 layers' inner dimension of 48 that showed (one thread, a pass's 72
        # products of 98 tiles: 76 -> 111 GFLOP/s; the small net's conv2 forward, best /
        # median of 11: 61 / 74 -> 45 / 52 ms; the paper net's 286 / 329 -> 277 / 303)
        Ub = _laid_out_transposed(Ub)  # (K, G, C/G, F/G)
    b = np.ascontiguousarray(b)
    out = np.empty((N, F, H, Wd), dtype=x.dtype)
    tasks = _winograd_tasks(N, th * tw)

    def task(t):
        passes = _passes(tasks[t], th * tw, tf)
        most = (passes[0].stop - passes[0].start) * th * tw
        V_all = _Frequencies(tf, C, most, groups, x.dtype)
        M_all = _Frequencies(tf, F, most, groups, x.dtype)
        for images in passes:
            T = (images.stop - images.start) * th * tw
            V, M = V_all.of(T), M_all.of(T)
            with timed("transform"):
                tf.input(x[images], V)
            with timed("gemm"):  # the K*G products in one call
                Vb, Mb = _by_group(tf, V, groups), _by_group(tf, M, groups)
                if tf.channels_last:  # M^T = V^T U^T: no big operand transposed
                    np.matmul(Vb, Ub, out=Mb)
                else:
                    np.matmul(Ub, Vb, out=Mb)
            with timed("transform"):
                tf.output(M, out[images], b)

    run_tasks(task, len(tasks))
    return out


def winograd_backward(x, W, dout, groups, need_input_grad, plan: Plan):
    """Twin of winograd.conv_backward: (dW (F, C/G, r, r), db (F,), dx or None). Per pass of
    a task: V recomputed, Z (K, F, T) from dout, 2 K*G GEMMs; a task's partial dU (K, F,
    C/G) adds its passes' in order, and the tasks' are summed in task order."""
    N = x.shape[0]
    tf, C, H, Wd = plan
    F = W.shape[0]
    Fg, Cg = F // groups, C // groups
    th, tw = winograd.tiles(H, Wd, tf.alg.m)
    Ub = tf.filter(W).reshape(tf.K, groups, Fg, Cg)
    tasks = _winograd_tasks(N, th * tw)
    dU_parts = np.zeros((len(tasks), tf.K, F, Cg), dtype=x.dtype)
    db_parts = np.zeros((len(tasks), F), dtype=np.float64)
    dx = np.empty_like(x) if need_input_grad else None

    def task(t):
        chunk = tasks[t]
        with timed("elementwise"):
            _add_channel_sums(dout[chunk].reshape(chunk.stop - chunk.start, F, H * Wd),
                              db_parts[t])
        passes = _passes(chunk, th * tw, tf)
        most = (passes[0].stop - passes[0].start) * th * tw
        V_all = _Frequencies(tf, C, most, groups, x.dtype)
        Z_all = _Frequencies(tf, F, most, groups, x.dtype)
        dU = dU_parts[t].reshape(tf.K, groups, Fg, Cg)
        product = None  # the later passes' dU, before it is added
        for p, images in enumerate(passes):
            T = (images.stop - images.start) * th * tw
            V, Z = V_all.of(T), Z_all.of(T)
            with timed("transform"):
                tf.input(x[images], V)
                tf.output_grad(dout[images], Z)
            Vb, Zb = _by_group(tf, V, groups), _by_group(tf, Z, groups)
            with timed("gemm"):
                # dU = Z V^T, (F/G, T) by (T, C/G); the first pass writes the partial, the
                # others add
                if p > 0 and product is None:
                    product = np.empty_like(dU)
                if tf.channels_last:
                    np.matmul(_transposed(Zb), Vb, out=product if p else dU)
                else:
                    np.matmul(Zb, _transposed(Vb), out=product if p else dU)
                if p:
                    dU += product
            if dx is not None:  # V's memory takes its gradient
                with timed("gemm"):
                    if tf.channels_last:  # dV^T = Z^T U
                        np.matmul(Zb, Ub, out=Vb)
                    else:
                        np.matmul(_transposed(Ub), Zb, out=Vb)
            if dx is not None:
                with timed("transform"):
                    tf.input_grad(V, dx[images])

    run_tasks(task, len(tasks))
    dU, db = sum_in_task_order(dU_parts), sum_in_task_order(db_parts)
    return tf.filter_grad(dU, x.dtype), db.astype(x.dtype), dx


def conv_forward(x, W, b, stride, pad, groups):
    """Twin of layers.conv.conv_forward for a 3x3 pad-1 or 5x5 pad-2, stride-1 convolution."""
    x = np.ascontiguousarray(x)
    return winograd_forward(x, W, b, groups, same_size(x, W))


def conv_backward(x, W, dout, stride, pad, groups, need_input_grad=True):
    """Twin of layers.conv.conv_backward for a 3x3 pad-1 or 5x5 pad-2, stride-1 convolution."""
    x = np.ascontiguousarray(x)
    return winograd_backward(x, W, np.ascontiguousarray(dout), groups, need_input_grad,
                              same_size(x, W))
