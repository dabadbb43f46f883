"""Winograd F(2x2, 3x3) (tinyalex/kernels/winograd.py and its Numba twins in
kernels/winograd_numba.py)
computes the same convolution as Conv2D's readable im2col body.

- The readable Winograd equals im2col in float64 to 1e-13 (rel_error): both are exact
  algebra, they differ only in rounding. Odd and even sizes (the last tile hangs over the
  edge), non-square maps, 1x1 maps, groups.
- Each Numba transform equals its readable twin: 1e-14 in float64; in float32 a few ulps
  (1e-6), as the two round their sums in another order.
- The fast Conv2D (Numba transforms + BLAS products) equals the readable im2col layer
  within the conv tolerance of tests/test_kernels_cpu.py (2e-6 float32, 1e-13 float64;
  measured: at most 6e-7 and 1.3e-15).
- The backward is a true gradient: central differences in float64, tolerance 1e-6.
- TINYALEX_NO_WINOGRAD=1 takes the im2col fast path instead.
"""

from __future__ import annotations

import numpy as np
import pytest

from tinyalex.gradcheck import numerical_gradient, rel_error
from tinyalex.kernels import conv as kconv
from tinyalex.kernels import registry, winograd
from tinyalex.kernels import winograd_numba as kwino
from tinyalex.layers import Conv2D, conv

SHAPES = {
    #              (N, C, H, W), F, groups
    "6x6":        ((3, 4, 6, 6), 6, 1),
    "13x13-g2":   ((2, 6, 13, 13), 8, 2),
    "5x7":        ((2, 2, 5, 7), 4, 2),
    "1x1":        ((2, 3, 1, 1), 2, 1),
    "many-images": ((37, 4, 6, 5), 4, 2),
}
TOL = {np.float32: 2e-6, np.float64: 1e-13}


