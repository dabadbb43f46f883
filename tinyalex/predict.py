"""``python -m tinyalex.predict``: the command lives in tinyalex/commands/predict.py; this file keeps the short
name (importing tinyalex.predict gives that module itself)."""

import sys

from .commands import predict as _command

if __name__ == "__main__":
    raise SystemExit(_command.cli.run(_command.main))
sys.modules[__name__] = _command
