"""Which classes to train on: ``"100-class"``, ``"all"`` or a file of wnids.

- ``"100-class"``: on ILSVRC-2012 the ImageNet-100 list published with CMC (Tian, Krishnan,
  Isola 2019, ``lists/imagenet-100.txt``); on Tiny ImageNet this project's Tiny-100 list
  (``lists/tiny-imagenet-100.txt``: the 200 official wnids sorted, every second one).
  Imagenette has only 10 classes, so it cannot provide it: a DataError says so.
- ``"all"``: every class with a training folder.
- a path to a text file with one wnid a line (blank lines and ``#`` comments ignored; anything
  after the wnid on a line is ignored).

Labels are always the position in the SORTED list of chosen wnids, so ``all`` on the full
ILSVRC-2012 gives the standard 0..999 class index. Class names come from
``lists/imagenet-1k-classes.tsv`` (first synonym), falling back to the dataset's own
``words.txt``, then to the wnid.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path

from tinyalex.data.errors import DataError

KIND_TITLES = {"ilsvrc": "ILSVRC-2012-style", "tiny-imagenet": "Tiny ImageNet",
               "imagenette": "Imagenette", "synthetic": "synthetic"}

SUBSET_CHOICES = ("100-class", "all")
IMAGENETTE_WNIDS = ("n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
                    "n03394916", "n03417042", "n03425413", "n03445777", "n03888257")
_WNID = re.compile(r"^n\d{8}$")


def _list_text(name: str) -> str:
    return resources.files("tinyalex").joinpath("lists", name).read_text(encoding="utf-8")


@functools.cache
def shipped_list(name: str) -> tuple[str, ...]:
    """A shipped wnid list, in file order: 'imagenet-100.txt' or 'tiny-imagenet-100.txt'."""
    return tuple(line.split()[0] for line in _list_text(name).splitlines() if line.strip())


@functools.cache
def imagenet_classes() -> dict[str, tuple[int, str]]:
    """wnid -> (standard ILSVRC-2012 index, first name), from imagenet-1k-classes.tsv."""
    out = {}
    for line in _list_text("imagenet-1k-classes.tsv").splitlines()[1:]:
        if not line.strip():
            continue
        index, wnid, names = line.split("\t")
        out[wnid] = (int(index), names.split(",")[0].strip())
    return out


def class_name(wnid: str, words: dict[str, str] | None = None) -> str:
    info = imagenet_classes().get(wnid)
    if info:
        return info[1]
    if words and wnid in words:
        return words[wnid].split(",")[0].strip() or wnid
    return wnid


def read_subset_file(path) -> list[str]:
    """The wnids of a subset file (one a line), in file order, duplicates dropped."""

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read subset file {path}: {err}") from None
    wnids = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#")[0].strip()
        if not line:
            continue
        wnid = line.split()[0].rstrip(",")
        if not _WNID.match(wnid):
            raise DataError(f"subset file {path} line {lineno}: {wnid!r} is not a WordNet id "
                            "(n + 8 digits); expected one wnid a line")
        if wnid not in wnids:
            wnids.append(wnid)
    if not wnids:
        raise DataError(f"subset file {path} lists no wnids")
    return wnids


def subset_tag(subset: str) -> str:
    """Short name of a subset for folder names: 100class, all, list-<file stem>."""
    if subset == "100-class":
        return "100class"
    if subset == "all":
        return "all"
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(subset).stem)[:40] or "file"
    return f"list-{stem}"


def _some(wnids, words=None, n=None) -> str:
    shown = list(wnids) if n is None else list(wnids)[:n]
    text = ", ".join(f"{w} {class_name(w, words)}" for w in shown)
    if n is not None and len(wnids) > n:
        text += f", ... ({len(wnids) - n} more)"
    return text


def resolve_subset(kind: str, available, subset: str = "100-class",
                   words: dict[str, str] | None = None, title: str | None = None) -> list[str]:
    """The sorted wnids of ``subset`` on a dataset of ``kind`` with classes ``available``.

    DataError when the dataset cannot provide every class of the subset, naming what it has.
    """

    title = title or KIND_TITLES.get(kind, kind)
    available = sorted(set(available))
    if not available:
        raise DataError(f"{title} has no class folders")
    if subset == "all":
        return available
    if subset == "100-class":
        if kind == "ilsvrc":
            wanted = list(shipped_list("imagenet-100.txt"))
            what = "the ImageNet-100 (CMC) list"
        elif kind == "tiny-imagenet":
            wanted = list(shipped_list("tiny-imagenet-100.txt"))
            what = "the Tiny-100 list"
        else:
            raise DataError(f"{title} has {len(available)} classes ({_some(available, words, 10)});"
                            f" '100-class' needs 100; use --subset all")
    else:
        if not Path(subset).is_file():
            raise DataError(f"--subset must be 100-class, all or a file with one wnid a line; "
                            f"{subset!r} is neither")
        wanted = read_subset_file(subset)
        what = f"subset file {subset}"
    missing = [w for w in wanted if w not in set(available)]
    if missing:
        raise DataError(f"{title} has {len(available)} classes ({_some(available, words, 5)}) "
                        f"and lacks {len(missing)} of the {len(wanted)} classes of {what} "
                        f"({_some(missing, words, 5)}); use --subset all or another dataset")
    return sorted(wanted)
