"""Prepare once: decode every image, rescale (paper §2), store uint8 arrays in the cache.

Preprocessing of one image (§2: "rescaled so the shorter side is 256, then the central
256x256 patch cropped"):

1. Decode with Pillow. Files over ``MAX_PIXELS`` pixels (Pillow's decompression-bomb limit,
   89,478,485) are refused before decoding; Pillow's DecompressionBombWarning is an error.
   Large JPEGs are decoded by libjpeg at a reduced DCT scale (``draft``) while staying at
   least twice the target size, as ``Image.thumbnail`` does: much faster, visually the same.
   EXIF orientation is ignored (as in the usual ImageNet pipelines).
2. Convert to RGB: L/1/P/CMYK/YCbCr via Pillow; RGBA, LA, PA: the alpha channel is DROPPED
   (not composited); 16-bit (``I;16*``) and 32-bit integer (``I``) grey: value / 257
   rounded, clipped to 0..255 (65535 -> 255); float (``F``): clipped to 0..255.
3. Rescale so the SHORT side is S with ``Image.BILINEAR`` (Pillow's bilinear is a triangle
   filter whose support widens when shrinking, so it anti-aliases); small images are scaled
   UP. The long side becomes round(long * S / short).
4. Crop the central SxS: offset (long - S) // 2 along the long side.

S defaults to 256 (the paper), and to 64 for Tiny ImageNet (its own scale; 256 would only
blow 64-pixel images up 4x).

The prepared folder is written in the format of ``cache.py``: images stream into
memory-mapped .npy files inside ``temporary_folder(final)``; only a complete folder is
renamed into place by ``commit_folder``. Items are stored sorted by (class, file name);
undecodable files are skipped, counted and reported (log and ``meta.json["skipped"]``), and
the arrays are compacted in place so no gap remains.

Cache folder: ``<cache_root>/<kind>-<subset-tag>[-max<N>]-<S>px-<hash10>/`` where the hash
covers the source (an archive's size and a hash of its head and tail, where zip and gzip
keep their members' checksums, so a copy or re-download of the same file reuses the cache;
a plain tar's mtime too; a folder's path and folder mtimes), the chosen wnids, S, the per-class limit and the preprocessing version. Cache root:
``--cache DIR``, else ``$TINYALEX_CACHE``, else ``~/.cache/tinyalex``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
import warnings
from collections import deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from tinyalex import flags
from tinyalex.data.cache import (
    FORMAT_VERSION,
    Prepared,
    commit_folder,
    is_prepared,
    open_prepared,
    rgb_statistics,
    temporary_folder,
)
from tinyalex.data.errors import DataError
from tinyalex.data.readers import Source
from tinyalex.data.subsets import class_name, resolve_subset, subset_tag

CACHE_ENV = "TINYALEX_CACHE"
DEFAULT_SIZE = 256
DEFAULT_SIZES = {"tiny-imagenet": 64, "synthetic": 64}
RESAMPLE = Image.BILINEAR
RESAMPLE_NAME = "bilinear"
MAX_PIXELS = 89_478_485  # Pillow's default Image.MAX_IMAGE_PIXELS
PREPROCESS_VERSION = 1
BATCH = 32  # images per decode task
REPORT_FIRST = 20  # skipped files named in meta.json


class BadImage(Exception):
    """One file that cannot be used (it is skipped and reported, never fatal)."""


# --------------------------------------------------------------------------- one image

def default_size(kind: str) -> int:
    return DEFAULT_SIZES.get(kind, DEFAULT_SIZE)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB (alpha dropped, 16-bit scaled by 1/257)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(img).astype(np.float64)
        return Image.fromarray(np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        a = np.asarray(img, dtype=np.float64)
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # avoids Pillow's palette-transparency warning
    if img.mode in ("RGBA", "RGBa", "RGBX"):
        return img.convert("RGB")  # drops alpha
    if img.mode in ("LA", "La", "PA"):
        return img.convert("RGBA").convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as err:
        raise BadImage(f"cannot convert mode {mode} to RGB ({err})") from None


def short_side_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(w, h) after rescaling so the shorter side is ``size``."""
    if width <= height:
        return size, max(size, int(round(height * size / width)))
    return max(size, int(round(width * size / height))), size


