"""Winograd's minimal filtering F(2x2, 3x3): a 3x3, stride-1, pad-1 convolution in 2.25x
fewer multiplications (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
2015). The paper net's conv3-5 are such convolutions (§3.5); this is how the CPU fast path
computes them (kernels/winograd_numba.py, this file's Numba twin). Conv2D's readable body
(im2col, layers/conv.py) stays the reference, and tests/test_winograd.py proves this file
equal to it in float64.

The output is cut into 2x2 tiles; tile t reads the 4x4 patch d_t of the padded input under
it (neighbouring patches overlap by 2). With

    B^T = [[1, 0,-1, 0],    G = [[ 1,   0,   0 ],    A^T = [[1, 1, 1, 0],
           [0, 1, 1, 0],         [1/2, 1/2, 1/2],           [0, 1,-1,-1]]
           [0,-1, 1, 0],         [1/2,-1/2, 1/2],
           [0, 1, 0,-1]]         [ 0,   0,   1 ]]

each filter g (3x3) and patch d (4x4) become 4x4 "frequency" arrays U = G g G^T and
V = B^T d B, and the 2x2 output tile is

    y_t = A^T [ sum_c U[f, c] * V[c, t] ] A          (* elementwise over the 4x4)

so per (i, j) of the 4x4 the channel sum is one matrix product, M_ij = U_ij @ V_ij
((F, C) @ (C, tiles)): 16 products with 16 multiplications per 4 outputs, where im2col
needs 9 per output. Groups (§3.2) split U_ij and V_ij into blocks as in im2col.

Backward is the adjoint of each step, in reverse (every step is linear):

    Z_ij  = (A dY_t A^T)_ij                            the 2x2 output gradient, 4x4
    dU_ij = Z_ij @ V_ij^T        dW = G^T dU G          (F, tiles) @ (tiles, C)
    dV_ij = U_ij^T @ Z_ij        dd_t = B dV_t B^T      then overlapping patches ADD into dx

Shapes (one group; T = N * ceil(H/2) * ceil(W/2) tiles): x (N, C, H, W); U (16, F, C);
V (16, C, T); M, Z (16, F, T); out, dout (N, F, H, W). The 16 is (i, j) of the 4x4.
The entries of B, G and A are 0, +-1 and +-1/2, so the transforms round little: in float32
the result is within a few units of the last place of im2col's.
"""

from __future__ import annotations

import numpy as np

B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)


def applies(kh: int, kw: int, stride: int, pad: int) -> bool:
    """The convolutions F(2x2, 3x3) computes: 3x3, stride 1, pad 1 (same-size output). The
    one test of it: kernels/registry.py asks it before sending a convolution here."""
    return kh == kw == 3 and stride == 1 and pad == 1


