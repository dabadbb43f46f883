"""``python -m tinyalex.evaluate`` and the ``tinyalex-evaluate`` script: the command is
tinyalex/commands/evaluate.py (``main(argv)``; ``run_command`` adds the exit status of a user
error)."""

from .commands.evaluate import main, run_command

__all__ = ["main", "run_command"]

if __name__ == "__main__":
    raise SystemExit(run_command())
