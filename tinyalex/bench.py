"""``python -m tinyalex.bench`` and the ``tinyalex-bench`` script: the command is
tinyalex/checks/bench.py (``main(argv)``; ``run_command`` adds the exit status of a user
error)."""

from .checks.bench import main, run_command

__all__ = ["main", "run_command"]

if __name__ == "__main__":
    raise SystemExit(run_command())
