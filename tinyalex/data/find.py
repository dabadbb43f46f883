"""Find the data to train on: what the training loop calls.

``resolve_dataset()`` looks at, in order: the ``data`` argument (``--data``), the environment
variable ``TINYALEX_DATA``, then the default places (``default_places``): ``./data/`` in the
current directory, the repository's ``data/`` (beside the ``tinyalex/`` package of a source
checkout, so a notebook kernel in ``notebooks/`` finds it too), and ``$TINYALEX_REAL_DATA``
(the folder of real data the tests use). The first of them that holds a dataset wins. The
path may be

- a prepared folder (from ``python -m tinyalex.data prepare``): opened as it is;
- a dataset folder or archive in one of the three layouts (see ``readers``): prepared once
  into the cache (or the complete cached copy is reused);
- a folder holding datasets (``./data/tiny-imagenet-200.zip``, ...): the one found is used;
  with several, the first by name is used and the others named in the log.

When nothing is found under the default places and ``allow_synthetic`` is true, a banner on
the log says so and the built-in SYNTHETIC 100-class set is built (or reused) in the cache.
An explicit path that does not exist or holds no recognised layout is a DataError.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from tinyalex import flags
from tinyalex.data.cache import Prepared, is_prepared, open_prepared
from tinyalex.data.errors import DataError
from tinyalex.data.prepare import cache_root, plan, prepare
from tinyalex.data.readers import LAYOUTS_HELP, Source, looks_like_archive, open_source
from tinyalex.data.subsets import resolve_subset

__all__ = ["DataError", "DATA_ENV", "Found", "locate", "resolve_dataset", "inspect",
           "synthetic_dataset", "add_data_arguments", "resolve_from_args"]

DATA_ENV = "TINYALEX_DATA"
REAL_DATA_ENV = "TINYALEX_REAL_DATA"
DEFAULT_DIR = "data"
#: The repository's data/ folder, where the README says to put datasets (a source checkout).
REPO_DATA = Path(__file__).resolve().parents[2] / DEFAULT_DIR
#: Names that tell one kind of dataset from another in a folder holding several.
KIND_PATTERNS = {"tiny": ("tiny-imagenet-*.zip", "tiny-imagenet-*"),
                 "imagenette": ("imagenette2*.tgz", "imagenette2*"),
                 "samples": ("imagenet-samples-*",),
                 # trained ImageNet weights (docs/weights.md): imported, or as downloaded
                 "weights": ("alexnet-owt*.npz", "bvlc_alexnet*.npz", "alexnet-owt*.pth",
                             "bvlc_alexnet*.caffemodel")}
SYNTHETIC_SIZE = 64


@dataclass
class Found:
    """The outcome of looking for data."""

    what: str                        # "prepared" | "source" | "none"
    path: Path | None = None
    source: Source | None = None
    looked_at: list[str] = field(default_factory=list)
    others: list[Path] = field(default_factory=list)  # further candidates not used


def _looks_like_dataset_dir(d: Path) -> bool:
    """Shallow check: a train/ folder here or one level down, or a Tiny ImageNet wnids.txt."""
    try:
        if (d / "train").is_dir() or (d / "wnids.txt").is_file():
            return True
        return any((c / "train").is_dir() for c in d.iterdir() if c.is_dir())
    except OSError:
        return False


def _candidates(folder: Path) -> list[Path]:
    out = []
    for child in sorted(folder.iterdir(), key=lambda p: p.name):
        if child.name.startswith("."):
            continue
        if child.is_dir() and (is_prepared(child) or _looks_like_dataset_dir(child)):
            out.append(child)
        elif child.is_file() and looks_like_archive(child):
            out.append(child)
    return out


def _open(path: Path) -> Found:
    if path.is_dir() and is_prepared(path):
        return Found("prepared", path)
    return Found("source", path, open_source(path))


def default_places() -> list[tuple[Path, str]]:
    """(folder, why) where tinyalex looks when neither --data nor $TINYALEX_DATA is given, in
    order: ./data, the repository's data/, $TINYALEX_REAL_DATA (each once)."""
    places = [(Path.cwd() / DEFAULT_DIR, "./data"), (REPO_DATA, "the repository's data/")]
    if real := flags.value(REAL_DATA_ENV):
        places.append((Path(real).expanduser(), f"${REAL_DATA_ENV}"))
    seen, out = set(), []
    for path, how in places:
        key = path.resolve() if path.exists() else path
        if key not in seen:
            seen.add(key)
            out.append((path, how))
    return out


