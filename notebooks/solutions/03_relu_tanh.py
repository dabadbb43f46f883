"""Chapter 03, solution: ReLU and tanh (§3.1)."""

import numpy as np

from tinyalex.layers.base import Layer


class ReLU(Layer):
    def forward(self, x, train=True):
        self.cache = np.maximum(x, 0)
        return self.cache

    def backward(self, dout):
        return dout * (self.cache > 0)


class Tanh(Layer):
    def forward(self, x, train=True):
        self.cache = np.tanh(x)
        return self.cache

    def backward(self, dout):
        return dout * (1 - self.cache ** 2)
