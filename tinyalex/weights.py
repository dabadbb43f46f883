"""``python -m tinyalex.weights`` and the ``tinyalex-weights`` script: the command is
tinyalex/commands/weights.py (``main(argv)``; ``run_command`` adds the exit status of a user
error)."""

from .commands.weights import main, run_command

__all__ = ["main", "run_command"]

if __name__ == "__main__":
    raise SystemExit(run_command())
