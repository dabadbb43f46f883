"""How the Numba kernels share the cores: the compile options, serial twins of parallel
loops, and the worker threads of the batch-parallel convolution with OpenBLAS held to one
thread each (found and set through ctypes).

The elementwise kernels (pool, ReLU, LRN, SGD, im2col/col2im) are ``parallel=True`` loops
over an axis whose iterations write disjoint memory, and ``cache=True`` so the compile cost
is paid once per machine. The convolution is parallel over the batch instead: its worker
threads each run whole images (kernels/conv.py, kernels/winograd_numba.py), through
``run_tasks`` below, whose work ``timed`` tallies by kind when the benchmark asks
(python -m tinyalex.bench's time split of the training step).
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
import types
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

JIT = dict(parallel=True, cache=True)


# Seconds of each kind of work ("gemm", "transform", "copy", "elementwise") inside the
# convolution's tasks, summed over the worker threads; None (off) but in the benchmark.
TALLY: defaultdict | None = None
_tally_lock = threading.Lock()


class timed:
    """``with timed("gemm"): ...`` adds the block's seconds to TALLY["gemm"] while TALLY is
    on; a perf_counter call and a test otherwise."""

    __slots__ = ("kind", "start")

    def __init__(self, kind: str):
        self.kind = kind

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *_):
        if TALLY is not None:
            seconds = time.perf_counter() - self.start
            with _tally_lock:
                TALLY[self.kind] += seconds


def start_tally() -> defaultdict:
    """Turn the tally on, from zero; returns it (turn it off with stop_tally)."""
    global TALLY
    TALLY = defaultdict(float)
    return TALLY


def stop_tally() -> None:
    global TALLY
    TALLY = None


def serial_twin(parallel_kernel, name: str):
    """The same Python body compiled without ``parallel`` (prange runs as range) and without
    the GIL, for a caller that is itself one of several worker threads. It gets its own
    name: numba's on-disk cache is keyed by the function's name and first line, not by the
    compile options, so the body under its old name loaded the PARALLEL build from the cache
    (measured: a 0.5 M-element ReLU took 20 ms "serially", 0.5 ms once renamed)."""
    body = parallel_kernel.py_func
    twin = types.FunctionType(body.__code__, body.__globals__, name, body.__defaults__,
                              body.__closure__)
    twin.__qualname__ = name
    return numba.njit(nogil=True, cache=True)(twin)


def find_openblas_threads():
    """(get, set) of the process's OpenBLAS thread count (numpy's BLAS), or None if the
    BLAS is not an OpenBLAS found in /proc/self/maps (then the batch-parallel conv is off,
    kernels/registry.py: other BLAS libraries would run a thread team inside each worker)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:
        return None
    for path in sorted(paths):
        if "openblas" not in os.path.basename(path).lower():
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("", "scipy_"):
            for suffix in ("", "64_", "_64"):
                get = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}", None)
                set_ = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}", None)
                if get is not None and set_ is not None:
                    set_.argtypes = [ctypes.c_int]
                    return get, set_
    return None


OPENBLAS_THREADS = find_openblas_threads()
_pool: ThreadPoolExecutor | None = None
_pool_pid = 0  # a forked child inherits the pool object but none of its threads
_pool_lock = threading.Lock()


def run_tasks(task, count: int) -> None:
    """task(t) for t in range(count) on numba.get_num_threads() workers, OpenBLAS held
    to one thread meanwhile (each worker's GEMMs are its own)."""
    global _pool, _pool_pid
    workers = min(numba.get_num_threads(), count)
    get_threads, set_threads = OPENBLAS_THREADS
    with _pool_lock:  # one layer at a time owns the BLAS thread setting
        before = get_threads()
        set_threads(1)
        try:
            if workers <= 1:
                for t in range(count):
                    task(t)
            else:
                if _pool is None or _pool._max_workers < workers or _pool_pid != os.getpid():
                    _pool = ThreadPoolExecutor(workers, thread_name_prefix="tinyalex-conv")
                    _pool_pid = os.getpid()
                for future in [_pool.submit(task, t) for t in range(count)]:
                    future.result()
        finally:
            set_threads(before)


def in_pieces(work, size: int, least: int = 1) -> None:
    """work(start, stop) for consecutive pieces of range(size), one per worker (at least
    ``least`` items a piece), on the workers: for kernels whose pieces write disjoint
    memory, so that the result does not depend on the split. The convolution's filter
    transforms run so, where they had kept the calling thread busy while the workers waited
    (kernels/winograd_numba.py)."""
    pieces = max(1, min(numba.get_num_threads(), size // max(1, least)))
    bounds = np.linspace(0, size, pieces + 1).astype(int)
    run_tasks(lambda i: work(bounds[i], bounds[i + 1]), pieces)


def sum_in_task_order(parts):
    """parts[0] + parts[1] + ... added in that order, elementwise: each task's partial sum
    (a weight gradient) into the layer's, the same bits whatever ran where. The elements
    are split among the workers (numpy's adds release the GIL): the paper net's conv3
    adds 12 partials of 1.6 M floats, 2.9 ms on one thread. parts (tasks, ...) -> parts[0],
    overwritten."""
    total = parts[0]
    if len(parts) == 1:
        return total
    flat = parts.reshape(len(parts), -1)

    def add(start, stop):
        piece = flat[0, start:stop]
        for t in range(1, len(flat)):
            piece += flat[t, start:stop]

    in_pieces(add, flat.shape[1], least=65536)
    return total
