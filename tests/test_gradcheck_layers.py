"""Gradient checks of every layer, written to be worked through as exercises.

How a learner uses this file
----------------------------
Write your own layers with tinyalex's contract (see tinyalex/layers/base.py):

    y  = layer.forward(x, train)      # NCHW or (N, D) arrays; remember what backward needs
    dx = layer.backward(dout)         # and fill layer.grads with the same keys as layer.params
    layer.astype(np.float64)          # cast the parameters (the checks run in float64)

in a module of your own, say ``mylayers.py``, with classes named as tinyalex's (``Conv2D``,
``ReLU``, ``Tanh``, ``LocalResponseNorm``, ``MaxPool2D``, ``Dropout``, ``Linear``,
``Flatten``, ``SoftmaxCrossEntropy``) and the same constructor arguments. Then point this
suite at it:

    TINYALEX_EXERCISE=mylayers python -m pytest tests/test_gradcheck_layers.py
    TINYALEX_EXERCISE=path/to/mylayers.py python -m pytest tests/test_gradcheck_layers.py

Every class your module defines replaces tinyalex's; the ones it does not define fall back
to tinyalex's, so you can do the layers one at a time (start with ReLU and Linear, end with
Conv2D with groups and LRN). ``pytest -k Conv2D`` (any of the class names) runs one
family. The module must be importable: put it in the folder you run ``python -m pytest``
from, or give a file path.

What a gradient check is
------------------------
``tinyalex.gradcheck.check_layer`` turns a layer into a scalar L(x) = sum(forward(x) * dout)
for a fixed random dout, so that backward(dout) must equal dL/dx, and compares that (and
every parameter gradient) with the central difference (L(x + h) - L(x - h)) / 2h, h = 1e-5,
one entry at a time. In float64 a right backward pass agrees to about 1e-8 relative; a
wrong one is off by order 1. The bar is ``gradcheck.TOLERANCE`` (1e-6). Inputs are chosen
away from kinks (ReLU at 0, ties in a max pool), where there is no derivative to check.

Each test of one of tinyalex's own layers runs twice: with tinyalex's Numba fast paths
("numba") and with the readable NumPy bodies only (TINYALEX_NO_NUMBA=1, "numpy"). A layer
your module defines runs once per case ("exercise" in the test id): those two paths are
tinyalex's kernels, nothing of yours. Sizes are tiny on purpose: a numerical gradient costs
two forward passes per entry.

When a check fails it says so in words: a gradient check fails with "dx is wrong (relative
error 0.29, bar 1e-06)" (dW, db: the parameters'), followed by "Likely cause: ..." where the
test can tell (a missing cross-channel term of LRN, a gradient off by a constant factor).
Each case also carries a description and, where the case targets one thing, its likely
cause (``@layer_test(...)`` on a test, ``case(...)`` for a parametrized value; both end up
in the junit report as properties). ``tinyalex.learning.exercises.check_layer`` prints them
as a table of every failing case.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import tinyalex.layers as reference
from tinyalex import gradcheck
from tinyalex.kernels import dispatch

LAYER_NAMES = ("Conv2D", "ReLU", "Tanh", "LocalResponseNorm", "MaxPool2D", "Dropout",
               "Linear", "Flatten", "SoftmaxCrossEntropy")


def load_layers(spec: str | None = None) -> tuple[dict[str, type], list[str]]:
    """The layer classes under test: tinyalex's, overridden by those of TINYALEX_EXERCISE.

    spec is a module path (``mylayers``, ``pkg.mylayers``) or a ``.py`` file. Returns the
    {name: class} factory and the names taken from the exercise module.
    """
    layers = {name: getattr(reference, name) for name in LAYER_NAMES}
    spec = os.environ.get("TINYALEX_EXERCISE", "") if spec is None else spec
    if not spec:
        return layers, []
    if spec.endswith(".py"):
        path = Path(spec).resolve()
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[path.stem] = module
        module_spec.loader.exec_module(module)
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        module = importlib.import_module(spec)
    misnamed = misnamed_layers(module)
    if misnamed:
        raise ExerciseError(f"TINYALEX_EXERCISE={spec}: " + "; ".join(misnamed) + ". The "
                            f"layer names are {', '.join(LAYER_NAMES)} (case-sensitive); a "
                            "class of another name would leave tinyalex's own layer under "
                            "test")
    overridden = []
    for name in LAYER_NAMES:
        candidate = getattr(module, name, None)
        if isinstance(candidate, type):
            layers[name] = candidate
            overridden.append(name)
    return layers, overridden


class ExerciseError(Exception):
    """The exercise module defines a layer under a name the tests do not know."""


def misnamed_layers(module) -> list[str]:
    """A sentence for each class the module itself defines that has forward and backward
    (a layer) but is not named as one of LAYER_NAMES, with the name it probably meant."""
    import difflib

    lowered = {n.lower(): n for n in LAYER_NAMES}
    out = []
    for name, obj in vars(module).items():
        if not isinstance(obj, type) or name in LAYER_NAMES:
            continue
        if getattr(obj, "__module__", None) != module.__name__:
            continue  # imported, e.g. a base class
        if not (hasattr(obj, "forward") and hasattr(obj, "backward")):
            continue
        guess = lowered.get(name.lower()) or next(
            iter(difflib.get_close_matches(name, LAYER_NAMES, n=1, cutoff=0.6)), None)
        out.append(f"it defines a layer class {name!r}"
                   + (f", did you mean {guess!r}?" if guess else
                      ", which is none of the layer names"))
    return out


LAYERS, OVERRIDDEN = load_layers()
TOL = gradcheck.TOLERANCE


# ------------------------------------------------- which layer, which case, which kernels

def layer_test(layer: str | None, says: str, cause: str | None = None,
               baseline: bool | None = None):
    """Mark a test as checking ``layer`` (None: no layer of the factory), with its words.

    ``says`` names the test in a learner's words ("conv2d"); a parametrized value adds its
    own with ``case``. ``cause`` is the likely cause when this test fails while its
    ``baseline`` case (the plainest one) passes.
    """
    def mark(fn):
        fn = pytest.mark.says(says, cause=cause, baseline=baseline)(fn)
        if not layer:
            return fn
        # pytest -k also matches names assigned to the test function, so the class name
        # selects the layer's tests whatever they are called: -k LocalResponseNorm, test_lrn
        setattr(fn, layer, True)
        return pytest.mark.layer(layer)(fn)
    return mark


def case(*values, id: str, says: str, cause: str | None = None,
         baseline: bool | None = None):
    """A parametrized value with the words that describe it ("stride 2") and, where the
    case targets one thing, the likely cause when it fails (see layer_test)."""
    return pytest.param(*values, id=id,
                        marks=pytest.mark.says(says, cause=cause, baseline=baseline))


def kernel_paths(layer: str | None) -> list[str]:
    """tinyalex's own layer: both kernel paths; a layer of the exercise module: one run."""
    return ["exercise"] if layer in OVERRIDDEN else ["numba", "numpy"]


