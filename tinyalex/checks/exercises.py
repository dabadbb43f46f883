"""The notebooks' exercises and their checks.

Layer exercises (a learner writes ``ReLU``, ``Conv2D``, ...) are checked by the project's
own gradient-check tests, ``tests/test_gradcheck_layers.py``, run in a fresh process with
``TINYALEX_EXERCISE`` pointing at the learner's code (the mechanism the README describes):

    check_layer("ReLU")                  # in a notebook: the last cell that defines ReLU
    check_layer("ReLU", "mylayers.py")   # or a file, or a string of code

Function exercises (PCA colour offsets, the SGD update, a training step, top-k error,
nearest neighbours) are compared with tinyalex's own function on random inputs:

    check_function("sgd_step", sgd_step)

Both print one line per check and return True when everything passes. The solutions live
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
    if isinstance(source, Path) or (isinstance(source, str) and source.endswith(".py")
                                    and "\n" not in source):
        return Path(source).resolve()
    path = folder / "exercise_layers.py"
    path.write_text(source)
    return path


def run_gradcheck_tests(source, layers, timeout: float = 600) -> dict[str, str]:
    """Run the gradient-check tests of ``layers`` on the classes of ``source`` (a .py path
    or code) in a fresh process. Returns {test id: "passed" | "failed" | "skipped"}."""
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
               f"--junitxml={report}", f"--rootdir={repo}"]
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True,
                              timeout=timeout)
        if not report.is_file():
            raise RuntimeError(f"the tests did not run:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        outcomes = {}
        for case in ET.parse(report).getroot().iter("testcase"):
            tid = case.get("name")
            if case.find("failure") is not None or case.find("error") is not None:
                node = case.find("failure") if case.find("failure") is not None else case.find("error")
                outcomes[tid] = "failed: " + (node.get("message") or "").splitlines()[0][:200] \
                    if node.get("message") else "failed"
            elif case.find("skipped") is not None:
                outcomes[tid] = "skipped"
            else:
                outcomes[tid] = "passed"
        return outcomes


def check_layer(names, source=None, verbose: bool = True) -> bool:
    """Check the learner's layer(s) with the project's gradient-check tests.

    names: "ReLU" or a list such as ["ReLU", "Tanh"]. source: a .py path or code; default
    the latest notebook cell defining ``class <first name>``. Prints how many checks
    passed and the first failures; returns True if all passed.
    """
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in LAYER_TESTS]
    if unknown:
        raise ValueError(f"no gradient-check tests for {unknown[0]!r}; one of "
                         f"{', '.join(LAYER_TESTS)}")
    if source is None:
        source = cell_defining(names[0])
    outcomes = run_gradcheck_tests(source, names)
    mine = {k: v for k, v in outcomes.items() if not k.startswith("test_exercise")}
    failed = {k: v for k, v in outcomes.items() if v.startswith("failed")}
    ok = bool(mine) and not failed
    if verbose:
        passed = sum(v == "passed" for v in mine.values())
        if ok:
            print(f"{', '.join(names)}: all {passed} gradient-check tests passed -- well done.")
        else:
            # every failure, one line each, and no passing count above them
            print(f"{', '.join(names)}: {len(failed)} of {len(outcomes)} checks FAILED:")
            width = max(len(tid) for tid in failed) if failed else 0
            for tid, why in failed.items():
                print(f"  {tid:<{width}}  {why}")
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
