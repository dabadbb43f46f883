"""Readers: find the images of ILSVRC-2012, Tiny ImageNet or Imagenette in a folder or archive.

A *container* is where the files are: a folder, a .zip, or a .tar (.tgz / .tar.gz / .tar.bz2 /
.tar.xz). Archives are read member by member, never extracted to disk. Every container
lists its files as POSIX paths relative to itself and reads one file's bytes.

A *layout* is how the files are arranged, detected from the listing (structure, not file
names alone)::

    ILSVRC-2012   <root>/train/<wnid>/*.JPEG
                  <root>/val/<wnid>/*.JPEG            (val in class folders), or
                  <root>/val/*.JPEG + a label file     (val flat, see below)
    Tiny ImageNet <root>/train/<wnid>/images/*.JPEG, <root>/wnids.txt, <root>/words.txt,
                  <root>/val/images/*.JPEG + <root>/val/val_annotations.txt (tab separated:
                  file, wnid, box)
    Imagenette    <root>/{train,val}/<wnid>/*.JPEG with exactly the 10 Imagenette classes
                  (any other set of classes in that layout is read as ILSVRC-style)

<root> may be empty or one or more folders deep (tiny-imagenet-200/, imagenette2-224/, ...).
Class folders must be named by WordNet ids (n + 8 digits).

Flat ILSVRC val label file: any .txt/.csv/.tsv file in <root>/ or <root>/val/ whose lines
read "FILENAME LABEL ..." with the fields separated by whitespace, a tab or a comma, where
FILENAME is the val image's name with or without its extension and LABEL is a wnid (as in
``LOC_val_solution.csv``: ``ILSVRC2012_val_00008726,n02119789 255 142 ...``; the first wnid
is taken) or an integer class index 0..999 of the standard ILSVRC-2012 order (Caffe's
``val.txt``). Lines that do not parse (a CSV header) are ignored; the file that labels the
most val images wins.

Skipped quietly: hidden files (.DS_Store, ._x.JPEG), Tiny ImageNet's *_boxes.txt. Reported
(``Source.problems``): other non-image files in image folders, class folders not named by a
wnid, val files without a label, label lines naming unknown classes or missing files.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tinyalex.data.errors import DataError
from tinyalex.data.subsets import IMAGENETTE_WNIDS, KIND_TITLES, imagenet_classes

WNID_RE = re.compile(r"^n\d{8}$")
IMAGE_EXTS = frozenset({".jpeg", ".jpg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff",
                        ".webp", ".ppm", ".pgm", ".pbm", ".pnm"})
LABEL_EXTS = frozenset({".txt", ".csv", ".tsv"})
KINDS = ("ilsvrc", "tiny-imagenet", "imagenette")

LAYOUTS_HELP = ("expected one of: ILSVRC-2012 (train/<wnid>/*.JPEG, val/<wnid>/ or flat val/ "
                "with a label file), Tiny ImageNet (wnids.txt, train/<wnid>/images/, "
                "val/images/ + val/val_annotations.txt), Imagenette (imagenette2*/{train,val}"
                "/<wnid>/*.JPEG), as a folder, .zip, .tar or .tgz")


def is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_EXTS


def _hidden(name: str) -> bool:
    return any(part.startswith(".") for part in PurePosixPath(name).parts)


def _normalise(name: str) -> str:
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


# --------------------------------------------------------------------------- containers

class Container:
    """Files of a folder or an archive: ``names()``, ``read(name)``, ``iter_read(names)``."""

    kind = "container"

    def __init__(self, path: Path):
        self.path = Path(path)

    def names(self) -> list[str]:
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def iter_read(self, names: Iterable[str]) -> Iterator[tuple[str, bytes | Exception]]:
        """Yield (name, bytes) for each wanted name, in the order cheapest for this container.

        A file that cannot be read yields (name, the exception) instead of raising.
        """
        for name in names:
            try:
                yield name, self.read(name)
            except Exception as err:  # noqa: BLE001 - reported per file
                yield name, err

    def fingerprint(self) -> dict:
        """What identifies this archive's content cheaply (for the cache key): its size and a
        hash of its first 64 KiB and last MiB. The tail holds checksums of everything
        before it (a zip's central directory lists every member's CRC-32; a gzip ends with
        the CRC-32 and length of the whole tar), so a copy, a move or a fresh download of
        the same file keeps the key, and any change to a member changes it. (Path and
        mtime did neither: a re-copied download prepared again and left the old cache.)"""
        size = self.path.stat().st_size
        digest = hashlib.sha256()
        with open(self.path, "rb") as f:
            digest.update(f.read(64 * 2**10))
            f.seek(max(0, size - 2**20))
            digest.update(f.read())
        return {"size": size, "head_tail_sha256": digest.hexdigest()}

    def close(self) -> None:
        pass


class FolderContainer(Container):
    kind = "folder"

    def names(self) -> list[str]:
        out = []
        for dirpath, dirnames, filenames in os.walk(self.path, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel = os.path.relpath(dirpath, self.path)
            prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            out.extend(prefix + f for f in filenames)
        return sorted(out)

    def read(self, name: str) -> bytes:
        return (self.path / name).read_bytes()

    def fingerprint(self) -> dict:
        fp = {"path": str(self.path.resolve())}
        for sub in ("", "train", "val"):  # folder mtimes change when entries come or go
            p = self.path / sub
            if p.is_dir():
                fp[f"mtime_ns:{sub}"] = p.stat().st_mtime_ns
        return fp


class ZipContainer(Container):
    kind = "zip"

    def __init__(self, path: Path):
        super().__init__(path)
        self._zip = zipfile.ZipFile(self.path)
        self._infos = {}
        for info in self._zip.infolist():
            if not info.is_dir():
                self._infos.setdefault(_normalise(info.filename), info)

    def names(self) -> list[str]:
        return sorted(self._infos)

    def read(self, name: str) -> bytes:
        return self._zip.read(self._infos[name])

    def iter_read(self, names):
        # in the order the members are stored: sequential reads of the archive
        order = sorted(names, key=lambda n: self._infos[n].header_offset if n in self._infos else -1)
        return super().iter_read(order)

    def close(self) -> None:
        self._zip.close()


class TarContainer(Container):
    """A tar, plain or compressed. Random access into a .tgz means decompressing from the start,
    so ``iter_read`` streams the archive once in its own order and picks the wanted members."""

    kind = "tar"

    def __init__(self, path: Path):
        super().__init__(path)
        self._names = None

    def fingerprint(self) -> dict:
        """As an archive's, plus the mtime for a plain tar: it ends in padding, with no
        checksum of what came before, so a same-size edit in its middle would not show."""
        fp = super().fingerprint()
        with open(self.path, "rb") as f:
            magic = f.read(6)
        if not magic.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ")):  # gzip, bzip2, xz
            fp["mtime_ns"] = self.path.stat().st_mtime_ns
        return fp

    def names(self) -> list[str]:
        if self._names is None:
            names = set()
            with tarfile.open(self.path, "r:*") as tf:
                for m in tf:
                    if m.isfile():
                        names.add(_normalise(m.name))
            self._names = sorted(names)
        return self._names

    def read(self, name: str) -> bytes:
        with tarfile.open(self.path, "r:*") as tf:
            for m in tf:
                if m.isfile() and _normalise(m.name) == name:
                    return tf.extractfile(m).read()
        raise FileNotFoundError(f"{name} not in {self.path}")

    def iter_read(self, names):
        wanted = set(names)
        try:
            with tarfile.open(self.path, "r|*") as tf:
                for m in tf:
                    if not wanted:
                        break
                    name = _normalise(m.name)
                    if m.isfile() and name in wanted:
                        wanted.discard(name)
                        try:
                            yield name, tf.extractfile(m).read()
                        except Exception as err:  # noqa: BLE001
                            yield name, err
        except (tarfile.TarError, OSError, EOFError) as err:
            for name in sorted(wanted):
                yield name, OSError(f"archive ended early or is damaged: {err}")
            return
        for name in sorted(wanted):
            yield name, FileNotFoundError("not found in the archive")


def open_container(path) -> Container:
    """A folder, zip or tar by its content (magic bytes), not by its extension."""
    path = Path(path)
    if path.is_dir():
        return FolderContainer(path)
    if not path.exists():
        raise DataError(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is an empty file; {LAYOUTS_HELP}")
    if zipfile.is_zipfile(path):
        try:
            return ZipContainer(path)
        except zipfile.BadZipFile as err:
            raise DataError(f"{path} is a damaged zip archive ({err})") from None
    try:
        is_tar = tarfile.is_tarfile(path)
    except (OSError, EOFError):
        is_tar = False
    if is_tar:
        return TarContainer(path)
    raise DataError(f"{path} is not a folder, .zip or .tar archive; {LAYOUTS_HELP}")


def looks_like_archive(path: Path) -> bool:
    """Cheap check (magic bytes) used when scanning a data folder."""
    try:
        if path.stat().st_size == 0:
            return False
        if zipfile.is_zipfile(path):
            return True
        with open(path, "rb") as fh:
            head = fh.read(265)
        if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00":
            return True
        return head[257:262] == b"ustar"
    except OSError:
        return False


# --------------------------------------------------------------------------- layouts

@dataclass
class Source:
    """A detected dataset: per split a list of (name in container, wnid), sorted."""

    kind: str                  # "ilsvrc" | "tiny-imagenet" | "imagenette"
    path: Path                 # the folder or archive
    root: str                  # prefix of the dataset inside it ("" or "tiny-imagenet-200/")
    container: Container
    splits: dict[str, list[tuple[str, str]]]
    problems: list[tuple[str, str]] = field(default_factory=list)  # (file, why skipped)
    label_file: str | None = None
    words: dict[str, str] = field(default_factory=dict)  # wnid -> names from the dataset
    train_class_folders: list[str] = field(default_factory=list)  # incl. empty ones

    @property
    def title(self) -> str:
        return KIND_TITLES[self.kind]

    @property
    def classes(self) -> list[str]:
        """Every class with at least one training file, sorted (empty folders are reported)."""
        return sorted({w for _, w in self.splits["train"]})

    def items(self, split: str) -> list[tuple[str, str]]:
        return self.splits[split]

    def read(self, name: str) -> bytes:
        return self.container.read(name)

    def iter_read(self, names):
        return self.container.iter_read(names)

    def class_name(self, wnid: str) -> str:
        info = imagenet_classes().get(wnid)
        if info:
            return info[1]
        return self.words.get(wnid, wnid).split(",")[0].strip() or wnid

    def describe(self) -> str:
        counts = {s: len(v) for s, v in self.splits.items()}
        return (f"{self.title} at {self.path}{' (' + self.root.rstrip('/') + '/)' if self.root else ''}: "
                f"{len(self.classes)} classes, {counts['train']} train / {counts['val']} val files")

    def close(self) -> None:
        self.container.close()


def _candidate_roots(names: list[str]) -> Counter:
    """Count image files under every '<root>train/<class>/...' in the listing."""
    roots = Counter()
    for n in names:
        parts = n.split("/")
        for i, p in enumerate(parts[:-2]):
            if p == "train":
                roots["/".join(parts[:i]) + ("/" if i else "")] += 1
                break
    return roots


def detect(container: Container, names: list[str] | None = None) -> Source:
    """Detect the layout of a container's listing; DataError when none fits."""
    names = container.names() if names is None else names
    roots = _candidate_roots([n for n in names if not _hidden(n)])
    if not roots:
        if sum(1 for n in names if re.search(r"(^|/)n\d{8}\.tar$", n)) >= 2:
            raise DataError(f"{container.path} looks like the official ILSVRC2012_img_train.tar "
                            "(one tar per class): extract each <wnid>.tar into train/<wnid>/ "
                            "first, then pass the folder")
        raise DataError(f"{container.path}: no train/ folder found; {LAYOUTS_HELP}")
    # the deepest-populated root wins; ties by shortest prefix (deterministic)
    root = sorted(roots.items(), key=lambda kv: (-kv[1], len(kv[0]), kv[0]))[0][0]
    inside = [n[len(root):] for n in names if n.startswith(root) and not _hidden(n)]
    tiny_imgs = sum(1 for n in inside if re.match(r"^train/[^/]+/images/[^/]+$", n))
    flat_imgs = sum(1 for n in inside if re.match(r"^train/[^/]+/[^/]+$", n) and is_image_name(n))
    if tiny_imgs > flat_imgs:
        return _read_tiny(container, root, inside)
    if flat_imgs == 0:
        raise DataError(f"{container.path}: train/ holds no class folders of images; {LAYOUTS_HELP}")
    return _read_folders(container, root, inside, names)


