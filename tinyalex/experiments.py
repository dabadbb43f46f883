"""``python -m tinyalex.experiments``: the command lives in tinyalex/learning/experiments.py; this file keeps the short
name (importing tinyalex.experiments gives that module itself)."""

import sys

from .learning import experiments as _command

if __name__ == "__main__":
    raise SystemExit(_command.cli.run(_command.main))
sys.modules[__name__] = _command