def center_crop(arr: np.ndarray, size: int) -> np.ndarray:
    """The central size x size patch of an (H, W, C) array; offset (extra // 2)."""
    h, w = arr.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return arr[top:top + size, left:left + size]


def preprocess(img: Image.Image, size: int) -> np.ndarray:
    """RGB, short side ``size``, centre crop: uint8 (size, size, 3)."""
    img = to_rgb(img)
    new = short_side_size(img.width, img.height, size)
    if new != img.size:
        img = img.resize(new, RESAMPLE)
    arr = center_crop(np.asarray(img, dtype=np.uint8), size)
    if arr.shape != (size, size, 3):
        raise BadImage(f"unexpected shape {arr.shape} after preprocessing")
    return np.ascontiguousarray(arr)


def decode_image(data: bytes, size: int, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Bytes of one image file -> uint8 (size, size, 3); BadImage/other errors if unusable."""
    if not data:
        raise BadImage("empty file (0 bytes)")
    img = Image.open(io.BytesIO(data))
    w, h = img.size
    if w < 1 or h < 1:
        raise BadImage(f"image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise BadImage(f"too large: {w}x{h} = {w * h} pixels > {max_pixels} (decompression bomb?)")
    if img.format in ("JPEG", "MPO"):
        img.draft(None, (2 * size, 2 * size))
    img.load()
    return preprocess(img, size)


def _quiet_pillow():
    """Warnings filters for decoding: bombs are errors, Pillow's chatter is silent."""
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\..*")


def _decode_batch(batch, size, max_pixels):
    """[(row, bytes)] -> [(row, array or None, why or None)]; runs in a worker."""
    out = []
    for row, data in batch:
        try:
            out.append((row, decode_image(data, size, max_pixels), None))
        except MemoryError:
            out.append((row, None, "MemoryError: too big to decode"))
        except BadImage as err:
            out.append((row, None, str(err)))
        except Image.UnidentifiedImageError:
            out.append((row, None, "not an image format Pillow can read"))
        except Exception as err:  # noqa: BLE001 - every kind of bad file is skipped
            msg = str(err).splitlines()[0] if str(err) else ""
            out.append((row, None, f"{type(err).__name__}: {msg}"[:200]))
    return out


def _init_process_worker():
    _quiet_pillow()


# --------------------------------------------------------------------------- planning

def cache_root(cache=None) -> Path:
    if cache:
        return Path(cache).expanduser()
    env = flags.value(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tinyalex"


@dataclass
class Plan:
    """What a prepare would do: the classes, the files per split, the target folder."""

    source: Source
    subset: str
    wnids: list[str]
    size: int
    max_per_class: int | None
    folder: Path
    splits: dict[str, list[tuple[str, int]]]           # split -> [(name, label)]
    problems: list[tuple[str, str]] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [class_name(w, self.source.words) for w in self.wnids]


def folder_name(source: Source, subset: str, wnids, size: int, max_per_class) -> str:
    key = {"format": FORMAT_VERSION, "preprocess": PREPROCESS_VERSION, "resample": RESAMPLE_NAME,
           "kind": source.kind, "source": source.container.fingerprint(), "root": source.root,
           "wnids": list(wnids), "size": int(size), "max_per_class": max_per_class}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    tag = subset_tag(subset) + (f"-max{max_per_class}" if max_per_class else "")
    return f"{source.kind}-{tag}-{size}px-{digest}"


def plan(source: Source, subset: str = "100-class", size: int | None = None, cache=None,
         max_per_class: int | None = None) -> Plan:
    """Resolve the subset and pick the files (DataError if the subset is impossible)."""
    if size is None:
        size = default_size(source.kind)
    if size < 1:
        raise DataError(f"--size must be a positive number of pixels, not {size}")
    if max_per_class is not None and max_per_class < 1:
        raise DataError(f"--max-per-class must be at least 1, not {max_per_class}")
    wnids = resolve_subset(source.kind, source.classes, subset, source.words, source.title)
    index = {w: i for i, w in enumerate(wnids)}
    known = set(source.classes)
    problems = list(source.problems)
    splits = {}
    for split in ("train", "val"):
        chosen, per_class = [], {}
        for name, wnid in source.items(split):
            if wnid not in index:
                if wnid not in known:
                    problems.append((name, f"label {wnid} is not a class of this dataset"))
                continue
            n = per_class.get(wnid, 0)
            if max_per_class is not None and n >= max_per_class:
                continue
            per_class[wnid] = n + 1
            chosen.append((name, index[wnid]))
        chosen.sort(key=lambda t: (t[1], t[0]))
        splits[split] = chosen
    have = {label for _, label in splits["train"]}
    empty = [w for w in wnids if index[w] not in have]
    folder = cache_root(cache) / folder_name(source, subset, wnids, size, max_per_class)
    return Plan(source, subset, wnids, size, max_per_class, folder, splits, problems, empty)


# --------------------------------------------------------------------------- the prepare

def _remove_stale_temporaries(final: Path, log) -> None:
    for tmp in final.parent.glob(f".{final.name}.tmp-*"):
        try:
            pid = int(tmp.name.rsplit("-", 1)[1])
            os.kill(pid, 0)
            alive = pid != os.getpid()
        except (ValueError, ProcessLookupError):
            alive = False
        except PermissionError:
            alive = True
        if not alive:
            log(f"removing an interrupted earlier prepare: {tmp}")
            shutil.rmtree(tmp, ignore_errors=True)


def _check_disk(folder: Path, nbytes: int) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder.parent).free
    if nbytes * 1.02 + 64 * 2**20 > free:
        raise DataError(f"preparing needs about {nbytes / 2**30:.1f} GiB in {folder.parent} but only "
                        f"{free / 2**30:.1f} GiB are free; use --cache DIR elsewhere, a smaller "
                        "--size or --max-per-class")


def _shrink_npy(path: Path, keep: np.ndarray) -> int:
    """Keep only rows ``keep`` (bool) of a .npy on disk, in order, in place; returns the count."""
    mm = np.load(path, mmap_mode="r+")
    n, kept = len(mm), int(keep.sum())
    if kept == n:
        return n
    dst = int(np.argmin(keep))  # first hole
    chunk = max(1, (64 * 2**20) // max(1, mm[0].nbytes))
    for start in range(dst, n, chunk):
        rows = np.flatnonzero(keep[start:start + chunk]) + start
        if len(rows):
            block = np.array(mm[rows])
            mm[dst:dst + len(rows)] = block
            dst += len(rows)
    mm.flush()
    shape, dtype, row_bytes = (kept,) + mm.shape[1:], mm.dtype, mm[0].nbytes
    del mm
    with open(path, "r+b") as fh:
        version = np.lib.format.read_magic(fh)
        reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                  else np.lib.format.read_array_header_2_0)
        reader(fh)
        offset = fh.tell()
        header = io.BytesIO()
        writer = (np.lib.format.write_array_header_1_0 if version == (1, 0)
                  else np.lib.format.write_array_header_2_0)
        writer(header, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                        "shape": shape})
        if len(header.getvalue()) == offset:
            fh.seek(0)
            fh.write(header.getvalue())
            fh.truncate(offset + kept * row_bytes)
            return kept
    # header length changed (older numpy without growth padding): copy into a fresh file
    old = np.load(path, mmap_mode="r")
    tmp = path.with_name(path.stem + ".shrink.npy")
    new = np.lib.format.open_memmap(tmp, "w+", dtype, shape)
    for start in range(0, kept, chunk):
        new[start:start + chunk] = old[start:start + chunk]
    new.flush()
    del new, old
    os.replace(tmp, path)
    return kept


