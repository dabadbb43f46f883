"""What the bench and its scaling check both time with: the machine (``cpu_name``,
``blas_info``), ``median_time``, a random batch (``batch_for``) and each layer's forward and
backward (``layer_times``, with PyTorch's beside it). Here, not in bench.py, so that bench.py
and scaling.py both import it and neither imports the other."""

from __future__ import annotations

import platform
import time

import numpy as np


def blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed (pip install threadpoolctl to see the BLAS kernel)"
    parts = []
    for pool in threadpool_info():
        if pool.get("user_api") == "blas":
            parts.append(f"{pool.get('internal_api')} {pool.get('version')} "
                         f"kernel={pool.get('architecture')} threads={pool.get('num_threads')}")
    return "; ".join(parts) or "no BLAS found by threadpoolctl"


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def batch_for(net, batch_size: int, num_classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch_size,) + net.input_shape, dtype=np.float32)
    y = rng.integers(0, num_classes, batch_size).astype(np.int32)
    return x, y


# ---------------------------------------------------------------------------- per layer

def layer_times(net, x, repeats: int, compare_torch: bool = False):
    """(ours, PyTorch's or None): (name, forward s, backward s) per layer, each on its real
    input from the layer before. With compare_torch each layer's PyTorch twin is timed right
    after it, on the same input and output gradient, so that a slow spell of a shared
    machine falls on both sides of a row's ratio (timing the whole net one framework after
    the other put a minute or two between the sides)."""
    rows, torch_rows = [], []
    rng = np.random.default_rng(1)
    for index, (name, layer) in enumerate(net.layers):
        if hasattr(layer, "need_input_grad"):
            layer.need_input_grad = index > 0
        layer.forward(x, True)  # warm up (compiles kernels on first use)
        fwd = median_time(lambda: layer.forward(x, True), repeats)  # noqa: B023
        out = layer.forward(x, True)
        dout = rng.standard_normal(out.shape, dtype=np.float32)
        layer.backward(dout)
        bwd = median_time(lambda: layer.backward(dout), repeats)  # noqa: B023
        rows.append((name, fwd, bwd))
        if compare_torch:
            torch_rows.append((name, *torch_layer_time(layer, index, x, dout, repeats)))
        x = out
    return rows, (torch_rows if compare_torch else None)


def torch_layer_time(layer, index: int, x, dout, repeats: int) -> tuple[float, float]:
    """(forward s, backward s) of PyTorch's module for a tinyalex layer, its parameters
    copied, on x and dout; a first layer's input takes no gradient, as in tinyalex."""
    import torch

    from .interop import torch_module

    module = torch_module(layer)
    if layer.params:
        module.load_state_dict({"weight": torch.from_numpy(layer.params["W"]),
                                "bias": torch.from_numpy(layer.params["b"])})
    xt = torch.from_numpy(np.ascontiguousarray(x)).requires_grad_(index > 0)
    dout = torch.from_numpy(dout)

    def fwd_once():
        return module(xt)

    fwd_once()
    fwd = median_time(fwd_once, repeats)

    def bwd_once():
        y = module(xt)
        start = time.perf_counter()
        y.backward(dout)
        return time.perf_counter() - start

    bwd_once()
    return fwd, float(np.median([bwd_once() for _ in range(repeats)]))