def _case(name, dtype, seed=0):
    shape, F, groups = SHAPES[name]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    W = rng.standard_normal((F, shape[1] // groups, 3, 3)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    dout = rng.standard_normal((shape[0], F) + shape[2:]).astype(dtype)
    return x, W, b, dout, groups


def _im2col_layer(x, W, b, groups, monkeypatch):
    """Conv2D's readable body (the fast paths off) with these weights."""
    monkeypatch.setenv("TINYALEX_NO_NUMBA", "1")
    layer = Conv2D(x.shape[1], W.shape[0], 3, padding=1, groups=groups, dtype=x.dtype)
    layer.params["W"][...] = W
    layer.params["b"][...] = b
    return layer


@pytest.mark.parametrize("name", list(SHAPES))
def test_readable_winograd_equals_im2col(name, monkeypatch):
    x, W, b, dout, groups = _case(name, np.float64)
    layer = _im2col_layer(x, W, b, groups, monkeypatch)
    y = layer.forward(x)
    dx = layer.backward(dout)
    assert rel_error(winograd.conv_forward(x, W, b, groups), y) < 1e-13
    dW, db, dx_w = winograd.conv_backward(x, W, dout, groups)
    assert rel_error(dx_w, dx) < 1e-13
    assert rel_error(dW, layer.grads["W"]) < 1e-13
    assert rel_error(db, layer.grads["b"]) < 1e-13
    assert winograd.conv_backward(x, W, dout, groups, need_input_grad=False)[2] is None


def test_readable_winograd_gradient_is_the_derivative():
    """Central differences of L = sum(out * dout), float64: dW and dx within 1e-6."""
    x, W, b, dout, groups = _case("5x7", np.float64, seed=3)
    dW, _, dx = winograd.conv_backward(x, W, dout, groups)

    def loss():  # numerical_gradient perturbs x and W in place
        return float((winograd.conv_forward(x, W, b, groups) * dout).sum())

    assert rel_error(dx, numerical_gradient(loss, x)) < 1e-6
    assert rel_error(dW, numerical_gradient(loss, W)) < 1e-6


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_numba_transforms_equal_the_readable_ones(dtype):
    tol = 1e-6 if dtype == np.float32 else 1e-14
    for name in SHAPES:
        x, W, _, dout, _ = _case(name, dtype, seed=1)
        N, C, H, Wd = x.shape
        F = W.shape[0]
        T = N * np.prod(winograd.tiles(H, Wd))
        assert rel_error(kwino.winograd_filter(W), winograd.filter_transform(W)) < tol, name
        V = np.empty((16, C, T), dtype=dtype)
        kwino._winograd_input(x, V)
        assert rel_error(V, winograd.input_transform(x)) < tol, name
        Z = np.empty((16, F, T), dtype=dtype)
        kwino._winograd_output_grad(dout, Z)
        assert rel_error(Z, winograd.output_gradient_transform(dout)) < tol, name
        M = np.random.default_rng(2).standard_normal((16, F, T)).astype(dtype)
        out = np.empty_like(dout)
        kwino._winograd_output(M, out, np.zeros(F, dtype))
        assert rel_error(out, winograd.output_transform(M, dout.shape)) < tol, name
        dV = np.random.default_rng(3).standard_normal((16, C, T)).astype(dtype)
        dx = np.empty_like(x)
        kwino._winograd_input_grad(dV, dx)
        assert rel_error(dx, winograd.input_gradient_transform(dV, x.shape)) < tol, name
        dU = np.random.default_rng(4).standard_normal((16, F, W.shape[1])).astype(dtype)
        assert rel_error(kwino.winograd_filter_grad(dU, dtype),
                         winograd.filter_gradient(dU, dtype)) < tol, name


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(SHAPES))
def test_fast_conv_by_winograd_equals_readable_im2col(name, dtype, monkeypatch):
    x, W, b, dout, groups = _case(name, dtype, seed=2)
    monkeypatch.delenv("TINYALEX_NO_WINOGRAD", raising=False)
    assert registry.use_winograd(3, 3, 1, 1)
    assert registry.CONV_FORWARD.pick(x, W, b, 1, 1, groups) is kwino.conv_forward
    assert registry.CONV_BACKWARD.pick(x, W, dout, 1, 1, groups, True) is kwino.conv_backward
    y = kwino.conv_forward(x, W, b, 1, 1, groups)
    dW, db, dx = kwino.conv_backward(x, W, dout, 1, 1, groups)
    assert kwino.conv_backward(x, W, dout, 1, 1, groups, need_input_grad=False)[2] is None
    layer = _im2col_layer(x, W, b, groups, monkeypatch)
    y_ref = layer.forward(x)
    dx_ref = layer.backward(dout)
    for ours, ref, what in [(y, y_ref, "forward"), (dx, dx_ref, "dx"),
                            (dW, layer.grads["W"], "dW"), (db, layer.grads["b"], "db")]:
        assert ours.shape == ref.shape and ours.dtype == ref.dtype == dtype, what
        assert rel_error(ours, ref) < TOL[dtype], what


def test_no_winograd_switch(monkeypatch):
    """TINYALEX_NO_WINOGRAD=1: the 3x3 convolutions take im2col again (other rounding)."""
    x, W, b, _, groups = _case("13x13-g2", np.float32, seed=4)
    monkeypatch.delenv("TINYALEX_NO_NUMBA", raising=False)
    wino = conv.conv_forward(x, W, b, 1, 1, groups)
    monkeypatch.setenv("TINYALEX_NO_WINOGRAD", "1")
    assert not registry.use_winograd(3, 3, 1, 1)
    assert registry.CONV_FORWARD.pick(x, W, b, 1, 1, groups) is kconv.conv_forward
    im2col = conv.conv_forward(x, W, b, 1, 1, groups)
    assert rel_error(wino, im2col) < TOL[np.float32]
    assert not np.array_equal(wino, im2col)  # a different computation, not the same code
    assert not registry.use_winograd(5, 5, 1, 2) and not registry.use_winograd(3, 3, 2, 1)


def test_tasks_do_not_depend_on_the_machine():
    """The task slices are a function of the batch and the map size only (so are the dW
    partial sums): every image in exactly one task, an even count where several."""
    for N, tiles in [(128, 9), (128, 49), (1, 9), (37, 9), (5, 1000)]:
        tasks = kwino._winograd_tasks(N, tiles)
        covered = np.concatenate([np.arange(N)[t] for t in tasks])
        assert np.array_equal(covered, np.arange(N))
        assert len(tasks) <= kconv.CONV_MAX_TASKS
        assert len(tasks) <= 2 or len(tasks) % 2 == 0
