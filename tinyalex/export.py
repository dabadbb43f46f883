"""``python -m tinyalex.export`` and the ``tinyalex-export`` script: the command is
tinyalex/commands/export.py, run in a process tuned first (tuning.command_line)."""

from .tuning import command_line

run_command = command_line("tinyalex.commands.export")

if __name__ == "__main__":
    raise SystemExit(run_command())
