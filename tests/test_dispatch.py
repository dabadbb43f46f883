"""tinyalex/kernels/dispatch.py: the one place a fast variant is chosen, in plain code.

- Walking the table (``dispatch.variants()``): every op has its readable body in its layer
  file, a plain function that runs as written; every variant takes the readable body's
  parameters and equals it on a small float64 case (the thorough comparisons are in
  test_kernels_cpu.py, test_winograd.py, test_space_to_depth.py); every op is in
  test_kernels_cpu.py's KERNELS; every CuPy variant dispatch hands out is a function of
  kernels/gpu.py with the readable parameters (read with ``ast``: no CuPy needed).
- The layers run what dispatch chooses, and their readable bodies when it says None.
- The choices: the settings, the array kind, the dtype (float64 takes the exact im2col,
  never Winograd), the convolution's algorithm by shape, serial or parallel, matching
  dtypes, contiguity.
- A CS231n-style gradient check through the default path of a 3x3 pad-1 convolution in
  float64 meets CS231n's 1e-7.
- No private name crosses a file in tinyalex/ (kernels/ included).
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest

import tinyalex.optim
from tinyalex.gradcheck import rel_error
from tinyalex.kernels import (
    conv_few_taps,
    conv_im2col,
    dispatch,
    relu,
    sgd,
    space_to_depth_numba,
)
from tinyalex.kernels.winograd import batch as winograd_batch
from tinyalex.layers import Conv2D, LocalResponseNorm, MaxPool2D, ReLU, activations, conv, lrn, pool

KERNELS_DIR = Path(dispatch.__file__).parent
READABLE = {"im2col": conv.im2col, "col2im": conv.col2im,
            "conv_forward": conv.conv_forward, "conv_backward": conv.conv_backward,
            "maxpool_forward": pool.maxpool_forward, "maxpool_backward": pool.maxpool_backward,
            "relu_forward": activations.relu_forward, "relu_backward": activations.relu_backward,
            "lrn_forward": lrn.lrn_forward, "lrn_backward": lrn.lrn_backward,
            "sgd_update": tinyalex.optim.sgd_update}
# The ops dispatch hands a CuPy array's variant to: kernels/gpu.py must define each.
GPU_OPS = ["conv_forward", "conv_backward", "maxpool_forward", "maxpool_backward",
           "lrn_forward", "lrn_backward", "sgd_update", "im2col", "col2im"]


def kernel_tests() -> list[str]:
    """tests/test_kernels_cpu.py's KERNELS, the ops its comparisons cover."""
    tree = ast.parse(Path(__file__).with_name("test_kernels_cpu.py").read_text())
    (value,) = [node.value for node in tree.body if isinstance(node, ast.Assign)
                and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["KERNELS"]]
    return ast.literal_eval(value)


def parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def gpu_functions() -> dict[str, list[str]]:
    """kernels/gpu.py's top-level functions and their parameter names, from its source."""
    tree = ast.parse((KERNELS_DIR / "gpu.py").read_text())
    return {node.name: [a.arg for a in node.args.args] for node in tree.body
            if isinstance(node, ast.FunctionDef)}


@pytest.fixture
def fast():
    with dispatch.settings(fast=True, winograd=True, batch_parallel_conv=True):
        yield


# ------------------------------------------------------------------- walking the table

def test_every_op_has_a_readable_body_variants_and_kernel_tests():
    table = dispatch.variants()
    assert set(table) == set(READABLE) == set(kernel_tests())
    for op, variants in table.items():
        assert variants, f"{op} has no fast variant"
        body = READABLE[op]
        assert not hasattr(body, "__wrapped__"), f"{op}'s readable body is wrapped"
        assert inspect.getsourcefile(body) == inspect.getsourcefile(inspect.getmodule(body))
        for name, function in variants.items():
            assert callable(function), (op, name)
            # the readable body's parameters, less the ones a variant fixes (conv's im2col)
            expected = [p for p in parameters(body) if p not in ("im2col", "col2im")]
            assert parameters(function) == expected, (op, name)


def test_every_cupy_variant_is_in_gpu_py_with_the_readable_parameters():
    gpu = gpu_functions()
    for op in GPU_OPS:
        expected = [p for p in parameters(READABLE[op]) if p not in ("im2col", "col2im")]
        assert gpu.get(op) == expected, op


