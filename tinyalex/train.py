"""``python -m tinyalex.train``: the command lives in tinyalex/commands/train.py; this file keeps the short
name (importing tinyalex.train gives that module itself)."""

import sys

from .commands import train as _command

if __name__ == "__main__":
    raise SystemExit(_command.run_command())
sys.modules[__name__] = _command
