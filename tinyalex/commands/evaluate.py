"""``python -m tinyalex.evaluate CKPT``: top-1 / top-5 error of a checkpoint (§2, §4.1).

top-k error = the fraction of images whose true label is not among the k classes the net
finds most probable (§2). The centre crop is always measured; with ``--ten-crop`` also the
paper's test-time average over ten patches (four corners and the centre, and their mirror
images): the ten softmax outputs are averaged before ranking (§4.1).

The images are preprocessed exactly as in training: the checkpoint's own mean image (of
its training set) is subtracted and the crop is the checkpoint's crop size. The data is
the prepared folder recorded in the checkpoint when it still exists, else what ``--data``
(or $TINYALEX_DATA, or ./data/) resolves to; its classes must be the checkpoint's classes,
in the same order.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np

from .. import checkpoint as ckpt_mod
from .. import pretrained
from ..data.cache import Prepared, is_prepared, open_prepared
from ..loop import evaluate
from . import cli


# --------------------------------------------------------------------------- loading
def load_checkpoint(path) -> ckpt_mod.Checkpoint:
    """checkpoint.load and check_training with their errors turned into one-line
    UserErrors: no file, not a checkpoint, damaged, or missing what a trained net needs."""
    if isinstance(path, ckpt_mod.Checkpoint):
        return path
    try:
        return ckpt_mod.check_training(ckpt_mod.load(path))
    except (FileNotFoundError, ValueError) as err:
        raise cli.UserError(str(err)) from None
    except Exception as err:  # noqa: BLE001 - anything else a broken file may raise
        raise cli.UserError(f"{path} is not a tinyalex checkpoint "
                            f"({type(err).__name__}: {err})") from None


def load_net(ckpt: ckpt_mod.Checkpoint):
    """The checkpoint's net with its weights (UserError when they do not fit)."""
    try:
        return ckpt_mod.build_net(ckpt)
    except (KeyError, ValueError, TypeError) as err:
        raise cli.UserError(str(err) if isinstance(err, ckpt_mod.CheckpointError)
                            else f"{ckpt.path}: cannot rebuild the net ({err})") from None


def image_size(ckpt: ckpt_mod.Checkpoint) -> int:
    """S, the side of the prepared images the checkpoint was trained on."""
    size = ckpt.meta.get("data", {}).get("size")
    return int(size) if size else int(ckpt.data["mean"].shape[0])


def check_classes(prepared: Prepared, ckpt: ckpt_mod.Checkpoint) -> None:
    """UserError unless the dataset's classes are the checkpoint's, in the same order."""
    have, want = prepared.classes, list(ckpt.meta["classes"])
    if have == want:
        return
    where = f"the dataset at {prepared.path}"
    if sorted(have) == sorted(want):
        raise cli.UserError(f"{where} has the checkpoint's {len(want)} classes in another "
                            "order; pass --data the prepared folder of the training run")
    extra, missing = sorted(set(have) - set(want)), sorted(set(want) - set(have))

    def few(xs):
        return ", ".join(xs[:3]) + (", ..." if len(xs) > 3 else "")

    raise cli.UserError(
        f"{where} has {len(have)} classes, the checkpoint {len(want)}"
        + (f"; not in the checkpoint: {few(extra)}" if extra else "")
        + (f"; missing from the data: {few(missing)}" if missing else "")
        + "; pass --data the dataset the checkpoint was trained on")


def dataset_for_checkpoint(ckpt: ckpt_mod.Checkpoint, data=None, subset: str | None = None,
                           log=print) -> Prepared:
    """The prepared dataset to evaluate a checkpoint on, its classes checked.

    ``data`` given: resolve it (a prepared folder, a dataset folder or archive, prepared
    once at the checkpoint's image size). Otherwise the prepared folder recorded in the
    checkpoint (meta["data"]["path"]) if it still exists, else the usual search
    ($TINYALEX_DATA, ./data/); the synthetic set is built only for a synthetic checkpoint.
    """
    from ..data.find import resolve_dataset

    info = ckpt.meta.get("data", {})
    recorded = info.get("path")
    if data is None and recorded and is_prepared(recorded):
        prepared = open_prepared(recorded)
        log(f"using the checkpoint's prepared dataset {recorded}")
    else:
        if data is None and recorded:
            log(f"the checkpoint's prepared dataset {recorded} is gone; looking for the data")
        try:
            prepared = resolve_dataset(data=data, subset=subset or info.get("subset") or "100-class",
                                       size=image_size(ckpt),
                                       allow_synthetic=info.get("kind") == "synthetic", log=log)
        except FileNotFoundError as err:
            raise cli.UserError(str(err)) from None
    check_classes(prepared, ckpt)
    if prepared.image_size != image_size(ckpt):
        raise cli.UserError(f"the dataset at {prepared.path} holds {prepared.image_size}-px images, "
                            f"the checkpoint was trained on {image_size(ckpt)} px")
    return prepared


def subsample(prepared: Prepared, split: str, max_images: int | None) -> Prepared:
    """The same dataset with at most max_images images of ``split``, evenly spaced (so every
    class keeps its share when the split is stored class by class)."""
    images, labels = getattr(prepared, f"{split}_images"), getattr(prepared, f"{split}_labels")
    n = len(labels)
    if max_images is None or max_images >= n:
        return prepared
    idx = np.unique(np.linspace(0, n - 1, max_images).round().astype(np.int64))
    return replace(prepared, **{f"{split}_images": np.asarray(images[idx]),
                                f"{split}_labels": np.asarray(labels[idx])})