def tiles(H: int, W: int) -> tuple[int, int]:
    """Tile rows and columns covering an H x W output with 2x2 tiles."""
    return -(-H // 2), -(-W // 2)


def filter_transform(W):
    """U = G g G^T for every filter: W (F, C, 3, 3) -> U (16, F, C)."""
    F, C = W.shape[:2]
    # G g G^T for all filters at once: vec(G g G^T) = (G kron G) vec(g), one product
    U = W.reshape(F * C, 9) @ np.kron(G, G).T.astype(W.dtype)  # (F*C, 16)
    return np.ascontiguousarray(U.T).reshape(16, F, C)


def filter_gradient(dU, dtype):
    """dW = G^T dU G, the adjoint of filter_transform: dU (16, F, C) -> dW (F, C, 3, 3)."""
    F, C = dU.shape[1:]
    dW = dU.reshape(16, F * C).T @ np.kron(G, G).astype(dU.dtype)  # (F*C, 9)
    return dW.reshape(F, C, 3, 3).astype(dtype)


def patches(x):
    """d[n, c, ty, tx, a, b] = x_pad[n, c, 2ty + a, 2tx + b]: the 4x4 patch under each tile
    of the (pad 1, and zeros past the last tile) input. x (N, C, H, W)."""
    N, C, H, W = x.shape
    th, tw = tiles(H, W)
    x_pad = np.zeros((N, C, 2 * th + 2, 2 * tw + 2), dtype=x.dtype)
    x_pad[:, :, 1:H + 1, 1:W + 1] = x
    d = np.empty((N, C, th, tw, 4, 4), dtype=x.dtype)
    for a in range(4):
        for b in range(4):
            d[..., a, b] = x_pad[:, :, a:a + 2 * th:2, b:b + 2 * tw:2]
    return d


def input_transform(x):
    """V = B^T d B per patch: x (N, C, H, W) -> V (16, C, T), tiles ordered (n, ty, tx)."""
    N, C = x.shape[:2]
    bt = B_T.astype(x.dtype)
    V = np.einsum("ia,ncyxab,jb->ijcnyx", bt, patches(x), bt)
    return V.reshape(16, C, -1)


def output_transform(M, out_shape):
    """y = A^T m A per tile, cropped to out_shape (N, F, H, W): M (16, F, T) -> y."""
    N, F, H, W = out_shape
    th, tw = tiles(H, W)
    at = A_T.astype(M.dtype)
    y = np.einsum("pi,ijfnyx,qj->nfypxq", at, M.reshape(4, 4, F, N, th, tw), at)
    return y.reshape(N, F, 2 * th, 2 * tw)[:, :, :H, :W]


def output_gradient_transform(dout):
    """Z = A dY A^T per tile, the adjoint of output_transform: dout (N, F, H, W) -> Z
    (16, F, T) (the 2x2 tiles zero-padded past the output's edge)."""
    N, F, H, W = dout.shape
    th, tw = tiles(H, W)
    d = np.zeros((N, F, 2 * th, 2 * tw), dtype=dout.dtype)
    d[:, :, :H, :W] = dout
    at = A_T.astype(dout.dtype)
    Z = np.einsum("pi,nfypxq,qj->ijfnyx", at, d.reshape(N, F, th, 2, tw, 2), at)
    return Z.reshape(16, F, -1)


def input_gradient_transform(dV, x_shape):
    """dx from dV (16, C, T): dd = B dV B^T per tile, the overlapping 4x4 patches added
    back onto the pixels they were read from (the adjoint of input_transform)."""
    N, C, H, W = x_shape
    th, tw = tiles(H, W)
    bt = B_T.astype(dV.dtype)
    dd = np.einsum("ia,ijcnyx,jb->ncyxab", bt, dV.reshape(4, 4, C, N, th, tw), bt)
    dx_pad = np.zeros((N, C, 2 * th + 2, 2 * tw + 2), dtype=dV.dtype)
    for a in range(4):
        for b in range(4):
            dx_pad[:, :, a:a + 2 * th:2, b:b + 2 * tw:2] += dd[..., a, b]
    return dx_pad[:, :, 1:H + 1, 1:W + 1]


def _blocks(groups: int, F: int, C: int):
    Fg, Cg = F // groups, C // groups
    return [(slice(g * Fg, (g + 1) * Fg), slice(g * Cg, (g + 1) * Cg)) for g in range(groups)]


def conv_forward(x, W, b, groups: int = 1):
    """out = conv(x, W) + b for a 3x3, stride-1, pad-1 convolution: x (N, C, H, W),
    W (F, C/groups, 3, 3), b (F,) -> out (N, F, H, W)."""
    F, C = W.shape[0], x.shape[1]
    U, V = filter_transform(W), input_transform(x)
    M = np.empty((16, F, V.shape[2]), dtype=x.dtype)
    for fs, cs in _blocks(groups, F, C):
        M[:, fs] = U[:, fs] @ V[:, cs]
    return output_transform(M, (x.shape[0], F) + x.shape[2:]) + b.reshape(1, F, 1, 1)


def conv_backward(x, W, dout, groups: int = 1, need_input_grad: bool = True):
    """(dW, db, dx) of conv_forward: dW (F, C/groups, 3, 3), db (F,), dx (N, C, H, W)
    or None."""
    F, C = W.shape[0], x.shape[1]
    U, V, Z = filter_transform(W), input_transform(x), output_gradient_transform(dout)
    dU = np.empty_like(U)
    dV = np.empty_like(V) if need_input_grad else None
    for fs, cs in _blocks(groups, F, C):
        dU[:, fs] = Z[:, fs] @ V[:, cs].transpose(0, 2, 1)
        if dV is not None:
            dV[:, cs] = U[:, fs].transpose(0, 2, 1) @ Z[:, fs]
    db = dout.sum(axis=(0, 2, 3), dtype=np.float64).astype(dout.dtype)
    dx = input_gradient_transform(dV, x.shape) if dV is not None else None
    return filter_gradient(dU, W.dtype), db, dx
