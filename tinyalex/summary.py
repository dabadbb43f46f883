"""``python -m tinyalex.summary``: the command lives in tinyalex/commands/summary.py; this file keeps the short
name (importing tinyalex.summary gives that module itself)."""

import sys

from .commands import summary as _command

if __name__ == "__main__":
    raise SystemExit(_command.cli.run(_command.main))
sys.modules[__name__] = _command
