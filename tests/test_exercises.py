"""check_layer diagnoses (issue 17, item 5): every failing case in words, in one table.

The learner's code here is deliberately wrong in one known way each, and the tests read
what check_layer prints: the case in words, the gradient, its relative error and the
likely cause, for every failing case (a pattern such as "only even windows fail" must be
visible). A learner's layer runs once per case, not once per kernel path of tinyalex's,
and a source without the class asked for is refused before any test runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tinyalex.learning import exercises

ROOT = Path(__file__).resolve().parents[1]

#: The chapter 04 solution up to its backward's sum (which it gets right); each wrong LRN
#: below ends it in one known wrong way.
SOLUTION = (ROOT / "notebooks" / "solutions" / "04_lrn.py").read_text()
LRN_HEAD = SOLUTION[:SOLUTION.index("        # y_i depends on x_j")]
NO_CROSS_TERM = LRN_HEAD + '''        return dout * s ** (-self.beta)          # the cross-channel term forgotten
'''
FORWARD_WINDOW = LRN_HEAD + '''        back = window_sum(dout * y / s, n // 2, (n - 1) // 2)   # not transposed
        return dout * s ** (-self.beta) - 2 * self.a * self.beta * x * back
'''


def table_rows(out: str) -> list[str]:
    """The rows of the failure table (between its header and the first [1] cause)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["case"])
    rows = []
    for line in lines[start + 1:]:
        if not line.startswith("  ") or line.lstrip().startswith("["):
            break
        rows.append(line)
    return rows


def test_lrn_without_the_cross_channel_term_is_named(capsys):
    """A backward that forgets the cross-channel term: every LRN case fails, each row says
    dx and its relative error, and the cause names the cross-channel term (§3.3)."""
    assert not exercises.check_layer("LocalResponseNorm", NO_CROSS_TERM)
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert len(rows) == 10, out                  # 8 of test_lrn, 2 with the paper's constants
    for row in rows:
        assert re.search(r"\bdx\s+\d\S*\s+\[1\]$", row), row
    assert "window size n=4, alpha/n convention" in out
    assert "[1] the cross-channel term of the LRN gradient is missing or wrong: output i" in out
    assert "depends on inputs j in its window (§3.3)" in " ".join(out.split())
    assert "... and" not in out and "passed:" not in out


def test_an_even_window_mistake_lists_every_even_case_and_no_odd(capsys):
    """Backward summing over the forward window is right for odd n only: the table lists
    the four even-size cases (n=2, 4, both conventions), no odd one, and the odd ones are
    listed as passed."""
    assert not exercises.check_layer("LocalResponseNorm", FORWARD_WINDOW)
    out = capsys.readouterr().out
    rows = table_rows(out)
    cases = sorted(re.search(r"window size n=(\d), (\S+) convention", r).groups() for r in rows)
    assert cases == [("2", "alpha/n"), ("2", "paper"), ("4", "alpha/n"), ("4", "paper")], out
    assert all("even window" in r for r in rows) and "odd" not in "".join(rows)
    assert "transposed window" in out
    passed = " ".join(out.split("passed:", 1)[1].split())
    for n in (3, 5):
        assert f"odd window size n={n}, paper convention" in passed


def test_a_constant_factor_is_named(capsys):
    """The paper's dropout at test time without its x0.5: "dx is 2 times the right one"."""
    source = '''
from tinyalex.layers import Dropout as _Dropout


class Dropout(_Dropout):
    def backward(self, dout):
        return dout if self.mode == "paper" and not self._train else super().backward(dout)

    def forward(self, x, train=True):
        self._train = train
        return super().forward(x, train)
'''
    assert not exercises.check_layer("Dropout", source)
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert len(rows) == 1 and "dropout, paper mode at test time" in rows[0], out
    assert "dx is 2 times the right gradient" in out


