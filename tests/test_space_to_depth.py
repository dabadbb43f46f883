"""A strided convolution as a stride-1 one on its space-to-depth maps (kernels/
space_to_depth.py), and its Winograd twin (kernels/space_to_depth_numba.py), against
Conv2D's readable im2col body.

- The readable reorderings turn conv(x, W, stride s, pad p) into a valid stride-1
  convolution of xs by Ws: equal in float64 to 1e-13 (rounding only), for the paper's
  conv1 geometry (11x11 stride 4) shrunk, 5x5 stride 2 with padding, even kernels, stride
  3, non-square maps, groups.
- depth_to_space and filters_from_depth are the adjoints of space_to_depth and
  filters_to_depth (<A x, y> = <x, A^T y> to 1e-12).
- The Numba twin equals the readable Conv2D (forward, dW, db, dx) within
  tests/test_winograd.py's 3x3 tolerance: 1e-13 in float64, 2e-6 in float32.
- At the paper's conv1 size (227 px, 11x11 stride 4, 48 channels a phase map), float32
  through the twin stays within 2e-6 of float64 im2col for out, dW and dx (measured
  2.4e-7, 3.0e-7, 2.0e-7; float32 im2col's 5.6e-7, 5.5e-7, 1.3e-7).
- kernels/dispatch.py sends conv1 of the paper net here (float32), the small net's (12
  channels, few taps) and those whose phases are not 3 elsewhere, and nothing here under
  TINYALEX_NO_WINOGRAD or in float64.
"""

from __future__ import annotations

import numpy as np
import pytest

from tinyalex.gradcheck import rel_error
from tinyalex.kernels import conv_few_taps, conv_im2col, dispatch
from tinyalex.kernels import space_to_depth as s2d
from tinyalex.kernels import space_to_depth_numba as ks2d
from tinyalex.layers import conv

GEOMETRIES = {
    #                    (N, C, H, W), F, kernel, stride, pad, groups
    "11x11-s4":          ((2, 3, 23, 19), 4, 11, 4, 0, 1),
    "5x5-s2-p2-g2":      ((2, 4, 17, 18), 6, 5, 2, 2, 2),
    "6x6-s2-p1":         ((2, 3, 20, 21), 4, 6, 2, 1, 1),
    "7x7-s3-p2-g2":      ((2, 6, 31, 29), 4, 7, 3, 2, 2),
    "3x3-s1-valid":      ((3, 2, 9, 8), 2, 3, 1, 0, 1),
}
TOL = {np.float32: 2e-6, np.float64: 1e-13}


