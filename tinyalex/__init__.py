"""tinyalex: AlexNet (Krizhevsky, Sutskever, Hinton, NIPS 2012) from scratch.

NumPy layers with explicit backward passes, Numba for the hot loops, CuPy optional.

Importing tinyalex tunes two process-wide knobs for speed (TINYALEX_NO_TUNING=1 leaves
both alone); see ``backend.reuse_freed_memory`` and ``OPENBLAS_THREAD_TIMEOUT`` below.
"""

import os as _os

from . import flags as _flags  # imports only os: numpy is not loaded yet

if not _flags.boolean("TINYALEX_NO_TUNING"):
    # OpenBLAS's idle threads spin for a while after each GEMM, and on a small machine they
    # steal the cores from the Numba kernels that run between GEMMs (im2col, col2im):
    # measured on 2 cores, conv2's im2col took 19 ms a chunk after a GEMM and 6.5 ms
    # alone. A short timeout puts them to sleep at once. OpenBLAS reads it when it loads,
    # so this only helps if tinyalex is imported before numpy.
    _os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from .backend import reuse_freed_memory  # noqa: E402

__version__ = "0.1.0"

reuse_freed_memory()
