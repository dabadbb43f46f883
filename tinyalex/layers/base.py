"""The one contract every layer keeps.

A layer is a small object with its parameters and their gradients side by side:

    y  = layer.forward(x, train)    # remembers what backward needs in layer.cache
    dx = layer.backward(dout)       # fills layer.grads (same keys as layer.params)

Arrays are NCHW (images) or (N, D) (vectors), float32 by default; float64 works everywhere
(the gradient checks need it). A layer knows nothing of data, training or files.
"""

from __future__ import annotations

import numpy as np


class Layer:
    """Base class: no parameters, identity shape, no FLOPs."""

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.cache = None

    def forward(self, x, train: bool = True):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def __call__(self, x, train: bool = True):
        return self.forward(x, train)

    def output_shape(self, input_shape: tuple) -> tuple:
        """Shape of one example's output given one example's input shape (no batch axis)."""
        return tuple(input_shape)

    def flops(self, input_shape: tuple) -> int:
        """Forward floating-point operations for one example (a multiply-add counts 2)."""
        return 0

    def astype(self, dtype):
        """Cast parameters (in place of the dict entries) to dtype; returns self."""
        for name, value in self.params.items():
            self.params[name] = value.astype(dtype)
        self.grads = {}
        return self

    def __repr__(self):
        return f"{type(self).__name__}()"
