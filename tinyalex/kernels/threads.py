"""The worker threads of the batch-parallel convolution, with the BLAS held to one thread
each meanwhile (through threadpoolctl), and the benchmark's tally of their time.

The convolution is parallel over the batch: its worker threads each run whole images
(kernels/conv_im2col.py, kernels/winograd/batch.py) through ``run_tasks``, each worker's
GEMMs single-threaded, so no two thread teams share the cores.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np


@functools.cache
def blas_threads():
    """threadpoolctl's controller of numpy's BLAS libraries, or None where it finds none it
    can set (then the batch-parallel convolution is off: kernels/dispatch.py)."""
    from threadpoolctl import ThreadpoolController

    blas = ThreadpoolController().select(user_api="blas")
    return blas if blas.lib_controllers else None


class _Workers:
    """A thread pool of at least ``size`` workers, made anew in a forked child (which
    inherits the pool object but none of its threads)."""

    def __init__(self):
        self.pool, self.size, self.pid = None, 0, 0

    def get(self, size: int) -> ThreadPoolExecutor:
        if self.pool is None or self.size < size or self.pid != os.getpid():
            self.pool = ThreadPoolExecutor(size, thread_name_prefix="tinyalex-conv")
            self.size, self.pid = size, os.getpid()
        return self.pool


_workers = _Workers()
_workers_lock = threading.Lock()  # one layer at a time owns the workers and the BLAS setting


def run_tasks(task, count: int) -> None:
    """task(t) for t in range(count) on numba.get_num_threads() workers, the BLAS held to
    one thread meanwhile (each worker's GEMMs are its own)."""
    workers = min(numba.get_num_threads(), count)
    with _workers_lock, blas_threads().limit(limits=1):
        if workers <= 1:
            for t in range(count):
                task(t)
        else:
            pool = _workers.get(workers)
            for future in [pool.submit(task, t) for t in range(count)]:
                future.result()


def in_pieces(work, size: int, least: int = 1) -> None:
    """work(start, stop) for consecutive pieces of range(size), one per worker (at least
    ``least`` items a piece): for kernels whose pieces write disjoint memory, so that the
    result does not depend on the split."""
    pieces = max(1, min(numba.get_num_threads(), size // max(1, least)))
    bounds = np.linspace(0, size, pieces + 1).astype(int)
    run_tasks(lambda i: work(bounds[i], bounds[i + 1]), pieces)


def sum_in_task_order(parts):
    """parts[0] + parts[1] + ... added in that order, elementwise: each task's partial sum
    (a weight gradient) into the layer's, the same bits whatever ran where. The elements
    are split among the workers (numpy's adds release the GIL). parts (tasks, ...) ->
    parts[0], overwritten."""
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


# ------------------------------------------------------------- the benchmark's tally

# Seconds of each kind of work ("gemm", "transform", "copy", "elementwise") inside the
# convolution's tasks, summed over the workers; None (off) but inside ``tally()``.
TALLY: defaultdict | None = None
_tally_lock = threading.Lock()


class timed:
    """``with timed("gemm"): ...`` adds the block's seconds to TALLY["gemm"] while a tally
    is on; a clock read and a test otherwise."""

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
