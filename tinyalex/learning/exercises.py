"""The notebooks' exercises and their checks.

Layer exercises (a learner writes ``ReLU``, ``Conv2D``, ...) are checked by the project's
own gradient-check tests, ``tests/test_gradcheck_layers.py``, run in a fresh process with
``TINYALEX_EXERCISE`` pointing at the learner's code (the mechanism the README describes):

    check_layer("ReLU")                  # in a notebook: the last cell that defines ReLU
    check_layer("ReLU", "mylayers.py")   # or a file, or a string of code

Function exercises (PCA colour offsets, the SGD update, a training step, top-k error,
nearest neighbours) are compared with tinyalex's own function on random inputs:

    check_function("sgd_step", sgd_step)

Both return True when everything passes. check_function prints one line; check_layer
prints "all N passed" or every failing case in a table: the case in words ("conv2d, stride
2", "LRN, even window size n=4, alpha/n convention"), the gradient that is wrong (dx, dW,
db), its relative error and the likely cause where the test targets one or can tell
(tests/test_gradcheck_layers.py puts the words and causes in its junit report). The solutions live
in ``notebooks/solutions/`` and CI checks that they pass and that the unfilled exercises
fail (tests/test_notebooks.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Layer -> the ``pytest -k`` expression selecting its tests in test_gradcheck_layers.py.
LAYER_TESTS = {
    "Conv2D": "conv2d", "ReLU": "activation and ReLU", "Tanh": "activation and Tanh",
    "LocalResponseNorm": "lrn", "MaxPool2D": "maxpool", "Dropout": "dropout",
    "Linear": "linear", "Flatten": "flatten", "SoftmaxCrossEntropy": "softmax",
}


def gradcheck_tests_file() -> Path:
    """tests/test_gradcheck_layers.py of the checkout tinyalex is imported from."""
    path = Path(__file__).resolve().parents[2] / "tests" / "test_gradcheck_layers.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the exercise checks need a checkout of "
                                "tinyalex (git clone, pip install -e .), not a wheel")
    return path


def cell_defining(name: str) -> str:
    """The source of the latest IPython input cell that defines ``class name`` or
    ``def name`` (the learner's exercise cell)."""
    try:
        from IPython import get_ipython
    except ImportError:
        get_ipython = None
    shell = get_ipython() if get_ipython else None
    if shell is None:
        raise RuntimeError("not in IPython: pass the code or a file to check_layer")
    pattern = re.compile(rf"^\s*(class|def)\s+{re.escape(name)}\b", re.M)
    for source in reversed(shell.user_ns.get("In", [])):
        if pattern.search(source or "") and "check_layer(" not in source:
            return source
    raise LookupError(f"no cell defines {name}: run your exercise cell first")


def _as_file(source, folder: Path) -> Path:
    """A path to a .py file holding ``source`` (a path, or code)."""
    if _is_path(source):
        return Path(source).resolve()
    path = folder / "exercise_layers.py"
    path.write_text(source)
    return path


def _is_path(source) -> bool:
    return isinstance(source, Path) or (isinstance(source, str) and source.endswith(".py")
                                        and "\n" not in source)


def defined_classes(source) -> list[str]:
    """The names a module's top level binds to a class statement or an assignment
    (``class ReLU:``, ``ReLU = MyReLU``) in ``source`` (a .py path or code)."""
    import ast

    text = Path(source).read_text() if _is_path(source) else source
    names = []
    for node in ast.parse(text).body:
        if isinstance(node, ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
    return names


@dataclass
class CaseResult:
    """One test case of the gradient checks, as check_layer reports it."""
    test: str                      # the pytest id, e.g. "test_lrn[exercise-n=4-paper]"
    outcome: str                   # "passed", "failed" or "skipped"
    says: str = ""                 # the case in words: "LRN, even window size n=4, ..."
    message: str = ""              # the failure's message (first lines)
    gradients: list[tuple[str, str]] = field(default_factory=list)  # [("dx", "0.41")]
    diagnosed: str = ""            # the likely cause the test diagnosed ("Likely cause: ...")
    cause: str = ""                # the case's own likely cause (where it targets one)
    baseline: bool = False         # the plainest case of its test

    @property
    def function(self) -> str:
        return self.test.split("[")[0]


_WRONG = re.compile(r"\b(d\w+) is wrong \(relative error ([^,]+), bar [^)]+\)")
_SHAPE = re.compile(r"\b(d\w+) has shape (\([^)]*\)), expected (\([^)]*\))")


def _parse_case(case) -> CaseResult:
    props = {p.get("name"): p.get("value") or "" for p in case.iter("property")}
    node = next((n for n in (case.find("failure"), case.find("error")) if n is not None), None)
    result = CaseResult(case.get("name"), "passed", says=props.get("says", ""),
                        cause=props.get("cause", ""), baseline=props.get("baseline") == "yes")
    if node is None:
        result.outcome = "skipped" if case.find("skipped") is not None else "passed"
        return result
    result.outcome = "failed"
    if not result.test.startswith("test_"):  # the module did not load: no test ran
        result.says = "loading your layers (collecting the tests)"
    text = (node.text or "").strip().splitlines()
    message = node.get("message") or ""
    if message in ("", "collection failure"):  # say what failed: the exception's last line
        message = next((ln.removeprefix("E").strip() for ln in reversed(text)
                        if ln.startswith("E ")), message)
    message = message.split("\nassert ")[0].strip()
    main, _, diagnosed = message.partition("Likely cause: ")
    result.message, result.diagnosed = main.strip().rstrip("."), diagnosed.strip()
    result.gradients = [(g, e) for g, e in _WRONG.findall(main)] + \
        [(g, f"shape {got}, not {want}") for g, got, want in _SHAPE.findall(main)]
    return result


def run_gradcheck_cases(source, layers, timeout: float = 600) -> list[CaseResult]:
    """Run the gradient-check tests of ``layers`` on the classes of ``source`` (a .py path
    or code) in a fresh process: every case, with its words and likely cause."""
    layers = [layers] if isinstance(layers, str) else list(layers)
    expr = " or ".join(f"({LAYER_TESTS[name]})" for name in layers)
    with tempfile.TemporaryDirectory(prefix="tinyalex-exercise-") as tmp:
        tmp = Path(tmp)
        path = _as_file(source, tmp)
        report = tmp / "report.xml"
        env = {**os.environ, "TINYALEX_EXERCISE": str(path)}
        repo = Path(__file__).resolve().parents[2]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo), env.get("PYTHONPATH")]))
        cmd = [sys.executable, "-m", "pytest", str(gradcheck_tests_file()), "-q",
               "-p", "no:cacheprovider", "-k", f"exercise_module_is_used or {expr}",
               f"--junitxml={report}", "-o", "junit_family=xunit1", f"--rootdir={repo}"]
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True,
                              timeout=timeout)
        if not report.is_file():
            raise RuntimeError(f"the tests did not run:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        return [_parse_case(case) for case in ET.parse(report).getroot().iter("testcase")]


def run_gradcheck_tests(source, layers, timeout: float = 600) -> dict[str, str]:
    """run_gradcheck_cases as {test id: "passed" | "failed: <message>" | "skipped"}."""
    return {c.test: "failed: " + c.message[:200] if c.outcome == "failed" else c.outcome
            for c in run_gradcheck_cases(source, layers, timeout)}


def failure_table(cases: list[CaseResult], width: int = 96) -> str:
    """Every failing case, one row each: case | gradient | relative error | likely cause,
    the causes written out once below the table as [1], [2], ... Where the plainest case of
    a test (its baseline) fails too, the other cases' own causes are left out: they may all
    follow from it."""
    import textwrap

    failed = [c for c in cases if c.outcome == "failed"]
    broken = {c.function for c in failed if c.baseline}
    causes: list[str] = []
    rows, hidden = [], set()
    for c in failed:
        if c.function in broken and c.cause and not c.diagnosed and not c.baseline:
            hidden.add(c.function)
        if c.gradients:
            what = c.diagnosed or ("" if c.function in broken else c.cause)
        else:  # an exception in the learner's code, or a check that is not a gradient
            what = c.message
            if what.startswith("test_gradcheck_layers.ExerciseError: "):
                what = what.partition(": ")[2]
            elif not what.startswith("AssertionError"):
                what = "your code raised " + what
            what = what.removeprefix("AssertionError: ")
            cause = c.diagnosed or ("" if c.function in broken else c.cause)
            what = "; ".join(filter(None, [what, cause]))
        if what and what not in causes:
            causes.append(what)
        rows.append((c.says or c.test, ", ".join(g for g, _ in c.gradients) or "-",
                     ", ".join(e for _, e in c.gradients) or "-",
                     f"[{causes.index(what) + 1}]" if what else "-"))
    head = ("case", "gradient", "rel. error", "likely cause")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    lines = ["  " + "  ".join(f"{v:<{w}}" for v, w in zip(r, widths)).rstrip()
             for r in [head] + rows]
    for i, cause in enumerate(causes, 1):
        lines += textwrap.wrap(cause, width, initial_indent=f"  [{i}] ",
                               subsequent_indent=" " * (len(str(i)) + 5))
    for function in sorted(hidden):
        plain = next(c.says for c in failed if c.function == function and c.baseline)
        lines += textwrap.wrap(f"The plainest case ({plain}) fails too: fix it first, the "
                               "other failures of its test may all follow from it.", width,
                               initial_indent="  ", subsequent_indent="  ")
    return "\n".join(lines)


def check_layer(names, source=None, verbose: bool = True) -> bool:
    """Check the learner's layer(s) with the project's gradient-check tests.

    names: "ReLU" or a list such as ["ReLU", "Tanh"]. source: a .py path or code; default
    the latest notebook cell defining ``class <first name>``. It must define every class
    of ``names`` (LookupError otherwise: tinyalex's own class would be checked). Prints
    "all N passed", or a table of every failing case in words (which gradient, its
    relative error, the likely cause) and the cases that passed; returns True if all
    passed.
    """
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in LAYER_TESTS]
    if unknown:
        raise ValueError(f"no gradient-check tests for {unknown[0]!r}; one of "
                         f"{', '.join(LAYER_TESTS)}")
    if source is None:
        source = cell_defining(names[0])
    defined = defined_classes(source)
    for name in names:
        if name not in defined:
            where = f"{source}" if _is_path(source) else "the code given to check_layer"
            raise LookupError(
                f"{where} defines no class {name}: name your class {name} exactly (the "
                f"checks would otherwise test tinyalex's own {name})"
                + (f"; it defines {', '.join(defined)}" if defined else ""))
    cases = run_gradcheck_cases(source, names)
    mine = [c for c in cases if not c.test.startswith("test_exercise")]
    failed = [c for c in cases if c.outcome == "failed"]
    ok = bool(mine) and not failed
    if verbose:
        passed = [c for c in mine if c.outcome == "passed"]
        if ok:
            print(f"{', '.join(names)}: all {len(passed)} gradient-check tests passed -- well done.")
        else:
            # every failure, one row each, and no passing count above them
            total = len(mine) + sum(c not in mine for c in failed)
            print(f"{', '.join(names)}: {len(failed)} of {total} checks FAILED:")
            if failed:
                print(failure_table(failed))
            if passed:
                import textwrap

                print(textwrap.fill("passed: " + "; ".join(c.says or c.test for c in passed),
                                    96, subsequent_indent="  "))
            if not mine:
                print("  (no gradient-check test ran: is the class named as the exercise says?)")
    return ok


