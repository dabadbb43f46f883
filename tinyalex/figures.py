"""``python -m tinyalex.figures``: the command lives in tinyalex/commands/figures.py; this file keeps the short
name (importing tinyalex.figures gives that module itself)."""

import sys

from .commands import figures as _command

if __name__ == "__main__":
    raise SystemExit(_command.cli.run(_command.main))
sys.modules[__name__] = _command