def test_a_learners_layer_runs_once_per_case():
    """The kernel paths are tinyalex's: a learner's LRN runs each case once ("exercise"),
    tinyalex's own LRN each case on both paths ("numba", "numpy")."""
    solution = ROOT / "notebooks" / "solutions" / "04_lrn.py"
    cases = [c for c in exercises.run_gradcheck_cases(solution, "LocalResponseNorm")
             if not c.test.startswith("test_exercise")]
    ids = [c.test for c in cases]
    assert len(ids) == len(set(ids)) == 10, ids
    assert all("[exercise-" in t for t in ids), ids
    assert all(c.outcome == "passed" and c.says.startswith("LRN") for c in cases)

    env = {k: v for k, v in os.environ.items() if k != "TINYALEX_EXERCISE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    run = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                          "-p", "no:cacheprovider", str(ROOT / "tests" / "test_gradcheck_layers.py"),
                          "-k", "lrn"], env=env, capture_output=True, text=True, timeout=300)
    own = [line for line in run.stdout.splitlines() if "::test_lrn" in line]
    assert len(own) == 20, run.stdout
    assert sum("[numba-" in t for t in own) == sum("[numpy-" in t for t in own) == 10


def test_a_source_without_the_class_is_refused(tmp_path, monkeypatch):
    """check_layer("LocalResponseNorm", code without that class) fails naming the class,
    before any test runs (the fallback to tinyalex's class is for running the whole file)."""
    def no_run(*args, **kwargs):
        raise AssertionError("the tests ran")

    monkeypatch.setattr(exercises, "run_gradcheck_cases", no_run)
    code = "class LRN:\n    pass\n"
    with pytest.raises(LookupError, match="defines no class LocalResponseNorm.*it defines LRN"):
        exercises.check_layer("LocalResponseNorm", code)
    (tmp_path / "mylayers.py").write_text("from tinyalex.layers import ReLU\n\nclass Tanh:\n"
                                          "    pass\n")
    with pytest.raises(LookupError, match=r"mylayers\.py defines no class ReLU"):
        exercises.check_layer(["Tanh", "ReLU"], str(tmp_path / "mylayers.py"))


def test_the_table_leaves_out_causes_when_the_plainest_case_fails():
    """When a test's baseline case fails, its other cases' own causes may be wrong leads:
    they are left out, with a note to fix the plainest case first."""
    C = exercises.CaseResult
    table = exercises.failure_table([
        C("test_conv2d[exercise-plain]", "failed", says="conv2d, plain", baseline=True,
          gradients=[("dx", "0.5")]),
        C("test_conv2d[exercise-stride2]", "failed", says="conv2d, stride 2",
          cause="the stride", gradients=[("dx", "0.5"), ("dW", "1")]),
    ])
    assert "the stride" not in table
    assert "conv2d, stride 2  dx, dW    0.5, 1" in table
    assert "The plainest case (conv2d, plain) fails too" in table


def test_every_layer_class_is_an_exercise():
    import tinyalex.layers as layers

    classes = {name for name in layers.__all__
               if isinstance(getattr(layers, name), type) and name != "Layer"}
    assert classes == set(exercises.LAYER_TESTS)


@pytest.mark.parametrize("name", sorted(exercises.LAYER_TESTS))
def test_pytest_k_with_the_class_name_selects_its_tests(name):
    """The README's `pytest tests/test_gradcheck_layers.py -k ReLU` works for every class,
    whatever its tests are named (test_lrn for LocalResponseNorm): pytest exits 5 without a
    word when -k selects nothing."""
    env = {k: v for k, v in os.environ.items() if k != "TINYALEX_EXERCISE"}
    run = subprocess.run([sys.executable, "-m", "pytest", "tests/test_gradcheck_layers.py",
                          "-k", name, "--collect-only", "-q", "-p", "no:cacheprovider"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    selected = [line for line in run.stdout.splitlines() if "::" in line]
    assert selected, f"-k {name} selected no test"
