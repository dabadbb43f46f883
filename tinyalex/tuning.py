"""Process tuning for speed: an explicit call, ``tinyalex.tune()``, never a side effect of
``import tinyalex``. The commands (train, evaluate, bench, ...) call it first thing; a
notebook or a script calls it when it wants their speed.

What it changes, for the whole process (docs/speed.md has the figures):

- glibc keeps freed memory for reuse instead of handing it back to the OS: a training step
  allocates and frees buffers of tens to hundreds of MB, and a fresh mmap pays a page fault
  and a zero-fill per 4 KiB on first touch. The process keeps its high-water mark.
- OpenMP's idle threads (Numba's parallel loops) sleep at once instead of spinning, so the
  convolution's workers and their GEMMs get the cores (OMP_WAIT_POLICY=PASSIVE; libgomp
  reads it when it loads, at Numba's first parallel loop).
- OpenBLAS's idle threads sleep after a short timeout (OPENBLAS_THREAD_TIMEOUT=4), for the
  same reason; OpenBLAS reads it when it loads, with numpy, so only a ``tune()`` made before
  numpy's import sets it (the ``python -m tinyalex.X`` entry points make it so).

TINYALEX_NO_TUNING=1 makes ``tune()`` leave the process alone. This module imports only
``os`` and ``ctypes``.
"""

from __future__ import annotations

import importlib
import os
import sys

from . import flags

THREAD_POLICY = {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_THREAD_TIMEOUT": "4"}


def tune() -> dict:
    """Tune this process for tinyalex's speed (the module docstring says what); idempotent.
    Returns what it applied: {"reuse_freed_memory": bool, "OMP_WAIT_POLICY": value or None,
    "OPENBLAS_THREAD_TIMEOUT": value or None} (None: not set, the user's value or too late)."""
    applied = {"reuse_freed_memory": False, "OMP_WAIT_POLICY": None,
               "OPENBLAS_THREAD_TIMEOUT": None}
    if flags.boolean("TINYALEX_NO_TUNING"):
        return applied
    applied["reuse_freed_memory"] = reuse_freed_memory()
    for name, value in THREAD_POLICY.items():
        # OpenBLAS reads its timeout when numpy loads it: past that, setting it would lie
        too_late = name == "OPENBLAS_THREAD_TIMEOUT" and "numpy" in sys.modules
        if name not in os.environ and not too_late:
            os.environ[name] = value
            applied[name] = value
    return applied


def command_line(module: str, untuned: tuple = ()):
    """run_command(argv=None) -> exit status for the command of ``module`` (its own
    run_command), with the process tuned first, before the command's imports load numpy
    (OpenBLAS reads its thread timeout then): what ``python -m tinyalex.X`` and the
    ``tinyalex-X`` scripts run. ``untuned``: subcommands left untuned (the bench's twin,
    which runs PyTorch in the same process)."""
    def run_command(argv=None) -> int:
        words = sys.argv[1:] if argv is None else list(argv)
        if not (words and words[0] in untuned):
            tune()
        return importlib.import_module(module).run_command(argv)

    run_command.__doc__ = f"{module}'s command line, in a tuned process."
    return run_command


def reuse_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse instead of handing it back to the kernel
    (M_MMAP_MAX = 0: no mmap per large block; M_TRIM_THRESHOLD at its largest: no trim).
    Peak memory is unchanged; the process keeps its high-water mark. A no-op off glibc.
    Returns True if applied."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        ok = libc.mallopt(m_mmap_max, 0) == 1
        ok &= libc.mallopt(m_trim_threshold, 2**31 - 1) == 1
        return bool(ok)
    except (OSError, AttributeError):
        return False
