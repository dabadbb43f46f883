"""tinyalex: AlexNet (Krizhevsky, Sutskever, Hinton, NIPS 2012) from scratch.

NumPy layers with explicit backward passes, Numba for the hot loops, CuPy optional.

Importing tinyalex tunes three process-wide knobs for speed (TINYALEX_NO_TUNING=1 leaves
them alone); see ``backend.reuse_freed_memory``, ``OPENBLAS_THREAD_TIMEOUT`` and
``OMP_WAIT_POLICY`` below.
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
    # The same for Numba's OpenMP threads (its "omp" threading layer, GNU libgomp): after
    # each parallel kernel (ReLU, LRN, pool, SGD) they spin before they sleep, while the
    # convolution's worker threads and their GEMMs want the cores. Passive, they sleep at
    # once. Measured (2-core AVX-512 EPYC, a training step at batch 128, fresh processes
    # alternating, 4 and 3 rounds): small net 218-242 -> 261-279 img/s (1.18x), the
    # convolutions' waits 62-69 -> 31-44 ms a step; paper net 51.9-55.5 -> 54.3-58.8
    # (1.03x). PyTorch's layers, which share libgomp in one process, ran the same either
    # way. libgomp reads it when it loads, so only if tinyalex is imported first.
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .backend import reuse_freed_memory  # noqa: E402

__version__ = "0.1.0"

reuse_freed_memory()