def _class_files(container, root, inside, split, problems, inner=""):
    """(name, wnid) for files at <split>/<wnid>/<inner><file>; the class folders seen."""
    items, folders = [], set()
    pat = re.compile(rf"^{split}/([^/]+)/{re.escape(inner)}([^/]+)$")
    for n in inside:
        m = pat.match(n)
        if not m:
            continue
        wnid, fname = m.groups()
        full = root + n
        if not WNID_RE.match(wnid):
            problems.append((full, f"class folder {wnid!r} is not a WordNet id (n + 8 digits)"))
            continue
        folders.add(wnid)
        if inner == "images/" or is_image_name(fname):
            items.append((full, wnid))
        elif not fname.endswith("_boxes.txt"):
            problems.append((full, "not an image file (extension)"))
    # class folders that exist but hold no files at all appear in folder listings only as dirs
    return sorted(items, key=lambda t: (t[1], t[0])), folders


def _empty_dirs(container, root, split, items, problems) -> set[str]:
    """Class folders of a split with no file at all (seen only in folder containers)."""
    have = {w for _, w in items}
    empty = set()
    if isinstance(container, FolderContainer):
        base = container.path / root / split
        if base.is_dir():
            empty = {d.name for d in base.iterdir()
                     if d.is_dir() and WNID_RE.match(d.name) and d.name not in have}
    for wnid in sorted(empty):
        problems.append((f"{root}{split}/{wnid}/", "empty class folder"))
    return empty