def _fill(plan_: Plan, tmp: Path, executor, workers, progress, problems) -> dict:
    """Decode both splits into <tmp>/<split>_images.npy in ONE pass over the source (a .tgz
    is streamed once). Returns split -> labels of the kept rows; problems[split] gets the
    skipped files."""
    s = plan_.size
    for split in ("train", "val"):
        if not plan_.splits[split]:
            raise DataError(f"{plan_.source.describe()}: the {split} split has no images for "
                            f"the chosen classes{_why_empty(plan_.source, split)}")
    mms = {split: np.lib.format.open_memmap(tmp / f"{split}_images.npy", mode="w+",
                                            dtype=np.uint8, shape=(len(items), s, s, 3))
           for split, items in plan_.splits.items()}
    ok = {split: np.zeros(len(items), bool) for split, items in plan_.splits.items()}
    # one global row number per file: train rows first, then val
    splits, rows, names = [], [], []
    for split, items in plan_.splits.items():
        for row, (name, _) in enumerate(items):
            splits.append(split)
            rows.append(row)
            names.append(name)
    index_of = {name: i for i, name in enumerate(names)}
    from tqdm.auto import tqdm

    bar = tqdm(total=len(names), desc=f"prepare {plan_.source.kind} {s}px", unit="img",
               disable=not progress, mininterval=1.0, smoothing=0.1)
    inflight: deque = deque()

    def collect(results, mms=mms):
        for i, arr, why in results:
            split, row = splits[i], rows[i]
            if why is None:
                mms[split][row] = arr
                ok[split][row] = True
            else:
                problems[split].append((names[i], why))
        bar.update(len(results))

    def submit(batch):
        if executor is None:
            collect(_decode_batch(batch, s, MAX_PIXELS))
        else:
            inflight.append(executor.submit(_decode_batch, batch, s, MAX_PIXELS))
            while len(inflight) > 2 * workers:
                collect(inflight.popleft().result())

    try:
        batch = []
        for name, data in plan_.source.iter_read(names):
            i = index_of[name]
            if isinstance(data, Exception):
                problems[splits[i]].append((name, f"unreadable: {type(data).__name__}: {data}"[:200]))
                bar.update(1)
                continue
            batch.append((i, data))
            if len(batch) >= BATCH:
                submit(batch)
                batch = []
        if batch:
            submit(batch)
        while inflight:
            collect(inflight.popleft().result())
    finally:
        for fut in inflight:
            fut.cancel()
        bar.close()
    labels = {}
    for split, items in plan_.splits.items():
        mms[split].flush()
        kept, n = int(ok[split].sum()), len(items)
        if kept == 0:
            first = problems[split][0] if problems[split] else ("?", "?")
            raise DataError(f"{plan_.source.describe()}: none of the {n} {split} images could be "
                            f"decoded (first: {first[0]}: {first[1]})")
    mms.clear()  # drop the memmaps before the files are shrunk
    for split, items in plan_.splits.items():
        _shrink_npy(tmp / f"{split}_images.npy", ok[split])
        labels[split] = np.array([label for _, label in items], np.int32)[ok[split]]
    return labels


