"""Nothing happens on ``import tinyalex``; ``tinyalex.tune()`` (tinyalex/tuning.py) is the
explicit call that tunes the process, which the commands make.

- Importing the package and its layers, net, loop and commands sets no environment variable
  and leaves malloc alone: a 400 MB array freed goes back to the OS.
- ``tune()`` keeps freed memory for reuse (the same array freed leaves the process 400 MB
  bigger), sets OMP_WAIT_POLICY=PASSIVE and, before numpy is imported,
  OPENBLAS_THREAD_TIMEOUT=4; it keeps a user's own values, says what it applied, and does
  nothing under TINYALEX_NO_TUNING=1.
- A command run through its entry point (tuning.command_line) is tuned; ``cli.run`` alone
  is not.
Each case runs in a fresh interpreter: tuning is for the whole process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
POLICY = ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT", "TINYALEX_NO_TUNING")

# Prints, as JSON: the two thread settings, and the MB of RSS a freed 400 MB array leaves.
PROBE = """
import json, os
import numpy as np

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

before = rss_mb()
a = np.ones(100 * 2**20, dtype=np.float32)
del a
print(json.dumps({"kept_mb": rss_mb() - before,
                  "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
                  "OPENBLAS_THREAD_TIMEOUT": os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
                  "applied": globals().get("applied")}))
"""


def probe(first: str, **env) -> dict:
    environ = {k: v for k, v in os.environ.items() if k not in POLICY}
    result = subprocess.run([sys.executable, "-c", first + "\n" + PROBE], capture_output=True,
                            text=True, cwd=ROOT, env={**environ, **env}, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_tinyalex_changes_nothing():
    seen = probe("import tinyalex, tinyalex.layers, tinyalex.net, tinyalex.loop, "
                 "tinyalex.optim, tinyalex.kernels.dispatch, tinyalex.commands.train")
    assert seen["OMP_WAIT_POLICY"] is None and seen["OPENBLAS_THREAD_TIMEOUT"] is None
    assert seen["kept_mb"] < 100, seen  # the freed array went back to the OS


def test_tune_keeps_freed_memory_and_sets_the_thread_policy():
    seen = probe("import tinyalex; applied = tinyalex.tune()")
    assert seen["kept_mb"] > 300, seen
    assert seen["OMP_WAIT_POLICY"] == "PASSIVE" and seen["OPENBLAS_THREAD_TIMEOUT"] == "4"
    assert seen["applied"] == {"reuse_freed_memory": True, "OMP_WAIT_POLICY": "PASSIVE",
                               "OPENBLAS_THREAD_TIMEOUT": "4"}


def test_tune_after_numpy_leaves_the_openblas_timeout_it_could_not_set():
    seen = probe("import numpy, tinyalex; applied = tinyalex.tune()")
    assert seen["OPENBLAS_THREAD_TIMEOUT"] is None
    assert seen["applied"]["OPENBLAS_THREAD_TIMEOUT"] is None
    assert seen["applied"]["OMP_WAIT_POLICY"] == "PASSIVE"


def test_tune_keeps_a_users_values_and_no_tuning_leaves_all_alone():
    seen = probe("import tinyalex; applied = tinyalex.tune()", OMP_WAIT_POLICY="ACTIVE")
    assert seen["OMP_WAIT_POLICY"] == "ACTIVE" and seen["applied"]["OMP_WAIT_POLICY"] is None
    seen = probe("import tinyalex; applied = tinyalex.tune()", TINYALEX_NO_TUNING="1")
    assert seen["OMP_WAIT_POLICY"] is None and seen["OPENBLAS_THREAD_TIMEOUT"] is None
    assert seen["kept_mb"] < 100 and not seen["applied"]["reuse_freed_memory"]


@pytest.mark.parametrize("tune", [True, False])
def test_a_command_run_through_its_entry_point_is_tuned(tune):
    """tinyalex.X.run_command (python -m tinyalex.X, the scripts) tunes the process; cli.run,
    the commands' error handling, leaves it alone."""
    first = ("import tinyalex.summary; tinyalex.summary.run_command(['--arch', 'alexnet-mini'])"
             if tune else "from tinyalex.commands import cli; cli.run(lambda argv: 0, [])")
    seen = probe(first)
    assert (seen["OMP_WAIT_POLICY"] == "PASSIVE") == tune
    assert (seen["kept_mb"] > 300) == tune, seen


@pytest.mark.parametrize("argv, expected", [([], "4"), (["twin"], "None")])
def test_command_line_tunes_before_the_command_loads_numpy(tmp_path, argv, expected):
    """tuning.command_line (python -m tinyalex.X, the tinyalex-X scripts) tunes first, so
    the OpenBLAS timeout is set when the command's imports load numpy; a subcommand named
    untuned (the bench's twin) is left alone."""
    (tmp_path / "probe_command.py").write_text(
        "import os\nimport numpy\n\ndef run_command(argv=None):\n"
        "    print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))\n    return 0\n")
    code = ("from tinyalex.tuning import command_line; "
            f"raise SystemExit(command_line('probe_command', untuned=('twin',))({argv!r}))")
    environ = {k: v for k, v in os.environ.items() if k not in POLICY}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=120,
                            env={**environ, "PYTHONPATH": f"{tmp_path}:{ROOT}"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [expected]
