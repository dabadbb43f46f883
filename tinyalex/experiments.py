"""``python -m tinyalex.experiments`` and the ``tinyalex-experiments`` script: the command is
tinyalex/learning/experiments.py, run in a process tuned first (tuning.command_line)."""

from .tuning import command_line

run_command = command_line("tinyalex.learning.experiments")

if __name__ == "__main__":
    raise SystemExit(run_command())
