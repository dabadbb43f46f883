"""Dropout (paper §4.2): p = 0.5 on fc6 and fc7.

Each training step sets every unit to zero with probability p, so no unit can rely on a
particular other one being there. Two equivalent bookkeepings of the expected activation:

- "inverted" (default): train y = x * m / (1 - p), m ~ Bernoulli(1 - p); test y = x.
- "paper": train y = x * m; test y = x * (1 - p) ("multiply their outputs by 0.5").

Backward: dx = dout * (the same scaled mask). Setting ``fixed_mask`` (a 0/1 array of the
input's shape) replaces the random draw: gradient checks and the PyTorch lockstep tests
need the same mask on every call. Setting ``rows = (start, stop, B)`` draws the mask of a
whole batch of B and keeps rows start..stop: a data-parallel rank (distributed.py) then
drops exactly the units the one-process run drops for those images.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from .base import Layer


class Dropout(Layer):
    """Shapes: x any -> y same; cache: the scaled mask (None at test time)."""

    def __init__(self, p: float = 0.5, mode: str = "inverted", rng=None):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError("dropout p must be in [0, 1)")
        if mode not in ("inverted", "paper"):
            raise ValueError("mode must be 'inverted' or 'paper'")
        self.p, self.mode = p, mode
        self.rng = np.random.default_rng(rng)
        self.fixed_mask = None
        self.rows = None

    def draw_mask(self, shape, xp):
        """A 0/1 keep-mask of the given shape (from fixed_mask when set)."""
        if self.fixed_mask is not None:
            return xp.asarray(self.fixed_mask)
        if self.rows is not None:
            start, stop, batch = self.rows
            if stop - start != shape[0]:
                raise ValueError(f"rows {start}:{stop} of a batch of {batch}, but the input "
                                 f"has {shape[0]}")
            whole = self.rng.random((batch, *shape[1:]))
            return xp.asarray(whole[start:stop] >= self.p)
        return xp.asarray(self.rng.random(shape) >= self.p)

    def forward(self, x, train=True):
        xp = get_array_module(x)
        if not train:
            self.cache = None
            return x * (1 - self.p) if self.mode == "paper" else x
        keep = self.draw_mask(x.shape, xp).astype(x.dtype)
        scale = 1 / (1 - self.p) if self.mode == "inverted" else 1.0
        mask = keep * x.dtype.type(scale)
        self.cache = mask
        return x * mask

    def backward(self, dout):
        if self.cache is None:  # a test-time forward: a plain scaling
            return dout * (1 - self.p) if self.mode == "paper" else dout
        return dout * self.cache

    def __repr__(self):
        return f"Dropout(p={self.p}, mode={self.mode!r})"
