"""tinyalex.flags: every TINYALEX_* variable read by one parser, with one rule for true/false.

- 1/true/yes/on are true, 0/false/no/off/empty and unset false (any case, spaces ignored);
  anything else is a FlagError (a ValueError) naming the variable and the accepted values.
- The old two rules are gone: TINYALEX_NO_NUMBA=on turns Numba off (it used to leave it
  on), TINYALEX_NO_WINOGRAD=false leaves Winograd on (it used to turn it off).
- The table lists every TINYALEX_ name in the package, notebooks, README, docs and tests; no
  package file reads one from os.environ itself; ``python -m tinyalex.flags`` prints it.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinyalex import flags
from tinyalex.kernels import dispatch

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tinyalex"
NAME = re.compile(r"TINYALEX_[A-Z0-9_]+")

# Files not yet moved to tinyalex.flags (they are edited elsewhere): their own reads are
# allowed until then. Empty this set once they call flags.boolean / flags.value.
PENDING: set[str] = set()


@pytest.mark.parametrize("raw", ["1", "true", "yes", "on", "TRUE", " On ", "Yes"])
def test_true(raw, monkeypatch):
    monkeypatch.setenv("TINYALEX_NO_WINOGRAD", raw)
    assert flags.boolean("TINYALEX_NO_WINOGRAD") is True


@pytest.mark.parametrize("raw", ["0", "false", "no", "off", "", "  ", "OFF", "False"])
def test_false(raw, monkeypatch):
    monkeypatch.setenv("TINYALEX_NO_WINOGRAD", raw)
    assert flags.boolean("TINYALEX_NO_WINOGRAD") is False


def test_unset_is_false(monkeypatch):
    monkeypatch.delenv("TINYALEX_NO_WINOGRAD", raising=False)
    assert flags.boolean("TINYALEX_NO_WINOGRAD") is False


@pytest.mark.parametrize("raw", ["2", "maybe", "y", "enabled", "-1"])
def test_an_unknown_value_is_an_error(raw, monkeypatch):
    monkeypatch.setenv("TINYALEX_NO_NUMBA", raw)
    with pytest.raises(flags.FlagError) as caught:
        flags.boolean("TINYALEX_NO_NUMBA")
    message = str(caught.value)
    assert isinstance(caught.value, ValueError) and "\n" not in message
    assert "TINYALEX_NO_NUMBA" in message and repr(raw) in message
    for word in flags.TRUE + flags.FALSE[:-1]:
        assert word in message
    with pytest.raises(flags.FlagError):  # where the fast path's settings are read
        dispatch.read_settings()


def test_only_names_in_the_table_are_read(monkeypatch):
    with pytest.raises(KeyError, match="not in tinyalex.flags.FLAGS"):
        flags.boolean("TINYALEX_NO_SUCH_THING")
    with pytest.raises(KeyError, match="a value, not a switch"):
        flags.boolean("TINYALEX_DATA")
    with pytest.raises(KeyError, match="a switch, not a value"):
        flags.value("TINYALEX_NO_NUMBA")
    with pytest.raises(KeyError):
        flags.value("TINYALEX_URL_")  # a family needs its NAME
    monkeypatch.setenv("TINYALEX_URL_TINY_IMAGENET", "http://example.invalid/t.zip")
    assert flags.value("TINYALEX_URL_TINY_IMAGENET") == "http://example.invalid/t.zip"
    monkeypatch.setenv("TINYALEX_DATA", "")
    assert flags.value("TINYALEX_DATA") is None  # empty is unset, as before


def test_no_numba_on_turns_numba_off():
    assert dispatch.read_settings({}).fast
    assert not dispatch.read_settings({"TINYALEX_NO_NUMBA": "on"}).fast
    x = np.zeros((4, 4))
    with dispatch.settings(fast=True):
        assert dispatch.relu_forward(x) is not None
    with dispatch.settings(fast=False):
        assert dispatch.relu_forward(x) is None


def test_the_settings_are_read_once_at_import():
    """A process started with TINYALEX_NO_NUMBA=on runs the readable bodies; setting it
    later in the process changes nothing (tests use dispatch.settings)."""
    code = ("import os, numpy as np; from tinyalex.kernels import dispatch; "
            "x = np.zeros(4); a = dispatch.relu_forward(x) is None; "
            "os.environ['TINYALEX_NO_NUMBA'] = '0'; print(a, dispatch.relu_forward(x) is None)")
    result = _run(["-c", code], TINYALEX_NO_NUMBA="on")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]


def test_no_winograd_false_leaves_winograd_on():
    assert dispatch.read_settings({"TINYALEX_NO_WINOGRAD": "false"}).winograd
    assert not dispatch.read_settings({"TINYALEX_NO_WINOGRAD": "1"}).winograd
    x, w = np.zeros((1, 16, 4, 4), np.float32), np.zeros((2, 16, 3, 3), np.float32)
    with dispatch.settings(fast=True, winograd=True, batch_parallel_conv=True):
        assert dispatch.conv_algorithm(x.shape, w.shape, 1, 1, 1, np.float32) == "winograd"
    with dispatch.settings(fast=True, winograd=False, batch_parallel_conv=True):
        assert dispatch.conv_algorithm(x.shape, w.shape, 1, 1, 1, np.float32) == "im2col"


def _names_in(paths) -> set[str]:
    found = set()
    for path in paths:
        found |= {n for n in NAME.findall(path.read_text(errors="replace")) if n != "TINYALEX_"}
    return found


def test_the_table_lists_every_variable():
    """Every TINYALEX_ name in the package source (and notebooks, README, docs, tests) is a
    variable of the table or of one of its families: a new one fails here until it is in
    tinyalex/flags/__init__.py with its meaning."""
    package = [p for p in PACKAGE.rglob("*.py") if "flags" not in p.relative_to(PACKAGE).parts]
    others = [*ROOT.glob("notebooks/*.ipynb"), ROOT / "README.md", *ROOT.glob("docs/*.md"),
              *[p for p in ROOT.glob("tests/*.py") if p.name != Path(__file__).name]]
    names = _names_in(package)
    assert {"TINYALEX_NO_NUMBA", "TINYALEX_NO_TUNING", "TINYALEX_DATA"} <= names  # the grep works
    for name in sorted(names | _names_in(p for p in others if p.exists())):
        assert name in flags.FLAGS or flags.lookup(name), name  # (a family's prefix is)


def _environ_reads(path: Path) -> list[str]:
    """The TINYALEX_ names a file reads from os.environ itself: os.environ.get(N),
    os.getenv(N), os.environ[N], N in os.environ; N a literal, an f-string or a constant."""
    tree = ast.parse(path.read_text())
    constants = {t.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                 and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
                 for t in node.targets if isinstance(t, ast.Name)}

    def name_of(arg):
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            text = arg.value
        elif isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
            text = str(arg.values[0].value)
        elif isinstance(arg, ast.Name):
            text = constants.get(arg.id, "")
        else:
            return None
        return text if text.startswith("TINYALEX_") else None

    def is_environ(node):
        return isinstance(node, ast.Attribute) and node.attr == "environ"

    reads = []
    for node in ast.walk(tree):
        arg = None
        if isinstance(node, ast.Call) and node.args and isinstance(node.func, ast.Attribute):
            if (node.func.attr == "get" and is_environ(node.func.value)) or \
                    node.func.attr == "getenv":
                arg = node.args[0]
        elif isinstance(node, ast.Subscript) and is_environ(node.value) and \
                isinstance(node.ctx, ast.Load):
            arg = node.slice
        elif isinstance(node, ast.Compare) and any(is_environ(c) for c in node.comparators):
            arg = node.left
        if arg is not None and name_of(arg):
            reads.append(name_of(arg))
    return reads


def test_no_package_file_reads_the_environment_itself():
    readers = {}
    for path in PACKAGE.rglob("*.py"):
        where = str(path.relative_to(ROOT))
        if "flags" in path.relative_to(PACKAGE).parts or where in PENDING:
            continue
        if reads := _environ_reads(path):
            readers[where] = reads
    assert readers == {}, "read these with tinyalex.flags.boolean / flags.value"


def test_the_reads_check_sees_a_direct_read(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('import os\nENV = "TINYALEX_DATA"\na = os.environ.get("TINYALEX_NO_NUMBA")\n'
                      'b = os.environ[ENV]\nc = os.getenv(f"TINYALEX_URL_{a}")\n'
                      'd = "TINYALEX_CACHE" in os.environ\ne = {**os.environ, "TINYALEX_X": 1}\n')
    assert _environ_reads(sample) == ["TINYALEX_NO_NUMBA", "TINYALEX_DATA", "TINYALEX_URL_",
                                      "TINYALEX_CACHE"]


def _run(args, **env):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TINYALEX_")}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          env={**environ, **env}, cwd=ROOT)


def test_python_m_tinyalex_flags_prints_the_table():
    result = _run(["-m", "tinyalex.flags"], TINYALEX_NO_WINOGRAD="yes", TINYALEX_DATA="/d")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no runpy warning either
    for flag in flags.FLAGS.values():
        assert flag.name in result.stdout
    assert "TINYALEX_NO_WINOGRAD  [switch]  now: on" in result.stdout
    assert "TINYALEX_DATA  [value]  now: /d" in result.stdout


def test_a_bad_no_tuning_stops_the_tuning_not_the_import():
    code = "import tinyalex; print('imported'); tinyalex.tune()"
    result = _run(["-c", code], TINYALEX_NO_TUNING="perhaps")
    assert result.returncode != 0 and result.stdout.split() == ["imported"]
    assert "FlagError: TINYALEX_NO_TUNING='perhaps' is neither true" in result.stderr
