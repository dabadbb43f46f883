"""The CuPy kernels of tinyalex/kernels/gpu.py, run on the CPU: their CUDA C bodies compiled
as host C++ and checked against the readable NumPy bodies they replace.

CI has no GPU. Here a small FAKE ``cupy`` module (plain NumPy arrays, and an
``ElementwiseKernel`` that builds host C++: tests/host_kernels.py) is put in ``sys.modules``
only while gpu.py is imported from its file, under a private name: ``tinyalex.backend`` and
every other test still see no CuPy. (tests/test_gpu.py runs the whole CuPy path under the
strict stand-in of tests/stand_in/cupy, on the same host compilation; this file checks each
kernel in detail, on NumPy arrays.)

Host C++ and not numba.cuda's simulator: the code run here is the very CUDA text the GPU
compiles (tests/host_kernels.py's docstring says how), with no second copy to keep in sync,
so a wrong index there fails a test here.

Every kernel is called through its gpu.py wrapper (argument order, output shapes and dtypes
tested too), and the layers' call sites (conv with groups, pool, LRN, SGD) through the
dispatcher, told to treat a NumPy array as a CuPy one (``routed_to``). Equality with the
readable body is exact where both do the same arithmetic in the same order (im2col, max pool
forward and argmax, col2im and max-pool backward: both sum in the readable (i, j) order, so
exact in float32 too), else a stated relative tolerance (LRN's pow: 1e-5 float32, 1e-12
float64; the fused SGD update: 1e-6, 1e-14). ``test_harness_can_fail`` feeds deliberately
broken copies of kernel bodies and checks that the comparisons then fail.

Needs g++ (compiled once per kernel and dtype per session, into a temp folder). Without it
the tests skip, except in CI (CI set), where they fail: .ci/run installs g++.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from host_kernels import FakeElementwiseKernel, HostCompiler

import tinyalex
from tinyalex import backend
from tinyalex.gradcheck import rel_error
from tinyalex.layers import Conv2D, LocalResponseNorm, MaxPool2D, conv, lrn, pool
from tinyalex.optim import SGD

GPU_PY = Path(tinyalex.__file__).parent / "kernels" / "gpu.py"
DTYPES = [np.float32, np.float64]
LRN_TOL = {np.float32: 1e-5, np.float64: 1e-12}
SGD_TOL = {np.float32: 1e-6, np.float64: 1e-14}
LAYER_TOL = {np.float32: 1e-5, np.float64: 1e-12}

# ---------------------------------------------------------------------------------------
# The fake cupy: NumPy arrays, and ElementwiseKernel as host C++ (tests/host_kernels.py)
# ---------------------------------------------------------------------------------------


def make_fake_cupy(compiler: HostCompiler) -> types.ModuleType:
    """A module that stands in for cupy while gpu.py is imported: NumPy arrays, host C++."""
    cp = types.ModuleType("cupy", "tests/test_gpu_kernels_host.py's fake cupy (host C++)")

    def ElementwiseKernel(in_params, out_params, operation, name="kernel", preamble="",
                          **kwargs):
        return FakeElementwiseKernel(compiler, in_params, out_params, operation, name,
                                     preamble, **kwargs)

    cp.ElementwiseKernel = ElementwiseKernel
    for name in ("ndarray", "asarray", "ascontiguousarray", "empty", "empty_like", "zeros",
                 "zeros_like", "int32", "int64", "float32", "float64"):
        setattr(cp, name, getattr(np, name))

    def __getattr__(name):
        raise AttributeError(f"the fake cupy has no {name!r}: gpu.py uses it; add it to "
                             f"make_fake_cupy in tests/test_gpu_kernels_host.py")

    cp.__getattr__ = __getattr__
    return cp


def load_gpu_module(fake_cupy: types.ModuleType) -> types.ModuleType:
    """Import tinyalex/kernels/gpu.py from its file, under a private name, with the fake
    cupy in sys.modules only for the import (gpu.py keeps it as its global ``cp``)."""
    spec = importlib.util.spec_from_file_location("_tinyalex_gpu_on_host", GPU_PY)
    module = importlib.util.module_from_spec(spec)
    missing = object()
    saved = sys.modules.get("cupy", missing)
    sys.modules["cupy"] = fake_cupy
    try:
        spec.loader.exec_module(module)
    finally:
        if saved is missing:
            del sys.modules["cupy"]
        else:
            sys.modules["cupy"] = saved
    return module


# ---------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def compiler(tmp_path_factory) -> HostCompiler:
    cxx = shutil.which("g++")
    if cxx is None:
        why = ("g++ not found: tests/test_gpu_kernels_host.py compiles the CuPy kernels of "
               "tinyalex/kernels/gpu.py as host C++ (install it: apt-get install g++)")
        if os.environ.get("CI"):
            pytest.fail(f"{why}; in CI this is an error, not a skip (.ci/run installs g++)")
        pytest.skip(why)
    return HostCompiler(cxx, tmp_path_factory.mktemp("gpu_host"))


@pytest.fixture(scope="session")
def gpu(compiler) -> types.ModuleType:
    """tinyalex/kernels/gpu.py on the fake cupy."""
    return load_gpu_module(make_fake_cupy(compiler))


@pytest.fixture(autouse=True)
def readable_bodies():
    """The layers run their readable NumPy bodies (no Numba), outside ``routed_to``."""
    from tinyalex.kernels import dispatch

    with dispatch.settings(fast=False):
        yield


def data(shape, dtype, seed=0, kind="normal"):
    rng = np.random.default_rng(seed)
    if kind == "ties":  # few distinct values: windows with several equal maxima
        return rng.integers(-2, 3, shape).astype(dtype)
    if kind == "constant":  # every window a full tie, all negative (the max is not 0)
        return np.full(shape, -1.5, dtype=dtype)
    return rng.standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------------------------------
# The checks (plain asserts: test_harness_can_fail expects them to fail on broken kernels)
# ---------------------------------------------------------------------------------------


def check_im2col(gpu, x, kh, kw, s, p):
    cols = gpu.im2col(x, kh, kw, s, p)
    ref = conv.im2col(x, kh, kw, s, p)
    assert cols.shape == ref.shape and cols.dtype == x.dtype
    assert np.array_equal(cols, ref)


def check_col2im(gpu, shape, kh, kw, s, p, dtype):
    OH, OW = (conv.conv_output_size(shape[2], kh, s, p),
              conv.conv_output_size(shape[3], kw, s, p))
    dcols = data((shape[1] * kh * kw, shape[0] * OH * OW), dtype, seed=1)
    dx = gpu.col2im(dcols, shape, kh, kw, s, p)
    ref = conv.col2im(dcols, shape, kh, kw, s, p)
    assert dx.shape == tuple(shape) and dx.dtype == dtype
    assert np.array_equal(dx, ref)


def check_maxpool(gpu, x, z, s):
    y, argmax = gpu.maxpool_forward(x, z, s)
    ref_y, ref_argmax = pool.maxpool_forward(x, z, s)
    assert y.shape == ref_y.shape and y.dtype == x.dtype and argmax.dtype == np.int32
    assert np.array_equal(y, ref_y)
    assert np.array_equal(argmax, ref_argmax)  # ties: the first maximum, as np.argmax
    dout = data(y.shape, x.dtype, seed=2)
    dx = gpu.maxpool_backward(dout, argmax, x.shape, z, s)
    assert dx.shape == x.shape and dx.dtype == x.dtype
    assert np.array_equal(dx, pool.maxpool_backward(dout, ref_argmax, x.shape, z, s))


def lrn_input(shape, dtype, size, a, seed=3):
    """Scaled so that a * (the window's sum of squares) is about 1, as large as k: every
    channel of the window then moves y and dx well above the tolerance."""
    return data(shape, dtype, seed) / np.sqrt(size * a)


def check_lrn(gpu, x, size, a, beta=0.75, k=2.0):
    tol = LRN_TOL[x.dtype.type]
    y, s = gpu.lrn_forward(x, size, a, beta, k)
    ref_y, ref_s = lrn.lrn_forward(x, size, a, beta, k)
    assert y.shape == s.shape == x.shape and y.dtype == s.dtype == x.dtype
    assert rel_error(s, ref_s) < tol and rel_error(y, ref_y) < tol
    dout = data(x.shape, x.dtype, seed=4)
    dx = gpu.lrn_backward(dout, x, y, s, size, a, beta)
    assert dx.shape == x.shape and dx.dtype == x.dtype
    assert rel_error(dx, lrn.lrn_backward(dout, x, ref_y, ref_s, size, a, beta)) < tol


# ---------------------------------------------------------------------------------------
# Each kernel through its wrapper, against the readable body
# ---------------------------------------------------------------------------------------

# (N, C, H, W), kh, kw, stride, pad: strides 1/2/4, pads 0/1/2, kernels 1/3/5/11,
# non-square inputs and kernels, ragged right/bottom edges, C=4 as a conv with 2 groups sees.
CONV_CASES = [
    ((2, 3, 13, 13), 5, 5, 1, 2),
    ((2, 3, 35, 35), 11, 11, 4, 0),
    ((2, 3, 38, 33), 11, 11, 4, 2),
    ((3, 4, 7, 9), 3, 3, 2, 1),
    ((2, 4, 10, 12), 3, 3, 1, 1),
    ((1, 2, 6, 11), 1, 1, 1, 0),
    ((2, 2, 9, 7), 1, 1, 2, 1),
    ((1, 3, 10, 12), 3, 3, 4, 2),
    ((2, 3, 17, 14), 5, 5, 2, 2),
    ((1, 2, 9, 11), 3, 5, 2, 1),
    ((2, 1, 8, 6), 5, 1, 1, 2),
    ((1, 1, 5, 5), 5, 5, 1, 0),
]
CONV_IDS = [f"{'x'.join(map(str, c[0]))}-k{c[1]}x{c[2]}-s{c[3]}-p{c[4]}" for c in CONV_CASES]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape, kh, kw, s, p", CONV_CASES, ids=CONV_IDS)
def test_im2col(gpu, dtype, shape, kh, kw, s, p):
    check_im2col(gpu, data(shape, dtype), kh, kw, s, p)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape, kh, kw, s, p", CONV_CASES, ids=CONV_IDS)
def test_col2im(gpu, dtype, shape, kh, kw, s, p):
    check_col2im(gpu, shape, kh, kw, s, p, dtype)


# (N, C, H, W), window, stride: overlapping 3/2 (the paper's), 2/2, 3/1, 3/3, 5/2, with and
# without a ragged edge (rows or columns no window reaches: their dx must be 0).
POOL_CASES = [
    ((2, 3, 13, 13), 3, 2),
    ((2, 2, 12, 10), 3, 2),
    ((1, 3, 8, 6), 2, 2),
    ((2, 2, 9, 7), 2, 2),
    ((1, 2, 10, 11), 3, 1),
    ((1, 1, 7, 11), 3, 3),
    ((1, 2, 5, 8), 5, 2),
]
POOL_IDS = [f"{'x'.join(map(str, c[0]))}-z{c[1]}-s{c[2]}" for c in POOL_CASES]


@pytest.mark.parametrize("kind", ["normal", "ties", "constant"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape, z, s", POOL_CASES, ids=POOL_IDS)
def test_maxpool(gpu, dtype, shape, z, s, kind):
    check_maxpool(gpu, data(shape, dtype, kind=kind), z, s)


# (N, C, H, W): C above, equal to and below the window, one channel, one pixel.
LRN_SHAPES = [(2, 9, 5, 6), (1, 5, 3, 4), (1, 3, 4, 4), (2, 2, 3, 3), (1, 1, 2, 3), (2, 7, 1, 1)]


@pytest.mark.parametrize("a", [1e-4, 1e-4 / 5], ids=["a=alpha", "a=alpha/n"])
@pytest.mark.parametrize("size", [5, 4])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", LRN_SHAPES, ids=["x".join(map(str, s)) for s in LRN_SHAPES])
def test_lrn(gpu, dtype, shape, size, a):
    check_lrn(gpu, lrn_input(shape, dtype, size, a), size, a)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(1000,), (8, 3, 5, 5), (7,)], ids=["1000", "8x3x5x5", "7"])
def test_sgd_update(gpu, dtype, shape):
    """The fused update against SGD.step's readable four passes over the same w, v, g."""
    w, v, g = (data(shape, dtype, seed) for seed in (5, 6, 7))
    opt = SGD({"w": w.copy()}, lr=0.01, momentum=0.9, weight_decay=5e-4)
    opt.velocity["w"][...] = v
    opt.step({"w": g})
    gpu.sgd_update(w, v, g, 0.01, 0.9, 5e-4)  # in place
    assert w.dtype == v.dtype == dtype
    assert rel_error(v, opt.velocity["w"]) < SGD_TOL[dtype]
    assert rel_error(w, opt.params["w"]) < SGD_TOL[dtype]


# ---------------------------------------------------------------------------------------
# The layers' call sites, routed to the kernels as kernels/dispatch.py routes a CuPy array
# ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def routed_to(gpu):
    """Inside: the layers' calls of the convolution (im2col, col2im), pool, LRN and the SGD
    update dispatch a float NumPy array as they would a CuPy array, to the host-compiled gpu
    module (ops without a CuPy variant keep their readable NumPy body). Yields a function
    giving each kernel's calls so far, to prove the layer went through them."""
    from tinyalex.kernels import dispatch

    kernels = {n: k for n, k in vars(gpu).items() if isinstance(k, FakeElementwiseKernel)}
    before = {n: k.calls for n, k in kernels.items()}
    with pytest.MonkeyPatch.context() as patch, dispatch.settings(fast=True):
        patch.setattr(dispatch, "_numba_array", lambda x: False)
        patch.setattr(dispatch, "_gpu_array",
                      lambda x: isinstance(x, np.ndarray) and x.dtype in dispatch.FLOATS)
        patch.setattr(dispatch, "gpu_kernels", lambda: gpu)
        yield lambda: {n: k.calls - before[n] for n, k in kernels.items()}


def run_layer(make, x, dout):
    layer = make()
    y = layer.forward(x)
    dx = layer.backward(dout)
    return y, dx, dict(layer.grads)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("C, F, k, s, p, G, shape", [
    (4, 6, 3, 1, 1, 2, (2, 4, 9, 8)),
    (6, 4, 5, 2, 2, 2, (2, 6, 11, 13)),
    (3, 4, 11, 4, 2, 1, (2, 3, 27, 23)),
], ids=["g2-k3", "g2-k5-s2", "g1-k11-s4"])
def test_conv_layer_on_fake_gpu(gpu, dtype, C, F, k, s, p, G, shape):
    """Conv2D forward and backward (its groups cut the columns of the whole tensor) with
    im2col and col2im on the fake GPU, against the same layer on the readable bodies."""
    def make():
        return Conv2D(C, F, k, stride=s, padding=p, groups=G, weight_std=0.1, rng=0, dtype=dtype)

    x = data(shape, dtype, seed=8)
    dout = data((shape[0],) + make().output_shape(shape[1:]), dtype, seed=9)
    ref_y, ref_dx, ref_grads = run_layer(make, x, dout)
    with routed_to(gpu) as calls:
        y, dx, grads = run_layer(make, x, dout)
        assert calls()["_IM2COL"] == 2 and calls()["_COL2IM"] == 1  # forward, backward; dx
    tol = LAYER_TOL[dtype]
    assert rel_error(y, ref_y) < tol and rel_error(dx, ref_dx) < tol
    for name in ("W", "b"):
        assert rel_error(grads[name], ref_grads[name]) < tol, name


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layer", ["pool", "lrn-paper", "lrn-alpha/n"])
def test_pool_and_lrn_layers_on_fake_gpu(gpu, dtype, layer):
    make, kernels = {
        "pool": (lambda: MaxPool2D(3, 2), ["_MAXPOOL_FORWARD", "_MAXPOOL_BACKWARD"]),
        "lrn-paper": (lambda: LocalResponseNorm(5, alpha=1e-4), ["_LRN_FORWARD", "_LRN_BACKWARD"]),
        "lrn-alpha/n": (lambda: LocalResponseNorm(5, alpha=1e-4, convention="alpha/n"),
                        ["_LRN_FORWARD", "_LRN_BACKWARD"]),
    }[layer]
    x = data((2, 7, 11, 11), dtype, seed=10) * (30.0 if layer.startswith("lrn") else 1.0)
    dout = data((2,) + make().output_shape((7, 11, 11)), dtype, seed=11)
    ref_y, ref_dx, _ = run_layer(make, x, dout)
    with routed_to(gpu) as calls:
        y, dx, _ = run_layer(make, x, dout)
        assert all(calls()[n] == 1 for n in kernels)
    tol = LAYER_TOL[dtype]
    assert rel_error(y, ref_y) < tol and rel_error(dx, ref_dx) < tol


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_sgd_step_on_fake_gpu(gpu, dtype):
    """SGD.step's call of the fused kernel: its argument order (w, v, g, lr, m, wd)."""
    def run():
        params = {"W": data((4, 3, 3, 3), dtype, seed=12), "b": data((4,), dtype, seed=13)}
        opt = SGD(params, lr=0.02, momentum=0.9, weight_decay=5e-4)
        for step in range(3):
            opt.step({n: data(w.shape, dtype, seed=20 + step) for n, w in params.items()})
        return params, opt.velocity

    ref_params, ref_velocity = run()
    with routed_to(gpu) as calls:
        params, velocity = run()
        assert calls()["_SGD_UPDATE"] == 6
    for name in params:
        assert rel_error(params[name], ref_params[name]) < SGD_TOL[dtype], name
        assert rel_error(velocity[name], ref_velocity[name]) < SGD_TOL[dtype], name


# ---------------------------------------------------------------------------------------
# The harness itself
# ---------------------------------------------------------------------------------------

# (kernel, text in its body, the broken text, the check that must then fail). Each break
# stays inside the arrays (the body's own bounds tests still guard it).
BROKEN = {
    "im2col-row-off-by-one": (
        "_IM2COL", "oh * s + ii - p", "oh * s + ii + 1 - p",
        lambda gpu: check_im2col(gpu, data((2, 3, 9, 8), np.float64), 3, 3, 2, 1)),
    "col2im-column-off-by-one": (
        "_COL2IM", "w + p - j", "w + p + 1 - j",
        lambda gpu: check_col2im(gpu, (2, 3, 9, 8), 3, 3, 2, 1, np.float64)),
    "maxpool-last-maximum-wins": (
        "_MAXPOOL_FORWARD", "v > best", "v >= best",
        lambda gpu: check_maxpool(gpu, data((2, 3, 13, 13), np.float64, kind="ties"), 3, 2)),
    "lrn-backward-window-one-too-wide": (
        "_LRN_BACKWARD", "c + after", "c + after + 1",
        lambda gpu: check_lrn(gpu, lrn_input((2, 9, 3, 3), np.float32, 5, 1e-4), 5, 1e-4)),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_harness_can_fail(gpu, monkeypatch, case):
    """A deliberately broken copy of a kernel body, through the same wrapper and check: the
    comparison must fail (and the intact kernel pass), or the checks above prove nothing."""
    kernel_name, good, bad, check = BROKEN[case]
    kernel = getattr(gpu, kernel_name)
    assert good in kernel.operation, f"{kernel_name}'s body changed: update BROKEN[{case!r}]"
    check(gpu)
    broken = kernel.with_operation(kernel.operation.replace(good, bad))
    monkeypatch.setattr(gpu, kernel_name, broken)
    with pytest.raises(AssertionError):
        check(gpu)


def test_every_kernel_has_a_host_test(gpu):
    """A new ElementwiseKernel in gpu.py fails here until it has a test in this file."""
    kernels = {n for n, k in vars(gpu).items() if isinstance(k, FakeElementwiseKernel)}
    assert kernels == {"_IM2COL", "_COL2IM", "_MAXPOOL_FORWARD", "_MAXPOOL_BACKWARD",
                       "_LRN_FORWARD", "_LRN_BACKWARD", "_SGD_UPDATE"}


def test_fake_cupy_stays_inside_this_file(gpu):
    """After the import the real import machinery sees no fake: no cupy (or the real one), and
    kernels/dispatch.py never hands out the host kernels."""
    assert getattr(sys.modules.get("cupy"), "ElementwiseKernel", None) is not \
        gpu.cp.ElementwiseKernel
    assert not backend.is_gpu_array(np.zeros(3))
    assert "_tinyalex_gpu_on_host" not in sys.modules


def test_fake_kernel_checks_its_arguments(gpu):
    """What CuPy would refuse, the fake refuses too: a wrapper passing arguments in the wrong
    order or of the wrong type fails here rather than reading garbage."""
    x = np.zeros((1, 1, 4, 4), np.float32)
    y, argmax = np.empty((1, 1, 2, 2), np.float32), np.empty((1, 1, 2, 2), np.int32)
    with pytest.raises(TypeError, match="arguments"):
        gpu._MAXPOOL_FORWARD(x, 4, 4, 2, 2, 2, y, argmax)
    with pytest.raises(TypeError, match="argmax must be int32"):
        gpu._MAXPOOL_FORWARD(x, 4, 4, 2, 2, 2, 2, y, argmax.astype(np.int64))
    with pytest.raises(TypeError, match="mismatched"):
        gpu._MAXPOOL_FORWARD(x, 4, 4, 2, 2, 2, 2, y.astype(np.float64), argmax)
    with pytest.raises(TypeError, match="int64"):
        gpu._MAXPOOL_FORWARD(x, 4, 4, 2.0, 2, 2, 2, y, argmax)
    with pytest.raises(ValueError, match="out shape"):
        gpu._MAXPOOL_FORWARD(x, 4, 4, 2, 2, 2, 2, y, argmax[..., :1].copy())
