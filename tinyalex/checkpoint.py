"""Checkpoints: one .npz that numpy alone can read, written atomically.

Contents (names inside the .npz):

    params/<name>      the net's weights ("params/conv1.W", ...)
    velocity/<name>    SGD's momentum buffers, same names
    data/mean          the training set's mean image (S, S, 3) float32   (§2)
    data/pca_eigvals   (3,), data/pca_eigvecs (3, 3)                     (§4.1)
    meta               a JSON string: arch, classes and names, the run's config, position
                       (epoch, batch in epoch, global step), schedule state, lr, RNG state,
                       best validation error, dataset description

A checkpoint is written to a temporary file in the same folder, flushed and fsync'ed, then
renamed over the old one (atomic on POSIX), so a crash at any moment leaves either the
old checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .backend import to_numpy
from .data.cache import fsync_directory

FORMAT = 1


def atomic_write(path, write) -> Path:
    """write(fh) into a temporary file beside path, flushed and fsync'ed, then renamed over
    path: a crash leaves the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_directory(path.parent)
    return path


def save(path, params: dict, meta: dict, velocity: dict | None = None,
         data: dict | None = None) -> Path:
    """Write a checkpoint atomically; returns its path."""
    arrays = {f"params/{k}": to_numpy(v) for k, v in params.items()}
    arrays.update({f"velocity/{k}": to_numpy(v) for k, v in (velocity or {}).items()})
    arrays.update({f"data/{k}": to_numpy(v) for k, v in (data or {}).items()})
    arrays["meta"] = np.array(json.dumps(dict(meta, format=FORMAT)))
    return atomic_write(path, lambda fh: np.savez(fh, **arrays))


class Checkpoint:
    """A loaded checkpoint: .params, .velocity, .data (dicts of arrays) and .meta (dict)."""

    def __init__(self, path, params, velocity, data, meta):
        self.path, self.params, self.velocity, self.data, self.meta = \
            Path(path), params, velocity, data, meta

    def __repr__(self):
        m = self.meta
        return (f"Checkpoint({self.path}, arch={m.get('arch')}, epoch={m.get('epoch')}, "
                f"step={m.get('step')})")


def load(path) -> Checkpoint:
    """Read a checkpoint (raises ValueError with a clear message if it is not one)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            groups = {"params": {}, "velocity": {}, "data": {}}
            meta = json.loads(str(f["meta"]))
            for key in f.files:
                if "/" in key:
                    group, name = key.split("/", 1)
                    groups[group][name] = f[key]
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a tinyalex checkpoint ({err})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: checkpoint format {meta.get('format')} is not {FORMAT}")
    return Checkpoint(path, groups["params"], groups["velocity"], groups["data"], meta)


def build_net(ckpt: Checkpoint):
    """The net a checkpoint was trained with, its weights loaded (float32, NumPy).

    Uses meta["net"] = {"arch": ..., "num_classes": ..., "kwargs": {...}}.
    """
    from .net import build

    spec = ckpt.meta["net"]
    net = build(spec["arch"], spec["num_classes"], **spec.get("kwargs", {}))
    net.load_params(ckpt.params)
    return net


def augmenter(ckpt: Checkpoint, **overrides):
    """The test-time preprocessing of a checkpoint's run: its mean, PCA and crop size.

    Uses data/mean, data/pca_eigvals, data/pca_eigvecs and meta["data"]["crop"],
    meta["data"]["mean_mode"].
    """
    from .data.augment import Augmenter

    info = ckpt.meta.get("data", {})
    kwargs = dict(crop=info.get("crop"), mean_mode=info.get("mean_mode", "pixel"))
    kwargs.update(overrides)
    return Augmenter(ckpt.data["mean"], ckpt.data["pca_eigvals"], ckpt.data["pca_eigvecs"],
                     **kwargs)
