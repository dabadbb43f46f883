"""``python -m tinyalex.figures`` and the ``tinyalex-figures`` script: the command is
tinyalex/commands/figures.py (``main(argv)``; ``run_command`` adds the exit status of a user
error)."""

from .commands.figures import main, run_command

__all__ = ["main", "run_command"]

if __name__ == "__main__":
    raise SystemExit(run_command())
