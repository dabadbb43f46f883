"""The notebooks: each one executes headless, and each exercise is a real one.

* Every ``notebooks/*.ipynb`` runs top to bottom in a fresh kernel of this very Python
  (nbclient, a kernelspec made for ``sys.executable``), at the small CI budget
  (``TINYALEX_NOTEBOOK_BUDGET=ci``), within a time limit. The real-data paths come from
  ``$TINYALEX_REAL_DATA`` (CI: ../shared/data); without it the notebooks fall back to the
  synthetic set, saying so.
* Every exercise cell (tagged ``exercise``) fails its check as it is shipped, and its
  solution in ``notebooks/solutions/`` passes the same check: the project's gradient-check
  tests for layers (``tests/test_gradcheck_layers.py`` with ``TINYALEX_EXERCISE``), a
  comparison with tinyalex's own function for the others.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest

from tinyalex.learning import exercises

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
SOLUTIONS = ROOT / "notebooks" / "solutions"
CELL_TIMEOUT = 600       # seconds for one cell
NOTEBOOK_LIMIT = 180     # seconds for a whole notebook at the CI budget


def exercise_cells() -> list[tuple[Path, list[str], str]]:
    """(notebook, exercise names, cell source) for every exercise cell."""
    out = []
    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            if "exercise" in cell.metadata.get("tags", []):
                out.append((path, cell.metadata["exercise"].split(","), cell.source))
    return out


def solution_file(notebook: Path) -> Path:
    files = sorted(SOLUTIONS.glob(notebook.name[:2] + "_*.py"))
    assert len(files) == 1, f"{notebook.name}: expected one solutions/{notebook.name[:2]}_*.py"
    return files[0]


@pytest.fixture(scope="session")
def kernel_dir(tmp_path_factory) -> Path:
    """A Jupyter data dir whose "python3" kernel is this interpreter (first on JUPYTER_PATH,
    so a user's own python3 kernelspec cannot pick another Python)."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (tinyalex tests)", "language": "python"}))
    return root


def test_notebooks_exist_in_order():
    """One chapter per idea, numbered 01.., in the paper's order; outputs not committed."""
    assert NOTEBOOKS, "no notebooks found"
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert numbers == list(range(1, len(numbers) + 1))
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.cells[0].cell_type == "markdown" and "§" in nb.cells[0].source
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, \
                    f"{path.name}: commit notebooks with outputs cleared"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, kernel_dir, monkeypatch, request):
    from nbclient import NotebookClient

    real = request.config.getoption("--real-data")
    if real:  # the kernel finds it the way a learner's would (conftest hides it from tests)
        monkeypatch.setenv("TINYALEX_REAL_DATA", real)
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(
        filter(None, [str(kernel_dir), os.environ.get("JUPYTER_PATH")])))
    monkeypatch.setenv("TINYALEX_NOTEBOOK_BUDGET", "ci")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    if os.environ.get("TINYALEX_NOTEBOOK_OUTPUT"):   # keep the executed copy to look at
        out = Path(os.environ["TINYALEX_NOTEBOOK_OUTPUT"])
        out.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out / path.name)
    first = "".join(o.get("text", "") for o in nb.cells[1].outputs)
    assert str(ROOT / "tinyalex") in first, f"the kernel imported another tinyalex: {first}"
    assert "\ndata: " in first, f"{path.name}: the first output does not say what data it uses"
    if real and "data: none needed" not in first:
        assert str(Path(real).resolve()) in first or real in first, \
            f"{path.name}: real data at {real}, and the first output names other: {first}"
    print(f"{path.name}: {seconds:.1f} s")
    assert seconds < NOTEBOOK_LIMIT, f"{path.name} took {seconds:.0f} s at the CI budget"


def test_every_exercise_has_a_solution():
    cells = exercise_cells()
    assert cells
    known = set(exercises.LAYER_TESTS) | set(exercises.FUNCTION_CHECKS)
    for notebook, names, _ in cells:
        assert set(names) <= known, f"{notebook.name}: no check for {names}"
        solution_file(notebook)


def _function_exercises():
    return [(nb, name, src) for nb, names, src in exercise_cells() for name in names
            if name in exercises.FUNCTION_CHECKS]