def _cases(rng):
    """Op name -> arguments of small float64 cases, each variant's own for the
    convolution (each a fresh copy per call)."""
    def r(*shape):
        return rng.standard_normal(shape)

    x_pool = r(2, 3, 7, 7)
    _, argmax = pool.maxpool_forward(x_pool, 3, 2)
    x_lrn = r(2, 7, 4, 3)
    y_lrn, s_lrn = lrn.lrn_forward(x_lrn, 5, 0.1, 0.75, 2.0)
    y_relu = np.maximum(r(3, 4, 5), 0)
    conv_cases = {"im2col": (r(3, 16, 6, 5), r(6, 8, 3, 3), 2, 1, 2),
                  "few-taps": (r(3, 4, 6, 5), r(6, 2, 3, 3), 1, 1, 2),
                  "winograd": (r(3, 4, 6, 5), r(6, 2, 5, 5), 1, 2, 2),
                  "space-to-depth": (r(2, 3, 35, 35), r(4, 3, 11, 11), 4, 0, 1)}
    forward, backward = {}, {}
    for name, (x, W, s, p, g) in conv_cases.items():
        F, OH, OW = W.shape[0], (x.shape[2] + 2 * p - W.shape[2]) // s + 1, \
            (x.shape[3] + 2 * p - W.shape[3]) // s + 1
        forward[name] = (x, W, r(F), s, p, g)
        backward[name] = (x, W, r(x.shape[0], F, OH, OW), s, p, g, True)
    return {
        "im2col": (r(2, 3, 7, 6), 3, 3, 2, 1),
        "col2im": (r(27, 24), (2, 3, 7, 6), 3, 3, 2, 1),
        "conv_forward": forward,
        "conv_backward": backward,
        "maxpool_forward": (x_pool, 3, 2),
        "maxpool_backward": (r(2, 3, 3, 3), argmax, x_pool.shape, 3, 2),
        "relu_forward": (r(3, 4, 5),),
        "relu_backward": (r(3, 4, 5), y_relu),
        "lrn_forward": (x_lrn, 5, 0.1, 0.75, 2.0),
        "lrn_backward": (r(2, 7, 4, 3), x_lrn, y_lrn, s_lrn, 5, 0.1, 0.75),
        "sgd_update": (r(50), r(50), r(50), 0.01, 0.9, 5e-4),
    }


def _copy(args):
    return tuple(a.copy() if isinstance(a, np.ndarray) else a for a in args)


def _results(out, args):
    """The arrays an op produced: its return value, or (w, v) for the in-place update."""
    if out is None:
        return list(args[:2])
    return [o for o in (out if isinstance(out, tuple) else (out,)) if o is not None]


@pytest.mark.parametrize("op", sorted(READABLE))
def test_every_variant_equals_its_readable_body(op):
    """In float64: exact algebra, so equal but for rounding (1e-12), Winograd included."""
    cases = _cases(np.random.default_rng(0))
    for name, variant in dispatch.variants()[op].items():
        case = cases[op][name] if isinstance(cases[op], dict) else cases[op]
        args = _copy(case)
        expected = _results(READABLE[op](*args), args)
        args = _copy(case)
        got = _results(variant(*args), args)
        assert len(got) == len(expected), (op, name)
        for a, b in zip(got, expected, strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype, (op, name)
            assert rel_error(a, b) < 1e-12, (op, name)


# ----------------------------------------------------------- the layers run the choice

def _recording(calls, label, function):
    """function, appending label to calls each time it runs."""
    def run(*args, **kwargs):
        calls.append(label)
        return function(*args, **kwargs)
    return run


def _layers():
    return [(Conv2D(4, 6, 3, padding=1, rng=0), conv, "conv_forward", "conv_backward"),
            (ReLU(), activations, "relu_forward", "relu_backward"),
            (LocalResponseNorm(), lrn, "lrn_forward", "lrn_backward"),
            (MaxPool2D(), pool, "maxpool_forward", "maxpool_backward")]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "readable"])
