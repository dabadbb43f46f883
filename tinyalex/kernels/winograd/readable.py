"""Winograd's minimal filtering F(m x m, r x r): an r x r, stride-1, same-size convolution
in fewer multiplications (Lavin & Gray, "Fast Algorithms for Convolutional Neural
Networks", 2015). Five of them are here: F(2x2, 3x3), F(3x3, 3x3) and F(5x5, 3x3) for
conv3-5 (§3.5), F(2x2, 5x5) and F(3x3, 5x5) for conv2, whose 5x5 filters make it the
net's costliest layer. This file is the readable body (F(2x2, r x r) by default: the
smallest matrices); the modules beside it, one per algorithm (f2x2_3x3.py, f3x3_3x3.py,
f5x5_3x3.py, f3x3_5x5.py), are its Numba twins, run batch-parallel by batch.py. Conv2D's
readable body (im2col, layers/conv.py) stays the reference, and tests/test_winograd.py
proves this file equal to it in float64.

The output is cut into m x m tiles; tile t reads the a x a patch d_t (a = m + r - 1) of
the padded input under it (neighbouring patches overlap by r - 1). Each filter g (r x r)
and patch d become a x a "frequency" arrays U = G g G^T and V = B^T d B, and the m x m
output tile is

    y_t = A^T [ sum_c U[f, c] * V[c, t] ] A          (* elementwise over the a x a)

so per (i, j) of the a x a the channel sum is one matrix product, M_ij = U_ij @ V_ij
((F, C) @ (C, tiles)): a^2 multiplications per m^2 outputs where im2col needs r^2 per
output: 2.25x fewer for F(2x2, 3x3) (16 against 4 x 9), 3.24x for F(3x3, 3x3) (25 against
9 x 9), 2.78x for F(2x2, 5x5) (36 against 4 x 25), 4.59x for F(3x3, 5x5) (49 against 9 x
25). Groups (§3.2) split U_ij and V_ij into
blocks as in im2col.

Where B, G and A come from (Cook-Toom): a product of polynomials is known from its values
at a points. Pick a - 1 of them (0, +-1, 2, -2) and "infinity" (the leading coefficient);
G evaluates the filter's polynomial there, B^T the input's interpolation, A^T the output's
evaluation, with G's rows scaled so that B^T's entries are integers. For F(2x2, 3x3) the
points 0 and +-1 give entries 0, +-1 and +-1/2, which round little (a few ulps of im2col's
float32 result); F(3x3, 3x3) adds the point 2 (entries up to 3 in B^T and 4 in A^T, 1/6 in
G: ~2-3x the rounding of F(2x2, 3x3)); for 5x5 the points +-2 bring entries up to 5 in
B^T and 1/24 in G, and the float32 result is ~10x further from im2col's; F(3x3, 5x5) with
the points +-1/2 and 2 (not +-2 and 1/2, nor 3) rounds about as F(2x2, 5x5) does
(tests/test_winograd.py measures and bounds each).

Bigger tiles cost fewer multiplications but fit a map less well: a tile that hangs over
the edge costs a whole one. On a 6x6 map (the small net's conv3-5) 3x3 tiles fit exactly,
1.44x fewer multiplications than 2x2 tiles; on 13x13 (the paper net's) 1.25x fewer, and
5x5 tiles (from 7x7 patches, as the 3x3 tiles of F(3x3, 5x5)) 1.78x fewer. For
5x5 the 3x3 tiles fit the paper net's 27x27 exactly, 1.78x fewer than 2x2 tiles (which
hang over by one row and column), 1.44x on 13x13.

Backward is the adjoint of each step, in reverse (every step is linear):

    Z_ij  = (A dY_t A^T)_ij                            the m x m output gradient, a x a
    dU_ij = Z_ij @ V_ij^T        dW = G^T dU G          (F, tiles) @ (tiles, C)
    dV_ij = U_ij^T @ Z_ij        dd_t = B dV_t B^T      then overlapping patches ADD into dx

Shapes (one group; T = N * ceil(H/m) * ceil(W/m) tiles; K = a^2, 16, 25, 36 or 49):
x (N, C, H, W); U (K, F, C); V (K, C, T); M, Z (K, F, T); out, dout (N, F, H, W). K is
(i, j) of the a x a.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Winograd(NamedTuple):
    """F(m x m, r x r): the filter size and its three matrices (A^T (m, a), G (a, r),
    B^T (a, a), a = m + r - 1)."""
    r: int
    A_T: np.ndarray
    G: np.ndarray
    B_T: np.ndarray

    @property
    def m(self) -> int:
        """The side of an output tile."""
        return self.A_T.shape[0]

    @property
    def a(self) -> int:
        """The side of a tile's input patch and of its frequency arrays."""
        return self.m + self.r - 1

    @property
    def pad(self) -> int:
        """The padding of the same-size convolution it computes."""
        return self.r // 2

    def fewer_multiplications(self, H: int, W: int) -> float:
        """im2col's multiplications / Winograd's over an H x W output: r^2 per output
        against a^2 per m x m tile, a tile that hangs over the edge costing a whole one
        ((m r)^2 / a^2 = 2.25 for F(2x2, 3x3), 3.24 for F(3x3, 3x3) and 2.78 for F(2x2,
        5x5) when m divides H and W; 2.40 for 5x5 on 13x13, 49 tiles for 169 outputs)."""
        th, tw = tiles(H, W, self.m)
        return H * W * self.r ** 2 / (th * tw * self.a ** 2)


