"""Data parallelism over MPI: one model trained by K processes (ChainerMN's design).

The paper split ONE net across two GPUs (§3.2): each GPU held half of the kernels, and the
halves talked only at certain layers (conv3, the fully connected layers). That is model
parallelism, forced by 3 GB of GPU memory. Today's way to use K machines is the other split:
every process holds the WHOLE net and takes 1/K of every batch,

    global batch of B images  ->  rank r takes images [start_r, stop_r) of it
    forward, loss, backward on its slice      g_r = d(mean loss over its n_r images)/dW
    allreduce                                 g   = sum_r (n_r / B) g_r
                                                  = d(mean loss over all B images)/dW
    the same SGD update on every rank         the weights stay identical everywhere

so the recipe (batch 128, the lr, the schedule) does not change with K. Rank 0 broadcasts
the weights at the start, logs, draws the progress bar and writes the checkpoints.

A rank's slice gets exactly the crops, flips, colour shifts and dropout masks that those
images get in the one-process run of the same global batch: both are drawn for the whole
batch from (seed, epoch, batch) and (seed, step, layer), and each rank keeps its rows.

The sum is one MPI Allreduce over a flat buffer holding every gradient and the loss
(``Communicator.mean_gradients``): about 4 bytes a parameter, ~244 MB a step for the paper
net. ``ordered=True`` instead gathers the K slices' buffers on rank 0, adds them in rank
order and broadcasts the sum, so the result does not depend on how the MPI library
associates the sum: then K ranks give bit for bit what ONE process gives when it computes
the same K slices one after the other and adds them in order (``Local(slices=K)``; the
tests check both in float64). Against a one-process run that backpropagates the whole
batch at once, the weights differ by rounding only: the GEMMs add a batch's terms in
another order.

Launch: ``mpiexec -n K python -m tinyalex.train ...`` (``pip install 'tinyalex[mpi]'``
brings mpi4py and MPICH's mpiexec). Without mpiexec nothing changes and mpi4py is not
imported. CuPy arrays travel through host copies (``_to_host``): NCCL is not used.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from .backend import get_array_module, to_numpy

#: Environment variables by which mpiexec tells a process how many ranks the job has
#: (MPICH/Hydra, Open MPI, Slurm's PMI2/PMIx).
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE")
#: Seconds a rank waits after flushing its output before MPI_Abort (see ``abort``).
ABORT_DRAIN_S = 0.5


class MPIMissing(RuntimeError):
    """Launched by mpiexec with several processes, but mpi4py cannot be imported."""


def batch_part(batch_size: int, rank: int, size: int) -> tuple[int, int]:
    """The rows [start, stop) of a global batch that ``rank`` of ``size`` takes.

    Even shares, the first ``batch_size % size`` ranks one row more: 128 over 3 ranks is
    43, 43, 42."""
    share, extra = divmod(batch_size, size)
    start = rank * share + min(rank, extra)
    return start, start + share + (rank < extra)


def launched_ranks(environ=os.environ) -> int:
    """How many processes mpiexec started for this job (1 when not under mpiexec)."""
    for name in SIZE_VARIABLES:
        if environ.get(name, "").isdigit():
            return int(environ[name])
    return 1


class Local:
    """The one-process "communicator": rank 0 of 1; nothing to send.

    ``slices`` > 1 makes it compute each global batch as that many slices one after the
    other and add their gradients in order, as ``MPI(ordered=True)`` does across ranks
    (``loop.train_step`` does the slicing); it exists so that tests can compare the two."""

    rank, size, is_root = 0, 1, True
    overlap = False

    def __init__(self, slices: int = 1):
        self.slices = int(slices)

    def part(self, batch_size: int) -> tuple[int, int]:
        return 0, batch_size

    def mean_gradients(self, grads: dict, loss: float, share: float) -> float:
        return loss

    def sum(self, values):
        return np.asarray(values, np.float64)

    def broadcast_params(self, params: dict) -> None:
        pass

    def broadcast_object(self, obj):
        return obj

    def barrier(self) -> None:
        pass

    def abort(self, code: int = 1) -> None:
        raise SystemExit(code)

    def describe(self) -> str:
        return "one process"


class MPI:
    """The ranks of an mpiexec job, through mpi4py's COMM_WORLD.

    ordered: reduce the gradients in rank order on rank 0 and broadcast them (a result that
    does not depend on the MPI library's reduction tree) instead of one Allreduce.
    overlap: allreduce each layer's gradients while backward goes on (``layer_reducer``)
    instead of all of them after it."""

    slices = 1

    def __init__(self, comm=None, ordered: bool = False, overlap: bool = False):
        from mpi4py import MPI as mpi

        self._mpi = mpi
        self.comm = comm if comm is not None else mpi.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.is_root = self.rank == 0
        self.ordered = bool(ordered)
        self.overlap = bool(overlap)
        self._buffer = None
        self._layer_buffers: dict = {}
        local = self.comm.Split_type(mpi.COMM_TYPE_SHARED)
        self.local_size = local.Get_size()
        local.Free()

    def part(self, batch_size: int) -> tuple[int, int]:
        return batch_part(batch_size, self.rank, self.size)

    def _flat(self, grads: dict, dtype) -> np.ndarray:
        """One host buffer for every gradient and the loss, kept between steps."""
        n = sum(g.size for g in grads.values()) + 1
        if self._buffer is None or self._buffer.size != n or self._buffer.dtype != dtype:
            self._buffer = np.empty(n, dtype)
        return self._buffer

    def mean_gradients(self, grads: dict, loss: float, share: float) -> float:
        """Replace each rank's gradients (of its slice's mean loss) by the global batch's:
        sum over ranks of share_r * g_r, share_r = n_r / B. Returns the global mean loss.
        The loss travels in the same buffer, so every rank sees the same (non-)finite loss
        and stops, or updates, together."""
        first = next(iter(grads.values()))
        buf = self._flat(grads, np.dtype(first.dtype))
        _pack(grads.values(), buf)
        buf[-1] = loss
        buf *= buf.dtype.type(share)
        if self.ordered:
            gathered = np.empty((self.size, buf.size), buf.dtype) if self.is_root else None
            self.comm.Gather(buf, gathered, root=0)
            if self.is_root:
                buf[...] = gathered[0]
                for r in range(1, self.size):
                    buf += gathered[r]
            self.comm.Bcast(buf, root=0)
        else:
            self.comm.Allreduce(self._mpi.IN_PLACE, buf, op=self._mpi.SUM)
        _unpack(grads.values(), buf)
        return float(buf[-1])

    def layer_reducer(self, share: float) -> LayerReducer:
        """Overlap communication with backward, as PyTorch DDP and Horovod do: a context
        whose ``send(name, layer)`` is Sequential.backward's ``layer_done`` hook and whose
        ``finish(loss)`` waits for the last layer and returns the global mean loss."""
        if self.ordered:
            raise ValueError("the ordered reduction and the overlap do not combine")
        if self._mpi.Query_thread() < self._mpi.THREAD_SERIALIZED:
            raise RuntimeError("the overlap needs MPI with threads (MPI_THREAD_SERIALIZED at "
                               "least); this MPI gives less: run without --overlap")
        return LayerReducer(self, share)

    def sum(self, values):
        """Elementwise sum over ranks of a short list of numbers (counts, flags)."""
        send = np.asarray(values, np.float64)
        out = np.empty_like(send)
        self.comm.Allreduce(send, out, op=self._mpi.SUM)
        return out

    def broadcast_params(self, params: dict) -> None:
        """Every rank's arrays become rank 0's, in place."""
        for w in params.values():
            host = np.ascontiguousarray(_to_host(w))
            self.comm.Bcast(host, root=0)
            w[...] = get_array_module(w).asarray(host)

    def broadcast_object(self, obj):
        return self.comm.bcast(obj, root=0)

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        """End every rank. The launcher tears the job down as soon as one rank calls
        MPI_Abort, and output of any rank it has not yet read from the rank's pipe is lost:
        MPICH's mpiexec dropped the error itself in 8 of 200 runs. So wait a moment after
        the flush for it to read."""
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(ABORT_DRAIN_S)
        self.comm.Abort(code)

    def describe(self) -> str:
        hosts = "" if self.local_size == self.size else f" ({self.local_size} on this machine)"
        how = ("reduced in rank order" if self.ordered else
               "allreduced layer by layer during backward" if self.overlap else "allreduced")
        return (f"{self.size} MPI ranks{hosts}, each taking 1/{self.size} of every batch, "
                f"gradients {how}")


class LayerReducer:
    """Each layer's gradients allreduced on a thread of their own as soon as its backward is
    done, while the main thread computes the layers below: fc8, fc7 and fc6 (96% of the
    paper net's bytes) finish first and travel during conv1-5's backward. The kernels and
    mpi4py release the GIL, so the two threads do run at once. Each layer's gradients are
    scaled by this rank's share of the batch and summed over the ranks, as in
    MPI.mean_gradients, one layer at a time; only one thread calls MPI at any moment."""

    def __init__(self, comm: MPI, share: float):
        import queue
        import threading

        self.comm, self.share = comm, share
        self.queue: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="tinyalex-allreduce",
                                       daemon=True)
        self.thread.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.thread.is_alive():     # backward failed: let the thread end
            self.queue.put(None)
            self.thread.join()
        return False

    def send(self, name: str, layer) -> None:
        if getattr(layer, "grads", None):
            self.queue.put((name, layer.grads))

    def _run(self) -> None:
        mpi = self.comm._mpi
        while (item := self.queue.get()) is not None:
            if self.error is not None:
                continue
            name, grads = item
            try:
                arrays = list(grads.values())
                dtype = np.dtype(arrays[0].dtype)
                n = sum(g.size for g in arrays)
                buf = self.comm._layer_buffers.get((name, dtype))
                if buf is None or buf.size != n:
                    buf = self.comm._layer_buffers[(name, dtype)] = np.empty(n, dtype)
                _pack(arrays, buf)
                buf *= buf.dtype.type(self.share)
                self.comm.comm.Allreduce(mpi.IN_PLACE, buf, op=mpi.SUM)
                _unpack(arrays, buf)
            except BaseException as err:  # raised again in finish(), on the main thread
                self.error = err

    def finish(self, loss: float) -> float:
        """Wait for every layer's allreduce; the global batch's mean loss."""
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
        total = np.array([loss * self.share], np.float64)
        self.comm.comm.Allreduce(self.comm._mpi.IN_PLACE, total, op=self.comm._mpi.SUM)
        return float(total[0])


def _pack(arrays, buf: np.ndarray) -> None:
    """The arrays (NumPy or CuPy) one after the other into the front of a host buffer."""
    at = 0
    for g in arrays:
        buf[at:at + g.size] = _to_host(g).ravel()
        at += g.size


def _unpack(arrays, buf: np.ndarray) -> None:
    """The inverse of _pack: each array, in place, from its stretch of the buffer."""
    at = 0
    for g in arrays:
        g[...] = get_array_module(g).asarray(buf[at:at + g.size].reshape(g.shape))
        at += g.size


def mpiexec_path() -> str | None:
    """The mpiexec beside this Python (pip's mpich puts it in the venv's bin/), else the
    first on PATH, else None."""
    import shutil

    return shutil.which("mpiexec", path=os.path.dirname(sys.executable)) \
        or shutil.which("mpiexec")


def _to_host(a) -> np.ndarray:
    return a if isinstance(a, np.ndarray) else to_numpy(a)


def world(ordered: bool = False):
    """The communicator of this process: MPI's when mpiexec started several processes,
    else ``Local()`` (and mpi4py is not imported). Raises MPIMissing, saying what to
    install, when mpiexec started several but mpi4py is absent."""
    size = launched_ranks()
    if size <= 1:
        return Local()
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        raise MPIMissing(
            f"mpiexec started {size} processes but mpi4py is not installed, so they cannot "
            "talk: pip install 'tinyalex[mpi]' (mpi4py and MPICH's mpiexec), or run without "
            "mpiexec") from None
    comm = MPI(ordered=ordered)
    share_cores(comm.local_size)
    return comm


def share_cores(local_ranks: int) -> None:
    """K ranks on one machine each get cores/K threads (Numba and OpenBLAS), unless the
    user chose a count (NUMBA_NUM_THREADS or OMP/OPENBLAS_NUM_THREADS): K processes that
    each start a thread per core would fight over the cores."""
    if local_ranks <= 1:
        return
    threads = max(1, (os.cpu_count() or 1) // local_ranks)
    if "NUMBA_NUM_THREADS" not in os.environ:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    if not any(v in os.environ for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")):
        from .kernels.threads import blas_threads

        if blas_threads() is not None:
            blas_threads().limit(limits=threads)  # kept: the limiter is not undone