@pytest.mark.parametrize("index", range(4), ids=["Conv2D", "ReLU", "LRN", "MaxPool2D"])
def test_the_layers_run_what_dispatch_chooses(index, fast, monkeypatch):
    """Each layer runs the variant dispatch hands it; with the fast variants off, its own
    readable body (both recorded as they run)."""
    layer, module, *ops = _layers()[index]
    calls = []
    for op in ops:
        choose = getattr(dispatch, op)

        def choose_and_record(*args, _choose=choose, _op=op):
            variant = _choose(*args)
            return None if variant is None else _recording(calls, ("fast", _op), variant)

        monkeypatch.setattr(dispatch, op, choose_and_record)
        monkeypatch.setattr(module, op, _recording(calls, ("readable", op), getattr(module, op)))
    x = np.random.default_rng(1).standard_normal((2, 4, 9, 9)).astype(np.float32)
    with dispatch.settings(fast=fast, winograd=True, batch_parallel_conv=True):
        y = layer.forward(x)
        layer.backward(np.ones_like(y))
    kind = "fast" if fast else "readable"
    assert calls == [(kind, op) for op in ops]


def test_the_sgd_step_runs_what_dispatch_chooses():
    w = np.ones(10, np.float32)
    opt = tinyalex.optim.SGD({"w": w}, lr=0.1)
    with dispatch.settings(fast=True):
        assert dispatch.sgd_update(w, opt.velocity["w"]) is sgd.sgd_update_serial
    with dispatch.settings(fast=False):
        assert dispatch.sgd_update(w, opt.velocity["w"]) is None
        opt.step({"w": np.ones(10, np.float32)})
    assert np.allclose(w, 1 - 0.1 - 0.1 * 5e-4)


# -------------------------------------------------------------------- the choices