# Lavin & Gray's F(2x2, 3x3): points 0, +-1 and infinity
F2_3 = Winograd(
    r=3,
    A_T=np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64),
    G=np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64),
    B_T=np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
                 dtype=np.float64))

# F(2x2, 5x5): points 0, +-1, +-2 and infinity; B^T is that of Lavin & Gray's F(4x4, 3x3),
# which has the same points
F2_5 = Winograd(
    r=5,
    A_T=np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 1]], dtype=np.float64),
    G=np.array([[1 / 4, 0, 0, 0, 0],
                [-1 / 6, -1 / 6, -1 / 6, -1 / 6, -1 / 6],
                [-1 / 6, 1 / 6, -1 / 6, 1 / 6, -1 / 6],
                [1 / 24, 1 / 12, 1 / 6, 1 / 3, 2 / 3],
                [1 / 24, -1 / 12, 1 / 6, -1 / 3, 2 / 3],
                [0, 0, 0, 0, 1]], dtype=np.float64),
    B_T=np.array([[4, 0, -5, 0, 1, 0],
                  [0, -4, -4, 1, 1, 0],
                  [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0],
                  [0, 2, -1, -2, 1, 0],
                  [0, 4, 0, -5, 0, 1]], dtype=np.float64))

# F(3x3, 3x3): points 0, +-1, 2 and infinity (Cook-Toom, G's rows scaled so that B^T is
# integer; tests/test_winograd.py checks the correlation)
F3_3 = Winograd(
    r=3,
    A_T=np.array([[1, 1, 1, 1, 0], [0, 1, -1, 2, 0], [0, 1, 1, 4, 1]], dtype=np.float64),
    G=np.array([[1 / 2, 0, 0],
                [1 / 2, 1 / 2, 1 / 2],
                [1 / 6, -1 / 6, 1 / 6],
                [1 / 6, 1 / 3, 2 / 3],
                [0, 0, 1]], dtype=np.float64),
    B_T=np.array([[2, -1, -2, 1, 0],
                  [0, 2, 1, -1, 0],
                  [0, -2, 3, -1, 0],
                  [0, -1, 0, 1, 0],
                  [0, 2, -1, -2, 1]], dtype=np.float64))

# F(3x3, 5x5): points 0, +-1, +-1/2, 2 and infinity (Cook-Toom; A^T's columns and B^T's rows
# scaled so that both are integer, G taking the scale). Of the point sets tried at conv2's
# size (two 27x27 images, 48 channels, 64 filters; float32 against float64, forward / dx /
# dW), this one rounds least: 3.7e-6 / 3.6e-6 / 1.2e-5, where F(2x2, 5x5) gives 2.7e-6 /
# 3.2e-6 / 2.2e-5; 0, +-1, +-2, 1/2: 4.6e-6 / 3.9e-6 / 1.6e-5; 0, +-1, +-2, 3: 1e-4 /
# 1.3e-4 / 2.6e-4.
F3_5 = Winograd(
    r=5,
    A_T=np.array([[1, 1, 1, 4, 4, 1, 0],
                  [0, 1, -1, 2, -2, 2, 0],
                  [0, 1, 1, 1, 1, 4, 1]], dtype=np.float64),
    G=np.array([[1 / 2, 0, 0, 0, 0],
                [1 / 6, 1 / 6, 1 / 6, 1 / 6, 1 / 6],
                [1 / 18, -1 / 18, 1 / 18, -1 / 18, 1 / 18],
                [2 / 9, 1 / 9, 1 / 18, 1 / 36, 1 / 72],
                [2 / 15, -1 / 15, 1 / 30, -1 / 60, 1 / 120],
                [1 / 90, 1 / 45, 2 / 45, 4 / 45, 8 / 45],
                [0, 0, 0, 0, 1 / 4]], dtype=np.float64),
    B_T=np.array([[2, -1, -10, 5, 8, -4, 0],
                  [0, -2, -1, 9, 4, -4, 0],
                  [0, 2, -3, -7, 12, -4, 0],
                  [0, 2, 3, -4, -3, 2, 0],
                  [0, -2, 5, 0, -5, 2, 0],
                  [0, 1, 0, -5, 0, 4, 0],
                  [0, -2, 1, 10, -5, -8, 4]], dtype=np.float64))

