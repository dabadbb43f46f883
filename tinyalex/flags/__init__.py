"""Every ``TINYALEX_*`` environment variable, read by one parser (``python -m tinyalex.flags``
prints this table with the current values).

A switch is true for 1, true, yes or on and false for 0, false, no, off or empty (any case,
spaces ignored); unset is false. Any other value is a FlagError naming the variable, so a
typo never silently leaves a switch as it was. A value variable is its text, None when
unset or empty.

    flags.boolean("TINYALEX_NO_NUMBA")      # a switch: True / False
    flags.value("TINYALEX_DATA")            # a value: str or None

Only names in FLAGS can be read (a KeyError otherwise), so a new variable has to be added
here, with its meaning, to be read at all. This module imports nothing but ``os``:
``tinyalex.tune()`` reads TINYALEX_NO_TUNING with it, perhaps before numpy is imported.
"""

from __future__ import annotations

import os

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off", "")


class FlagError(ValueError):
    """A switch holds a value that is neither true nor false."""


class Flag:
    """One variable: ``name`` (a trailing ``_`` is a family: TINYALEX_URL_<NAME>), ``kind``
    ("switch" or "value"), what it does when unset (``default``) and when set (``meaning``),
    and who reads it."""

    __slots__ = ("name", "kind", "default", "meaning", "read_by")

    def __init__(self, name, kind, default, meaning, read_by):
        self.name, self.kind, self.default, self.meaning, self.read_by = \
            name, kind, default, meaning, read_by

    @property
    def family(self) -> bool:
        return self.name.endswith("_")


_TABLE = [
    Flag("TINYALEX_NO_NUMBA", "switch", "off: the Numba and CuPy fast paths run",
         "run the readable NumPy bodies only (same results, slower)", "kernels/dispatch.py"),
    Flag("TINYALEX_NO_WINOGRAD", "switch", "off: 3x3 and 5x5 stride-1 convs by Winograd F(3x3,3x3) or F(5x5,3x3), F(3x3,5x5); the paper's "
         "conv1 by F(2x2,3x3) on its space-to-depth maps",
         "every convolution's fast path by im2col", "kernels/dispatch.py"),
    Flag("TINYALEX_NO_BATCH_PARALLEL_CONV", "switch",
         "off: the batch-parallel conv where numpy's BLAS is OpenBLAS",
         "convolutions by the readable body (its im2col/col2im still fast)",
         "kernels/dispatch.py"),
    Flag("TINYALEX_NO_TUNING", "switch",
         "off: tinyalex.tune() (which the commands call) keeps freed memory and sets "
         "OPENBLAS_THREAD_TIMEOUT=4 and OMP_WAIT_POLICY=PASSIVE",
         "tinyalex.tune() leaves malloc, OpenBLAS's thread timeout and OpenMP's wait policy "
         "alone", "tuning.py"),
    Flag("TINYALEX_UNVERIFIED_GPU", "switch", "off: train and evaluate --device gpu refuse",
         "allow --device gpu before the CuPy path has run on a GPU", "commands/cli.py"),
    Flag("TINYALEX_DATA", "value", "./data", "where to look for data when --data is not given",
         "data/find.py"),
    Flag("TINYALEX_CACHE", "value", "~/.cache/tinyalex", "where prepared data is kept",
         "data/prepare.py"),
    Flag("TINYALEX_REAL_DATA", "value", "none: the real-data tests skip",
         "the folder of real data (CI: ../shared/data) for the tests, notebooks and "
         "experiments", "data/find.py, learning/experiments.py, tests/conftest.py"),
    Flag("TINYALEX_NOTEBOOK_BUDGET", "value", "full: a learner's run",
         "the notebooks' budget: full, or ci (seconds; what CI executes)", "learning/notebook.py"),
    Flag("TINYALEX_EXERCISE", "value", "none: the tests check tinyalex's own layers",
         "the learner's layers (a module name or a .py path) for tests/test_gradcheck_layers.py",
         "tests/test_gradcheck_layers.py (set by learning/exercises.py)"),
    Flag("TINYALEX_URL_", "value", "the official URL in data/download.py",
         "TINYALEX_URL_<NAME>: the archive URL of dataset NAME (e.g. TINY_IMAGENET)",
         "data/download.py"),
    Flag("TINYALEX_SHA256_", "value", "the digest pinned in data/download.py, if any",
         "TINYALEX_SHA256_<NAME>: the expected sha256 of dataset NAME's archive",
         "data/download.py"),
    Flag("TINYALEX_NOTEBOOK_OUTPUT", "value", "none", "a folder to keep the executed notebooks in",
         "tests/test_notebooks.py"),
]
FLAGS = {flag.name: flag for flag in _TABLE}


def lookup(name: str) -> Flag:
    """The table's entry for ``name`` (a family's for TINYALEX_URL_TINY_IMAGENET); KeyError
    for a name not in the table."""
    flag = FLAGS.get(name)
    if flag is not None and not flag.family:
        return flag
    for family in _TABLE:
        if family.family and name.startswith(family.name) and len(name) > len(family.name):
            return family
    raise KeyError(f"{name} is not in tinyalex.flags.FLAGS: add it there with its meaning")


def parse(name: str, raw: str | None) -> bool:
    """The one true/false rule: None (unset) and FALSE -> False, TRUE -> True, else FlagError."""
    if raw is None:
        return False
    word = raw.strip().lower()
    if word in TRUE:
        return True
    if word in FALSE:
        return False
    raise FlagError(f"{name}={raw!r} is neither true ({', '.join(TRUE)}) nor false "
                    f"({', '.join(FALSE[:-1])} or empty)")


def boolean(name: str) -> bool:
    """The switch ``name`` read from the environment now."""
    if lookup(name).kind != "switch":
        raise KeyError(f"{name} is a value, not a switch: read it with flags.value")
    return parse(name, os.environ.get(name))


def value(name: str) -> str | None:
    """The value variable ``name`` read from the environment now; None if unset or empty."""
    if lookup(name).kind != "value":
        raise KeyError(f"{name} is a switch, not a value: read it with flags.boolean")
    return os.environ.get(name) or None


def current(flag: Flag, environ=None) -> str:
    """What ``flag`` is now, as text: "on"/"off" (or the error) for a switch, the value (or
    "unset") for a value, every NAME=value set for a family."""
    environ = os.environ if environ is None else environ
    if flag.family:
        found = [f"{k}={v}" for k, v in sorted(environ.items()) if k.startswith(flag.name)]
        return ", ".join(found) or "unset"
    raw = environ.get(flag.name)
    if flag.kind == "value":
        return raw if raw else "unset"
    try:
        return "on" if parse(flag.name, raw) else ("off" if raw is None else f"off ({raw!r})")
    except FlagError:
        return f"INVALID {raw!r}"


def table(environ=None) -> str:
    """The table of every variable, its kind, default, meaning and current value."""
    lines = ["Every TINYALEX_* environment variable (switches: "
             f"{'/'.join(TRUE)} = on, {'/'.join(FALSE[:-1])}/empty/unset = off).", ""]
    for flag in _TABLE:
        name = flag.name + "<NAME>" if flag.family else flag.name
        lines.append(f"{name}  [{flag.kind}]  now: {current(flag, environ)}")
        lines.append(f"    set:   {flag.meaning}")
        lines.append(f"    unset: {flag.default}")
        lines.append(f"    read by {flag.read_by}")
    return "\n".join(lines)
