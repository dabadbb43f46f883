"""Numba twin of optim.py's SGD update: one pass over w, v and g instead of four, bitwise
equal to the readable body; on every core, or (the ``_serial`` one, below
ELEMENTWISE_MIN_PARALLEL elements: kernels/dispatch.py) on one."""

from __future__ import annotations

import numba
import numpy as np

from .jit import JIT, serial_twin


@numba.njit(**JIT)
def _sgd_update(w, v, g, momentum, decay, lr):
    for i in numba.prange(w.size):
        # The readable body's four passes, rounded in the same order: bitwise the same.
        step = v[i] * momentum
        step = step - decay * w[i]
        step = step - lr * g[i]
        v[i] = step
        w[i] = w[i] + step


_sgd_update_serial = serial_twin(_sgd_update, "_sgd_update_serial")


def sgd_update(w, v, g, lr, momentum, weight_decay):
    """Twin of optim.sgd_update for one parameter, in place: v <- m*v - wd*lr*w - lr*g;
    w <- w + v. One pass over w, v and g instead of four (the paper net's 57 M parameters
    took ~290 ms a step in four NumPy passes). w and v must be contiguous."""
    _sgd_update_with(_sgd_update, w, v, g, lr, momentum, weight_decay)


def sgd_update_serial(w, v, g, lr, momentum, weight_decay):
    """sgd_update on one core (for small parameters)."""
    _sgd_update_with(_sgd_update_serial, w, v, g, lr, momentum, weight_decay)


def _sgd_update_with(kernel, w, v, g, lr, momentum, weight_decay):
    scalar = w.dtype.type
    g = np.ascontiguousarray(g, dtype=w.dtype)
    kernel(w.reshape(-1), v.reshape(-1), g.reshape(-1), scalar(momentum),
           scalar(weight_decay * lr), scalar(lr))