# F(5x5, 3x3): F(3x3, 5x5)'s points, and so its B^T; A^T's columns for +-1/2 scaled by 16 to
# integers, G taking the scale. At conv4's size (two 13x13 images, 384 channels in two
# groups) its float32 error is ~3x F(3x3, 3x3)'s (9.4e-6 / 1.2e-5 / 6.1e-6 against 3.3e-6 /
# 3.2e-6 / 2.8e-6, forward / dx / dW), the price of 1.42x fewer multiplications on 13x13.
F5_3 = Winograd(
    r=3,
    A_T=np.array([[1, 1, 1, 16, 16, 1, 0],
                  [0, 1, -1, 8, -8, 2, 0],
                  [0, 1, 1, 4, 4, 4, 0],
                  [0, 1, -1, 2, -2, 8, 0],
                  [0, 1, 1, 1, 1, 16, 1]], dtype=np.float64),
    G=np.array([[1 / 2, 0, 0],
                [1 / 6, 1 / 6, 1 / 6],
                [1 / 18, -1 / 18, 1 / 18],
                [1 / 18, 1 / 36, 1 / 72],
                [1 / 30, -1 / 60, 1 / 120],
                [1 / 90, 1 / 45, 2 / 45],
                [0, 0, 1 / 4]], dtype=np.float64),
    B_T=F3_5.B_T)

ALGORITHMS = {3: F2_3, 5: F2_5}  # the readable body's, by filter size


def applies(kh: int, kw: int, stride: int, pad: int) -> bool:
    """The convolutions computed here: 3x3 pad 1 or 5x5 pad 2, stride 1 (same-size output).
    The one test of it: kernels/dispatch.py asks it before sending a convolution here."""
    return kh == kw and kh in ALGORITHMS and stride == 1 and pad == kh // 2


def algorithm(kernel_size: int) -> Winograd:
    """F(2x2, 3x3) or F(2x2, 5x5), by the filters' size: the readable body's default."""
    return ALGORITHMS[kernel_size]


