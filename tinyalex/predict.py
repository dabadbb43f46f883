"""``python -m tinyalex.predict`` and the ``tinyalex-predict`` script: the command is
tinyalex/commands/predict.py, run in a process tuned first (tuning.command_line)."""

from .tuning import command_line

run_command = command_line("tinyalex.commands.predict")

if __name__ == "__main__":
    raise SystemExit(run_command())
