"""``python -m tinyalex.train`` and the ``tinyalex-train`` script: the command is
tinyalex/commands/train.py, run in a process tuned first (tuning.command_line)."""

from .tuning import command_line

run_command = command_line("tinyalex.commands.train")

if __name__ == "__main__":
    raise SystemExit(run_command())
