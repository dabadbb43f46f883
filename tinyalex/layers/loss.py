"""Softmax cross-entropy: the multinomial logistic regression objective (paper §3).

    p[n, c] = exp(z[n, c] - m[n]) / sum_c' exp(z[n, c'] - m[n]),   m[n] = max_c z[n, c]
    L       = -(1/N) sum_n log p[n, y[n]]
            = (1/N) sum_n ( m[n] + log sum_c exp(z[n, c] - m[n]) - z[n, y[n]] )
    dL/dz   = (p - onehot(y)) / N

Subtracting the row maximum (log-sum-exp) keeps exp from overflowing; the loss is the mean
over the batch.
"""

from __future__ import annotations

from ..backend import get_array_module


def log_softmax(z):
    """Row-wise log-probabilities, stable. z: (N, K) -> (N, K)."""
    xp = get_array_module(z)
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


def softmax(z):
    """Row-wise probabilities, stable. z: (N, K) -> (N, K)."""
    xp = get_array_module(z)
    return xp.exp(log_softmax(z))


class SoftmaxCrossEntropy:
    """Mean softmax cross-entropy over a batch.

    forward(z (N, K) logits, y (N,) int labels) -> scalar loss; cache: p (N, K), y.
    backward() -> dz (N, K) = (p - onehot(y)) / N.
    """

    def __init__(self):
        self.cache = None

    def forward(self, z, y):
        xp = get_array_module(z)
        y = xp.asarray(y)
        if y.ndim != 1 or y.shape[0] != z.shape[0]:
            raise ValueError(f"labels {y.shape} do not match logits {z.shape}")
        if y.size and (int(y.min()) < 0 or int(y.max()) >= z.shape[1]):
            # a negative label would silently index from the end
            raise ValueError(f"labels must be in [0, {z.shape[1]}); got {int(y.min())}..{int(y.max())}")
        logp = log_softmax(z)
        n = z.shape[0]
        loss = -logp[xp.arange(n), y].mean()
        self.cache = (xp.exp(logp), y)
        return loss

    __call__ = forward

    def backward(self, dloss=1.0):
        xp = get_array_module(self.cache[0])
        p, y = self.cache
        n = p.shape[0]
        dz = p.copy()
        dz[xp.arange(n), y] -= 1
        return dz * (dloss / n)
