"""``python -m tinyalex.experiments`` and the ``tinyalex-experiments`` script: the command is
tinyalex/learning/experiments.py (``main(argv)``; ``run_command`` adds the exit status of a user
error)."""

from .learning.experiments import main, run_command

__all__ = ["main", "run_command"]

if __name__ == "__main__":
    raise SystemExit(run_command())
