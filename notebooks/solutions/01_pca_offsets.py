"""Chapter 01, solution: the PCA colour offset of §4.1b for a batch of images."""

import numpy as np


def pca_offsets(alphas, eigvals, eigvecs):
    """alphas (B, 3), eigvals (3,) of 0..255 RGB, eigvecs (3, 3) in columns -> (B, 3).

    delta_b = [p1 p2 p3] @ [alpha1 lambda1, alpha2 lambda2, alpha3 lambda3]^T, with the
    paper's alpha * lambda taken on RGB in [0, 1] (lambda / 255 for 0..255 statistics).
    """
    lam = np.asarray(eigvals, np.float64) / 255.0
    return (np.asarray(alphas, np.float64) * lam) @ np.asarray(eigvecs, np.float64).T