def pytest_generate_tests(metafunc):
    """Parametrize ``kernels`` per test by the layer it checks (``@layer_test``)."""
    if "kernels" in metafunc.fixturenames:
        mark = metafunc.definition.get_closest_marker("layer")
        metafunc.parametrize("kernels", kernel_paths(mark.args[0] if mark else None),
                             indirect=True)


@pytest.fixture
def kernels(request):
    """"numba": tinyalex's fast variants on; "numpy": off, the readable bodies (as
    tests/conftest.py's fast_path); "exercise": the learner's layer, as it is."""
    with dispatch.settings(fast=request.param != "numpy"):
        yield request.param


@pytest.fixture(autouse=True)
def describe_case(request):
    """Put the case's words, likely cause and whether it is a baseline into the junit
    report as properties (the test's own ``says`` first, then each parametrized value's,
    in order). check_layer asks for junit_family=xunit1, where properties belong."""
    marks = [m for m in request.node.own_markers if m.name == "says"]
    said = [m.kwargs["baseline"] for m in marks if m.kwargs.get("baseline") is not None]
    request.node.user_properties += [
        ("says", ", ".join(m.args[0] for m in marks)),
        ("cause", "; ".join(m.kwargs["cause"] for m in marks if m.kwargs.get("cause"))),
        ("baseline", "yes" if said and all(said) else "no")]


pytestmark = pytest.mark.usefixtures("kernels")  # tinyalex's layers twice, yours once


def make(name: str, *args, **kwargs):
    """Build layer ``name`` from the factory, parameters cast to float64."""
    layer = LAYERS[name](*args, **kwargs)
    if hasattr(layer, "astype"):
        layer = layer.astype(np.float64)
    return layer


