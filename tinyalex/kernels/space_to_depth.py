"""A strided convolution as a stride-1 one, so that Winograd computes it (space-to-depth).

The paper's conv1 (§3.5: 96 kernels 11x11x3, stride 4, on 227x227) cannot go to
Winograd's F(2x2, 3x3) as it stands: Winograd needs stride 1. Split each kernel tap
i = s*a + p (p < s, a < kq = ceil(k/s)) and each input row the same way, and the stride
disappears:

    out[n, f, y, x] = sum_{c, i, j} W[f, c, i, j] x_pad[n, c, s*y + i, s*x + j]
                    = sum_{(c, p, q), a, b} Ws[f, (c, p, q), a, b] xs[n, (c, p, q), y + a, x + b]

    xs[n, (c, p, q), u, v] = x_pad[n, c, s*u + p, s*v + q]      C*s*s maps of (OH+kq-1)^2
    Ws[f, (c, p, q), a, b] = W[f, c, s*a + p, s*b + q]          zero where s*a + p >= k

a kq x kq stride-1 "valid" convolution of C*s*s channels: the paper's conv1 is a 3x3 one of
48 channels on 57x57 maps, 55x55 out. xs is x's pixels reordered (each once, zeros past
the edges); Ws holds 12x12 taps for 11x11 (1.19x more multiplications), and F(2x2, 3x3)
does 2.25x fewer: 1.82x fewer in all than im2col's at 55x55 (28x28 tiles,
``fewer_multiplications``). The products and the output transforms are those of any 3x3
Winograd layer; only the input transform differs: a tile's 4x4 patch starts at (2ty, 2tx)
of xs, not one pixel before (no padding: the convolution is valid), and its gradient goes
back to x through the reordering's inverse (each pixel of x sits at one place of xs, so
no sums).

Where it pays: the paper's conv1 at batch 128, forward 179-196 -> 136-143 ms and
backward (dW) 209-220 -> 160-176 ms (best and median of 9, interleaved with im2col; 2-core
AVX-512 EPYC). The small net's conv1 (5x5 stride 2, 3*2*2 = 12 channels) ran 1.5x slower
this way (its GEMMs' inner dimension is 12): kernels/dispatch.py sends a strided
convolution here only with at least MIN_CHANNELS channels a group.

The reorderings below are the readable bodies: the convolution of xs by Ws (any body)
equals the strided one. kernels/space_to_depth_numba.py is their twin, the reordering
done inside Winograd's input transform so that xs is never stored
(tests/test_space_to_depth.py proves it equal to im2col's readable Conv2D in float64).
"""

from __future__ import annotations

import numpy as np

from .shapes import conv_output_size

#: Fewest channels a group (C/groups * stride^2) for which a strided convolution goes to
#: Winograd by space-to-depth: the paper's conv1 has 48 and gains 20-27%; the small net's
#: conv1, 12, lost 50% (measured at batch 128, 2-core AVX-512 EPYC).
MIN_CHANNELS = 48


def phases(kernel_size: int, stride: int) -> int:
    """kq = ceil(k / s): the taps of a kernel row that one phase (p) of the input meets."""
    return -(-kernel_size // stride)


def applies(C: int, kh: int, kw: int, stride: int, groups: int) -> bool:
    """A strided square convolution whose phases make a 3x3 one (F(2x2, 3x3)) of at least
    MIN_CHANNELS channels a group (kernels/dispatch.py asks it)."""
    return (stride > 1 and kh == kw and phases(kh, stride) == 3
            and C // groups * stride * stride >= MIN_CHANNELS)


def geometry(x_shape, kernel_size: int, stride: int, pad: int):
    """(OH, OW, kq, SH, SW): the output's size, the phases, and xs's maps (OH + kq - 1)."""
    H, W = x_shape[2:]
    OH = conv_output_size(H, kernel_size, stride, pad)
    OW = conv_output_size(W, kernel_size, stride, pad)
    kq = phases(kernel_size, stride)
    return OH, OW, kq, OH + kq - 1, OW + kq - 1


def fewer_multiplications(kernel_size: int, stride: int, OH: int, OW: int) -> float:
    """im2col's multiplications / Winograd's on the space-to-depth maps, per input
    channel: k^2 per output against 16 * s^2 per 2x2 tile (1.82x for the paper's conv1:
    121 * 55^2 / (16 * 16 * 28^2))."""
    th, tw = -(-OH // 2), -(-OW // 2)
    return OH * OW * kernel_size ** 2 / (th * tw * 16 * stride * stride)


# ------------------------------------------------------------- the readable reorderings

def space_to_depth(x, stride: int, pad: int, SH: int, SW: int):
    """xs[n, (c, p, q), u, v] = x_pad[n, c, s*u + p, s*v + q] (0 past x's edges):
    x (N, C, H, W) -> xs (N, C*s*s, SH, SW)."""
    N, C, H, W = x.shape
    s = stride
    x_pad = np.zeros((N, C, s * SH, s * SW), dtype=x.dtype)
    h, w = min(H, s * SH - pad), min(W, s * SW - pad)  # rows past the last window: unused
    x_pad[:, :, pad:pad + h, pad:pad + w] = x[:, :, :h, :w]
    xs = x_pad.reshape(N, C, SH, s, SW, s).transpose(0, 1, 3, 5, 2, 4)
    return np.ascontiguousarray(xs).reshape(N, C * s * s, SH, SW)


def depth_to_space(dxs, x_shape, stride: int, pad: int):
    """The adjoint of space_to_depth: dx[n, c, h, w] = dxs at (c, p, q), u, v of x_pad's
    pixel (h + pad, w + pad), 0 for a pixel no window reads. -> dx (x_shape)."""
    N, C, H, W = x_shape
    s, SH, SW = stride, dxs.shape[2], dxs.shape[3]
    dx_pad = dxs.reshape(N, C, s, s, SH, SW).transpose(0, 1, 4, 2, 5, 3)
    dx_pad = dx_pad.reshape(N, C, s * SH, s * SW)
    dx = np.zeros(x_shape, dtype=dxs.dtype)
    h, w = min(H, s * SH - pad), min(W, s * SW - pad)
    dx[:, :, :h, :w] = dx_pad[:, :, pad:pad + h, pad:pad + w]
    return dx


def filters_to_depth(W, stride: int):
    """Ws[f, (c, p, q), a, b] = W[f, c, s*a + p, s*b + q], 0 past W's taps:
    W (F, C, k, k) -> Ws (F, C*s*s, kq, kq)."""
    F, C, k = W.shape[:3]
    s, kq = stride, phases(k, stride)
    W_pad = np.zeros((F, C, s * kq, s * kq), dtype=W.dtype)
    W_pad[:, :, :k, :k] = W
    Ws = W_pad.reshape(F, C, kq, s, kq, s).transpose(0, 1, 3, 5, 2, 4)
    return np.ascontiguousarray(Ws).reshape(F, C * s * s, kq, kq)


def filters_from_depth(dWs, stride: int, kernel_size: int):
    """The adjoint of filters_to_depth (the padded taps dropped): dWs (F, C*s*s, kq, kq)
    -> dW (F, C, k, k)."""
    F, kq, s, k = dWs.shape[0], dWs.shape[2], stride, kernel_size
    C = dWs.shape[1] // (s * s)
    dW = dWs.reshape(F, C, s, s, kq, kq).transpose(0, 1, 4, 2, 5, 3)
    return np.ascontiguousarray(dW.reshape(F, C, s * kq, s * kq)[:, :, :k, :k])
