"""``python -m tinyalex.weights`` and the ``tinyalex-weights`` script: the command is
tinyalex/commands/weights.py, run in a process tuned first (tuning.command_line)."""

from .tuning import command_line

run_command = command_line("tinyalex.commands.weights")

if __name__ == "__main__":
    raise SystemExit(run_command())
