"""The prepared dataset: decoded once into uint8 arrays on disk, memory-mapped for training.

Layout of one prepared folder (all written into a temporary folder that is renamed into
place only when complete, so an interrupted prepare is never reused)::

    train_images.npy   uint8   (N, S, S, 3)   RGB, HWC, short side S then centre crop (§2)
    train_labels.npy   int32   (N,)           index into meta["classes"]
    val_images.npy     uint8   (M, S, S, 3)
    val_labels.npy     int32   (M,)
    mean.npy           float32 (S, S, 3)      per-pixel mean of the training images (§2)
    pca_eigvals.npy    float32 (3,)           eigenvalues of the 3x3 RGB covariance, descending
    pca_eigvecs.npy    float32 (3, 3)         matching eigenvectors in the COLUMNS (§4.1)
    meta.json          classes (wnids), names, source, subset, size, counts, skipped files

Pixel statistics (mean, PCA) are on the 0..255 scale of the stored bytes.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
ARRAYS = ("train_images", "train_labels", "val_images", "val_labels",
          "mean", "pca_eigvals", "pca_eigvecs")


@dataclass
class Prepared:
    """A prepared dataset opened from disk (images memory-mapped, read-only)."""

    path: Path
    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    mean: np.ndarray
    pca_eigvals: np.ndarray
    pca_eigvecs: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def names(self) -> list[str]:
        return list(self.meta.get("names", self.meta["classes"]))

    @property
    def num_classes(self) -> int:
        return len(self.meta["classes"])

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def channel_mean(self) -> np.ndarray:
        """Per-channel mean (3,), the common alternative to the per-pixel mean image."""
        return self.mean.reshape(-1, 3).mean(axis=0)


def rgb_statistics(images: np.ndarray, chunk: int = 1024):
    """Per-pixel mean image and the PCA of all training RGB values (§2, §4.1).

    images: uint8 (N, S, S, 3). Returns mean (S, S, 3) float32, eigvals (3,) descending and
    eigvecs (3, 3) with eigenvectors in the columns, both float32, on the 0..255 scale.
    Accumulated in float64 over chunks so memory stays bounded for big memmaps.
    """
    n = len(images)
    if n == 0:
        raise ValueError("no training images to compute statistics from")
    pixel_sum = np.zeros(images.shape[1:], np.float64)
    rgb_sum = np.zeros(3, np.float64)
    rgb_outer = np.zeros((3, 3), np.float64)
    count = 0
    for start in range(0, n, chunk):
        block = np.asarray(images[start:start + chunk], dtype=np.float64)
        pixel_sum += block.sum(axis=0)
        flat = block.reshape(-1, 3)
        rgb_sum += flat.sum(axis=0)
        rgb_outer += flat.T @ flat
        count += flat.shape[0]
    mean_rgb = rgb_sum / count
    cov = rgb_outer / count - np.outer(mean_rgb, mean_rgb)
    eigvals, eigvecs = np.linalg.eigh(cov)
    order = np.argsort(eigvals)[::-1]
    return ((pixel_sum / n).astype(np.float32),
            eigvals[order].astype(np.float32),
            eigvecs[:, order].astype(np.float32))


def write_prepared(path, train_images, train_labels, val_images, val_labels, meta: dict,
                   mean=None, pca_eigvals=None, pca_eigvecs=None) -> Path:
    """Write a complete prepared folder atomically (temp folder, fsync, rename).

    Statistics are computed from train_images when not given. Returns the final path.
    For streaming writes of big sets, write the arrays yourself into
    ``temporary_folder(path)`` and call ``commit_folder``.
    """
    path = Path(path)
    tmp = temporary_folder(path)
    try:
        if mean is None or pca_eigvals is None or pca_eigvecs is None:
            mean, pca_eigvals, pca_eigvecs = rgb_statistics(train_images)
        arrays = dict(train_images=np.asarray(train_images, np.uint8),
                      train_labels=np.asarray(train_labels, np.int32),
                      val_images=np.asarray(val_images, np.uint8),
                      val_labels=np.asarray(val_labels, np.int32),
                      mean=np.asarray(mean, np.float32),
                      pca_eigvals=np.asarray(pca_eigvals, np.float32),
                      pca_eigvecs=np.asarray(pca_eigvecs, np.float32))
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", arr)
        full_meta = dict(meta)
        full_meta.setdefault("format_version", FORMAT_VERSION)
        full_meta["num_train"] = int(len(arrays["train_labels"]))
        full_meta["num_val"] = int(len(arrays["val_labels"]))
        full_meta["size"] = int(arrays["train_images"].shape[1])
        (tmp / "meta.json").write_text(json.dumps(full_meta, indent=1))
        return commit_folder(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def temporary_folder(final: Path) -> Path:
    """A fresh sibling folder to fill before ``commit_folder`` renames it into place."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def commit_folder(tmp: Path, final: Path) -> Path:
    """fsync every file in tmp, then rename it to final (replacing an older one)."""
    for f in Path(tmp).iterdir():
        with open(f, "rb+") as fh:
            os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    fsync_directory(final.parent)
    return final


def fsync_directory(path) -> None:
    """Make a rename inside ``path`` durable (POSIX: the directory entry is data too)."""
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def is_prepared(path) -> bool:
    path = Path(path)
    return (path / "meta.json").is_file() and all((path / f"{a}.npy").is_file() for a in ARRAYS)


def open_prepared(path) -> Prepared:
    """Open a prepared folder; images are memory-mapped read-only."""
    path = Path(path)
    if not is_prepared(path):
        raise FileNotFoundError(f"{path} is not a complete prepared dataset (missing files)")
    meta = json.loads((path / "meta.json").read_text())
    load = {a: np.load(path / f"{a}.npy", mmap_mode="r" if a.endswith("images") else None)
            for a in ARRAYS}
    return Prepared(path=path, meta=meta, **load)
