"""Numba twins of layers/activations.py's ReLU: one pass each way, on every core or (the
``_serial`` ones, below ELEMENTWISE_MIN_PARALLEL elements: kernels/dispatch.py) on one."""

from __future__ import annotations

import numba
import numpy as np

from .jit import JIT, serial_twin


@numba.njit(**JIT)
def _relu_forward(x, y):
    for i in numba.prange(x.size):
        v = x[i]
        y[i] = v if v > 0 or v != v else 0  # NaN passes, as np.maximum


_relu_forward_serial = serial_twin(_relu_forward, "_relu_forward_serial")


def relu_forward(x):
    """Twin of layers.activations.relu_forward, np.maximum(x, 0): one pass, every core."""
    return _relu_forward_with(_relu_forward, x)


def relu_forward_serial(x):
    """relu_forward on one core (for small arrays)."""
    return _relu_forward_with(_relu_forward_serial, x)


def relu_forward_into(x, y):
    """y[:] = max(0, x) on every core, into y (flat, C-contiguous, x's size): the pass the
    bench streams through already-written memory to measure the machine's memory rate."""
    _relu_forward(x, y)


def _relu_forward_with(kernel, x):
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    kernel(x.reshape(-1), y.reshape(-1))
    return y


@numba.njit(**JIT)
def _relu_backward(dout, y, dx):
    for i in numba.prange(dout.size):
        dx[i] = dout[i] if y[i] > 0 else 0


_relu_backward_serial = serial_twin(_relu_backward, "_relu_backward_serial")


def relu_backward(dout, y):
    """Twin of layers.activations.relu_backward, dout * (y > 0): one pass, no boolean mask
    array (where y <= 0 the gradient is 0 even for an infinite dout, whose product would be
    NaN)."""
    return _relu_backward_with(_relu_backward, dout, y)


def relu_backward_serial(dout, y):
    """relu_backward on one core (for small arrays)."""
    return _relu_backward_with(_relu_backward_serial, dout, y)


def _relu_backward_with(kernel, dout, y):
    dout, y = np.ascontiguousarray(dout), np.ascontiguousarray(y)
    dx = np.empty_like(dout)
    kernel(dout.reshape(-1), y.reshape(-1), dx.reshape(-1))
    return dx