def test_the_convolutions_algorithm_by_shape_dtype_and_settings(fast):
    def algorithm(C, F, k, s, p, g, dtype=np.float32):
        return dispatch.conv_algorithm((2, C, 13, 13), (F, C // g, k, k), s, p, g, dtype)

    assert algorithm(256, 384, 3, 1, 1, 1) == "winograd"                  # conv3
    assert algorithm(96, 256, 5, 1, 2, 2) == "winograd"                   # conv2
    assert algorithm(3, 96, 11, 4, 0, 1) == "space-to-depth"              # paper conv1
    assert algorithm(3, 96, 5, 2, 2, 1) == "few-taps"                     # small conv1
    assert algorithm(16, 8, 3, 2, 1, 1) == "im2col"                       # 144 taps
    assert algorithm(256, 384, 3, 1, 1, 1, np.float64) == "im2col"        # exact in float64
    assert algorithm(3, 96, 11, 4, 0, 1, np.float64) == "im2col"
    assert algorithm(3, 96, 5, 2, 2, 1, np.float64) == "few-taps"
    with dispatch.settings(winograd=False):
        assert algorithm(256, 384, 3, 1, 1, 1) == "im2col"
        assert algorithm(3, 96, 11, 4, 0, 1) == "im2col"
    with dispatch.settings(batch_parallel_conv=False):
        assert algorithm(256, 384, 3, 1, 1, 1) == "readable"
        assert dispatch.conv_forward(np.zeros((1, 4, 5, 5), np.float32),
                                     np.zeros((4, 4, 3, 3), np.float32), 1, 1, 1) is None


def test_the_convolution_variants_by_algorithm(fast):
    x32, W3 = np.zeros((2, 4, 6, 6), np.float32), np.zeros((4, 4, 3, 3), np.float32)
    dout = np.zeros((2, 4, 6, 6), np.float32)
    assert dispatch.conv_forward(x32, W3, 1, 1, 1) is winograd_batch.conv_forward
    assert dispatch.conv_backward(x32, W3, dout, 1, 1, 1) is winograd_batch.conv_backward
    x64 = x32.astype(np.float64)
    assert dispatch.conv_forward(x64, W3, 1, 1, 1) is conv_few_taps.conv_forward  # 36 taps
    xs = np.zeros((2, 3, 35, 35), np.float32)
    assert dispatch.conv_forward(xs, np.zeros((4, 3, 11, 11), np.float32), 4, 0, 1) is \
        space_to_depth_numba.conv_forward
    x_many = np.zeros((2, 16, 6, 6), np.float32)
    assert dispatch.conv_forward(x_many, np.zeros((4, 16, 3, 3), np.float32), 2, 1, 1) is \
        conv_im2col.conv_forward


def test_what_gets_no_fast_variant(fast):
    x = np.zeros((4, 3, 5, 5))
    for bad in (x.astype(np.int32), x.tolist(), x.astype(np.float16)):
        assert dispatch.relu_forward(bad) is None
        assert dispatch.maxpool_forward(bad) is None
        assert dispatch.lrn_forward(bad) is None
    assert dispatch.relu_backward(x, x.astype(np.float32)) is None           # mixed dtypes
    w = np.zeros((6, 4))
    assert dispatch.sgd_update(w[:, ::2], w[:, ::2].copy()) is None          # not contiguous
    assert dispatch.sgd_update(w, w.T.copy().T) is None
    with dispatch.settings(fast=False):
        assert dispatch.relu_forward(x) is None and dispatch.lrn_backward(x) is None


def test_serial_or_parallel_by_size(fast):
    small, large = np.zeros(10), np.zeros(dispatch.ELEMENTWISE_MIN_PARALLEL)
    assert dispatch.relu_forward(small) is relu.relu_forward_serial
    assert dispatch.relu_forward(large) is relu.relu_forward
    assert dispatch.relu_backward(small, small) is relu.relu_backward_serial
    assert dispatch.relu_backward(large, large) is relu.relu_backward
    assert dispatch.sgd_update(small, small.copy()) is sgd.sgd_update_serial
    assert dispatch.sgd_update(large, large.copy()) is sgd.sgd_update


def test_settings_are_read_from_the_environment_and_restored():
    assert dispatch.read_settings({}) == dispatch.Settings(True, True, True)
    assert dispatch.read_settings({"TINYALEX_NO_NUMBA": "1",
                                   "TINYALEX_NO_BATCH_PARALLEL_CONV": "yes"}) == \
        dispatch.Settings(fast=False, winograd=True, batch_parallel_conv=False)
    before = dispatch.SETTINGS
    with pytest.raises(RuntimeError), dispatch.settings(fast=not before.fast):
        assert dispatch.SETTINGS.fast is not before.fast
        raise RuntimeError
    assert dispatch.SETTINGS is before


# ------------------------------------------------------- the checks through the default

def test_a_cs231n_gradient_check_through_the_default_path_meets_1e_7(fast):
    """float64 takes the exact im2col path, so a 3x3 pad-1 convolution's dx by central
    differences (h = 1e-5) is within CS231n's 1e-7 (Winograd's float64 forward is ~10x
    noisier: 8e-7 through it)."""
    rng = np.random.default_rng(0)
    layer = Conv2D(3, 4, 3, padding=1, weight_std=0.5, rng=1, dtype=np.float64)
    x = rng.standard_normal((2, 3, 7, 7))
    dout = rng.standard_normal((2, 4, 7, 7))
    assert dispatch.conv_forward(x, layer.params["W"], 1, 1, 1) is not None  # a fast one
    layer.forward(x)
    dx = layer.backward(dout)

    def f(v):
        return float((layer.forward(v) * dout).sum())

    h, numeric = 1e-5, np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        plus = f(x)
        x[i] = old - h
        minus = f(x)
        x[i] = old
        numeric[i] = (plus - minus) / (2 * h)
    error = np.max(np.abs(dx - numeric) / np.maximum(1e-8, np.abs(dx) + np.abs(numeric)))
    assert error < 1e-7


# ----------------------------------------------------------------- no private names

NAMEDTUPLE_API = {"_replace", "_fields", "_asdict", "_make"}  # public, underscored by design
PACKAGE_DIR = KERNELS_DIR.parent


def _private_names_used_across_files() -> list[str]:
    """``from .x import _name`` and ``module._name`` for a tinyalex module, between files of
    the package (design.md: no private name crosses a file)."""
    found = []
    for path in PACKAGE_DIR.rglob("*.py"):
        tree = ast.parse(path.read_text())
        ours = set()  # names bound to tinyalex modules or objects
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("tinyalex")):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{path.name}: from {node.module} import {alias.name}")
                    ours.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                ours |= {a.asname or a.name for a in node.names if a.name.startswith("tinyalex")}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in ours
                    and node.attr.startswith("_") and not node.attr.startswith("__")
                    and node.attr not in NAMEDTUPLE_API):
                found.append(f"{path.name}: {node.value.id}.{node.attr}")
    return found


def test_no_private_name_crosses_a_file():
    assert _private_names_used_across_files() == []