def _read_tiny(container, root, inside) -> Source:
    problems: list[tuple[str, str]] = []
    train, folders = _class_files(container, root, inside, "train", problems, inner="images/")
    folders |= _empty_dirs(container, root, "train", train, problems)
    words = {}
    if "words.txt" in inside:
        try:
            for line in container.read(root + "words.txt").decode("utf-8", "replace").splitlines():
                w, _, names_ = line.partition("\t")
                words[w.strip()] = names_.strip()
        except Exception as err:  # noqa: BLE001
            problems.append((root + "words.txt", f"unreadable: {err}"))
    val_files = {n[len("val/images/"):]: root + n for n in inside
                 if n.startswith("val/images/") and "/" not in n[len("val/images/"):]}
    val, label_file = [], None
    ann = "val/val_annotations.txt"
    if ann in inside:
        label_file = root + ann
        val = _apply_labels(container, label_file, val_files, problems)
    elif val_files:
        problems.append((root + "val/", f"{len(val_files)} val images but no val_annotations.txt"))
    return Source("tiny-imagenet", container.path, root, container,
                  {"train": train, "val": val}, problems, label_file, words,
                  train_class_folders=sorted(folders))


def _read_folders(container, root, inside, names) -> Source:
    problems: list[tuple[str, str]] = []
    train, folders = _class_files(container, root, inside, "train", problems)
    folders |= _empty_dirs(container, root, "train", train, problems)
    val, _ = _class_files(container, root, inside, "val", problems)
    _empty_dirs(container, root, "val", val, problems)
    label_file = None
    flat = {n[len("val/"):]: root + n for n in inside
            if n.startswith("val/") and n.count("/") == 1 and is_image_name(n)}
    if flat:
        labels = [n for n in inside if PurePosixPath(n).suffix.lower() in LABEL_EXTS
                  and (n.count("/") == 0 or (n.startswith("val/") and n.count("/") == 1))]
        best, best_items, best_problems = None, [], []
        for lf in sorted(labels):
            p: list[tuple[str, str]] = []
            try:
                got = _apply_labels(container, root + lf, flat, p)
            except Exception:  # noqa: BLE001 - not a label file
                continue
            if len(got) > len(best_items):
                best, best_items, best_problems = root + lf, got, p
        if best is None:
            problems.append((root + "val/", f"{len(flat)} val images directly in val/ but no label "
                             "file (FILENAME WNID lines, or LOC_val_solution.csv) was found"))
        else:
            label_file = best
            val = sorted(val + best_items, key=lambda t: (t[1], t[0]))
            problems.extend(best_problems)
    classes = sorted(folders)
    kind = "imagenette" if set(classes) == set(IMAGENETTE_WNIDS) else "ilsvrc"
    return Source(kind, container.path, root, container, {"train": train, "val": val},
                  problems, label_file, train_class_folders=classes)


