"""Fully connected layers and the flattening in front of them (paper §3.5: fc6, fc7, fc8)."""

from __future__ import annotations

import numpy as np

from .base import Layer


class Linear(Layer):
    """y = x W^T + b.

    Shapes: x (N, D) -> y (N, M); params W (M, D) (PyTorch's layout), b (M,); cache: x.
    Backward: dx = dout W, dW = dout^T x, db = sum_n dout.

    No Numba twin: each product is one BLAS GEMM on all cores, which on a quiet machine
    beat splitting it into single-threaded column blocks (2-core Xeon, batch 128, fc7
    forward + backward: 52 ms as one GEMM each, 66 ms in blocks).
    """

    def __init__(self, in_features: int, out_features: int, weight_std: float = 0.01,
                 bias: float = 0.0, rng=None, dtype=np.float32):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        rng = np.random.default_rng(rng)
        self.params["W"] = weight_std * rng.standard_normal((out_features, in_features),
                                                            dtype=dtype)
        self.params["b"] = np.full(out_features, bias, dtype=dtype)

    def forward(self, x, train=True):
        self.cache = x
        return x @ self.params["W"].T + self.params["b"]

    def backward(self, dout):
        x = self.cache
        self.grads["b"] = dout.sum(axis=0, dtype="float64").astype(dout.dtype)  # as in Conv2D
        self.grads["W"] = dout.T @ x
        return dout @ self.params["W"]

    def output_shape(self, input_shape):
        if tuple(input_shape) != (self.in_features,):
            raise ValueError(f"{self!r} expects ({self.in_features},), got {input_shape}")
        return (self.out_features,)

    def flops(self, input_shape):
        return 2 * self.in_features * self.out_features + self.out_features

    def __repr__(self):
        return f"Linear({self.in_features}, {self.out_features})"


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W) in C, H, W order (as PyTorch's flatten); cache: input shape."""

    def forward(self, x, train=True):
        self.cache = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        return dout.reshape(self.cache)

    def output_shape(self, input_shape):
        n = 1
        for d in input_shape:
            n *= d
        return (n,)