def find_kind(kind: str, log=print) -> Path | None:
    """The first dataset of one kind ("tiny", "imagenette", "samples" or "weights": trained
    ImageNet weights, by name: KIND_PATTERNS) in $TINYALEX_DATA (a folder) or the default places, or None."""
    places = default_places()
    if env := flags.value(DATA_ENV):
        places.insert(0, (Path(env).expanduser(), f"${DATA_ENV}"))
    for folder, how in places:
        if not folder.is_dir():
            continue
        for pattern in KIND_PATTERNS[kind]:
            hits = sorted(folder.glob(pattern))
            if hits:
                log(f"{kind} data: {hits[0]} (from {how})")
                return hits[0]
    log(f"no {kind} data in " + ", ".join(f"{f} ({how})" for f, how in places))
    return None


def locate(data=None, log=print) -> Found:
    """Where the data is (no preparing). DataError for an explicit path that is no dataset."""
    if data is not None and str(data) != "":
        return _locate_in(Path(data).expanduser(), "--data", True, log)
    if env := flags.value(DATA_ENV):
        return _locate_in(Path(env).expanduser(), f"${DATA_ENV}", True, log)
    looked = []
    for path, how in default_places():
        found = _locate_in(path, how, False, log)
        looked += found.looked_at
        if found.what != "none":
            found.looked_at = looked
            return found
    return Found("none", looked_at=looked)


def _locate_in(path: Path, how: str, explicit: bool, log) -> Found:
    looked = [f"{path} ({how})"]
    if not path.exists():
        if explicit:
            raise DataError(f"{how} {path} does not exist; {LAYOUTS_HELP}")
        return Found("none", looked_at=looked)
    if path.is_file() or is_prepared(path) or (path / "train").is_dir() \
            or (path / "wnids.txt").is_file():
        found = _open(path)
        found.looked_at = looked
        return found
    candidates = _candidates(path)
    if not candidates:
        if explicit:
            raise DataError(f"{how} {path} holds no recognised dataset; {LAYOUTS_HELP}")
        return Found("none", looked_at=looked)
    failures = []
    for i, cand in enumerate(candidates):
        try:
            found = _open(cand)
        except DataError as err:
            failures.append(str(err))
            log(f"not a usable dataset: {err}")
            continue
        found.looked_at = looked
        found.others = candidates[i + 1:]
        if len(candidates) > 1:
            log(f"found {len(candidates)} datasets in {path}: "
                + ", ".join(c.name for c in candidates)
                + f"; using {cand.name} (the first by name; pass --data PATH to choose)")
        return found
    raise DataError(f"nothing usable in {path}: " + " | ".join(failures))


def banner(looked_at: list[str], uses: str = "This run uses") -> str:
    line = "=" * 78
    return "\n".join([
        line,
        "  NO DATASET FOUND. Looked at: " + "; ".join(looked_at),
        f"  (and ${DATA_ENV} is {'set' if flags.value(DATA_ENV) else 'not set'}).",
        f"  {uses} the built-in SYNTHETIC 100-class dataset: it exercises the code,",
        "  but its accuracy says NOTHING about real images.",
        "  To train on real photographs, get one of:",
        "    Tiny ImageNet  tiny-imagenet-200.zip (cs231n.stanford.edu), 64x64, 200 classes",
        "    Imagenette     imagenette2-320.tgz (github.com/fastai/imagenette), 10 classes",
        "    ILSVRC-2012    train/<wnid>/*.JPEG + val (image-net.org, registration)",
        "  e.g. python -m tinyalex.data download tiny-imagenet, then put the archive in",
        "  ./data/ or pass --data PATH (or set TINYALEX_DATA=PATH).",
        line,
    ])


