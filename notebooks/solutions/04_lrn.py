"""Chapter 04, solution: local response normalization, both conventions (§3.3)."""

import numpy as np

from tinyalex.layers.base import Layer


def window_sum(v, before, after):
    """t[:, i] = sum of v[:, j] for j in i-before .. i+after (valid channels only)."""
    C = v.shape[1]
    padded = np.pad(v, ((0, 0), (before, after), (0, 0), (0, 0)))
    return sum(padded[:, d:d + C] for d in range(before + after + 1))


class LocalResponseNorm(Layer):
    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=2.0, convention="paper"):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        self.a = alpha if convention == "paper" else alpha / size

    def forward(self, x, train=True):
        n = self.size
        s = self.k + self.a * window_sum(x * x, n // 2, (n - 1) // 2)
        y = x * s ** (-self.beta)
        self.cache = (x, y, s)
        return y

    def backward(self, dout):
        x, y, s = self.cache
        n = self.size
        # y_i depends on x_j for j in i's window; the sum runs over the i whose window holds j.
        back = window_sum(dout * y / s, (n - 1) // 2, n // 2)
        return dout * s ** (-self.beta) - 2 * self.a * self.beta * x * back
