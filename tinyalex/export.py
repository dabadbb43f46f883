"""``python -m tinyalex.export``: the command lives in tinyalex/commands/export.py; this file keeps the short
name (importing tinyalex.export gives that module itself)."""

import sys

from .commands import export as _command

if __name__ == "__main__":
    raise SystemExit(_command.cli.run(_command.main))
sys.modules[__name__] = _command