def synthetic_dataset(size: int | None = None, cache=None, max_per_class: int | None = None,
                      log=print) -> Prepared:
    """Build (once) or reuse the synthetic 100-class set in the cache."""
    from tinyalex.data import synthetic

    size = size or SYNTHETIC_SIZE
    kwargs = {}
    if max_per_class:
        kwargs = {"train_per_class": max_per_class, "val_per_class": max_per_class}
    key = {"size": size, "seed": 0, "num_classes": 100, **kwargs,
           "version": getattr(synthetic, "VERSION", getattr(synthetic, "__version__", None))}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    tag = "100class" + (f"-max{max_per_class}" if max_per_class else "")
    folder = cache_root(cache) / f"synthetic-{tag}-{size}px-{digest}"
    if is_prepared(folder):
        log(f"reusing synthetic dataset {folder}")
    else:
        log(f"building the synthetic dataset in {folder}")
        synthetic.build_synthetic(folder, num_classes=100, size=size, seed=0, **kwargs)
    return open_prepared(folder)


def _describe_prepared(p: Prepared) -> str:
    m = p.meta
    return (f"prepared dataset {p.path}: kind {m.get('kind', '?')}, {p.num_classes} classes, "
            f"{len(p.train_labels)} train / {len(p.val_labels)} val, {p.image_size}px "
            f"(source {m.get('source', '?')})")


def resolve_dataset(data=None, subset: str = "100-class", size: int | None = None, cache=None,
                    max_per_class: int | None = None, allow_synthetic: bool = True, log=print,
                    progress: bool = True, workers: int | None = None) -> Prepared:
    """The prepared dataset to train on: found, prepared once (or reused) and opened.

    Logs what it found and what it uses (path, kind, classes, counts, cache folder).
    """
    found = _fitting(locate(data, log), subset, log)
    if found.what == "prepared":
        prepared = open_prepared(found.path)
        log("using " + _describe_prepared(prepared))
        return prepared
    if found.what == "source":
        src = found.source
        log(f"found {src.describe()}")
        try:
            prepared = prepare(src, subset=subset, size=size, cache=cache,
                               max_per_class=max_per_class, log=log, progress=progress,
                               workers=workers)
        finally:
            src.close()
        log("using " + _describe_prepared(prepared))
        return prepared
    if not allow_synthetic:
        raise DataError("no dataset found (looked at " + "; ".join(found.looked_at)
                        + f"); pass --data PATH or set {DATA_ENV}")
    log(banner(found.looked_at))
    prepared = synthetic_dataset(size=size, cache=cache, max_per_class=max_per_class, log=log)
    log("using " + _describe_prepared(prepared))
    return prepared


def _fits(src: Source, subset: str) -> str | None:
    """None if ``subset`` can be taken from the source, else why not."""
    try:
        resolve_subset(src.kind, src.classes, subset, src.words, src.title)
    except DataError as err:
        return str(err)
    return None


def _fitting(found: Found, subset: str, log) -> Found:
    """The first of a folder's datasets that has ``subset``: a folder holding Imagenette
    and Tiny ImageNet gives Tiny ImageNet for "100-class", not an error about Imagenette's
    10 classes. With one candidate, or none that fits, ``found`` as it is (its error comes
    when it is prepared)."""
    if found.what != "source" or not found.others:
        return found
    if _fits(found.source, subset) is None:
        return found
    for other in found.others:
        try:
            candidate = _open(other)
        except DataError:
            continue
        if candidate.what == "source" and _fits(candidate.source, subset) is None:
            log(f"{found.path.name} has no '{subset}' subset (it has "
                f"{len(found.source.classes)} classes); using {other.name}")
            found.source.close()
            candidate.looked_at = found.looked_at
            return candidate
        if candidate.source is not None:
            candidate.source.close()
    return found


