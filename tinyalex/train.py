"""``python -m tinyalex.train`` and the ``tinyalex-train`` script: the command is
tinyalex/commands/train.py (``main(argv)``; ``run_command`` adds the exit status of a user
error and runs each rank of an mpiexec job)."""

from .commands.train import main, run_command

__all__ = ["main", "run_command"]

if __name__ == "__main__":
    raise SystemExit(run_command())
