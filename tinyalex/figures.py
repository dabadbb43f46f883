"""``python -m tinyalex.figures`` and the ``tinyalex-figures`` script: the command is
tinyalex/commands/figures.py, run in a process tuned first (tuning.command_line)."""

from .tuning import command_line

run_command = command_line("tinyalex.commands.figures")

if __name__ == "__main__":
    raise SystemExit(run_command())
