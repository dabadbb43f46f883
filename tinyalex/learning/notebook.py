"""What every chapter in notebooks/ shares: its budget, the line that says what it runs on,
the mark on figures made at the seconds-long CI budget, and commands run as in a terminal.

    BUDGET = notebook.start(data=["tiny"])     # first cell: tinyalex, budget, data
    notebook.mark(fig, BUDGET)                 # "CI smoke budget" written on a figure
    notebook.run("python -m tinyalex.summary --arch alexnet-small", BUDGET)

The budget comes from ``$TINYALEX_NOTEBOOK_BUDGET``: ``full`` (the default) is a learner's
run, ``ci`` the seconds-long one CI executes (tests/test_notebooks.py).
"""

from __future__ import annotations

import importlib
import os
import shlex

from .. import flags

BUDGETS = ("full", "ci")
BUDGET_ENV = "TINYALEX_NOTEBOOK_BUDGET"

#: What a figure made at the CI budget says about itself.
SMOKE_NOTE = ("CI smoke budget: seconds of training, so this is noise, not a result "
              f"(the real run: {BUDGET_ENV}=full)")

#: The names under which the notebooks look for data (tinyalex.data.find.KIND_PATTERNS).
DATA_NAMES = {"tiny": "Tiny ImageNet", "imagenette": "Imagenette",
              "samples": "full-size ImageNet samples"}


def budget() -> str:
    """``$TINYALEX_NOTEBOOK_BUDGET``: "full" (default) or "ci"."""
    value = flags.value(BUDGET_ENV) or "full"
    if value not in BUDGETS:
        raise ValueError(f"{BUDGET_ENV}={value!r}: use one of {', '.join(BUDGETS)}")
    return value


def start(data=(), log=print) -> str:
    """A chapter's first output: which tinyalex runs (and from where), the budget, and for
    each kind of data the chapter uses (``"tiny"``, ``"samples"``, ...) the file it found or
    that there is none, what it uses then, and how to get real data. Returns the budget."""
    import tinyalex

    from ..data.find import find_kind

    chosen = budget()
    log(f"tinyalex {tinyalex.__version__} from {os.path.dirname(tinyalex.__file__)}; "
        f"budget {chosen!r} ({BUDGET_ENV})")
    if not data:
        log("data: none needed (this chapter works on small arrays it makes itself)")
    for kind in data:
        found = find_kind(kind, log=lambda _: None)
        name = DATA_NAMES[kind]
        if found is not None:
            log(f"data: {name} from {found}")
        else:
            fallback = ("a synthetic picture" if kind == "samples" else
                        "the built-in SYNTHETIC set (it runs the code; its accuracy means "
                        "nothing)")
            log(f"data: no {name} found ($TINYALEX_DATA, ./data, the repository's data/, "
                f"$TINYALEX_REAL_DATA), so {fallback}. Real data: "
                "python -m tinyalex.data download tiny-imagenet (see data/README.md)")
    return chosen


def mark(fig, budget: str):
    """Write SMOKE_NOTE across the bottom of a matplotlib figure made at the CI budget (at
    the full budget, nothing). Returns the figure."""
    if budget == "ci" and fig is not None:
        from ..commands.figures import stamp

        stamp(fig, SMOKE_NOTE)
    return fig


def note(budget: str) -> str | None:
    """SMOKE_NOTE at the CI budget, else None: the ``note=`` of tinyalex.figures' plots."""
    return SMOKE_NOTE if budget == "ci" else None


def run(command: str, budget: str, smoke: str = "") -> int:
    """Run ``python -m tinyalex.<name> ARGS`` in this process, as a terminal would (its
    output appears here), and return its exit status (an error raises RuntimeError).

    At the CI budget the arguments in ``smoke`` are appended (e.g. ``--max-steps 3``) and
    the line printed says so, so that a command which takes minutes runs in seconds there.
    """
    words = shlex.split(command)
    if words[:2] != ["python", "-m"] or len(words) < 3 or not words[2].startswith("tinyalex."):
        raise ValueError(f"not a 'python -m tinyalex.<command> ...' line: {command!r}")
    argv = words[3:]
    extra = shlex.split(smoke) if budget == "ci" else []
    print("$ " + command + (f"   # + {smoke} at the CI budget" if extra else ""), flush=True)
    module = importlib.import_module(words[2])
    code = module.run_command(argv + extra)
    if code:
        raise RuntimeError(f"{words[2]} stopped with exit status {code}")
    return code

