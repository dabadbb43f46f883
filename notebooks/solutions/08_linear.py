"""Chapter 08, solution: the fully connected layer and the flattening before it (§3.5)."""

import numpy as np

from tinyalex.layers.base import Layer


class Linear(Layer):
    def __init__(self, in_features, out_features, weight_std=0.01, bias=0.0, rng=None,
                 dtype=np.float32):
        super().__init__()
        rng = np.random.default_rng(rng)
        self.params["W"] = (weight_std * rng.standard_normal((out_features, in_features))).astype(dtype)
        self.params["b"] = np.full(out_features, bias, dtype=dtype)

    def forward(self, x, train=True):
        self.cache = x
        return x @ self.params["W"].T + self.params["b"]

    def backward(self, dout):
        x = self.cache
        self.grads["W"] = dout.T @ x
        self.grads["b"] = dout.sum(axis=0)
        return dout @ self.params["W"]


class Flatten(Layer):
    def forward(self, x, train=True):
        self.cache = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        return dout.reshape(self.cache)
