"""Checkpoints: one .npz that numpy alone can read, written atomically, checked when read.

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
old checkpoint or the new one, never half of one. ``save(..., keep_previous=True)`` first
keeps the file it replaces as ``<name>.prev.npz`` (when that file still reads), so a
checkpoint damaged later (a copy cut short, a sync tool) leaves one to fall back to.

Reading checks what can go wrong with a file on disk: that it is a zip archive at all,
that its directory is there (a truncated file has none), every member's CRC-32 (np.load
reads every array), and that ``meta`` is a JSON object of this format. ``check_training``
adds the meta a training checkpoint must hold, ``check_params`` the names and shapes
against a net. Each failure is a CheckpointError of one line naming the file.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np

from .backend import to_numpy
from .data.cache import fsync_directory

FORMAT = 1
#: What a checkpoint of ``python -m tinyalex.train`` holds besides its weights.
TRAINING_META = ("net", "classes", "config", "epoch", "batch", "step", "lr", "schedule")
TRAINING_DATA = ("mean", "pca_eigvals", "pca_eigvecs")


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint; the message is one line naming it."""


class DiskFull(OSError):
    """A write ran out of space; the message is one line: the path, free and needed bytes."""

    def __str__(self):
        return self.strerror   # the message alone, without "[Errno 28]"


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def free_bytes(folder) -> int:
    """Free space where ``folder`` is (its nearest existing parent)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def disk_full_message(path, needed: int | None) -> str:
    """One line for a write that ran out of space at ``path``."""
    path = Path(path)
    size = f"needs about {format_bytes(needed)}" if needed else "needs more"
    return (f"no space left on the disk of {path.parent}: writing {path.name} {size}, "
            f"{format_bytes(free_bytes(path.parent))} free; the previous {path.name} is "
            "kept as it was; free some space (or use another folder) and resume")


def atomic_write(path, write, size: int | None = None) -> Path:
    """write(fh) into a temporary file beside path, flushed and fsync'ed, then renamed over
    path: a crash leaves the old file or the new one, never half of one. A full disk raises
    DiskFull (``size``, the bytes expected, goes into its message), the temporary file gone
    and path untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            tmp.unlink(missing_ok=True)    # before measuring: its bytes are free again
            raise DiskFull(err.errno, disk_full_message(path, size)) from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_directory(path.parent)
    return path


def previous_path(path) -> Path:
    """Where save(keep_previous=True) keeps the file it replaces: last.npz -> last.prev.npz."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def reads(path) -> bool:
    """Whether path is a zip archive whose members all pass their CRC-32 check."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None and "meta.npy" in z.namelist()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return False


def arrays_of(params: dict, meta: dict, velocity: dict | None = None,
              data: dict | None = None) -> dict:
    """The named NumPy arrays a checkpoint file holds (see the module's table)."""
    arrays = {f"params/{k}": to_numpy(v) for k, v in params.items()}
    arrays.update({f"velocity/{k}": to_numpy(v) for k, v in (velocity or {}).items()})
    arrays.update({f"data/{k}": to_numpy(v) for k, v in (data or {}).items()})
    arrays["meta"] = np.array(json.dumps(dict(meta, format=FORMAT)))
    return arrays


def file_size(arrays: dict) -> int:
    """The bytes np.savez writes for ``arrays`` (uncompressed: data plus headers)."""
    return sum(a.nbytes + 300 for a in arrays.values()) + 22


def keep(path: Path, prev: Path) -> None:
    """prev becomes the file at path, atomically: a hard link (no copy, no moment without
    either), or a copy where the filesystem has no hard links (FAT, some network mounts)."""
    link = prev.with_name(f".{prev.name}.link-{os.getpid()}")
    link.unlink(missing_ok=True)
    try:
        try:
            os.link(path, link)
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            shutil.copyfile(path, link)
        os.replace(link, prev)
    except OSError as err:
        link.unlink(missing_ok=True)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(err.errno, disk_full_message(prev, path.stat().st_size)) from None
        raise


