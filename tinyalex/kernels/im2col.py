"""Numba twins of layers/conv.py's im2col and col2im: the same (C*kh*kw, N*OH*OW) columns,
each channel's rows on its own core (``im2col``, ``col2im``) or, for a worker of the
batch-parallel convolution, on the calling thread into its own buffer (``im2col_serial``,
``col2im_serial``). tests/test_kernels_cpu.py proves them equal to the readable bodies.
"""

from __future__ import annotations

import numba
import numpy as np

from .jit import JIT, U, serial_twin
from .shapes import conv_output_size


@numba.njit(inline="always")
def _valid_range(out_size, stride, offset, size):
    """The o in [lo, hi) with 0 <= o*stride + offset < size (offset = kernel tap - pad)."""
    lo = 0
    while lo < out_size and lo * stride + offset < 0:
        lo += 1
    hi = out_size
    while hi > lo and (hi - 1) * stride + offset >= size:
        hi -= 1
    return lo, hi


@numba.njit(**JIT)
def _im2col(x, cols, kh, kw, stride, pad, OH, OW):
    """cols[:, :N*OH*OW] = im2col(x): x (N, C, H, W) C-contiguous (read flat), cols
    (C*kh*kw, >= N*OH*OW) (pass a whole buffer, not a view of its first columns, whose rows
    numba would address with a stride it cannot vectorise over).

    Most rows are copies of another row, shifted: tap (c, i, j) sees what tap
    (c, i, j - stride) sees one output column to the right, and what (c, i - stride, j)
    sees one output row down. So only the taps with i, j < stride gather from x; the
    others copy a row already in cache and gather only their last column (or row)."""
    N, C, H, W = x.shape
    P = OH * OW
    flat = x.reshape(-1)
    for c in numba.prange(C):  # a channel's rows in order: a row copies an earlier one
        for i in range(kh):
            for j in range(kw):
                dst_row = cols[(c * kh + i) * kw + j]
                if j >= stride:  # tap j - stride's row one to the left; then each last column
                    left = cols[(c * kh + i) * kw + j - stride]
                    for q in range(U(N * P - 1)):
                        dst_row[q] = left[q + 1]
                    w = (OW - 1) * stride - pad + j
                    for n in range(N):
                        for oh in range(OH):
                            h = oh * stride - pad + i
                            inside = 0 <= h < H and 0 <= w < W
                            dst_row[U(n * P + oh * OW + OW - 1)] = (
                                flat[U(((n * C + c) * H + h) * W + w)] if inside else 0)
                    continue
                first = 0
                if i >= stride:  # tap i - stride's row one output row up; then the last row
                    up = cols[(c * kh + i - stride) * kw + j]
                    for n in range(N):
                        start = U(n * P)
                        for q in range(U((OH - 1) * OW)):
                            dst_row[start + q] = up[start + q + U(OW)]
                    first = OH - 1
                off = j - pad
                lo, hi = _valid_range(OW, stride, off, W)
                for n in range(N):
                    for oh in range(first, OH):
                        h = oh * stride - pad + i
                        dst = n * P + oh * OW
                        if h < 0 or h >= H:
                            for ow in range(OW):
                                dst_row[U(dst + ow)] = 0
                            continue
                        src = ((n * C + c) * H + h) * W + off  # x[n, c, h, off]
                        # Plain loops, not slice assignments (each slice is an array
                        # object), and a stride-1 branch whose copy is contiguous.
                        for ow in range(lo):
                            dst_row[U(dst + ow)] = 0
                        if stride == 1:
                            d, s = U(dst + lo), U(src + lo)
                            for k in range(U(hi - lo)):
                                dst_row[d + k] = flat[s + k]
                        else:
                            for ow in range(lo, hi):
                                dst_row[U(dst + ow)] = flat[U(src + ow * stride)]
                        for ow in range(hi, OW):
                            dst_row[U(dst + ow)] = 0


def im2col(x, kh, kw, stride, pad):
    """Twin of tinyalex.layers.conv.im2col: (N, C, H, W) -> (C*kh*kw, N*OH*OW)."""
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, kh, stride, pad), conv_output_size(W, kw, stride, pad)
    cols = np.empty((C * kh * kw, N * OH * OW), dtype=x.dtype)
    _im2col(np.ascontiguousarray(x), cols, kh, kw, stride, pad, OH, OW)
    return cols


@numba.njit(**JIT)
def _col2im(cols, dx, kh, kw, stride, pad, OH, OW):
    """dx = col2im(cols[:, :N*OH*OW]): dx (N, C, H, W) C-contiguous (written flat)."""
    N, C, H, W = dx.shape
    flat = dx.reshape(-1)
    for c in numba.prange(C):  # each channel of dx is written by its own rows only
        dx[:, c] = 0
        for i in range(kh):
            for j in range(kw):
                src_row = cols[(c * kh + i) * kw + j]
                off = j - pad
                lo, hi = _valid_range(OW, stride, off, W)
                for n in range(N):
                    base = n * OH * OW
                    for oh in range(OH):
                        h = oh * stride - pad + i
                        if h < 0 or h >= H:
                            continue
                        src = base + oh * OW
                        dst = ((n * C + c) * H + h) * W + off  # dx[n, c, h, off]
                        if stride == 1:
                            d, s = U(dst + lo), U(src + lo)
                            for k in range(U(hi - lo)):
                                flat[d + k] += src_row[s + k]
                        else:
                            for ow in range(lo, hi):
                                flat[U(dst + ow * stride)] += src_row[U(src + ow)]


def col2im(cols, x_shape, kh, kw, stride, pad):
    """Twin of tinyalex.layers.conv.col2im: (C*kh*kw, N*OH*OW) -> x_shape."""
    N, C, H, W = x_shape
    OH, OW = conv_output_size(H, kh, stride, pad), conv_output_size(W, kw, stride, pad)
    dx = np.empty(x_shape, dtype=cols.dtype)
    _col2im(np.ascontiguousarray(cols), dx, kh, kw, stride, pad, OH, OW)
    return dx


im2col_serial = serial_twin(_im2col, "im2col_serial")
col2im_serial = serial_twin(_col2im, "col2im_serial")
