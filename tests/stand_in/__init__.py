"""Putting the CuPy stand-in (tests/stand_in/cupy, whose docstring says what it checks and
what it cannot) in place of ``cupy``, for tests only.

- in this process: ``with stand_in.installed() as cp:`` puts it in ``sys.modules`` and in
  ``tinyalex.backend`` (which bound its cupy, or None, when tinyalex was imported), and
  takes both back afterwards, with tinyalex/kernels/gpu.py imported meanwhile;
- in a subprocess: ``stand_in.environ()`` puts this folder first on PYTHONPATH, so that
  ``import cupy`` finds the stand-in there (``python -m tinyalex.train --device gpu``, each
  rank of an mpiexec job).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from pathlib import Path

FOLDER = Path(__file__).resolve().parent
REPO = FOLDER.parents[1]
_MODULES = ("cupy", "cupy.cuda")
_GPU_KERNELS = "tinyalex.kernels.gpu"


def load():
    """The stand-in module, imported once, left out of sys.modules."""
    missing = object()
    saved = {name: sys.modules.pop(name, missing) for name in _MODULES}
    sys.path.insert(0, str(FOLDER))
    try:
        module = importlib.import_module("cupy")
    finally:
        sys.path.remove(str(FOLDER))
        for name in _MODULES:
            sys.modules.pop(name, None)
            if saved[name] is not missing:
                sys.modules[name] = saved[name]
    return module


_loaded = None


@contextlib.contextmanager
def installed():
    """Inside: ``import cupy`` and tinyalex see the stand-in (yielded)."""
    global _loaded
    import tinyalex.kernels
    from tinyalex import backend

    if _loaded is None:
        _loaded = load()
    missing = object()
    saved = {name: sys.modules.get(name, missing) for name in (*_MODULES, _GPU_KERNELS)}
    saved_attribute = getattr(tinyalex.kernels, "gpu", missing)
    saved_cupy = backend._cupy
    sys.modules.update({"cupy": _loaded, "cupy.cuda": _loaded.cuda})
    sys.modules.pop(_GPU_KERNELS, None)   # gpu.py binds cupy on import: the stand-in here
    vars(tinyalex.kernels).pop("gpu", None)
    backend._cupy = _loaded
    try:
        yield _loaded
    finally:
        backend._cupy = saved_cupy
        for name, module in saved.items():
            sys.modules.pop(name, None)
            if module is not missing:
                sys.modules[name] = module
        if saved_attribute is missing:
            vars(tinyalex.kernels).pop("gpu", None)
        else:
            tinyalex.kernels.gpu = saved_attribute


def environ(base=None, **extra) -> dict:
    """The environment of a subprocess that imports the stand-in as cupy (and tinyalex from
    this checkout)."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(FOLDER), str(REPO),
                                                      env.get("PYTHONPATH")]))
    env.update(extra)
    return env
