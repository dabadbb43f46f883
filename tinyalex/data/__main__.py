"""python -m tinyalex.data {prepare,info,download} ...

    prepare   decode a dataset once into the cache (or reuse it) and print where it is
    info      say what data would be used, without preparing anything
    download  fetch Tiny ImageNet or Imagenette into ./data (resumable, sha256 checked)

User errors (a missing path, an unknown layout, an impossible subset) print one line on
stderr and exit with status 2.

Adding a subcommand (e.g. ``bench``): write ``add_arguments(parser)`` and ``run(args) -> int``
in its module and add one entry to ``COMMANDS`` below.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from tinyalex.data.errors import DataError


def _data_arguments(p: argparse.ArgumentParser) -> None:
    from tinyalex.data.find import add_data_arguments

    add_data_arguments(p)


# ------------------------------------------------------------------ prepare

def _prepare_arguments(p):
    _data_arguments(p)
    p.add_argument("--workers", type=int, default=None, help="parallel decoders (default: cores)")
    p.add_argument("--no-synthetic", action="store_true",
                   help="fail instead of falling back to the synthetic set when nothing is found")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _prepare_run(args) -> int:
    from tinyalex.data.find import resolve_dataset

    prepared = resolve_dataset(args.data, subset=args.subset, size=args.size, cache=args.cache,
                               max_per_class=args.max_per_class,
                               allow_synthetic=not args.no_synthetic,
                               progress=not args.quiet, workers=args.workers)
    print(prepared.path)
    return 0


# ------------------------------------------------------------------ info

def _info_arguments(p):
    _data_arguments(p)


def _info_run(args) -> int:
    from tinyalex.data.find import inspect

    inspect(args.data, subset=args.subset, size=args.size, cache=args.cache,
            max_per_class=args.max_per_class)
    return 0


# name -> (help, add_arguments, run) or (help, "module.path") whose module has
# add_arguments(parser) and run(args); a module that is not there yet is left out.
COMMANDS: dict[str, tuple] = {
    "prepare": ("decode a dataset once into the cache (or reuse it)", _prepare_arguments,
                _prepare_run),
    "info": ("say what data would be used, without preparing", _info_arguments, _info_run),
    "download": ("download Tiny ImageNet or Imagenette (resumable, sha256 checked)",
                 "tinyalex.data.download"),
    # "bench": ("time the data pipeline", "tinyalex.data.bench"),  <- to be added
}


def _resolve(entry):
    if isinstance(entry[1], str):
        try:
            module = importlib.import_module(entry[1])
        except ModuleNotFoundError as err:
            if err.name != entry[1]:  # the module is there but something it imports is not
                raise
            return None
        return entry[0], module.add_arguments, module.run
    return entry


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tinyalex.data",
        description="Find, prepare and inspect the image data (ILSVRC-2012, Tiny ImageNet, "
                    "Imagenette; folders or archives).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, entry in COMMANDS.items():
        resolved = _resolve(entry)
        if resolved is None:
            continue
        help_, add_arguments, run = resolved
        p = sub.add_parser(name, help=help_, description=help_)
        add_arguments(p)
        p.set_defaults(_run=run)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except DataError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
