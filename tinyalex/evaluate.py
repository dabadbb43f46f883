"""``python -m tinyalex.evaluate``: the command lives in tinyalex/commands/evaluate.py; this file keeps the short
name (importing tinyalex.evaluate gives that module itself)."""

import sys

from .commands import evaluate as _command

if __name__ == "__main__":
    raise SystemExit(_command.cli.run(_command.main))
sys.modules[__name__] = _command
