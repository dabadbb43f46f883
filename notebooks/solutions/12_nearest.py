"""Chapter 12, solution: nearest neighbours by Euclidean distance (§6.1, Figure 4)."""

import numpy as np


def nearest(queries, database, k):
    """Indices (Q, k) of the k rows of database closest to each query, nearest first."""
    d2 = ((queries[:, None, :] - database[None, :, :]) ** 2).sum(axis=2)
    return np.argsort(d2, axis=1, kind="stable")[:, :k]