def _why_empty(source: Source, split: str) -> str:
    notes = [why for name, why in source.problems if split in name]
    return f" ({notes[0]})" if notes else ""


def _report(problems, log) -> None:
    if problems:
        shown = "; ".join(f"{n} ({why})" for n, why in problems[:5])
        more = f"; ... {len(problems) - 5} more (see meta.json)" if len(problems) > 5 else ""
        log(f"skipped {len(problems)} file(s): {shown}{more}")


def prepare(source: Source, subset: str = "100-class", size: int | None = None, cache=None,
            max_per_class: int | None = None, workers: int | None = None,
            executor: str = "thread", log=print, progress: bool = True,
            force: bool = False) -> Prepared:
    """Decode ``source`` into the cache once (or reuse the complete folder) and open it.

    executor: "thread" (default: Pillow releases the GIL in its resize and decoder loops, and
    threads pickle nothing; measured as fast or faster than "process" on 2 cores) or
    "process". workers: parallel decoders, default the number of CPU cores. Decoded images
    stream into memory-mapped .npy files: memory stays bounded whatever the dataset size.
    """
    p = plan(source, subset, size, cache, max_per_class)
    final = p.folder
    if is_prepared(final) and not force:
        prepared = open_prepared(final)
        log(f"reusing prepared dataset {final} ({prepared.num_classes} classes, "
            f"{len(prepared.train_labels)} train / {len(prepared.val_labels)} val, "
            f"{prepared.image_size}px)")
        return prepared
    _remove_stale_temporaries(final, log)
    s = p.size
    total = sum(len(v) for v in p.splits.values())
    _check_disk(final, total * s * s * 3)
    log(f"preparing {source.describe()} -> {final}")
    log(f"  subset {p.subset}: {len(p.wnids)} classes, {len(p.splits['train'])} train / "
        f"{len(p.splits['val'])} val files, {s}x{s} px"
        + (f", at most {p.max_per_class} per class" if p.max_per_class else ""))
    workers = max(1, workers or os.cpu_count() or 1)
    started = time.perf_counter()
    tmp = temporary_folder(final)
    pool = None
    try:
        with warnings.catch_warnings():
            _quiet_pillow()
            if workers > 1:
                pool = (ProcessPoolExecutor(workers, initializer=_init_process_worker)
                        if executor == "process" else ThreadPoolExecutor(workers))
            skipped: dict = {"train": [], "val": []}
            labels = _fill(p, tmp, pool, workers, progress, skipped)
        np.save(tmp / "train_labels.npy", labels["train"])
        np.save(tmp / "val_labels.npy", labels["val"])
        # chunks of ~16 MB of float64: much faster than huge blocks for big images
        mean, eigvals, eigvecs = rgb_statistics(np.load(tmp / "train_images.npy", mmap_mode="r"),
                                                chunk=max(1, 2**21 // (s * s * 3)))
        np.save(tmp / "mean.npy", mean)
        np.save(tmp / "pca_eigvals.npy", eigvals)
        np.save(tmp / "pca_eigvecs.npy", eigvecs)
        all_problems = p.problems + skipped["train"] + skipped["val"]
        have = set(labels["train"].tolist())
        empty = [w for i, w in enumerate(p.wnids) if i not in have]
        if empty:
            log(f"WARNING: {len(empty)} class(es) have no usable training image: "
                + ", ".join(f"{w} {class_name(w, source.words)}" for w in empty[:10]))
        elapsed = time.perf_counter() - started
        meta = {
            "format_version": FORMAT_VERSION,
            "preprocess_version": PREPROCESS_VERSION,
            "classes": p.wnids,
            "names": p.names,
            "source": str(Path(source.path).resolve()),
            "source_root": source.root,
            "kind": source.kind,
            "subset": p.subset,
            "subset_tag": subset_tag(p.subset),
            "size": s,
            "max_per_class": p.max_per_class,
            "resample": RESAMPLE_NAME,
            "label_file": source.label_file,
            "num_train": int(len(labels["train"])),
            "num_val": int(len(labels["val"])),
            "train_per_class": np.bincount(labels["train"], minlength=len(p.wnids)).tolist(),
            "val_per_class": np.bincount(labels["val"], minlength=len(p.wnids)).tolist(),
            "empty_classes": empty,
            "skipped": {"count": len(all_problems),
                        "listing": _report_quiet(p.problems),
                        "train": _report_quiet(skipped["train"]),
                        "val": _report_quiet(skipped["val"]),
                        "first": [list(x) for x in all_problems[:REPORT_FIRST]]},
            "prepare_seconds": round(elapsed, 1),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        commit_folder(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    _report(all_problems, log)
    prepared = open_prepared(final)
    log(f"prepared {final}: {prepared.num_classes} classes, {meta['num_train']} train / "
        f"{meta['num_val']} val images in {elapsed:.0f} s")
    return prepared


def _report_quiet(problems) -> dict:
    return {"count": len(problems), "first": [list(x) for x in problems[:REPORT_FIRST]]}
