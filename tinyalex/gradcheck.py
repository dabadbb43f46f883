"""Gradient checking: is a hand-written backward pass right?

For any scalar function L(x), the central difference

    dL/dx_i ~ (L(x + h e_i) - L(x - h e_i)) / (2h)

has error O(h^2). In float64 with h = 1e-5 it agrees with a correct analytic gradient to
about 1e-8 relative; a wrong backward pass is off by order 1. We compare with

    rel_error(a, n) = max_i |a_i - n_i| / max_i max(|a_i|, |n_i|)

(the worst error measured against the gradient's own scale, so entries that are zero in
both do not divide noise by noise) and call a gradient right when it is below
``TOLERANCE`` (1e-6). Always check in float64: float32's 1e-7 resolution swamps the
difference quotient. Keep inputs away from kinks (ReLU at 0, ties in a max pool), where
the function has no derivative and the two sides of the difference disagree.

To check a layer, turn it into a scalar by a fixed random projection of its output,
L(x) = sum(layer.forward(x) * dout), whose analytic gradient is layer.backward(dout).
"""

from __future__ import annotations

import numpy as np

TOLERANCE = 1e-6
STEP = 1e-5


def rel_error(analytic, numeric) -> float:
    """Largest elementwise error relative to the larger array's largest entry."""
    a, n = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
    if a.shape != n.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {n.shape}")
    if a.size == 0:
        return 0.0
    scale = max(np.abs(a).max(), np.abs(n).max(), 1e-300)
    return float(np.abs(a - n).max() / scale)


def numerical_gradient(f, x: np.ndarray, h: float = STEP) -> np.ndarray:
    """Central differences of the scalar f() with respect to x, changing x in place."""
    if x.dtype != np.float64:
        raise TypeError("gradient checks need float64 arrays (float32 is too coarse)")
    grad = np.zeros_like(x)
    # Index x itself (not x.reshape(-1), which is a copy for a non-C-contiguous x such as a
    # transposed parameter: the perturbation would never reach f).
    for i in np.ndindex(x.shape):
        old = x[i].copy()   # CuPy's x[i] is a 0-d view, which the next line would change
        x[i] = old + h
        plus = f()
        x[i] = old - h
        minus = f()
        x[i] = old
        grad[i] = (plus - minus) / (2 * h)
    return grad


def layer_gradients(layer, x: np.ndarray, seed: int = 0,
                    train: bool = True) -> dict[str, tuple[np.ndarray | None, np.ndarray]]:
    """The analytic and the numerical gradient of dx and of every parameter of a layer at x.

    Returns {"x": (backward's dx, numeric), "W": (layer.grads["W"], numeric), ...}; the
    analytic entry is None where layer.grads lacks a parameter's key. The layer's params
    must be float64 (layer.astype).
    """
    rng = np.random.default_rng(seed)
    x = np.array(x, dtype=np.float64)
    dout = rng.standard_normal(layer.forward(x, train).shape)

    def loss():
        return float(np.sum(layer.forward(x, train) * dout))

    layer.forward(x, train)
    dx = layer.backward(dout)
    pairs = {"x": (np.array(dx), numerical_gradient(loss, x))}
    analytic = {name: np.array(g) for name, g in layer.grads.items()}
    for name, value in layer.params.items():
        pairs[name] = (analytic.get(name), numerical_gradient(loss, value))
    return pairs


def check_layer(layer, x: np.ndarray, seed: int = 0, train: bool = True) -> dict[str, float]:
    """Relative errors of dx and of every parameter gradient of a layer at x.

    Returns {"x": err, "W": err, ...}. The layer's params must be float64 (layer.astype).
    """
    errors = {}
    for name, (analytic, numeric) in layer_gradients(layer, x, seed, train).items():
        if analytic is None:
            raise KeyError(f"layer.grads has no {name!r} (layer.params has)")
        errors[name] = rel_error(analytic, numeric)
    return errors