@pytest.mark.parametrize("notebook,name,source", _function_exercises(),
                         ids=[f"{nb.stem}-{name}" for nb, name, _ in _function_exercises()])
def test_function_exercise(notebook, name, source):
    """The unfilled cell fails its check; the solution passes it."""
    unfilled, solved = {}, {}
    exec(compile(source, f"{notebook.name}:exercise", "exec"), unfilled)
    assert not exercises.check_function(name, unfilled[name], verbose=False)
    path = solution_file(notebook)
    exec(compile(path.read_text(), str(path), "exec"), solved)
    assert exercises.check_function(name, solved[name])


@pytest.mark.slow
def test_layer_exercises(tmp_path):
    """All layer solutions pass the gradient-check tests; all unfilled cells fail them.

    One run each: the solutions (and the unfilled cells) are put together in one module,
    which then overrides every layer it defines.
    """
    cells = [(nb, names, src) for nb, names, src in exercise_cells()
             if set(names) & set(exercises.LAYER_TESTS)]
    layers = sorted({n for _, names, _ in cells for n in names})
    assert layers
    solved = "\n\n".join(solution_file(nb).read_text() for nb, _, _ in cells)
    outcomes = exercises.run_gradcheck_tests(solved, layers)
    failed = {k: v for k, v in outcomes.items() if v != "passed"}
    assert not failed, f"solutions fail: {failed}"
    assert len(outcomes) > 2 * len(layers)

    unfilled = "\n\n".join(src for _, _, src in cells)
    outcomes = exercises.run_gradcheck_tests(unfilled, layers)
    passed = {k for k, v in outcomes.items() if v == "passed"
              and not k.startswith("test_exercise")}
    assert not passed, f"unfilled exercises pass: {sorted(passed)}"


# ------------------------------------------------------------------ what the chapters promise

TRY_NEXT = "## What to try next"
#: Code the prose names: a command line or a call.
CODE_SPAN = re.compile(r"`([^`\n]+)`")


def _is_code(span: str) -> bool:
    return span.startswith("python ") or re.search(r"[A-Za-z_]\(", span) is not None


def test_every_try_next_suggestion_that_is_code_is_a_cell_ci_runs():
    """Each chapter ends with "What to try next"; a suggestion that is code (a command line
    or a call) is there as a code cell, which test_notebook_executes runs, so it cannot rot:
    code named in the section's prose must appear in one of its code cells."""
    for path in NOTEBOOKS:
        cells = nbformat.read(path, as_version=4).cells
        starts = [i for i, c in enumerate(cells)
                  if c.cell_type == "markdown" and c.source.startswith(TRY_NEXT)]
        assert len(starts) == 1, f"{path.name}: one '{TRY_NEXT}' section, at the end"
        section = cells[starts[0]:]
        code = "\n".join(c.source for c in section if c.cell_type == "code")
        assert code, f"{path.name}: '{TRY_NEXT}' has no code cell"
        for cell in section:
            if cell.cell_type != "markdown":
                continue
            for span in CODE_SPAN.findall(cell.source):
                assert not _is_code(span) or span in code, \
                    f"{path.name}: '{span}' is suggested in prose but no cell runs it"


def test_chapters_that_train_come_after_the_training_chapters():
    """Ablations and training runs need chapters 07-10 (loss, SGD, the loop): no chapter
    before 10 trains a net."""
    trains = re.compile(r"experiments\.(run_experiments|train_variant|train_run|relu_vs_tanh"
                        r"|\w+_ablation)\(|tinyalex\.train ")
    for path in NOTEBOOKS:
        if int(path.name[:2]) >= 10:
            continue
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                assert not trains.search(cell.source), \
                    f"{path.name} trains before chapter 10: {trains.search(cell.source)[0]}"


PLOTS = re.compile(r"\.(plot|bar|barh|semilogy|loglog|scatter|hist)\(")


def test_every_plot_has_axis_labels():
    """A cell that draws a chart (lines, bars) labels its axes; pictures (imshow with the
    axes off) need none. Checked on the source: each such cell sets an xlabel and a ylabel."""
    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code" and PLOTS.search(cell.source):
                assert "xlabel" in cell.source and "ylabel" in cell.source, \
                    f"{path.name}: a plot without axis labels:\n{cell.source[:300]}"
