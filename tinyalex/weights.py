"""``python -m tinyalex.weights``: the command lives in tinyalex/commands/weights.py; this file keeps the short
name (importing tinyalex.weights gives that module itself)."""

import sys

from .commands import weights as _command

if __name__ == "__main__":
    raise SystemExit(_command.cli.run(_command.main))
sys.modules[__name__] = _command
