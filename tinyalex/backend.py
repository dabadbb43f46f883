"""One code path for NumPy and CuPy, chosen by the array (as Chainer's get_array_module).

Layers call ``xp = get_array_module(x)`` and never import cupy. CuPy stays an optional
import here: CPU users never need it.
"""

from __future__ import annotations

import numpy as np

try:  # CuPy is the optional `gpu` extra.
    import cupy as _cupy  # type: ignore
except Exception:  # ImportError, or a CUDA runtime that fails to load
    _cupy = None


def get_array_module(*arrays):
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``."""
    if _cupy is not None:
        return _cupy.get_array_module(*arrays)
    return np


def is_gpu_array(x) -> bool:
    return _cupy is not None and isinstance(x, _cupy.ndarray)


def to_numpy(x):
    """A NumPy copy (or the array itself) of a NumPy or CuPy array."""
    return _cupy.asnumpy(x) if is_gpu_array(x) else np.asarray(x)


def gpu_available() -> tuple[bool, str]:
    """(True, "") when CuPy imports and sees a CUDA device, else (False, why)."""
    if _cupy is None:
        return False, ("CuPy is not installed; install the gpu extra "
                       "(pip install 'tinyalex[gpu]') on a machine with an NVIDIA GPU")
    try:
        count = _cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # CUDA driver missing or broken
        return False, f"CuPy found no usable CUDA device ({err})"
    if count == 0:
        return False, "CuPy found no CUDA device"
    return True, ""


def gpu_module():
    """The cupy module, for moving a net there (``net.to(gpu_module())``); RuntimeError with
    gpu_available()'s reason when there is no usable GPU."""
    ok, why = gpu_available()
    if not ok:
        raise RuntimeError(why)
    return _cupy


def prefetch_to_gpu(batches):
    """Yield the host (x, y) batches as CuPy arrays, one batch ahead: batch k+1 is copied
    from page-locked memory on its own stream while step k runs on the default stream.

    Two page-locked buffers take turns, and a buffer is refilled only after its copy has
    finished (its event), so no batch is overwritten while it is in flight. Each copy waits
    for the work already issued on the default stream: CuPy's memory pool may give the
    batch a block that this work still reads (the pool orders its reuse within one stream
    only). That work is the step before the one the copy overlaps."""
    cp = gpu_module()
    stream = cp.cuda.Stream(non_blocking=True)
    buffers = [None, None]

    def send(k, x, y):
        x = np.ascontiguousarray(x)
        slot = buffers[k % 2]
        if slot is not None:
            slot["event"].synchronize()
        if slot is None or slot["capacity"] < x.nbytes:
            slot = {"memory": cp.cuda.alloc_pinned_memory(x.nbytes), "capacity": x.nbytes}
            buffers[k % 2] = slot
        host = np.frombuffer(slot["memory"], dtype=x.dtype, count=x.size).reshape(x.shape)
        host[...] = x
        stream.wait_event(cp.cuda.get_current_stream().record())   # the pool's reuse, above
        device = cp.empty(x.shape, dtype=x.dtype)
        device.set(host, stream=stream)
        with stream:
            labels = cp.asarray(np.asarray(y))
        slot["event"] = stream.record()
        return device, labels, slot["event"]

    pending = None
    for k, (x, y) in enumerate(batches):
        sent = send(k, x, y)
        if pending is not None:
            yield pending
        cp.cuda.get_current_stream().wait_event(sent[2])
        pending = sent[:2]
    if pending is not None:
        yield pending