def inspect(data=None, subset: str = "100-class", size: int | None = None, cache=None,
            max_per_class: int | None = None, log=print) -> dict:
    """Say what would be used, without preparing anything. Returns the facts as a dict."""
    found = locate(data, log)
    info: dict = {"what": found.what, "looked_at": found.looked_at,
                  "path": str(found.path) if found.path else None}
    if found.what == "none":
        log(banner(found.looked_at, uses="A run would use"))
        return info
    if found.what == "prepared":
        p = open_prepared(found.path)
        log(_describe_prepared(p))
        info.update(kind=p.meta.get("kind"), classes=p.num_classes, train=len(p.train_labels),
                    val=len(p.val_labels), size=p.image_size)
        return info
    src = found.source
    try:
        info.update(kind=src.kind, root=src.root, classes=len(src.classes),
                    train=len(src.items("train")), val=len(src.items("val")),
                    label_file=src.label_file, problems=len(src.problems))
        log(src.describe())
        log(f"  classes: {', '.join(src.classes[:5])}{', ...' if len(src.classes) > 5 else ''}")
        if src.label_file:
            log(f"  val labels from {src.label_file}")
        if src.problems:
            log(f"  {len(src.problems)} file(s) would be skipped, e.g. "
                + "; ".join(f"{n} ({w})" for n, w in src.problems[:3]))
        try:
            pl = plan(src, subset, size, cache, max_per_class)
        except DataError as err:
            info["subset_error"] = str(err)
            log(f"  subset {subset}: NOT AVAILABLE: {err}")
            return info
        info.update(subset_classes=len(pl.wnids), cache_folder=str(pl.folder),
                    prepared=is_prepared(pl.folder), size=pl.size,
                    subset_train=len(pl.splits["train"]), subset_val=len(pl.splits["val"]))
        log(f"  subset {subset}: {len(pl.wnids)} classes, {info['subset_train']} train / "
            f"{info['subset_val']} val files at {pl.size}px")
        log(f"  cache folder {pl.folder} ({'prepared' if info['prepared'] else 'not prepared yet'})")
        return info
    finally:
        src.close()


SUBSET_HELP = ("100-class (ImageNet-100 on ILSVRC, Tiny-100 on Tiny ImageNet), all, or a file "
               "with one wnid a line (default: 100-class)")


def add_data_arguments(parser) -> None:
    """The data flags every CLI shares: --data --subset --size --cache --max-per-class."""
    parser.add_argument("--data", metavar="PATH", default=None,
                        help="dataset folder or archive, a folder holding one, or a prepared "
                             "folder (default: $TINYALEX_DATA, else ./data; synthetic if none)")
    parser.add_argument("--subset", default="100-class", metavar="100-class|all|FILE",
                        help=SUBSET_HELP)
    parser.add_argument("--size", type=int, default=None, metavar="S",
                        help="short side and crop size in pixels (default 256; 64 for Tiny "
                             "ImageNet and the synthetic set)")
    parser.add_argument("--cache", metavar="DIR", default=None,
                        help="cache root (default: $TINYALEX_CACHE, else ~/.cache/tinyalex)")
    parser.add_argument("--max-per-class", type=int, default=None, metavar="N",
                        help="keep only the first N files per class and split (quick runs)")


def resolve_from_args(args, log=print, allow_synthetic: bool = True, **kwargs) -> Prepared:
    """resolve_dataset() from the flags of add_data_arguments()."""
    return resolve_dataset(args.data, subset=args.subset, size=args.size, cache=args.cache,
                           max_per_class=args.max_per_class, allow_synthetic=allow_synthetic,
                           log=log, **kwargs)
