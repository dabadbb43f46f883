"""Fast bodies of the hot loops, apart from the teaching code.

Each layer file holds the readable NumPy body of its hot loop. Right before running it,
the layer asks ``fast(name, x)`` for a faster twin for the array x:

- a Numba kernel from ``kernels/cpu.py`` for NumPy arrays (unless TINYALEX_NO_NUMBA=1),
- a CuPy kernel from ``kernels/gpu.py`` for CuPy arrays (where one exists),
- or None: the readable body runs.

This is the one place a fast path is chosen. Every kernel has a test that it equals the
readable body (tests/test_kernels_cpu.py).
"""

from __future__ import annotations

import numpy as np

from ..backend import is_gpu_array, use_fast_kernels


def fast(name: str, x):
    """The fast kernel called ``name`` for the array x, or None for the readable body."""
    if not use_fast_kernels():
        return None
    if is_gpu_array(x):
        try:
            from . import gpu
        except ImportError:
            return None
        return getattr(gpu, name, None)
    if isinstance(x, np.ndarray) and x.dtype in (np.float32, np.float64):
        from . import cpu
        return getattr(cpu, name, None)
    return None
