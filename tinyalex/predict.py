"""``python -m tinyalex.predict`` and the ``tinyalex-predict`` script: the command is
tinyalex/commands/predict.py (``main(argv)``; ``run_command`` adds the exit status of a user
error)."""

from .commands.predict import main, run_command

__all__ = ["main", "run_command"]

if __name__ == "__main__":
    raise SystemExit(run_command())