def assert_gradients_ok(layer, x, train=True, seed=0, diagnose=None):
    """Every gradient (dx and one per parameter) of ``layer`` at x within TOLERANCE.

    A failure says which gradient is wrong and by how much, "dx is wrong (relative error
    0.29, bar 1e-06)", and, where it can tell, "Likely cause: ...": ``diagnose(layer, x)``
    (a test's own diagnosis, a sentence or None), else a wrong constant factor or sign.
    """
    pairs = gradcheck.layer_gradients(layer, x, seed=seed, train=train)
    missing = sorted(name for name, (analytic, _) in pairs.items() if analytic is None)
    assert not missing and set(layer.grads) == set(layer.params), \
        (f"layer.grads must have the keys of layer.params ({sorted(layer.params)}): it has "
         f"{sorted(layer.grads)}")
    errors, wrong = {}, []
    for name, (analytic, numeric) in pairs.items():
        if analytic.shape != numeric.shape:
            wrong.append(f"d{name} has shape {analytic.shape}, expected {numeric.shape}")
            continue
        errors[name] = gradcheck.rel_error(analytic, numeric)
        if not errors[name] < TOL:
            wrong.append(f"d{name} is wrong (relative error {errors[name]:.2g}, bar {TOL:g})")
    if wrong:
        cause = diagnose(layer, x) if diagnose else None
        cause = cause or next(filter(None, (factor_cause(name, *pairs[name]) for name in pairs
                                            if name in errors and not errors[name] < TOL)), None)
        raise AssertionError("; ".join(wrong) + (f". Likely cause: {cause}" if cause else ""))
    return errors


def factor_cause(name, analytic, numeric) -> str | None:
    """A sentence when the analytic gradient is the right one times a constant (0, -1, 2,
    ...), else None."""
    if not np.all(np.isfinite(analytic)):
        return f"d{name} has NaN or infinite entries"
    if not np.any(numeric):
        return None
    if not np.any(analytic):
        return f"d{name} is all zeros: backward does not compute it"
    c = float(np.vdot(analytic, numeric) / np.vdot(numeric, numeric))
    if gradcheck.rel_error(analytic, c * numeric) >= TOL:
        return None
    if abs(c + 1) < 1e-3:
        return f"d{name} has the wrong sign"
    return f"d{name} is {c:.3g} times the right gradient: a constant factor is missing or extra"


def away_from_zero(rng, shape, margin=0.1):
    """Standard normal entries pushed at least ``margin`` away from 0 (the ReLU kink)."""
    x = rng.standard_normal(shape)
    return np.where(x >= 0, x + margin, x - margin)


def distinct(rng, shape, spacing=0.01):
    """A random arrangement of equally spaced values: no ties, gaps >> the step 1e-5."""
    n = int(np.prod(shape))
    return (rng.permutation(n) - n / 2).reshape(shape) * spacing


@layer_test(None, "the exercise module defines a layer")
def test_exercise_module_is_used():
    """If TINYALEX_EXERCISE is set, it must define at least one of the layer classes.

    (A typo in a class name would otherwise silently test tinyalex's own layer.)
    """
    if not os.environ.get("TINYALEX_EXERCISE"):
        assert OVERRIDDEN == []
        return
    assert OVERRIDDEN, (f"TINYALEX_EXERCISE={os.environ['TINYALEX_EXERCISE']} defines none of "
                        f"{', '.join(LAYER_NAMES)}")
    print("layers under test from the exercise module:", ", ".join(OVERRIDDEN))


@layer_test(None, "the TINYALEX_EXERCISE mechanism")
def test_exercise_override_mechanism(tmp_path, monkeypatch):
    """The factory takes classes of the same name from the module and falls back otherwise."""
    (tmp_path / "my_exercise_layers.py").write_text(
        "from tinyalex.layers import ReLU as _R\n\nclass ReLU(_R):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    layers, overridden = load_layers("my_exercise_layers")
    assert overridden == ["ReLU"]
    assert layers["ReLU"].__module__ == "my_exercise_layers"
    assert layers["Conv2D"] is reference.Conv2D
    layers, overridden = load_layers(str(tmp_path / "my_exercise_layers.py"))
    assert overridden == ["ReLU"] and layers["Linear"] is reference.Linear


@layer_test(None, "a misnamed layer class is an error")
def test_a_misnamed_layer_is_an_error_whichever_tests_run(tmp_path):
    """A module whose ReLU is spelt ``Relu`` used to pass ``-k ReLU`` silently, testing
    tinyalex's own ReLU. Now collecting the tests fails, naming the class and the name it
    probably meant, also when -k selects only the ReLU tests."""
    import subprocess

    (tmp_path / "mylayers.py").write_text(
        "import numpy as np\n\nclass Relu:\n    def forward(self, x, train=True):\n"
        "        return np.maximum(x, 0)\n\n    def backward(self, dout):\n"
        "        return dout\n")
    with pytest.raises(ExerciseError, match="'Relu', did you mean 'ReLU'"):
        load_layers(str(tmp_path / "mylayers.py"))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(Path(__file__)), "-k", "ReLU"],
                         env={**os.environ, "TINYALEX_EXERCISE": "mylayers"}, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "did you mean 'ReLU'" in run.stdout + run.stderr
    assert " passed" not in run.stdout.splitlines()[-1]


