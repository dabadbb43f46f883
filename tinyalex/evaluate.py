"""``python -m tinyalex.evaluate`` and the ``tinyalex-evaluate`` script: the command is
tinyalex/commands/evaluate.py, run in a process tuned first (tuning.command_line)."""

from .tuning import command_line

run_command = command_line("tinyalex.commands.evaluate")

if __name__ == "__main__":
    raise SystemExit(run_command())