def save(path, params: dict, meta: dict, velocity: dict | None = None,
         data: dict | None = None, keep_previous: bool = False) -> Path:
    """Write a checkpoint atomically; returns its path. keep_previous: the file it replaces,
    if it reads, stays as previous_path(path) (a hard link, so no moment has neither)."""
    path = Path(path)
    arrays = arrays_of(params, meta, velocity, data)
    if keep_previous and path.is_file() and reads(path):
        keep(path, previous_path(path))
    return atomic_write(path, lambda fh: np.savez(fh, **arrays), size=file_size(arrays))


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
    """Read a checkpoint, every array's CRC checked. FileNotFoundError if there is no file;
    CheckpointError (one line: the file and what is wrong) if it is not a tinyalex
    checkpoint or is damaged."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read it ({err.strerror or err})") from None
    if head != b"PK\x03\x04":
        what = "an empty file" if not head else f"it starts with {head!r}, not a zip archive"
        raise CheckpointError(f"{path} is not a tinyalex checkpoint ({what})")
    size = path.stat().st_size
    try:
        with np.load(path, allow_pickle=False) as f:
            if "meta" not in f.files:
                raise CheckpointError(f"{path} is not a tinyalex checkpoint (a .npz without "
                                      "'meta'; a bare weights file?)")
            groups = {"params": {}, "velocity": {}, "data": {}}
            meta = json.loads(str(f["meta"]))
            for key in f.files:
                if "/" in key:
                    group, name = key.split("/", 1)
                    if group not in groups:
                        raise CheckpointError(f"{path} is not a tinyalex checkpoint "
                                              f"(unknown array {key!r})")
                    groups[group][name] = f[key]
    except CheckpointError:
        raise
    except zipfile.BadZipFile as err:
        why = ("its end is missing: cut short by a copy, a sync or a full disk"
               if "not a zip file" in str(err) else str(err))
        raise CheckpointError(f"{path} is damaged ({size:,} bytes; {why})") from None
    except (OSError, EOFError, ValueError, KeyError, zipfile.LargeZipFile) as err:
        raise CheckpointError(f"{path} is damaged ({size:,} bytes; "
                              f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
                              ) from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} is not a tinyalex checkpoint (its meta is not a JSON object)")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {meta.get('format')} is not {FORMAT}")
    return Checkpoint(path, groups["params"], groups["velocity"], groups["data"], meta)


def check_training(ckpt: Checkpoint, resume: bool = False) -> Checkpoint:
    """CheckpointError unless ckpt holds what evaluate/predict/figures need (the net's spec,
    the classes, the data statistics), and, with resume, what training needs to go on.
    Returns ckpt."""
    meta = ckpt.meta
    want = TRAINING_META if resume else ("net", "classes")
    missing = [k for k in want if k not in meta]
    missing += [f"data/{k}" for k in TRAINING_DATA if k not in ckpt.data]
    if missing:
        raise CheckpointError(f"{ckpt.path} is not a training checkpoint of tinyalex "
                              f"(no {', '.join(missing)})")
    net = meta["net"]
    if not (isinstance(net, dict) and "arch" in net and "num_classes" in net):
        raise CheckpointError(f"{ckpt.path}: its meta 'net' names no arch and num_classes")
    if len(meta["classes"]) != net["num_classes"]:
        raise CheckpointError(f"{ckpt.path}: {len(meta['classes'])} classes listed for a net "
                              f"of {net['num_classes']}")
    if resume and set(ckpt.velocity) != set(ckpt.params):
        raise CheckpointError(f"{ckpt.path}: its momentum buffers do not match its weights")
    return ckpt


def check_params(ckpt: Checkpoint, net, what: str = "the net") -> None:
    """CheckpointError unless ckpt's weights have exactly net's names and shapes; the
    message names the first differences (another architecture or class count)."""
    own, theirs = net.params, ckpt.params
    missing, extra = sorted(set(own) - set(theirs)), sorted(set(theirs) - set(own))
    spec = ckpt.meta.get("net", {})
    holds = (f"{ckpt.path} holds {spec.get('arch', 'a net')} weights"
             + (f" for {spec['num_classes']} classes" if "num_classes" in spec else ""))
    if missing or extra:
        raise CheckpointError(f"{holds}, not those of {what}: "
                              + (f"missing {', '.join(missing[:3])}" if missing else "")
                              + ("; " if missing and extra else "")
                              + (f"unexpected {', '.join(extra[:3])}" if extra else ""))
    wrong = [f"{k} {tuple(theirs[k].shape)} where {what} has {tuple(own[k].shape)}"
             for k in own if tuple(theirs[k].shape) != tuple(own[k].shape)]
    if wrong:
        raise CheckpointError(f"{holds}, not those of {what}: " + "; ".join(wrong[:2]))


def build_net(ckpt: Checkpoint):
    """The net a checkpoint was trained with, its weights loaded (float32, NumPy).

    Uses meta["net"] = {"arch": ..., "num_classes": ..., "kwargs": {...}}. CheckpointError
    when the weights are not that net's.
    """
    from .net import build

    spec = ckpt.meta["net"]
    try:
        net = build(spec["arch"], spec["num_classes"], **spec.get("kwargs", {}))
    except (KeyError, ValueError, TypeError) as err:
        raise CheckpointError(f"{ckpt.path}: cannot rebuild its net ({err})") from None
    check_params(ckpt, net, f"its {spec['arch']} of {spec['num_classes']} classes")
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