def tiles(H: int, W: int, m: int = 2) -> tuple[int, int]:
    """Tile rows and columns covering an H x W output with m x m tiles."""
    return -(-H // m), -(-W // m)


def filter_transform(W, alg: Winograd | None = None):
    """U = G g G^T for every filter: W (F, C, r, r) -> U (a^2, F, C)."""
    F, C, r = W.shape[:3]
    G = (alg or algorithm(r)).G
    # G g G^T for all filters at once: vec(G g G^T) = (G kron G) vec(g), one product
    U = W.reshape(F * C, r * r) @ np.kron(G, G).T.astype(W.dtype)  # (F*C, a^2)
    return np.ascontiguousarray(U.T).reshape(-1, F, C)


def filter_gradient(dU, dtype, alg: Winograd = F2_3):
    """dW = G^T dU G, the adjoint of filter_transform: dU (a^2, F, C) -> dW (F, C, r, r)."""
    F, C = dU.shape[1:]
    dW = dU.reshape(-1, F * C).T @ np.kron(alg.G, alg.G).astype(dU.dtype)  # (F*C, r^2)
    return dW.reshape(F, C, alg.r, alg.r).astype(dtype)


def patches(x, alg: Winograd = F2_3):
    """d[n, c, ty, tx, i, j] = x_pad[n, c, m ty + i, m tx + j]: the a x a patch under
    each tile of the (padded, and zeros past the last tile) input. x (N, C, H, W)."""
    N, C, H, W = x.shape
    m, a, p = alg.m, alg.a, alg.pad
    th, tw = tiles(H, W, m)
    x_pad = np.zeros((N, C, m * th + a - m, m * tw + a - m), dtype=x.dtype)
    x_pad[:, :, p:H + p, p:W + p] = x
    d = np.empty((N, C, th, tw, a, a), dtype=x.dtype)
    for i in range(a):
        for j in range(a):
            d[..., i, j] = x_pad[:, :, i:i + m * th:m, j:j + m * tw:m]
    return d


def input_transform(x, alg: Winograd = F2_3):
    """V = B^T d B per patch: x (N, C, H, W) -> V (a^2, C, T), tiles ordered (n, ty, tx)."""
    bt = alg.B_T.astype(x.dtype)
    V = np.einsum("ia,ncyxab,jb->ijcnyx", bt, patches(x, alg), bt)
    return V.reshape(alg.a ** 2, x.shape[1], -1)


def output_transform(M, out_shape, alg: Winograd = F2_3):
    """y = A^T m A per tile, cropped to out_shape (N, F, H, W): M (a^2, F, T) -> y."""
    N, F, H, W = out_shape
    m, a = alg.m, alg.a
    th, tw = tiles(H, W, m)
    at = alg.A_T.astype(M.dtype)
    y = np.einsum("pi,ijfnyx,qj->nfypxq", at, M.reshape(a, a, F, N, th, tw), at)
    return y.reshape(N, F, m * th, m * tw)[:, :, :H, :W]


def output_gradient_transform(dout, alg: Winograd = F2_3):
    """Z = A dY A^T per tile, the adjoint of output_transform: dout (N, F, H, W) -> Z
    (a^2, F, T) (the m x m tiles zero-padded past the output's edge)."""
    N, F, H, W = dout.shape
    m = alg.m
    th, tw = tiles(H, W, m)
    d = np.zeros((N, F, m * th, m * tw), dtype=dout.dtype)
    d[:, :, :H, :W] = dout
    at = alg.A_T.astype(dout.dtype)
    Z = np.einsum("pi,nfypxq,qj->ijfnyx", at, d.reshape(N, F, th, m, tw, m), at)
    return Z.reshape(alg.a ** 2, F, -1)


def input_gradient_transform(dV, x_shape, alg: Winograd = F2_3):
    """dx from dV (a^2, C, T): dd = B dV B^T per tile, the overlapping a x a patches added
    back onto the pixels they were read from (the adjoint of input_transform)."""
    N, C, H, W = x_shape
    m, a, p = alg.m, alg.a, alg.pad
    th, tw = tiles(H, W, m)
    bt = alg.B_T.astype(dV.dtype)
    dd = np.einsum("ia,ijcnyx,jb->ncyxab", bt, dV.reshape(a, a, C, N, th, tw), bt)
    dx_pad = np.zeros((N, C, m * th + a - m, m * tw + a - m), dtype=dV.dtype)
    for i in range(a):
        for j in range(a):
            dx_pad[:, :, i:i + m * th:m, j:j + m * tw:m] += dd[..., i, j]
    return dx_pad[:, :, p:H + p, p:W + p]


def _blocks(groups: int, F: int, C: int):
    Fg, Cg = F // groups, C // groups
    return [(slice(g * Fg, (g + 1) * Fg), slice(g * Cg, (g + 1) * Cg)) for g in range(groups)]


def conv_forward(x, W, b, groups: int = 1, alg: Winograd | None = None):
    """out = conv(x, W) + b for a 3x3 pad-1 or 5x5 pad-2, stride-1 convolution:
    x (N, C, H, W), W (F, C/groups, r, r), b (F,) -> out (N, F, H, W). alg: which
    F(m x m, r x r) (default: algorithm(r))."""
    F, C, alg = W.shape[0], x.shape[1], alg or algorithm(W.shape[2])
    U, V = filter_transform(W, alg), input_transform(x, alg)
    M = np.empty((alg.a ** 2, F, V.shape[2]), dtype=x.dtype)
    for fs, cs in _blocks(groups, F, C):
        M[:, fs] = U[:, fs] @ V[:, cs]
    return output_transform(M, (x.shape[0], F) + x.shape[2:], alg) + b.reshape(1, F, 1, 1)


def conv_backward(x, W, dout, groups: int = 1, need_input_grad: bool = True,
                  alg: Winograd | None = None):
    """(dW, db, dx) of conv_forward: dW (F, C/groups, r, r), db (F,), dx (N, C, H, W)
    or None."""
    F, C, alg = W.shape[0], x.shape[1], alg or algorithm(W.shape[2])
    U, V = filter_transform(W, alg), input_transform(x, alg)
    Z = output_gradient_transform(dout, alg)
    dU = np.empty_like(U)
    dV = np.empty_like(V) if need_input_grad else None
    for fs, cs in _blocks(groups, F, C):
        dU[:, fs] = Z[:, fs] @ V[:, cs].transpose(0, 2, 1)
        if dV is not None:
            dV[:, cs] = U[:, fs].transpose(0, 2, 1) @ Z[:, fs]
    db = dout.sum(axis=(0, 2, 3), dtype=np.float64).astype(dout.dtype)
    dx = input_gradient_transform(dV, x.shape, alg) if dV is not None else None
    return filter_gradient(dU, W.dtype, alg), db, dx
