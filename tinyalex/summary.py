"""``python -m tinyalex.summary`` and the ``tinyalex-summary`` script: the command is
tinyalex/commands/summary.py, run in a process tuned first (tuning.command_line)."""

from .tuning import command_line

run_command = command_line("tinyalex.commands.summary")

if __name__ == "__main__":
    raise SystemExit(run_command())
