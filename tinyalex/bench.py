"""``python -m tinyalex.bench`` and the ``tinyalex-bench`` script: the command is
tinyalex/checks/bench.py, run in a process tuned first (the twin untuned: it runs PyTorch
beside tinyalex) (tuning.command_line)."""

from .tuning import command_line

run_command = command_line("tinyalex.checks.bench", untuned=("twin",))

if __name__ == "__main__":
    raise SystemExit(run_command())
