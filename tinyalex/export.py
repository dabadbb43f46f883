"""``python -m tinyalex.export`` and the ``tinyalex-export`` script: the command is
tinyalex/commands/export.py (``main(argv)``; ``run_command`` adds the exit status of a user
error)."""

from .commands.export import main, run_command

__all__ = ["main", "run_command"]

if __name__ == "__main__":
    raise SystemExit(run_command())