# ------------------------------------------------------------------------- Conv2D (§3.2, 3.5)

CONV_CASES = {
    #                  N, C, H, W,  F, k, stride, pad, groups
    "plain":          (2, 3, 6, 6, 4, 3, 1, 0, 1),
    "stride2":        (2, 3, 7, 7, 4, 3, 2, 0, 1),
    "padding":        (2, 2, 5, 5, 3, 3, 1, 2, 1),
    "groups2":        (2, 4, 5, 5, 6, 3, 1, 0, 2),
    "groups2-s2-p1":  (2, 4, 7, 7, 4, 3, 2, 1, 2),
    "1x1":            (2, 4, 3, 3, 5, 1, 1, 0, 1),
    "non-square":     (2, 3, 5, 8, 4, 3, 2, 1, 1),
    "stride>kernel":  (1, 2, 7, 7, 3, 2, 3, 0, 1),
}
GROUPS_CAUSE = ("groups (§3.2): kernel map f of group g reads only the input channels of "
                "group g, W is (F, C/groups, k, k), and dx, dW are computed per group")
CONV_WORDS = {  # case -> (words, likely cause when "plain" passes)
    "plain": ("plain 3x3, stride 1, no padding", None),
    "stride2": ("stride 2", "the stride: output (i, j) reads input rows 2i..2i+2 and "
                "columns 2j..2j+2, and col2im must put dx back at those places"),
    "padding": ("padding 2", "the padding: dx of the padded input must be cut back to the "
                "unpadded size (drop the border), not shifted"),
    "groups2": ("groups=2", GROUPS_CAUSE),
    "groups2-s2-p1": ("groups=2, stride 2, padding 1", GROUPS_CAUSE),
    "1x1": ("1x1 kernel", "a 1x1 convolution is a matrix product per pixel: check the "
            "reshapes between (N, C, H, W) and (C, N*H*W)"),
    "non-square": ("non-square input 5x8, stride 2, padding 1",
                   "H and W (or their output sizes) are swapped somewhere"),
    "stride>kernel": ("stride 3 > kernel 2", "pixels no window covers must get dx exactly 0; "
                      "the output size is (H + 2 pad - k) // stride + 1"),
}


@layer_test("Conv2D", "conv2d")
@pytest.mark.parametrize("case", [
    case(name, id=name, says=CONV_WORDS[name][0], cause=CONV_WORDS[name][1],
         baseline=name == "plain") for name in CONV_CASES])
def test_conv2d(case):
    """Conv2D: dx, dW, db by im2col/col2im, for stride, padding, groups, 1x1, non-square.

    Stride and padding change which pixels feed which outputs (col2im must ADD the
    overlapping receptive fields back, and drop the padding); groups cut W into G
    independent blocks (§3.2); 1x1 kernels are a plain matrix product per pixel; a
    non-square input catches H and W swapped anywhere; stride > kernel leaves pixels that
    no output sees (their gradient must be exactly 0, which the check covers).
    """
    N, C, H, W, F, k, s, p, G = CONV_CASES[case]
    rng = np.random.default_rng(1)
    layer = make("Conv2D", C, F, k, stride=s, padding=p, groups=G, weight_std=0.5, rng=2)
    layer.params["b"] = rng.standard_normal(F)  # a nonzero bias, to check db honestly
    assert_gradients_ok(layer, rng.standard_normal((N, C, H, W)))