# --------------------------------------------------------------------------- evaluation
def evaluate_checkpoint(ckpt_path, data=None, ten_crop: bool = False, batch_size: int = 128,
                        split: str = "val", max_images: int | None = None,
                        subset: str | None = None, progress: bool = True,
                        log=print, device: str = "cpu") -> dict:
    """Top-1/top-5 error and mean loss of a checkpoint on a dataset split.

    ckpt_path: a checkpoint file (or a loaded ``Checkpoint``). data: as ``--data``.
    device: "cpu", or "gpu" (the net's forward passes on CuPy; cli.require_gpu's checks).
    Returns {"checkpoint", "data", "split", "n", "centre": {"top1_err", "top5_err", "loss",
    "n"}} plus "ten_crop": {...} (the same keys) when ten_crop is true.
    Raises cli.UserError for a missing/corrupt checkpoint or a dataset that does not fit.
    """
    from ..data.loader import eval_loader

    if device not in ("cpu", "gpu"):
        raise cli.UserError(f"--device must be cpu or gpu, not {device!r}")
    if split not in ("val", "train"):
        raise cli.UserError(f"--split must be val or train, not {split!r}")
    if batch_size < 1:
        raise cli.UserError("--batch-size must be at least 1")
    if max_images is not None and max_images < 1:
        raise cli.UserError("--max-images must be at least 1")
    ckpt = load_checkpoint(ckpt_path)
    prepared = dataset_for_checkpoint(ckpt, data, subset, log=log)
    prepared = subsample(prepared, split, max_images)
    n = len(getattr(prepared, f"{split}_labels"))
    if n == 0:
        raise cli.UserError(f"the dataset at {prepared.path} has no {split} images")
    net = load_net(ckpt)
    if device == "gpu":   # the batches follow the weights there (Sequential.forward)
        net.to(cli.require_gpu())
    aug = pretrained.augmenter(ckpt)
    result = {"checkpoint": str(ckpt.path), "data": str(prepared.path), "split": split, "n": n}
    modes = [("centre", False)] + ([("ten_crop", True)] if ten_crop else [])
    for key, ten in modes:
        loader = eval_loader(prepared, aug, batch_size=batch_size, split=split, ten_crop=ten)
        bar = cli.progress_bar(n, "ten crops" if ten else "centre crop", "img", progress)
        try:
            result[key] = evaluate(net, loader, ten_crop=ten, progress=bar.update)
        finally:
            bar.close()
    return result


def format_table(result: dict) -> str:
    """The errors as a small table (percentages) with the mean loss."""
    lines = [f"{'':<13}{'top-1 err':>10}{'top-5 err':>11}{'loss':>9}"]
    for key, label in (("centre", "centre crop"), ("ten_crop", "ten crops")):
        if key in result:
            r = result[key]
            lines.append(f"{label:<13}{100 * r['top1_err']:>9.2f}%{100 * r['top5_err']:>10.2f}%"
                         f"{r['loss']:>9.4f}")
    return "\n".join(lines)


def describe(ckpt: ckpt_mod.Checkpoint) -> str:
    m = ckpt.meta
    net = m.get("net", {})
    best = m.get("best_val_top1_err")
    return (f"checkpoint {ckpt.path}: {net.get('arch', '?')}, {len(m.get('classes', []))} classes, "
            f"epoch {m.get('epoch', '?')}, step {m.get('step', '?')}"
            + (f", best val top-1 err in training {100 * best:.2f}%"
               if isinstance(best, (int, float)) else ""))


def main(argv=None) -> int:
    p = cli.parser("python -m tinyalex.evaluate", __doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("checkpoint", help="a checkpoint .npz (e.g. runs/NAME/best.npz)")
    p.add_argument("--data", default=None,
                   help="dataset or prepared folder (default: the one recorded in the "
                        "checkpoint, else $TINYALEX_DATA or ./data/)")
    p.add_argument("--subset", default=None,
                   help="class subset when --data must be prepared (default: the checkpoint's)")
    p.add_argument("--ten-crop", action="store_true",
                   help="also report the ten-crop average of §4.1")
    p.add_argument("--batch-size", type=int, default=128, help="images per forward pass")
    p.add_argument("--split", choices=("val", "train"), default="val",
                   help="which part of the dataset to score")
    p.add_argument("--max-images", type=int, default=None,
                   help="evaluate at most N images, evenly spaced over the split")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                   help="gpu: the forward passes on CuPy (needs CuPy and an NVIDIA GPU)")
    args = p.parse_args(argv)
    if args.device == "gpu":
        cli.require_gpu()   # before any data is read
    ckpt = load_checkpoint(args.checkpoint)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731 - the table alone on stdout
    log(describe(ckpt))
    result = evaluate_checkpoint(ckpt, data=args.data, ten_crop=args.ten_crop,
                                 batch_size=args.batch_size, split=args.split,
                                 max_images=args.max_images, subset=args.subset, log=log,
                                 device=args.device)
    print(f"{result['split']}: {result['n']} images of {result['data']}")
    print(format_table(result))
    return 0


run_command = cli.command(main)  # python -m, and the script's entry


if __name__ == "__main__":
    raise SystemExit(run_command())
