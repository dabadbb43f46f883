"""tinyalex/kernels/registry.py: every op registered once with its readable body, its Numba
twins and its CuPy twin, and the choice between them made there.

- Walking the table: every op has its readable body in its layer file, every Numba twin is
  callable with the readable body's parameters, every CuPy twin is a function of
  kernels/gpu.py with them (read with ``ast``: no GPU, no CuPy needed), or the op says why
  it has none; every op is in tests/test_kernels_cpu.py's parametrisation.
- Every Numba twin, the serial and the Winograd ones included, equals its readable body on
  a small float64 case (the thorough comparisons are in test_kernels_cpu.py and
  test_winograd.py).
- A twin its file does not define, an op without a CuPy twin or a reason, a second op of
  one name or a second readable body: a RegistryError when registered, at import.
- The choices: the flags, the array kind, Winograd or im2col, no batch-parallel conv without
  OpenBLAS, serial or parallel, matching dtypes, contiguity.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest

import tinyalex.layers  # noqa: F401  (marks the readable bodies)
import tinyalex.optim  # noqa: F401
from tinyalex.gradcheck import rel_error
from tinyalex.kernels import conv as kconv
from tinyalex.kernels import registry, threads
from tinyalex.kernels import relu as krelu
from tinyalex.kernels import sgd as ksgd
from tinyalex.kernels import winograd_numba as kwino
from tinyalex.kernels.registry import OPS, Op, RegistryError, Twin
from tinyalex.layers import activations, conv, lrn, pool

GPU_PY = Path(registry.__file__).with_name("gpu.py")
LAYER_FILE = {"im2col": "tinyalex.layers.conv", "col2im": "tinyalex.layers.conv",
              "conv_forward": "tinyalex.layers.conv", "conv_backward": "tinyalex.layers.conv",
              "maxpool_forward": "tinyalex.layers.pool",
              "maxpool_backward": "tinyalex.layers.pool",
              "relu_forward": "tinyalex.layers.activations",
              "relu_backward": "tinyalex.layers.activations",
              "lrn_forward": "tinyalex.layers.lrn", "lrn_backward": "tinyalex.layers.lrn",
              "sgd_update": "tinyalex.optim"}


def kernel_tests() -> list[str]:
    """tests/test_kernels_cpu.py's KERNELS, the ops its dispatch test is parametrised by."""
    tree = ast.parse(Path(__file__).with_name("test_kernels_cpu.py").read_text())
    (value,) = [node.value for node in tree.body if isinstance(node, ast.Assign)
                and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["KERNELS"]]
    return ast.literal_eval(value)


def parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def gpu_functions() -> dict[str, list[str]]:
    """kernels/gpu.py's top-level functions and their parameter names, from its source."""
    tree = ast.parse(GPU_PY.read_text())
    return {node.name: [a.arg for a in node.args.args] for node in tree.body
            if isinstance(node, ast.FunctionDef)}


# ------------------------------------------------------------------- walking the table

def test_every_op_is_in_the_table_and_in_the_kernel_tests():
    assert set(OPS) == set(LAYER_FILE)
    assert set(OPS) == set(kernel_tests()), "a new op needs its case in test_kernels_cpu.py"


@pytest.mark.parametrize("name", sorted(LAYER_FILE))
def test_every_op_has_its_readable_body_and_twins(name):
    op = OPS[name]
    body = op.body
    assert body is not None, f"no layer file marked {name}'s readable body"
    assert body.__module__ == LAYER_FILE[name]
    called = getattr(inspect.getmodule(body), body.__name__)  # what the layer calls
    assert called.op is op and called.__wrapped__ is body
    assert op.numba, f"{name} has no Numba twin"
    for twin in op.numba:
        function = twin.function()
        assert callable(function), twin
        assert parameters(function) == parameters(body), twin
    gpu = gpu_functions()
    if op.cupy:
        (twin,) = op.cupy
        assert twin.module == "gpu" and twin.name in gpu, twin
        assert gpu[twin.name] == parameters(body), twin
    else:
        assert op.no_cupy, f"{name}: no CuPy twin and no reason"


def test_keywords_are_bound_to_the_positions(monkeypatch):
    """A call with keywords reaches the twin with the same positional arguments."""
    monkeypatch.delenv("TINYALEX_NO_NUMBA", raising=False)
    x = np.random.default_rng(1).standard_normal((2, 3, 5, 5))
    expected = kconv.im2col(x, 3, 3, 1, 1)
    seen = []
    real = registry.IM2COL.pick
    monkeypatch.setattr(registry.IM2COL, "pick", lambda *a: seen.append(a) or real(*a))
    got = conv.im2col(x, 3, kw=3, pad=1, stride=1)
    assert np.array_equal(got, expected) and seen[0][1:] == (3, 3, 1, 1)
    with pytest.raises(TypeError):
        conv.im2col(x, 3, 3, 1)


