"""A strided convolution by Winograd F(2x2, 3x3) on its space-to-depth maps
(kernels/space_to_depth.py says how), batch-parallel: kernels/winograd/batch.py's drivers,
with input transforms that read x through space-to-depth in the plane they fill anyway,
so xs is never stored. ``conv_forward`` and ``conv_backward`` have the signature and
result of the readable Conv2D bodies (layers/conv.py); kernels/dispatch.py sends a strided
convolution here where space_to_depth.applies.
"""

from __future__ import annotations

import numba
import numpy as np

from .space_to_depth import filters_from_depth, filters_to_depth, geometry
from .winograd import batch as wn
from .winograd.f2x2_3x3 import TRANSFORMS as F2X2_3X3
from .winograd.f2x2_3x3 import plane_to_tiles, tiles_to_plane


@numba.njit(nogil=True, cache=True)
def _input(x, V, s, pad, th, tw):
    """V[4i + j, (c, p, q), t] = (B^T d_t B)[i, j], d_t the 4x4 patch at (2ty, 2tx) of xs's
    map (c, p, q) (space_to_depth.space_to_depth, never stored): x (n, C, H, W) -> V (16,
    C*s*s, n*th*tw)."""
    N, C, H, W = x.shape
    rows, cols = 2 * th + 2, 2 * tw + 2
    plane = np.empty((rows, cols), dtype=x.dtype)
    zero = x.dtype.type(0)
    for n in range(N):
        for c in range(C):
            for p in range(s):
                for q in range(s):
                    for u in range(rows):
                        h = s * u + p - pad
                        inside = 0 <= h < H
                        for v in range(cols):
                            w = s * v + q - pad
                            plane[u, v] = x[n, c, h, w] if inside and 0 <= w < W else zero
                    plane_to_tiles(plane, V, (c * s + p) * s + q, n * th * tw, th, tw)


@numba.njit(nogil=True, cache=True)
def _input_grad(dV, dx, s, pad, th, tw, SH, SW):
    """The adjoint of _input: each map's patches added up in a plane, whose first SH x SW
    go back to the pixels of x they came from (space_to_depth.depth_to_space); a pixel no
    window reads gets 0. dV (16, C*s*s, n*th*tw) -> dx (n, C, H, W) (overwritten)."""
    N, C, H, W = dx.shape
    plane = np.empty((2 * th + 2, 2 * tw + 2), dtype=dx.dtype)
    for n in range(N):
        dx[n] = 0
        for c in range(C):
            for p in range(s):
                for q in range(s):
                    plane[:] = 0
                    tiles_to_plane(dV, (c * s + p) * s + q, n * th * tw, th, tw, plane)
                    for u in range(SH):
                        h = s * u + p - pad
                        if h < 0 or h >= H:
                            continue
                        for v in range(SW):
                            w = s * v + q - pad
                            if 0 <= w < W:
                                dx[n, c, h, w] = plane[u, v]


def plan(x, W, stride: int, pad: int) -> wn.Plan:
    """The Winograd plan of a strided convolution (space_to_depth.applies): F(2x2, 3x3)'s
    transforms, with input ones that read x through space-to-depth, on C*s*s channels and
    the OH x OW output (the valid convolution: a tile's patch starts at 2ty, 2tx of xs)."""
    C, k = x.shape[1], W.shape[2]
    OH, OW, kq, SH, SW = geometry(x.shape, k, stride, pad)
    if kq != 3:
        raise ValueError(f"{k}x{k} stride {stride} has {kq} phases; only 3 are done here")
    th, tw = (OH + 1) // 2, (OW + 1) // 2

    def input_transform(x_part, V):
        _input(x_part, V, stride, pad, th, tw)

    def input_grad(dV, dx_part):
        _input_grad(dV, dx_part, stride, pad, th, tw, SH, SW)

    tf = F2X2_3X3._replace(input=input_transform, input_grad=input_grad)
    return wn.Plan(tf, C * stride * stride, OH, OW)


def conv_forward(x, W, b, stride, pad, groups):
    """Twin of layers.conv.conv_forward for a strided convolution (space_to_depth.applies):
    x (N, C, H, W), W (F, C/G, k, k), b (F,) -> out (N, F, OH, OW)."""
    x = np.ascontiguousarray(x)
    return wn.winograd_forward(x, filters_to_depth(W, stride), b, groups,
                               plan(x, W, stride, pad))


def conv_backward(x, W, dout, stride, pad, groups, need_input_grad=True):
    """Twin of layers.conv.conv_backward for a strided convolution (space_to_depth.applies):
    (dW (F, C/G, k, k), db (F,), dx (N, C, H, W) or None)."""
    x = np.ascontiguousarray(x)
    dWs, db, dx = wn.winograd_backward(x, filters_to_depth(W, stride),
                                       np.ascontiguousarray(dout), groups, need_input_grad,
                                       plan(x, W, stride, pad))
    return filters_from_depth(dWs, stride, W.shape[2]), db, dx
