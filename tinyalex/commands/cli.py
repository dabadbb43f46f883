"""What every command shares: argparse with --help, user errors (UserError, and the data
layer's DataError) as one line and exit 2, progress bars."""

from __future__ import annotations

import argparse
import sys

from .. import flags
from ..data.errors import DataError


class UserError(Exception):
    """A mistake the user can fix (bad path, bad option): printed as one line, exit 2."""


def run(main, argv=None) -> int:
    """Call main(argv); turn a UserError or a DataError into one line on stderr and exit 2.
    (The process is tuned by the entry point, tuning.command_line, not here.)"""
    try:
        return main(argv) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (UserError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def require_gpu():
    """The cupy module for ``--device gpu``. UserError (one line) when CuPy sees no usable
    GPU, and while the CuPy path has not run on a GPU unless TINYALEX_UNVERIFIED_GPU is set."""
    from ..backend import gpu_available, gpu_module

    ok, why = gpu_available()
    if not ok:
        raise UserError(f"--device gpu: {why}")
    if not flags.boolean("TINYALEX_UNVERIFIED_GPU"):
        # CI runs the path under a CuPy stand-in (tests/test_gpu.py) but it has not yet run
        # on a GPU; until it has, say so rather than fail halfway.
        raise UserError("--device gpu has not been verified on a GPU yet in this version; to "
                        "try it anyway set TINYALEX_UNVERIFIED_GPU=1 (and run python -m pytest "
                        "tests/test_gpu.py), or use --device cpu")
    return gpu_module()


def command(main):
    """The command line of ``main`` (what tuning.command_line runs for ``python -m`` and the
    ``[project.scripts]`` entry): run_command(argv=None) -> exit status, through ``run``
    (a user error as one line, exit 2)."""
    def run_command(argv=None) -> int:
        return run(main, argv)

    run_command.__doc__ = f"{main.__module__}'s command line: main through cli.run."
    return run_command


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default, unless its help already says it or there is none to show
    (None, or False for a switch)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default is None or action.default is False:
            return text
        return super()._get_help_string(action)


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=description,
                                   formatter_class=HelpFormatter)


def progress_bar(total: int, desc: str = "", unit: str = "it", enabled: bool = True,
                 initial: int = 0):
    """The one progress bar of every command: tqdm with its rate and ETA, on stderr, gone
    when done (leave=False). Redrawn every half second on a terminal; elsewhere (a log file,
    a notebook, whose saved output keeps every redraw as a line of its own) every
    ``QUIET_INTERVAL`` seconds, so that a 15-minute run leaves some 30 lines, not 1,800.
    ``enabled=False`` gives a bar whose methods do nothing (tqdm's disable)."""
    from tqdm import tqdm

    interval = 0.5 if _is_terminal(sys.stderr) else QUIET_INTERVAL
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False,
                dynamic_ncols=True, mininterval=interval, file=sys.stderr,
                disable=not enabled)


#: Seconds between redraws of a progress bar that is not on a terminal.
QUIET_INTERVAL = 30.0


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