def test_the_layers_call_the_registered_functions():
    """Each layer module's name for the op is the registry's function (a renamed op would
    be an AttributeError at import, not a silent fallback)."""
    for module, names in [(conv, ["im2col", "col2im", "conv_forward", "conv_backward"]),
                          (pool, ["maxpool_forward", "maxpool_backward"]),
                          (activations, ["relu_forward", "relu_backward"]),
                          (lrn, ["lrn_forward", "lrn_backward"]),
                          (tinyalex.optim, ["sgd_update"])]:
        for name in names:
            assert getattr(module, name).op is OPS[name]
        assert "fast(" not in Path(module.__file__).read_text()


# ------------------------------------------------------ every twin against its body

def _cases(rng):
    """Op name -> arguments of a small float64 case (each a fresh copy per call)."""
    def r(*shape):
        return rng.standard_normal(shape)

    x_pool = r(2, 3, 7, 7)
    _, argmax = pool.maxpool_forward.__wrapped__(x_pool, 3, 2)
    x_lrn = r(2, 7, 4, 3)
    y_lrn, s_lrn = lrn.lrn_forward.__wrapped__(x_lrn, 5, 0.1, 0.75, 2.0)
    y_relu = np.maximum(r(3, 4, 5), 0)
    return {
        "im2col": (r(2, 3, 7, 6), 3, 3, 2, 1),
        "col2im": (r(27, 24), (2, 3, 7, 6), 3, 3, 2, 1),
        "conv_forward": (r(3, 4, 6, 5), r(6, 2, 3, 3), r(6), 1, 1, 2),
        "conv_backward": (r(3, 4, 6, 5), r(6, 2, 3, 3), r(3, 6, 6, 5), 1, 1, 2, True),
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


@pytest.mark.parametrize("name", sorted(LAYER_FILE))
def test_every_numba_twin_equals_its_readable_body(name, monkeypatch):
    cases = _cases(np.random.default_rng(0))
    assert set(cases) == set(OPS)
    op = OPS[name]
    monkeypatch.setenv("TINYALEX_NO_NUMBA", "1")  # the body's own inner ops readable too
    args = _copy(cases[name])
    expected = _results(op.body(*args), args)
    monkeypatch.delenv("TINYALEX_NO_NUMBA")
    for twin in op.numba:
        args = _copy(cases[name])
        got = _results(twin.function()(*args), args)
        assert len(got) == len(expected), twin
        for a, b in zip(got, expected, strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype, twin
            assert rel_error(a, b) < 1e-12, twin


# -------------------------------------------------------------------- registering

def test_a_missing_twin_fails_at_registration():
    with pytest.raises(RegistryError, match="defines no im2col_typo"):
        Twin("conv", "im2col_typo")
    with pytest.raises(RegistryError, match="defines no im2col_gpu"):
        Twin("gpu", "im2col_gpu")
    with pytest.raises(RegistryError, match="no kernels/convolution.py"):
        Twin("convolution", "im2col")
    assert "test_op" not in OPS


def test_an_op_needs_a_cupy_twin_or_a_reason_and_one_name():
    with pytest.raises(RegistryError, match="say why"):
        Op("test_op", [Twin("conv", "im2col")], None)
    with pytest.raises(RegistryError, match="no Numba twin"):
        Op("test_op", [], "none")
    with pytest.raises(RegistryError, match="registered twice"):
        Op("im2col", [Twin("conv", "im2col")], Twin("gpu", "im2col"))
    assert "test_op" not in OPS


def test_a_second_readable_body_fails():
    def im2col(x, kh, kw, stride, pad):
        return x

    with pytest.raises(RegistryError, match="readable body already"):
        registry.IM2COL.readable(im2col)
    assert registry.IM2COL.body is conv.im2col.__wrapped__


# ---------------------------------------------------------------------------- choices

@pytest.fixture
def fast_on(monkeypatch):
    for name in ("TINYALEX_NO_NUMBA", "TINYALEX_NO_WINOGRAD", "TINYALEX_NO_BATCH_PARALLEL_CONV"):
        monkeypatch.delenv(name, raising=False)


def test_array_kind_and_the_switch(fast_on, monkeypatch):
    x = np.zeros((1, 1, 2, 2))
    assert registry.IM2COL.pick(x, 1, 1, 1, 0) is kconv.im2col
    assert registry.IM2COL.pick(x.astype(np.float32), 1, 1, 1, 0) is kconv.im2col
    assert registry.IM2COL.pick(x.astype(np.int32), 1, 1, 1, 0) is None
    assert registry.IM2COL.pick(x.tolist(), 1, 1, 1, 0) is None
    monkeypatch.setenv("TINYALEX_NO_NUMBA", "1")
    assert registry.IM2COL.pick(x, 1, 1, 1, 0) is None


def test_cupy_arrays_get_the_cupy_twins(fast_on, monkeypatch):
    """With the array kind and the CuPy module stood in for (this is how a test without a
    GPU routes the layers to kernels/gpu.py run on the host): the gpu.py function, and the
    readable body for an op with no CuPy twin."""
    stand_in = type("gpu", (), {name: object() for name in gpu_functions()})
    monkeypatch.setattr(registry, "array_kind", lambda x: "cupy")
    monkeypatch.setattr(registry, "cupy_kernels", lambda: stand_in)
    x, w = np.zeros((2, 3, 5, 5)), np.zeros((4, 3, 3, 3))
    assert registry.IM2COL.pick(x, 3, 3, 1, 1) is stand_in.im2col
    assert registry.LRN_BACKWARD.pick(x, x, x, x, 5, 1e-4, 0.75) is stand_in.lrn_backward
    assert registry.CONV_FORWARD.pick(x, w, np.zeros(4), 1, 1, 1) is None
    assert registry.RELU_FORWARD.pick(x) is None
    assert registry.SGD_UPDATE.pick(w, w, w, 0.1, 0.9, 0.0) is stand_in.sgd_update
    assert registry.SGD_UPDATE.pick(w[:, ::2], w[:, ::2], w, 0.1, 0.9, 0.0) is None
    monkeypatch.setattr(registry, "cupy_kernels", lambda: None)  # CuPy does not import
    assert registry.IM2COL.pick(x, 3, 3, 1, 1) is None


def test_winograd_or_im2col(fast_on, monkeypatch):
    if not registry.batch_parallel_conv():
        pytest.skip("no batch-parallel conv on this BLAS")
    x, b = np.zeros((2, 4, 6, 6)), np.zeros(4)
    w3, w5 = np.zeros((4, 4, 3, 3)), np.zeros((4, 4, 5, 5))
    pick = registry.CONV_FORWARD.pick
    assert pick(x, w3, b, 1, 1, 1) is kwino.conv_forward
    assert registry.CONV_BACKWARD.pick(x, w3, x, 1, 1, 1, True) is kwino.conv_backward
    assert pick(x, w3, b, 2, 1, 1) is kconv.conv_forward      # stride 2
    assert pick(x, w3, b, 1, 0, 1) is kconv.conv_forward      # no padding
    assert pick(x, w5, b, 1, 1, 1) is kconv.conv_forward      # 5x5 pad 1: not same-size
    assert pick(x, w5, b, 1, 2, 1) is kwino.conv_forward      # 5x5 pad 2: F(3x3, 5x5)
    monkeypatch.setenv("TINYALEX_NO_WINOGRAD", "1")
    assert pick(x, w3, b, 1, 1, 1) is kconv.conv_forward
    assert registry.CONV_BACKWARD.pick(x, w3, x, 1, 1, 1, True) is kconv.conv_backward


def test_no_batch_parallel_conv_without_openblas(fast_on, monkeypatch):
    """Without OpenBLAS's thread control (or with TINYALEX_NO_BATCH_PARALLEL_CONV) neither
    conv twin runs, Winograd included; im2col keeps its twin."""
    x, w, b = np.zeros((2, 4, 6, 6)), np.zeros((4, 4, 3, 3)), np.zeros(4)
    monkeypatch.setattr(threads, "OPENBLAS_THREADS", None)
    assert not registry.batch_parallel_conv()
    assert registry.CONV_FORWARD.pick(x, w, b, 1, 1, 1) is None
    assert registry.CONV_BACKWARD.pick(x, w, x, 1, 1, 1, True) is None
    assert registry.IM2COL.pick(x, 3, 3, 1, 1) is kconv.im2col
    monkeypatch.undo()
    monkeypatch.setenv("TINYALEX_NO_BATCH_PARALLEL_CONV", "yes")
    assert registry.CONV_FORWARD.pick(x, w, b, 1, 1, 1) is None


def test_serial_or_parallel_dtypes_and_contiguity(fast_on):
    small, large = np.zeros(10), np.zeros(registry.ELEMENTWISE_MIN_PARALLEL)
    assert registry.RELU_FORWARD.pick(small) is krelu.relu_forward_serial
    assert registry.RELU_FORWARD.pick(large) is krelu.relu_forward
    assert registry.RELU_BACKWARD.pick(small, small) is krelu.relu_backward_serial
    assert registry.RELU_BACKWARD.pick(large, large) is krelu.relu_backward
    assert registry.RELU_BACKWARD.pick(small, small.astype(np.float32)) is None
    assert registry.SGD_UPDATE.pick(small, small, small, 0.1, 0.9, 0.0) is ksgd.sgd_update_serial
    assert registry.SGD_UPDATE.pick(large, large, large, 0.1, 0.9, 0.0) is ksgd.sgd_update
    w = np.zeros((4, 6))[:, ::2]
    assert registry.SGD_UPDATE.pick(w, w.copy(), w, 0.1, 0.9, 0.0) is None
    assert registry.SGD_UPDATE.pick(w.copy(), w, w, 0.1, 0.9, 0.0) is None