def _case(name, dtype, seed=0):
    shape, F, k, s, p, groups = GEOMETRIES[name]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    W = rng.standard_normal((F, shape[1] // groups, k, k)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    OH, OW = s2d.geometry(shape, k, s, p)[:2]
    dout = rng.standard_normal((shape[0], F, OH, OW)).astype(dtype)
    return x, W, b, dout, s, p, groups


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_readable_reorderings_make_it_a_stride_1_convolution(name):
    x, W, b, _, s, p, groups = _case(name, np.float64)
    OH, OW, kq, SH, SW = s2d.geometry(x.shape, W.shape[2], s, p)
    xs, Ws = s2d.space_to_depth(x, s, p, SH, SW), s2d.filters_to_depth(W, s)
    assert xs.shape == (x.shape[0], x.shape[1] * s * s, SH, SW)
    assert Ws.shape == (W.shape[0], W.shape[1] * s * s, kq, kq)
    expected = conv.conv_forward(x, W, b, s, p, groups)
    assert expected.shape[2:] == (OH, OW)
    assert rel_error(conv.conv_forward(xs, Ws, b, 1, 0, groups), expected) < 1e-13


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_the_reorderings_have_their_adjoints(name):
    x, W, *_, s, p, _ = _case(name, np.float64, seed=1)
    OH, OW, kq, SH, SW = s2d.geometry(x.shape, W.shape[2], s, p)
    rng = np.random.default_rng(2)
    y = rng.standard_normal((x.shape[0], x.shape[1] * s * s, SH, SW))
    lhs = np.sum(s2d.space_to_depth(x, s, p, SH, SW) * y)
    assert abs(lhs - np.sum(x * s2d.depth_to_space(y, x.shape, s, p))) < 1e-12 * abs(lhs)
    V = rng.standard_normal((W.shape[0], W.shape[1] * s * s, kq, kq))
    lhs = np.sum(s2d.filters_to_depth(W, s) * V)
    rhs = np.sum(W * s2d.filters_from_depth(V, s, W.shape[2]))
    assert abs(lhs - rhs) < 1e-12 * abs(lhs)


def _readable(x, W, b, dout, s, p, groups):
    y = conv.conv_forward(x, W, b, s, p, groups)
    dW, db, dx = conv.conv_backward(x, W, dout, s, p, groups, True)
    return y, dW, db, dx


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_fast_strided_conv_equals_readable_im2col(name, dtype):
    x, W, b, dout, s, p, groups = _case(name, dtype, seed=3)
    expected = _readable(x, W, b, dout, s, p, groups)
    y = ks2d.conv_forward(x, W, b, s, p, groups)
    dW, db, dx = ks2d.conv_backward(x, W, dout, s, p, groups, True)
    assert ks2d.conv_backward(x, W, dout, s, p, groups, False)[2] is None
    for ours, ref, what in zip((y, dW, db, dx), expected, ("forward", "dW", "db", "dx")):
        assert ours.shape == ref.shape and ours.dtype == ref.dtype == dtype, what
        assert rel_error(ours, ref) < TOL[dtype], what


def test_float32_error_at_the_paper_conv1_size():
    """227 px, 11x11 stride 4 (a 3x3 Winograd convolution of 48 channels on 57x57 maps),
    16 kernels: float32 through the twin against float64 im2col, as float32 im2col."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 227, 227))
    W = rng.standard_normal((16, 3, 11, 11)) / np.sqrt(363)
    b, dout = rng.standard_normal(16), rng.standard_normal((2, 16, 55, 55))
    expected = _readable(x, W, b, dout, 4, 0, 1)
    f32 = [a.astype(np.float32) for a in (x, W, b, dout)]
    y = ks2d.conv_forward(*f32[:3], 4, 0, 1)
    dW, _, dx = ks2d.conv_backward(f32[0], f32[1], f32[3], 4, 0, 1, True)
    assert rel_error(y, expected[0]) < 2e-6
    assert rel_error(dW, expected[1]) < 2e-6
    assert rel_error(dx, expected[3]) < 2e-6


def test_dispatch_sends_the_paper_conv1_here():
    forward, backward = dispatch.conv_forward, dispatch.conv_backward
    x = np.zeros((2, 3, 227, 227), np.float32)
    W = np.zeros((96, 3, 11, 11), np.float32)
    dout = np.zeros((2, 96, 55, 55), np.float32)
    assert s2d.applies(3, 11, 11, 4, 1)                                 # 48 channels
    with dispatch.settings(fast=True, winograd=True, batch_parallel_conv=True):
        assert forward(x, W, 4, 0, 1) is ks2d.conv_forward
        assert backward(x, W, dout, 4, 0, 1) is ks2d.conv_backward
        assert forward(x.astype(np.float64), W, 4, 0, 1) is conv_im2col.conv_forward
        small_x = np.zeros((2, 3, 56, 56), np.float32)
        small_W = np.zeros((96, 3, 5, 5), np.float32)
        assert not s2d.applies(3, 5, 5, 2, 1)                           # 12 channels
        assert forward(small_x, small_W, 2, 2, 1) is conv_few_taps.conv_forward
    assert not s2d.applies(48, 7, 7, 2, 1)                              # 4 phases
    assert not s2d.applies(48, 3, 3, 1, 1)                              # stride 1
    with dispatch.settings(fast=True, winograd=False, batch_parallel_conv=True):
        assert forward(x, W, 4, 0, 1) is conv_im2col.conv_forward
        assert backward(x, W, dout, 4, 0, 1) is conv_im2col.conv_backward
