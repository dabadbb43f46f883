"""The Numba fast variants (tinyalex/kernels/im2col.py, conv_im2col.py, conv_few_taps.py,
gemm_numba.py, pool.py, relu.py, lrn.py, sgd.py) equal the readable NumPy bodies.

Each kernel is called directly (``kim2col.im2col``, or the variant kernels/dispatch.py
picks for the arguments) and compared with the layer module's readable function of the
same name (or the layer with the fast variants off: ``dispatch.settings(fast=False)``).

Exact (bitwise) equality is required where both do the same arithmetic in the same order:
im2col (a copy), col2im (each pixel adds its contributions in the same (i, j) order in
both), max pool forward and its argmax (the first maximum in row-major window order wins,
ties included), and max pool backward when windows do not overlap or the gradients are
small integers (sums then exact in any order).

Tolerances, measured as the largest error relative to the largest entry (gradcheck's
``rel_error``), where the order or the precision of the arithmetic differs:

- max pool backward with overlapping windows: a pixel winning up to four 3/2 windows sums
  their gradients in a different order (readable: by window offset; Numba: by output
  position): 4 machine epsilons (float32 ~5e-7, float64 ~9e-16).
- LRN forward/backward: the Numba twin accumulates the window sum in the input's dtype,
  plane by plane, with its float arithmetic reassociated to vectorise (fastmath): 2e-6
  (float32), 1e-14 (float64).
- the batch-parallel convolution (conv_forward/conv_backward): its GEMMs are smaller and
  single-threaded, and OpenBLAS's float32 kernels then round differently (float64 forward
  and dx came out identical); dW adds per-task partial sums: 2e-6 (float32), 1e-14
  (float64). db is a float64 sum either way, in another order: 1e-7 (float32, nearly
  always identical after the cast), 1e-14 (float64). The 3x3 and 5x5 same-size ones run by
  Winograd (tests/test_winograd.py): F(3x3, 3x3) and F(3x3, 5x5) round more, 2e-5 in
  float32 and 1e-13 in float64 (measured at most 4e-6 and 1e-15).
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from tinyalex.gradcheck import rel_error
from tinyalex.kernels import conv_few_taps, conv_im2col, dispatch, gemm_numba
from tinyalex.kernels import im2col as kim2col
from tinyalex.kernels import lrn as klrn
from tinyalex.kernels import pool as kpool
from tinyalex.kernels import relu as krelu
from tinyalex.kernels import sgd as ksgd
from tinyalex.kernels import threads as kthreads
from tinyalex.layers import Conv2D, LocalResponseNorm, MaxPool2D, conv, lrn, pool

DTYPES = [np.float32, np.float64]
KERNELS = ["im2col", "col2im", "maxpool_forward", "maxpool_backward", "lrn_forward",
           "lrn_backward", "conv_forward", "conv_backward", "relu_forward", "relu_backward",
           "sgd_update"]
LRN_TOL = {np.float32: 2e-6, np.float64: 1e-14}
CONV_TOL = {np.float32: 2e-6, np.float64: 1e-14}
WINOGRAD_TOL = {np.float32: 2e-5, np.float64: 1e-13}
DB_TOL = {np.float32: 1e-7, np.float64: 1e-14}


def eps4(dtype):
    return 4 * float(np.finfo(dtype).eps)


@pytest.fixture
def readable():
    """Call a layer-module function (or a layer's method) with the fast variants off."""
    def call(fn, *args):
        with dispatch.settings(fast=False):
            return fn(*args)
    return call


@pytest.fixture
def fast_on():
    with dispatch.settings(fast=True):
        yield


def assert_identical(a, b, what=""):
    assert a.shape == b.shape and a.dtype == b.dtype, f"{what}: {a.shape}/{a.dtype} vs {b.shape}/{b.dtype}"
    np.testing.assert_array_equal(a, b, err_msg=what, strict=True)


# --------------------------------------------------------------------- im2col / col2im

IM2COL_CASES = {
    #                    x shape,           k, stride, pad
    "conv1-alexnet":   ((2, 3, 227, 227), 11, 4, 0),
    "conv2-alexnet":   ((2, 96, 27, 27), 5, 1, 2),
    "conv3-like":      ((2, 8, 13, 13), 3, 1, 1),
    "stride>kernel":   ((2, 2, 10, 10), 2, 3, 0),
    "pad>0-nonsquare": ((2, 3, 8, 11), 3, 2, 2),
    "pad>kernel/2":    ((1, 2, 6, 6), 3, 2, 3),    # whole rows of columns are padding
    "kernel=input":    ((3, 2, 5, 5), 5, 1, 0),
    "1x1":             ((3, 4, 5, 7), 1, 1, 0),
    "leftover":        ((1, 2, 10, 9), 3, 4, 1),   # (H + 2p - k) % s != 0
    "small-conv1":     ((2, 3, 20, 20), 5, 2, 2),
    "pad>stride-s2":   ((2, 1, 5, 7), 5, 2, 4),    # shifted rows whose last column is padding
    "one-column":      ((2, 2, 3, 1), 7, 1, 3),    # ... left of the input, too
}


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", list(IM2COL_CASES))
def test_im2col_col2im(case, dtype, readable):
    """im2col is a copy and col2im adds in the same order: both bitwise equal (im2col's
    serial twin too, which the convolution's workers run, into wider rows)."""
    shape, k, s, p = IM2COL_CASES[case]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    cols = kim2col.im2col(x, k, k, s, p)
    assert_identical(cols, readable(conv.im2col, x, k, k, s, p), "im2col")
    wide = np.full((cols.shape[0], cols.shape[1] + 5), np.nan, dtype)
    OH, OW = (shape[2] + 2 * p - k) // s + 1, (shape[3] + 2 * p - k) // s + 1
    kim2col.im2col_serial(x, wide, k, k, s, p, OH, OW)
    assert_identical(wide[:, :cols.shape[1]], cols, "serial im2col")
    assert np.isnan(wide[:, cols.shape[1]:]).all()
    dcols = rng.standard_normal(cols.shape).astype(dtype)
    assert_identical(kim2col.col2im(dcols, shape, k, k, s, p),
                     readable(conv.col2im, dcols, shape, k, k, s, p), "col2im")


def test_im2col_non_contiguous(readable):
    """A strided view (e.g. a batch slice with a step) gives the same columns."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3, 9, 9))[::2, :, ::-1]
    assert not x.flags.c_contiguous
    assert_identical(kim2col.im2col(x, 3, 3, 2, 1), readable(conv.im2col, x, 3, 3, 2, 1))


# ------------------------------------------------------------------------------ max pool

POOL_CASES = {
    #                      x shape,          window, stride
    "pool1-alexnet":     ((2, 96, 55, 55), 3, 2),
    "pool5-alexnet":     ((2, 16, 13, 13), 3, 2),
    "2/2":               ((2, 3, 8, 8), 2, 2),
    "stride>window":     ((2, 2, 9, 9), 2, 3),
    "window3-stride1":   ((2, 3, 7, 10), 3, 1),
    "window=input":      ((1, 2, 4, 4), 4, 1),
    "leftover":          ((1, 2, 8, 9), 3, 2),
}


def pool_input(kind, shape, dtype, rng):
    if kind == "distinct":
        return rng.standard_normal(shape).astype(dtype)
    if kind == "ties":          # values in {0, 1, 2}: most windows have a tied maximum
        return rng.integers(0, 3, shape).astype(dtype)
    return np.full(shape, -1.5, dtype)  # "constant": every position ties


@pytest.mark.parametrize("kind", ["distinct", "ties", "constant"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_maxpool(case, dtype, kind, readable):
    """Forward values AND argmax identical, ties included (the first maximum wins).

    Backward: identical for integer-valued gradients (any summation order is exact) and
    for non-overlapping windows; otherwise within 4 eps (summation order differs).
    """
    shape, z, s = POOL_CASES[case]
    rng = np.random.default_rng(2)
    x = pool_input(kind, shape, dtype, rng)
    y, argmax = kpool.maxpool_forward(x, z, s)
    y_r, argmax_r = readable(pool.maxpool_forward, x, z, s)
    assert_identical(y, y_r, "maxpool forward")
    assert_identical(argmax, argmax_r, "argmax")
    if kind == "constant":
        assert np.all(argmax == 0)

    d_int = rng.integers(-8, 9, y.shape).astype(dtype)
    assert_identical(kpool.maxpool_backward(d_int, argmax, shape, z, s),
                     readable(pool.maxpool_backward, d_int, argmax, shape, z, s),
                     "maxpool backward, integer dout")
    d = rng.standard_normal(y.shape).astype(dtype)
    dx = kpool.maxpool_backward(d, argmax, shape, z, s)
    dx_r = readable(pool.maxpool_backward, d, argmax, shape, z, s)
    assert dx.dtype == dx_r.dtype == dtype
    if z <= s:
        assert_identical(dx, dx_r, "maxpool backward, non-overlapping")
    else:
        assert rel_error(dx, dx_r) <= eps4(dtype)
    total, expected = dx.astype(np.float64).sum(), d.astype(np.float64).sum()
    assert abs(total - expected) <= 1e-5 * np.abs(d).astype(np.float64).sum()  # all dout lands


def test_maxpool_argmax_first_max_convention(readable):
    """With a tie the first maximum in row-major window order wins (as np.argmax), in both."""
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 2] = x[0, 0, 2, 0] = 5.0       # window positions 5 and 6 tie
    for y, argmax in (kpool.maxpool_forward(x, 3, 1), readable(pool.maxpool_forward, x, 3, 1)):
        assert y[0, 0, 0, 0] == 5.0 and argmax[0, 0, 0, 0] == 1 * 3 + 2


def test_maxpool_non_contiguous(readable):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 9, 11)).transpose(0, 1, 3, 2)
    assert not x.flags.c_contiguous
    y, am = kpool.maxpool_forward(x, 3, 2)
    y_r, am_r = readable(pool.maxpool_forward, x, 3, 2)
    assert_identical(y, y_r)
    assert_identical(am, am_r)


def test_serial_twins_have_their_own_cache_names():
    """Each serial twin of a parallel kernel (used inside the conv/FC workers, and for small
    ReLUs) is compiled under its own name without ``parallel``: numba's on-disk cache is keyed
    by name and line, so a shared name loaded the parallel build (20 ms for a 0.5 M ReLU)."""
    pairs = [(kim2col._im2col, kim2col.im2col_serial), (kim2col._col2im, kim2col.col2im_serial),
             (krelu._relu_forward, krelu._relu_forward_serial),
             (krelu._relu_backward, krelu._relu_backward_serial),
             (ksgd._sgd_update, ksgd._sgd_update_serial)]
    for parallel, serial in pairs:
        assert parallel.targetoptions.get("parallel") and not serial.targetoptions.get("parallel")
        assert serial.targetoptions.get("nogil")
        assert serial.py_func.__qualname__ != parallel.py_func.__qualname__
        assert serial.py_func.__code__ is parallel.py_func.__code__  # one body, two builds


# ---------------------------------------------------------------------------------- ReLU

@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(3, 5, 7, 6), (2, 16, 256, 130)], ids=["serial", "parallel"])
def test_relu(shape, dtype, readable):
    """ReLU forward and backward: bitwise equal (a copy or a zero per element), exact zeros,
    NaN passed through forward as np.maximum does, a non-contiguous input included; both
    the serial (small) and the parallel (>= ELEMENTWISE_MIN_PARALLEL) loops."""
    from tinyalex.layers import ReLU

    assert (np.prod(shape) >= dispatch.ELEMENTWISE_MIN_PARALLEL) == (shape[0] == 2)
    rng = np.random.default_rng(10)
    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0, 0, :3] = [0.0, -0.0, np.nan]
    x = x[:, :, ::-1]
    dout = rng.standard_normal(x.shape).astype(dtype)
    layer = ReLU()
    y = dispatch.relu_forward(x)(x)
    y_r = readable(layer.forward, x)
    assert_identical(y, y_r, "forward")
    assert_identical(dispatch.relu_backward(dout, y_r)(dout, y_r),
                     readable(layer.backward, dout), "backward")


# ---------------------------------------------------------------------------- SGD update

@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("size", [1000, 2**20 + 3], ids=["serial", "parallel"])
def test_sgd_update(size, dtype, readable):
    """SGD.step with the fused kernel: weights and velocity bitwise equal to the readable
    four passes (the same roundings in the same order) over five steps, a learning-rate
    change between them, both the serial and the parallel loop."""
    from tinyalex.optim import SGD

    rng = np.random.default_rng(11)
    w0 = rng.standard_normal((size,)).astype(dtype).reshape(-1, 1)
    grads = [rng.standard_normal(w0.shape).astype(dtype) for _ in range(5)]
    fused = SGD({"w": w0.copy()}, lr=0.01)
    plain = SGD({"w": w0.copy()}, lr=0.01)
    expected = ksgd.sgd_update if size >= dispatch.ELEMENTWISE_MIN_PARALLEL else \
        ksgd.sgd_update_serial
    assert dispatch.sgd_update(w0, w0.copy()) is expected
    for step, g in enumerate(grads):
        if step == 3:
            fused.lr = plain.lr = 0.001
        fused.step({"w": g})
        readable(plain.step, {"w": g})
    assert_identical(fused.params["w"], plain.params["w"], "weights")
    assert_identical(fused.velocity["w"], plain.velocity["w"], "velocity")
    assert not np.array_equal(fused.params["w"], w0)


# ----------------------------------------------------------------------------------- LRN

LRN_SHAPES = {
    "small": (2, 7, 5, 4),
    "few-channels": (1, 3, 4, 4),        # sizes 4..6 are wider than the channel count
    "norm1-alexnet": (1, 96, 55, 55),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("shape", list(LRN_SHAPES))
def test_lrn(shape, size, dtype, readable):
    """LRN forward (y and s) and backward: equal within the stated tolerance, sizes 1..6."""
    rng = np.random.default_rng(4)
    x = (2 * rng.standard_normal(LRN_SHAPES[shape])).astype(dtype)
    tol = LRN_TOL[dtype]
    for a, beta, k in [(0.1, 0.75, 1.0), (1e-4, 0.75, 2.0)]:
        y, s = klrn.lrn_forward(x, size, a, beta, k)
        y_r, s_r = readable(lrn.lrn_forward, x, size, a, beta, k)
        assert y.dtype == s.dtype == y_r.dtype == s_r.dtype == dtype
        assert rel_error(y, y_r) < tol and rel_error(s, s_r) < tol
        dout = rng.standard_normal(x.shape).astype(dtype)
        dx = klrn.lrn_backward(dout, x, y_r, s_r, size, a, beta)
        dx_r = readable(lrn.lrn_backward, dout, x, y_r, s_r, size, a, beta)
        assert dx.dtype == dx_r.dtype == dtype
        assert rel_error(dx, dx_r) < tol


def test_lrn_non_contiguous(readable):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 6, 5, 5))[:, ::-1]
    y, s = klrn.lrn_forward(x, 5, 0.1, 0.75, 1.0)
    y_r, s_r = readable(lrn.lrn_forward, x, 5, 0.1, 0.75, 1.0)
    assert rel_error(y, y_r) < 1e-14 and rel_error(s, s_r) < 1e-14
    dout = rng.standard_normal(x.shape)[::-1]
    assert rel_error(klrn.lrn_backward(dout, x, y, s, 5, 0.1, 0.75),
                     readable(lrn.lrn_backward, dout, x, y, s, 5, 0.1, 0.75)) < 1e-14


# ---------------------------------------------------------------------- whole layers

def run_layer(layer, x, dout):
    """(y, dx, grads, cache) of one forward+backward; the cache copied (it is overwritten)."""
    y = layer.forward(x, True)
    cache = tuple(np.array(c) for c in layer.cache) if isinstance(layer.cache, tuple) else None
    dx = layer.backward(dout)
    return y, dx, {name: g.copy() for name, g in layer.grads.items()}, cache


CONV_LAYER_CASES = {
    #                x shape,          Conv2D arguments
    "conv2-like":  ((2, 16, 27, 27), dict(in_channels=16, out_channels=32, kernel_size=5,
                                          padding=2, groups=2)),
    "conv1-like":  ((2, 3, 67, 67), dict(in_channels=3, out_channels=8, kernel_size=11,
                                         stride=4)),
    # 13x13 maps: several images share one GEMM (CONV_MIN_COLUMNS), 37 = leftover images
    "conv4-like":  ((37, 12, 13, 13), dict(in_channels=12, out_channels=12, kernel_size=3,
                                           padding=1, groups=2)),
    "s2-p1-rect":  ((5, 4, 9, 7), dict(in_channels=4, out_channels=6, kernel_size=3, stride=2,
                                       padding=1)),
    # few taps (dispatch.FEW_TAPS_MAX): 12 filters and 10x10 = 100 pixels leave edge blocks
    "small-conv1": ((3, 3, 20, 20), dict(in_channels=3, out_channels=12, kernel_size=5,
                                         stride=2, padding=2)),
    "few-taps-g2": ((2, 4, 9, 9), dict(in_channels=4, out_channels=10, kernel_size=3,
                                       stride=2, groups=2)),
    # 144 taps: OpenBLAS's products, 6x6 maps: several images share one GEMM
    "many-taps":   ((31, 16, 11, 11), dict(in_channels=16, out_channels=8, kernel_size=3,
                                           stride=2, padding=1)),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", list(CONV_LAYER_CASES))
def test_conv2d_layer(case, dtype, fast_on):
    """A Conv2D forward+backward, fast (batch-parallel) vs readable: y, dx, dW within
    CONV_TOL, db within DB_TOL; the first layer's backward (no dx) gives the same dW."""
    shape, kwargs = CONV_LAYER_CASES[case]
    rng = np.random.default_rng(6)
    layer = Conv2D(**kwargs, weight_std=0.1, rng=7, dtype=dtype)
    x = rng.standard_normal(shape).astype(dtype)
    dout = rng.standard_normal((shape[0],) + layer.output_shape(shape[1:])).astype(dtype)
    assert dispatch.conv_forward(x, layer.params["W"], layer.stride, layer.padding,
                                 layer.groups) is not None, "no batch-parallel conv on this BLAS"
    algorithm = dispatch.conv_algorithm(x.shape, layer.params["W"].shape, layer.stride,
                                        layer.padding, layer.groups, dtype)
    assert (algorithm in ("winograd", "space-to-depth")) == (dtype == np.float32 and case in (
        "conv2-like", "conv1-like", "conv4-like")), algorithm
    fast_result = run_layer(layer, x, dout)
    layer.need_input_grad = False
    assert layer.backward(dout) is None
    assert_identical(layer.grads["W"], fast_result[2]["W"], "dW without dx")
    layer.need_input_grad = True
    with dispatch.settings(fast=False):
        slow_result = run_layer(layer, x, dout)
    tol = (WINOGRAD_TOL if algorithm == "winograd" else CONV_TOL)[dtype]
    for a, b, what in zip(fast_result[:2], slow_result[:2], ["forward", "dx"], strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype == dtype, what
        assert rel_error(a, b) < tol, what
    assert rel_error(fast_result[2]["W"], slow_result[2]["W"]) < tol
    assert fast_result[2]["b"].dtype == dtype
    assert rel_error(fast_result[2]["b"], slow_result[2]["b"]) < DB_TOL[dtype], "db"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_conv_workers_after_fork(fast_on):
    """A forked child (the parent's pool object, none of its threads) still runs a conv:
    it starts its own workers instead of waiting forever on the parent's."""
    layer = Conv2D(4, 8, 3, padding=1, rng=0)
    x = np.random.default_rng(12).standard_normal((8, 4, 9, 9), dtype=np.float32)
    y = layer.forward(x)
    pid = os.fork()
    if pid == 0:  # the child: exit code 0 if the conv ran and agreed
        code = 3
        try:
            code = 0 if np.array_equal(layer.forward(x), y) else 4
        finally:
            os._exit(code)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child's conv hung")


THREADS_CASES = {  # Conv2D arguments, input (N, C, H, W), need_input_grad
    "winograd": (dict(in_channels=12, out_channels=16, kernel_size=3, padding=1, groups=2),
                 (19, 12, 12, 13), True),
    "few-taps": (dict(in_channels=3, out_channels=12, kernel_size=5, stride=2, padding=2),
                 (19, 3, 12, 13), True),
    "few-taps, first layer": (dict(in_channels=3, out_channels=12, kernel_size=5, stride=2,
                                   padding=2), (19, 3, 12, 13), False),
}


@pytest.mark.parametrize("case", list(THREADS_CASES))
def test_conv_batch_parallel_does_not_depend_on_threads(case, fast_on):
    """Bitwise the same with 1 worker as with 2 (tasks and the dW sum order are fixed), a
    non-contiguous input included; OpenBLAS's thread count is put back afterwards."""
    import numba

    rng = np.random.default_rng(9)
    kwargs, (N, C, H, W), need_input_grad = THREADS_CASES[case]
    layer = Conv2D(**kwargs, weight_std=0.1, rng=0)
    layer.need_input_grad = need_input_grad
    x = rng.standard_normal((N, W, H, C + 1), dtype=np.float32).transpose(0, 3, 2, 1)[:, :C]
    assert not x.flags.c_contiguous
    dout = rng.standard_normal((N,) + layer.output_shape((C, H, W)), dtype=np.float32)
    before = kthreads.blas_threads().info()
    results = []
    for threads in (1, 2):
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        try:
            results.append(run_layer(layer, x, dout))
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert kthreads.blas_threads().info() == before
    (y1, dx1, g1, _), (y2, dx2, g2, _) = results
    assert_identical(y1, y2, "forward")
    assert (dx1 is None) == (dx2 is None) == (not need_input_grad)
    if need_input_grad:
        assert_identical(dx1, dx2, "dx")
    assert_identical(g1["W"], g2["W"], "dW")
    assert_identical(g1["b"], g2["b"], "db")
    contiguous = run_layer(layer, np.ascontiguousarray(x), dout)
    assert_identical(contiguous[0], y2, "forward, contiguous input")


# ------------------------------------------------- few taps: kernels/gemm_numba.py

GEMM_SHAPES = [(96, 75, 784), (12, 75, 100), (5, 18, 16), (1, 1, 1), (33, 27, 37), (8, 128, 48)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("F, K, P", GEMM_SHAPES)
def test_few_taps_products(F, K, P, dtype):
    """gemm_numba.forward = W @ cols + b and weight_grad adds d @ cols.T, within CONV_TOL of
    NumPy's products, for sizes that leave partial blocks; the forward never reads the
    columns past P into out (they are NaN here) and neither writes outside its rows."""
    rng = np.random.default_rng(F * K * P)
    W = rng.standard_normal((F, K)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    cols = np.full((K, gemm_numba.padded(P)), np.nan, dtype)
    cols[:, :P] = rng.standard_normal((K, P))
    framed = np.full((F + 2, P), 7.0, dtype)  # a row either side of out, to see stray writes
    gemm_numba.forward(np.ascontiguousarray(W.T), cols, b, framed[1:-1], P)
    assert rel_error(framed[1:-1], W @ cols[:, :P] + b[:, None]) < CONV_TOL[dtype]
    assert (framed[[0, -1]] == 7).all()

    cols[:, P:] = 0
    d = rng.standard_normal((F, P)).astype(dtype)
    dW0 = rng.standard_normal((F, K)).astype(dtype)
    framed = np.full((F + 2, K), 7.0, dtype)
    framed[1:-1] = dW0
    gemm_numba.weight_grad(d, cols, framed[1:-1], P)
    assert rel_error(framed[1:-1], dW0 + d @ cols[:, :P].T) < CONV_TOL[dtype]
    assert (framed[[0, -1]] == 7).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_few_taps_match_openblas_and_the_timed_steps(dtype, fast_on):
    """The small net's conv1 shape through gemm_numba (conv_few_taps) equals the OpenBLAS
    products (conv_im2col) within CONV_TOL (db, summed over other tasks, DB_TOL); and the
    benchmark's time split (kernels.threads.start_tally) leaves the bits as they were."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((6, 3, 24, 24)).astype(dtype)
    W = (0.1 * rng.standard_normal((24, 3, 5, 5))).astype(dtype)
    b = rng.standard_normal(24).astype(dtype)
    dout = rng.standard_normal((6, 24, 12, 12)).astype(dtype)

    def run(variant=conv_few_taps):
        return (variant.conv_forward(x, W, b, 2, 2, 1),
                *variant.conv_backward(x, W, dout, 2, 2, 1, False))

    y, dW, db, dx = run()
    assert dx is None
    kthreads.start_tally()
    try:
        for a, b_, what in zip(run(), (y, dW, db, dx), ["forward", "dW", "db", "dx"]):
            if a is not None:
                assert_identical(a, b_, what + ", timed steps")
    finally:
        kthreads.stop_tally()
    assert dispatch.conv_algorithm(x.shape, W.shape, 2, 2, 1, dtype) == "few-taps"
    y_blas, dW_blas, db_blas, _ = run(conv_im2col)
    assert rel_error(y, y_blas) < CONV_TOL[dtype]
    assert rel_error(dW, dW_blas) < CONV_TOL[dtype]
    assert rel_error(db, db_blas) < DB_TOL[dtype]


def test_partial_sums_in_task_order_on_any_thread_count():
    """The tasks' partial weight gradients, added on the workers in pieces, give bitwise
    parts[0] + parts[1] + ... in that order, with 1 worker as with 2."""
    import numba

    rng = np.random.default_rng(3)
    parts = rng.standard_normal((5, 3, 70001), dtype=np.float32) * 10 ** rng.integers(
        -3, 4, (5, 1, 1)).astype(np.float32)
    expected = parts[0].copy()
    for t in range(1, len(parts)):
        expected += parts[t]
    for threads in (1, 2):
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        try:
            copy = parts.copy()
            total = kthreads.sum_in_task_order(copy)
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        assert np.shares_memory(total, copy)  # parts[0], overwritten
        assert_identical(total, expected, f"sum on {threads} thread(s)")
    assert not np.array_equal(kthreads.sum_in_task_order(parts[::-1].copy()), expected)


def test_work_in_pieces_covers_the_range_once_on_any_thread_count():
    """threads.in_pieces: consecutive pieces of range(size), one per worker, each at least
    ``least`` long unless there is one; and the Winograd filter transforms split so (with
    the transposed copy of U for the forward products) give the same bits on 1 worker as
    on 2."""
    import numba

    from tinyalex.kernels.winograd import batch

    W = np.random.default_rng(4).standard_normal((37, 5, 3, 3)).astype(np.float32)
    results = []
    for threads in (1, 2):
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        try:
            for size, least in [(10, 1), (1, 1), (0, 1), (100, 60), (7, 3)]:
                seen = []
                kthreads.in_pieces(lambda a, b, seen=seen: seen.append((a, b)), size, least)
                seen.sort()
                assert seen[0][0] == 0 and seen[-1][1] == size
                assert all(b == c for (_, b), (c, _) in zip(seen, seen[1:]))
                assert len(seen) <= threads and (len(seen) == 1 or
                                                 all(b - a >= least for a, b in seen))
            tf = batch.transforms_for(3, 6, 6)
            U = tf.filter(W)
            results.append((U, batch._laid_out_transposed(U.reshape(25, 1, 37, 5)),
                            tf.filter_grad(U, np.float32)))
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for one, two in zip(*results):
        assert_identical(one, two, "a filter transform on 1 worker and on 2")
    assert np.array_equal(results[0][1], results[0][0].reshape(25, 1, 37, 5).transpose(0, 1, 3, 2))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_lrn_and_maxpool_layers(dtype, fast_on):
    """LRN (both conventions) and MaxPool2D layers: fast vs readable, forward+backward."""
    rng = np.random.default_rng(8)
    x = np.maximum(rng.standard_normal((2, 12, 15, 15)), 0).astype(dtype)  # after ReLU
    dout_pool = rng.standard_normal((2, 12, 7, 7)).astype(dtype)
    dout_lrn = rng.standard_normal(x.shape).astype(dtype)
    layers = [LocalResponseNorm(5, alpha=0.1, k=1.0), LocalResponseNorm(4, convention="alpha/n"),
              MaxPool2D(3, 2)]
    douts = [dout_lrn, dout_lrn, dout_pool]
    fast_results = [run_layer(layer, x, d) for layer, d in zip(layers, douts, strict=True)]
    with dispatch.settings(fast=False):
        slow_results = [run_layer(layer, x, d) for layer, d in zip(layers, douts, strict=True)]
    for layer, f, s in zip(layers, fast_results, slow_results, strict=True):
        if isinstance(layer, MaxPool2D):
            assert_identical(f[0], s[0], "pool forward")
            assert_identical(f[3][0], s[3][0], "argmax")
            assert rel_error(f[1], s[1]) <= eps4(dtype)
        else:
            assert rel_error(f[0], s[0]) < LRN_TOL[dtype]
            assert rel_error(f[1], s[1]) < LRN_TOL[dtype]
            assert rel_error(f[3][2], s[3][2]) < LRN_TOL[dtype]  # the cached s
        assert f[0].dtype == f[1].dtype == dtype
