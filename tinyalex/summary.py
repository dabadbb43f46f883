"""``python -m tinyalex.summary`` and the ``tinyalex-summary`` script: the command is
tinyalex/commands/summary.py (``main(argv)``; ``run_command`` adds the exit status of a user
error)."""

from .commands.summary import main, run_command

__all__ = ["main", "run_command"]

if __name__ == "__main__":
    raise SystemExit(run_command())