def parse_label_lines(text: str) -> list[tuple[str, str]]:
    """(file stem or name, wnid) from 'FILE WNID ...', 'FILE,WNID ...' or 'FILE<TAB>WNID' lines.

    An integer label is mapped through the standard ILSVRC-2012 class order (0 = n01440764).
    Lines that do not parse (headers, blanks) are dropped.
    """
    by_index = {i: w for w, (i, _) in imagenet_classes().items()}
    out = []
    for line in text.splitlines():
        tokens = [t for t in re.split(r"[\s,]+", line.strip()) if t]
        if len(tokens) < 2:
            continue
        fname, label = tokens[0], tokens[1]
        if label.isdigit() and int(label) in by_index:
            label = by_index[int(label)]
        elif not re.match(r"^n\d+$", label):
            continue
        out.append((PurePosixPath(fname).name, label))
    return out


def _apply_labels(container, label_file, files: dict[str, str], problems) -> list:
    """Label the flat val files from a label file; unknown names/classes are reported."""
    text = container.read(label_file).decode("utf-8", "replace")
    pairs = parse_label_lines(text)
    if not pairs:
        raise ValueError("no label lines")
    by_stem = {}
    for fname, full in files.items():
        by_stem.setdefault(PurePosixPath(fname).stem, full)
    items, labelled = [], set()
    for fname, wnid in pairs:
        full = files.get(fname) or by_stem.get(PurePosixPath(fname).stem)
        if full is None:
            problems.append((f"{label_file}: {fname}", "label for a file that is not there"))
            continue
        if full in labelled:
            continue
        labelled.add(full)
        if not WNID_RE.match(wnid):
            problems.append((full, f"label {wnid!r} is not a WordNet id"))
            continue
        items.append((full, wnid))
    for full in sorted(set(files.values()) - labelled):
        problems.append((full, "val image without a label"))
    if not items:
        raise ValueError("labels no file")
    return sorted(items, key=lambda t: (t[1], t[0]))


def open_source(path) -> Source:
    """Open a folder or archive and detect its layout (DataError if it is not one of the three)."""
    container = open_container(path)
    try:
        return detect(container)
    except DataError:
        container.close()
        raise
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as err:
        container.close()
        raise DataError(f"{path}: cannot read the archive ({err})") from None


def read_image_bytes(source: Source, name: str) -> io.BytesIO:
    """One item's bytes as a file object (for Pillow)."""
    return io.BytesIO(source.read(name))