@layer_test("Conv2D", "conv2d, groups=2 keep the two halves apart (§3.2)", cause=GROUPS_CAUSE)
def test_conv2d_groups_do_not_mix():
    """Groups (§3.2): the two GPUs' halves never see each other.

    With groups=2 kernel maps of group 0 read only input channels of group 0. So with a
    dout that is nonzero only on group 1's outputs, group 0's kernels must get an exactly
    zero gradient and group 0's input channels an exactly zero dx; and changing group 0's
    input must leave group 1's output unchanged. (A numerically right gradient could still
    hide a group bug if the wrong block happened to be used consistently; this cannot.)
    """
    rng = np.random.default_rng(3)
    N, C, F, G = 2, 4, 6, 2
    layer = make("Conv2D", C, F, 3, stride=2, padding=1, groups=G, weight_std=0.5, rng=4)
    x = rng.standard_normal((N, C, 7, 7))
    y = layer.forward(x, True)
    dout = rng.standard_normal(y.shape)
    dout[:, :F // 2] = 0                         # only group 1's outputs matter
    dx = layer.backward(dout)
    assert np.all(layer.grads["W"][:F // 2] == 0), "group 0's kernels got gradient from group 1"
    assert np.all(dx[:, :C // 2] == 0), "group 0's input channels got gradient from group 1"
    assert np.any(layer.grads["W"][F // 2:] != 0) and np.any(dx[:, C // 2:] != 0)

    x2 = x.copy()
    x2[:, :C // 2] = rng.standard_normal((N, C // 2, 7, 7))  # change group 0's input only
    y2 = layer.forward(x2, True)
    np.testing.assert_array_equal(y2[:, F // 2:], y[:, F // 2:])
    assert not np.allclose(y2[:, :F // 2], y[:, :F // 2])
    assert layer.params["W"].shape == (F, C // G, 3, 3)


# ----------------------------------------------------------------------- ReLU, Tanh (§3.1)

@layer_test("ReLU", "ReLU", baseline=True)
def test_activation_ReLU():
    """ReLU: dx = dout where y > 0 (where x > 0), 0 elsewhere.

    Inputs are kept at least 0.1 away from 0, where ReLU has a kink (the two sides of a
    central difference straddling 0 would average the slopes 0 and 1 to 0.5).
    """
    rng = np.random.default_rng(5)
    assert_gradients_ok(make("ReLU"), away_from_zero(rng, (2, 3, 4, 4)))


@layer_test("Tanh", "tanh", baseline=True)
def test_activation_Tanh():
    """Tanh: dx = dout (1 - y^2), with y = tanh(x) from the forward pass."""
    rng = np.random.default_rng(5)
    assert_gradients_ok(make("Tanh"), away_from_zero(rng, (2, 3, 4, 4)))


# ---------------------------------------------------------------------- LRN (§3.3)

def lrn_window_sum(v, before, after):
    """t[:, i] = sum of v[:, j] for j in i - before .. i + after (the channels that exist)."""
    C = v.shape[1]
    padded = np.pad(v, ((0, 0), (before, after), (0, 0), (0, 0)))
    return sum(padded[:, d:d + C] for d in range(before + after + 1))


def lrn_dx(x, dout, size, a, beta, k, cross="transposed", factor=2.0):
    """dx of y_i = x_i s_i^-beta, s_i = k + a sum_{j in window(i)} x_j^2, and the usual wrong
    versions: cross="none" drops the cross-channel term, "forward" sums it over the
    forward window instead of the transposed one; factor 1 forgets d(x^2)/dx = 2x."""
    before, after = size // 2, (size - 1) // 2
    s = k + a * lrn_window_sum(x * x, before, after)
    diagonal = dout * s ** (-beta)
    if cross == "none":
        return diagonal
    y = x * s ** (-beta)
    b, f = (after, before) if cross == "transposed" else (before, after)
    return diagonal - factor * a * beta * x * lrn_window_sum(dout * y / s, b, f)


LRN_CROSS_CAUSE = ("the cross-channel term of the LRN gradient is missing or wrong: output i "
                   "depends on inputs j in its window (§3.3), so dx_j = dout_j s_j^-beta "
                   "- 2 a beta x_j * (sum of dout_i y_i / s_i over the outputs i whose window "
                   "holds j)")
LRN_WINDOW_CAUSE = ("the backward sum runs over the forward window: an even window is "
                    "asymmetric (n//2 channels before i, (n-1)//2 after), so the outputs i "
                    "whose window holds j are (n-1)//2 before j and n//2 after (the "
                    "transposed window)")


def lrn_diagnosis(size, convention, alpha, beta, k):
    """diagnose(layer, x) for assert_gradients_ok: which textbook mistake the learner's dx
    matches exactly, as a sentence, or None."""
    a = alpha if convention == "paper" else alpha / size
    other_a = alpha / size if convention == "paper" else alpha

    def diagnose(layer, x):
        dout = np.random.default_rng(99).standard_normal(x.shape)
        layer.forward(x, True)
        dx = np.asarray(layer.backward(dout), np.float64)
        if dx.shape != x.shape:
            return None
        mistakes = [
            (dict(cross="none"), LRN_CROSS_CAUSE),
            (dict(cross="forward"), LRN_WINDOW_CAUSE),
            (dict(factor=1.0), "the factor 2 of d(x_j^2)/dx_j = 2 x_j is missing from the "
                               "cross-channel term"),
            (dict(a=other_a), f"the backward pass uses {'alpha/n' if convention == 'paper' else 'alpha'} "
                              f"where the {convention} convention (and the forward pass) has "
                              f"{'alpha' if convention == 'paper' else 'alpha/n'}"),
        ]
        for change, cause in mistakes:
            args = dict(size=size, a=a, beta=beta, k=k) | change
            wrong = lrn_dx(x, dout, args.pop("size"), args.pop("a"), args.pop("beta"),
                           args.pop("k"), **args)
            if gradcheck.rel_error(dx, wrong) < TOL:
                return cause
        return None

    return diagnose


@layer_test("LocalResponseNorm", "LRN")
@pytest.mark.parametrize("convention", [
    case("paper", id="paper", says="paper convention", baseline=True),
    case("alpha/n", id="alpha/n", says="alpha/n convention",
         cause="the alpha/n convention (Caffe, PyTorch): the sum's coefficient is alpha/n, "
               "in the forward and in the backward pass"),
])
@pytest.mark.parametrize("size", [
    case(n, id=f"n={n}", says=f"{'even' if n % 2 == 0 else 'odd'} window size n={n}",
         cause=None if n % 2 else LRN_WINDOW_CAUSE, baseline=n == 3) for n in (2, 3, 4, 5)])
def test_lrn(size, convention):
    """LRN: y_i = x_i s_i^-beta with s_i summing x_j^2 over a window of neighbouring channels.

    Both conventions (paper: k + alpha sum; Caffe/PyTorch: k + alpha/n sum) and odd AND
    even sizes (an even window is asymmetric: n//2 channels before, (n-1)//2 after, and the
    backward pass must use the transposed window). C = 7 so the window is clipped at both
    ends. alpha = 0.1, k = 1: at the paper's alpha = 1e-4 the normaliser is ~k^-beta for
    every input and the check would pass for a backward that forgot the cross-channel term
    (LRN would be near a constant scaling); here we also assert that term is large. A
    failing dx is compared with the usual mistakes (no cross-channel term, the forward
    window in backward, ...) to name the likely cause.
    """
    rng = np.random.default_rng(6)
    alpha, beta, k = 0.1, 0.75, 1.0
    if convention == "alpha/n":
        alpha *= size  # the same coefficient a = 0.1 on the sum: the term matters equally
    layer = make("LocalResponseNorm", size=size, alpha=alpha, beta=beta, k=k,
                 convention=convention)
    x = 1.5 * rng.standard_normal((2, 7, 3, 3))
    assert_gradients_ok(layer, x, diagnose=lrn_diagnosis(size, convention, alpha, beta, k))

    # Non-trivial: the cross-channel part of dx is a sizeable fraction of dx.
    dout = rng.standard_normal(x.shape)
    layer.forward(x, True)
    dx = layer.backward(dout)
    a = alpha if convention == "paper" else alpha / size
    diagonal_only = lrn_dx(x, dout, size, a, beta, k, cross="none")
    assert np.abs(dx - diagonal_only).max() > 0.1 * np.abs(dx).max(), \
        "this case is too weak: the cross-channel term is small (a bug of the test)"


@layer_test("LocalResponseNorm", "LRN, the paper's constants (k=2, n=5, alpha=1e-4)")
@pytest.mark.parametrize("convention", [
    case("paper", id="paper", says="paper convention"),
    case("alpha/n", id="alpha/n", says="alpha/n convention"),
])
def test_lrn_paper_constants(convention):
    """The paper's k=2, n=5, alpha=1e-4, beta=0.75: passes, but nearly trivially.

    With alpha = 1e-4, s ~ 2 everywhere and y ~ 2^-0.75 x; this is a smoke test that the
    AlexNet configuration runs, the real check is test_lrn above.
    """
    rng = np.random.default_rng(7)
    layer = make("LocalResponseNorm", size=5, alpha=1e-4, beta=0.75, k=2.0,
                 convention=convention)
    assert_gradients_ok(layer, rng.standard_normal((2, 7, 3, 3)),
                        diagnose=lrn_diagnosis(5, convention, 1e-4, 0.75, 2.0))


# ---------------------------------------------------------------------- MaxPool2D (§3.4)

@layer_test("MaxPool2D", "max pool")
@pytest.mark.parametrize("window,stride,shape", [
    case(3, 2, (2, 3, 7, 9), id="3/2-overlapping",      # the paper's, non-square
         says="3/2 overlapping pool (§3.4), non-square input",
         cause="overlapping windows share a row or column, and one pixel can win several "
               "windows: backward must ADD each window's dout to its winner, not overwrite"),
    case(2, 2, (2, 3, 6, 8), id="2/2", baseline=True,   # classic, non-overlapping
         says="2/2 pool (no overlap)"),
    case(3, 2, (1, 2, 8, 8), id="3/2-leftover-row",     # (H - z) % s != 0
         says="3/2 pool with a leftover row and column",
         cause="(H - 3) is not a multiple of the stride: the last row and column are in no "
               "window (dx 0 there), and the output size is (H - z) // s + 1"),
])
def test_maxpool(window, stride, shape):
    """Max pooling routes each dout to its window's winner, adding where windows overlap.

    With z=3, s=2 neighbouring windows share a row/column and one pixel can win several
    windows: backward must ADD, not overwrite. The inputs have no ties (equally spaced
    values, gaps much larger than the step), where the max has no derivative.
    """
    rng = np.random.default_rng(8)
    assert_gradients_ok(make("MaxPool2D", window, stride), distinct(rng, shape))


@layer_test("MaxPool2D", "max pool, a pixel winning two overlapping 3/2 windows",
            cause="backward must ADD the douts of every window a pixel wins, not overwrite")
def test_maxpool_overlap_adds():
    """A pixel that wins two overlapping 3/2 windows gets the sum of both douts."""
    x = np.zeros((1, 1, 5, 3))
    x[0, 0, 2, 1] = 1.0               # row 2 lies in both windows along H (rows 0-2, 2-4)
    layer = make("MaxPool2D", 3, 2)
    y = layer.forward(x, True)
    assert y.shape == (1, 1, 2, 1)
    dx = layer.backward(np.array([[[[2.0], [3.0]]]]))
    assert dx[0, 0, 2, 1] == 5.0 and dx.sum() == 5.0, \
        f"the pixel won both windows (douts 2 and 3): its dx is {dx[0, 0, 2, 1]:g}, not 5"


# ---------------------------------------------------------------------- Dropout (§4.2)

@layer_test("Dropout", "dropout")
@pytest.mark.parametrize("mode", [
    case("inverted", id="inverted", says="inverted mode in training", baseline=True,
         cause="inverted dropout scales the kept units by 1/(1-p) in training: dx = dout * "
               "mask / (1-p), with the mask of the forward pass (layer.fixed_mask if set)"),
    case("paper", id="paper", says="paper mode in training",
         cause="the paper's dropout does not scale in training (§4.2): dx = dout * mask, "
               "with the mask of the forward pass (layer.fixed_mask if set)"),
])
def test_dropout_train(mode):
    """Dropout in training with a fixed mask: dx = dout * (the same scaled mask).

    A random mask would change between the two forward passes of a difference quotient, so
    the check fixes it (``layer.fixed_mask``). Inverted mode scales kept units by 1/(1-p).
    """
    rng = np.random.default_rng(9)
    layer = make("Dropout", p=0.5, mode=mode)
    shape = (4, 10)
    layer.fixed_mask = rng.random(shape) >= 0.5
    assert 0 < layer.fixed_mask.sum() < layer.fixed_mask.size
    assert_gradients_ok(layer, rng.standard_normal(shape), train=True)


@layer_test("Dropout", "dropout")
@pytest.mark.parametrize("mode", [
    case("inverted", id="inverted", says="inverted mode at test time",
         cause="inverted dropout is the identity at test time: no mask, dx = dout"),
    case("paper", id="paper", says="paper mode at test time",
         cause="the paper's dropout multiplies by 1 - p = 0.5 at test time (§4.2), no mask: "
               "dx = 0.5 dout"),
])
def test_dropout_test_time(mode):
    """Dropout at test time is a fixed scaling: 1 (inverted) or 1 - p (the paper's 0.5)."""
    rng = np.random.default_rng(10)
    assert_gradients_ok(make("Dropout", p=0.5, mode=mode), rng.standard_normal((4, 10)),
                        train=False)


# ----------------------------------------------------------------- Linear, Flatten (§3.5)

@layer_test("Linear", "linear", baseline=True)
def test_linear():
    """Linear y = x W^T + b: dx = dout W, dW = dout^T x, db = sum over the batch."""
    rng = np.random.default_rng(11)
    layer = make("Linear", 5, 4, weight_std=0.5, rng=12)
    layer.params["b"] = rng.standard_normal(4)
    assert_gradients_ok(layer, rng.standard_normal((3, 5)))


@layer_test("Flatten", "flatten", baseline=True)
def test_flatten():
    """Flatten is a reshape: backward is the reverse reshape (C, H, W order)."""
    rng = np.random.default_rng(13)
    assert_gradients_ok(make("Flatten"), rng.standard_normal((2, 3, 2, 4)))


# --------------------------------------------------------------- SoftmaxCrossEntropy (§3)

@layer_test("SoftmaxCrossEntropy", "softmax cross-entropy")
@pytest.mark.parametrize("dloss", [
    case(1.0, id="1.0", says="dloss = 1", baseline=True),
    case(2.5, id="2.5", says="dloss = 2.5",
         cause="backward(dloss) must multiply the gradient by dloss (the chain rule)"),
])
def test_softmax_cross_entropy(dloss):
    """The loss: dz = dloss * (softmax(z) - onehot(y)) / N, the mean over the batch.

    The loss is already a scalar, so compare backward(dloss) with dloss times the numerical
    gradient of the loss itself. Logits spread over +-10 to exercise the stable log-sum-exp.
    """
    rng = np.random.default_rng(14)
    z = 5 * rng.standard_normal((4, 6))
    y = np.array([0, 5, 2, 2])
    loss = LAYERS["SoftmaxCrossEntropy"]()

    def f():
        return float(loss.forward(z, y))

    f()
    dz = loss.backward(dloss)
    numeric = dloss * gradcheck.numerical_gradient(f, z)
    assert np.shape(dz) == z.shape, f"dz has shape {np.shape(dz)}, expected {z.shape}"
    err = gradcheck.rel_error(dz, numeric)
    if not err < TOL:
        cause = factor_cause("z", np.asarray(dz, np.float64), numeric)
        raise AssertionError(f"dz is wrong (relative error {err:.2g}, bar {TOL:g})"
                             + (f". Likely cause: {cause}" if cause else ""))


# ------------------------------------------------------------------ the checker itself

@layer_test(None, "the gradient checker fails a wrong backward")
def test_checker_catches_a_wrong_backward():
    """The checker must fail a wrong backward: ReLU whose backward passes everything through."""
    class LeakyBackward(reference.ReLU):
        def backward(self, dout):
            return dout

    errors = gradcheck.check_layer(LeakyBackward(), away_from_zero(np.random.default_rng(15),
                                                                    (2, 5)))
    assert errors["x"] > 0.1


@layer_test("Linear", "linear, W stored transposed (not contiguous)",
            cause="dW must be an array of W's shape (a copy is fine); only its values count")
def test_numerical_gradient_non_contiguous():
    """Parameters stored as views (a transposed W) are perturbed in place too.

    (numerical_gradient once flattened with x.reshape(-1), a copy for such arrays: the
    perturbation never reached f, the numeric gradient was 0 and a right layer failed.)
    """
    rng = np.random.default_rng(16)
    x = rng.standard_normal((4, 3)).T
    assert not x.flags.c_contiguous
    numeric = gradcheck.numerical_gradient(lambda: float(np.sum(x ** 3)), x)
    np.testing.assert_allclose(numeric, 3 * x ** 2, rtol=1e-8)
    layer = make("Linear", 3, 2, rng=17)
    layer.params["W"] = np.asfortranarray(layer.params["W"])
    assert_gradients_ok(layer, rng.standard_normal((2, 3)))