# ------------------------------------------------------------------ function exercises

def _check_pca_offsets(fn, rng):
    from ..data.augment import pca_offsets

    eigvals = np.sort(rng.uniform(10, 5000, 3))[::-1]
    eigvecs = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    alphas = rng.normal(0, 0.1, (5, 3))
    return np.asarray(fn(alphas, eigvals, eigvecs)), pca_offsets(alphas, eigvals, eigvecs)


def _check_sgd_step(fn, rng):
    from ..optim import SGD

    w = rng.standard_normal((4, 3))
    mine_w, mine_v = w.copy(), np.zeros_like(w)
    ref = {"w": w.copy()}
    opt = SGD(ref, lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(3):
        g = rng.standard_normal(w.shape)
        mine_w, mine_v = fn(mine_w, mine_v, g, 0.1, 0.9, 5e-4)
        opt.step({"w": g})
    return (np.concatenate([np.ravel(mine_w), np.ravel(mine_v)]),
            np.concatenate([ref["w"].ravel(), opt.velocity["w"].ravel()]))


def _check_train_step(fn, rng):
    from ..layers import SoftmaxCrossEntropy
    from ..loop import forward_backward
    from ..net import alexnet_mini

    x = rng.standard_normal((4, 3, 32, 32))
    y = rng.integers(0, 5, 4)
    results = []
    for step in (fn, forward_backward):
        net = alexnet_mini(5, input_size=32, init="pytorch", dropout=0.0).astype(np.float64)
        loss, _ = step(net, SoftmaxCrossEntropy(), x, y)
        grads = net.grads
        results.append(np.concatenate([[float(loss)]] + [np.ravel(grads[k])
                                                          for k in sorted(grads)]))
    return results


def _check_topk_error(fn, rng):
    from ..metrics import topk_correct

    scores = rng.standard_normal((50, 10))
    labels = rng.integers(0, 10, 50)
    return (np.array([fn(scores, labels, k) for k in (1, 3, 5)], np.float64),
            np.array([1 - topk_correct(scores, labels, k).mean() for k in (1, 3, 5)]))


def _check_nearest(fn, rng):
    from ..commands.figures import nearest

    q, d = rng.standard_normal((4, 16)), rng.standard_normal((30, 16))
    return np.asarray(fn(q, d, 5), np.float64), nearest(q, d, 5)[0].astype(np.float64)


FUNCTION_CHECKS = {"pca_offsets": _check_pca_offsets, "sgd_step": _check_sgd_step,
                   "train_step": _check_train_step, "topk_error": _check_topk_error,
                   "nearest": _check_nearest}


def check_function(name: str, fn, verbose: bool = True, seed: int = 0) -> bool:
    """Compare the learner's function ``name`` with tinyalex's on random inputs (float64,
    relative error at most 1e-6, as the gradient checks)."""
    from ..gradcheck import TOLERANCE, rel_error

    if name not in FUNCTION_CHECKS:
        raise ValueError(f"no check for {name!r}; one of {', '.join(FUNCTION_CHECKS)}")
    try:
        mine, ref = FUNCTION_CHECKS[name](fn, np.random.default_rng(seed))
        mine = np.asarray(mine, np.float64)
        err = rel_error(mine, ref) if mine.shape == np.shape(ref) else float("inf")
        ok = err <= TOLERANCE
        why = (f"relative error {err:.2e}" if mine.shape == np.shape(ref) else
               f"shape {mine.shape}, expected {np.shape(ref)}")
    except Exception as exc:  # the learner's code raised: report it, do not stop the notebook
        ok, why = False, f"{type(exc).__name__}: {exc}"
    if verbose:
        print(f"{name}: {'passed' if ok else 'not yet'} ({why})"
              + (" -- well done." if ok else ""))
    return ok
