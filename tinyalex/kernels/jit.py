"""How the Numba kernels are compiled: the options they share, serial twins of parallel
loops, and the unsigned index type of their hot copies.

The elementwise kernels (pool, ReLU, LRN, SGD, im2col/col2im) are ``parallel=True`` loops
over an axis whose iterations write disjoint memory; every kernel is ``cache=True``, so
the compile cost is paid once per machine.
"""

from __future__ import annotations

import types

import numba
import numpy as np

JIT = dict(parallel=True, cache=True)

# Indices into flat arrays are unsigned in the hot loops: numba checks every signed index
# for a negative value to wrap around (Python's a[-1]), and that check keeps LLVM from
# vectorising a copy whose offset it cannot prove >= 0 (docs/speed.md has the figures).
U = np.uint64


def serial_twin(parallel_kernel, name: str):
    """The same Python body compiled without ``parallel`` (prange runs as range) and without
    the GIL, for a caller that is itself one of several worker threads. It gets its own
    name because numba's on-disk cache is keyed by a function's name and first line, not by
    its compile options: under the old name it would load the parallel build."""
    body = parallel_kernel.py_func
    twin = types.FunctionType(body.__code__, body.__globals__, name, body.__defaults__,
                              body.__closure__)
    twin.__qualname__ = name
    return numba.njit(nogil=True, cache=True)(twin)
