"""Top-1 / top-5 error (§2).

top-k error = fraction of images whose true label is not among the k classes the model
considers most probable. loop.evaluate runs a net over batches and counts them here.
"""

from __future__ import annotations

import numpy as np

from .backend import to_numpy


def topk_correct(scores, labels, k: int) -> np.ndarray:
    """Boolean (N,): is labels[n] among the k highest scores[n]? scores (N, K)."""
    scores, labels = to_numpy(scores), to_numpy(labels)
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return (top == labels[:, None]).any(axis=1)


class Scores:
    """Running mean loss and top-1 / top-5 errors over batches of (scores, labels)."""

    def __init__(self):
        self.n = self.top1 = self.top5 = 0
        self.loss_sum = 0.0

    def add(self, logp, y) -> None:
        """logp (B, K) log-probabilities (NumPy or CuPy), y (B,) labels."""
        logp = to_numpy(logp).astype(np.float64)
        y = to_numpy(y).astype(np.int64)
        self.loss_sum += float(-logp[np.arange(len(y)), y].sum())
        self.top1 += int(topk_correct(logp, y, 1).sum())
        self.top5 += int(topk_correct(logp, y, 5).sum())
        self.n += len(y)

    def result(self) -> dict:
        """{"top1_err", "top5_err", "loss", "n"}."""
        if self.n == 0:
            raise ValueError("nothing to evaluate: the loader gave no images")
        return {"top1_err": 1 - self.top1 / self.n, "top5_err": 1 - self.top5 / self.n,
                "loss": self.loss_sum / self.n, "n": self.n}

