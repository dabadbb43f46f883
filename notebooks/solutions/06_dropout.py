"""Chapter 06, solution: dropout, inverted and the paper's x0.5 at test time (§4.2)."""

import numpy as np

from tinyalex.layers.base import Layer


class Dropout(Layer):
    def __init__(self, p=0.5, mode="inverted", rng=None):
        super().__init__()
        self.p, self.mode = p, mode
        self.rng = np.random.default_rng(rng)
        self.fixed_mask = None          # the gradient checks set this: the same mask each call

    def forward(self, x, train=True):
        if not train:
            self.cache = None
            return x * (1 - self.p) if self.mode == "paper" else x
        keep = self.fixed_mask if self.fixed_mask is not None else self.rng.random(x.shape) >= self.p
        scale = 1 / (1 - self.p) if self.mode == "inverted" else 1.0
        self.cache = keep * scale
        return x * self.cache

    def backward(self, dout):
        if self.cache is None:
            return dout * (1 - self.p) if self.mode == "paper" else dout
        return dout * self.cache
