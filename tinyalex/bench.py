"""``python -m tinyalex.bench``: the command lives in tinyalex/checks/bench.py; this file keeps the short
name (importing tinyalex.bench gives that module itself)."""

import sys

from .checks import bench as _command

if __name__ == "__main__":
    raise SystemExit(_command.cli.run(_command.main))
sys.modules[__name__] = _command
