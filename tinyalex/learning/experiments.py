"""``python -m tinyalex.experiments``: the paper's ablations reproduced in small, on real data.

    python -m tinyalex.experiments relu-tanh            # Figure 1 (§3.1)
    python -m tinyalex.experiments all --steps 600      # + LRN (§3.3), pooling (§3.4), PCA (§4.1)

Each experiment trains two variants of the same net that differ in one thing, from the same
initial weights where the shapes allow, on the same batches (same seed: same order, crops,
flips and colour draws), and reports their training-error curves and validation errors:

* ``relu-tanh`` (§3.1, Figure 1): every ReLU replaced by tanh. The paper's 4-layer CNN on
  CIFAR-10 reached 25% training error six times faster with ReLU; here: the number of
  steps until the running training error first drops to each of ``targets``.
* ``lrn`` (§3.3): without lrn1 and lrn2 (the paper: LRN cut top-1 error by 1.4%).
* ``pooling`` (§3.4): max pooling 2/2 instead of the overlapping 3/2 (the paper: 3/2 is
  0.4% better in top-1). The crop is chosen so both give the same map sizes, as in the
  paper (odd sides: 23 -> 11 -> 5 -> 2 for 46-px crops).
* ``pca`` (§4.1): no PCA colour augmentation (the paper: PCA colour cut top-1 by >1%).

The budgets here are minutes on a laptop CPU, not the paper's 90 epochs: the numbers say
what happens early in training on a few classes, and are reported as they come out, also
where they disagree with the paper. The data is a class subset of Tiny-100 (64 px) by
default: ``--data``, else the first Tiny ImageNet archive or folder in $TINYALEX_DATA, ./data,
the repository's data/ or $TINYALEX_REAL_DATA (tinyalex's one lookup, data/find.py); with
none, the synthetic set, said loudly.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..commands import cli
from ..data.augment import Augmenter
from ..data.cache import Prepared
from ..data.loader import BatchLoader
from ..layers import SoftmaxCrossEntropy
from ..loop import Diverged, evaluate, train_step
from ..metrics import topk_correct
from ..net import INITS, build
from ..optim import SGD

#: The net every experiment starts from: the paper's choices (§3.1, §3.3, §3.4, §4.1).
BASELINE = {"activation": "relu", "lrn": True, "pool": (3, 2), "pca_std": 0.1}

#: name -> (paper section, what it tests, [(variant label, changes to BASELINE), ...]).
EXPERIMENTS = {
    "relu-tanh": ("§3.1, Fig. 1", "ReLU vs tanh",
                  [("ReLU", {}), ("tanh", {"activation": "tanh"})]),
    "lrn": ("§3.3", "with / without local response normalization",
            [("with LRN", {}), ("without LRN", {"lrn": False})]),
    "pooling": ("§3.4", "overlapping vs non-overlapping max pooling",
                [("overlapping 3/2", {}), ("non-overlapping 2/2", {"pool": (2, 2)})]),
    "pca": ("§4.1", "with / without PCA colour augmentation",
            [("with PCA colour", {}), ("without PCA colour", {"pca_std": 0.0})]),
}

DEFAULTS = dict(arch="alexnet-mini", classes=10, per_class=None, steps=800, batch_size=64,
                crop=46, lr=0.01, momentum=0.9, weight_decay=5e-4, init="pytorch", seed=0,
                val_images=None, window=20, targets=(0.8, 0.7, 0.6, 0.5))


# ------------------------------------------------------------------------------ data

def find_data(kind: str = "tiny", log=print):
    """A dataset of one kind for the notebooks and experiments, or None: tinyalex's one
    lookup (``tinyalex.data.find.find_kind``: $TINYALEX_DATA, ./data, the repository's
    data/, $TINYALEX_REAL_DATA), by name: Tiny ImageNet (``kind="tiny"``), Imagenette
    (``"imagenette"``) or the full-size ImageNet samples (``"samples"``)."""
    from ..data.find import find_kind

    return find_kind(kind, log)


def load_dataset(data=None, kind: str = "tiny", max_per_class: int | None = None, log=print,
                 progress: bool = True):
    """The prepared dataset: ``data`` if given, else ``find_data(kind)``, else the
    synthetic set, with its banner.
    Prepared once into the cache (``~/.cache/tinyalex``) and reused; ``max_per_class``
    keeps the first N images per class and split (a smaller, faster cache entry)."""
    from ..data.find import resolve_dataset

    if data is None:
        data = find_data(kind, log)
    subset = "100-class" if kind == "tiny" else "all"
    return resolve_dataset(data, subset=subset, max_per_class=max_per_class, log=log,
                           progress=progress)


#: ``python -m tinyalex.train`` arguments of the notebooks' training run, per budget: CI's
#: is seconds (20 images per class, one epoch of alexnet-mini), "full" a learner's run
#: (all of Tiny-100, 10 epochs of alexnet-mini: an estimated 10-30 minutes on 2 cores).
TRAIN_BUDGETS = {
    "ci": ["--arch", "alexnet-mini", "--max-per-class", "20", "--epochs", "1",
           "--batch-size", "32", "--val-max-images", "200", "--log-every", "5",
           "--diagnostics-every", "10"],
    "full": ["--arch", "alexnet-mini", "--epochs", "10", "--batch-size", "128"],
}


def train_run(out, budget: str = "full", data=None, log=print) -> Path:
    """Train with ``python -m tinyalex.train`` at a notebook budget into the folder ``out``
    (emptied first) and return it; reuses ``out`` as it is if it already holds a finished
    run of that budget (``best.npz`` and the same arguments)."""
    import shutil

    from ..commands.train import main as train_main

    out = Path(out)
    if data is None:
        data = find_data("tiny", log)
    argv = (["--data", str(data)] if data is not None else []) + TRAIN_BUDGETS[budget] + [
        "--out", str(out)]
    stamp = out / "notebook-args.json"
    if (out / "best.npz").is_file() and stamp.is_file() and json.loads(stamp.read_text()) == argv:
        log(f"reusing the finished run in {out}")
        return out
    if out.exists():
        shutil.rmtree(out)
    log("python -m tinyalex.train " + " ".join(argv))
    code = train_main(argv)
    if code != 0:
        raise RuntimeError(f"training stopped with exit status {code}")
    stamp.write_text(json.dumps(argv))
    return out


def class_subset(prepared, classes: int | None = 10, per_class: int | None = None,
                 val_per_class: int | None = None) -> Prepared:
    """Classes 0..classes-1 of a Prepared set (all if None), at most ``per_class`` training
    and ``val_per_class`` validation images each (the first ones), loaded into memory, as
    a Prepared with no folder (``path`` None). The mean image and PCA are the full set's
    (the training statistics of §2, §4.1)."""
    n = prepared.num_classes if classes is None else int(classes)
    if not 1 <= n <= prepared.num_classes:
        raise cli.UserError(f"--classes must be 1..{prepared.num_classes}, not {classes}")

    def pick(labels, limit):
        labels = np.asarray(labels)
        keep = np.flatnonzero(labels < n)
        if limit is not None:
            keep = np.concatenate([keep[labels[keep] == c][:limit] for c in range(n)])
            keep.sort()
        return keep

    tr = pick(prepared.train_labels, per_class)
    va = pick(prepared.val_labels, val_per_class)
    meta = {**prepared.meta, "classes": prepared.classes[:n], "names": prepared.names[:n]}
    return Prepared(None, np.asarray(prepared.train_images[tr]),
                    np.asarray(prepared.train_labels)[tr].astype(np.int32),
                    np.asarray(prepared.val_images[va]),
                    np.asarray(prepared.val_labels)[va].astype(np.int32),
                    np.asarray(prepared.mean), np.asarray(prepared.pca_eigvals),
                    np.asarray(prepared.pca_eigvecs), meta)


# ------------------------------------------------------------------------------ training

def steps_to_error(errors, target: float, window: int = 20) -> int | None:
    """The first step (1-based) at which the mean training error of the last ``window``
    steps is at most ``target``; None if it never is."""
    e = np.asarray(errors, np.float64)
    if len(e) < window:
        return None
    running = np.convolve(e, np.ones(window) / window, mode="valid")
    hit = np.flatnonzero(running <= target)
    return int(hit[0]) + window if len(hit) else None


def train_variant(subset: Prepared, steps: int, arch: str = "alexnet-mini", crop: int = 46,
                  batch_size: int = 64, lr: float = 0.01, momentum: float = 0.9,
                  weight_decay: float = 5e-4, init: str = "pytorch", seed: int = 0,
                  val_images: int | None = None, activation: str = "relu", lrn: bool = True,
                  pool=(3, 2), pca_std: float = 0.1, dropout: float = 0.5,
                  progress: bool = True, desc: str = "") -> dict:
    """Train one variant for ``steps`` SGD steps (§5's rule) and evaluate it.

    Returns {"train_err": per-step top-1 error of the training batches (train mode, as the
    paper's Figure 1), "train_loss": per-step loss, "val_top1_err", "val_top5_err",
    "val_loss", "val_n", "params", "seconds", "step_seconds"}.
    """
    if steps < 1:
        raise cli.UserError("--steps must be at least 1")
    if len(subset.train_labels) < batch_size:
        raise cli.UserError(f"{len(subset.train_labels)} training images make no batch of "
                            f"{batch_size}; lower --batch-size")
    size = subset.train_images.shape[1]
    if not 0 < crop <= size:
        raise cli.UserError(f"--crop {crop} does not fit in {size}-px images")
    kwargs = {} if arch == "alexnet" else {"input_size": crop}
    try:
        net = build(arch, subset.num_classes, seed=seed, init=init, activation=activation,
                    lrn=lrn, pool=tuple(pool), dropout=dropout, **kwargs)
    except (ValueError, TypeError) as err:
        raise cli.UserError(f"cannot build {arch} for this variant: {err}") from None
    augmenter = Augmenter(subset.mean, subset.pca_eigvals, subset.pca_eigvecs, crop=crop,
                          pca_std=pca_std)
    loader = BatchLoader(subset.train_images, subset.train_labels, augmenter.train,
                         batch_size=batch_size, shuffle=True, seed=seed, drop_last=True)
    opt = SGD(net.params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    loss_fn = SoftmaxCrossEntropy()
    errors, losses = [], []
    bar = cli.progress_bar(steps, desc, "step", progress)
    t0 = time.perf_counter()
    epoch = 0
    while len(errors) < steps:
        with loader.iter_epoch(epoch) as batches:
            for x, y in batches:
                try:
                    loss, logits = train_step(net, loss_fn, opt, x, y, step=len(errors),
                                              seed=seed)
                except Diverged as err:
                    raise FloatingPointError(f"{desc}: {err}; lower the learning rate") from None
                losses.append(loss)
                errors.append(1 - float(topk_correct(logits, y, 1).mean()))
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", err=f"{np.mean(errors[-20:]):.2f}")
                if len(errors) >= steps:
                    break
        epoch += 1
    train_seconds = time.perf_counter() - t0
    bar.close()
    val = evaluate_subset(net, subset, augmenter, val_images, batch_size)
    return {"train_err": errors, "train_loss": losses, "val_top1_err": val["top1_err"],
            "val_top5_err": val["top5_err"], "val_loss": val["loss"], "val_n": val["n"],
            "params": net.num_params(), "seconds": train_seconds,
            "step_seconds": train_seconds / steps, "net": net}


def evaluate_subset(net, subset: Prepared, augmenter: Augmenter, max_images=None,
                    batch_size: int = 128) -> dict:
    """Centre-crop top-1/top-5 error and loss on the subset's validation images."""
    images, labels = subset.val_images, subset.val_labels
    batches = ((augmenter.center(images[start:start + batch_size]),
                labels[start:start + batch_size]) for start in range(0, len(labels), batch_size))
    return evaluate(net, batches, max_images=max_images)


# ------------------------------------------------------------------------------ experiments

def variant_config(changes: dict) -> dict:
    """BASELINE with one experiment's changes."""
    return {**BASELINE, **changes}


def check_config(names, cfg: dict) -> dict:
    """UserError (one line, exit 2) for unknown experiments or impossible settings."""
    for key in ("steps", "batch_size", "classes", "per_class", "window", "val_images"):
        if cfg.get(key) is not None and cfg[key] < 1:
            raise cli.UserError(f"--{key.replace('_', '-')} must be at least 1")
    if not cfg["lr"] > 0:
        raise cli.UserError("--lr must be positive")
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise cli.UserError(f"unknown experiment {unknown[0]!r}; choose from "
                            f"{', '.join(EXPERIMENTS)} or all")
    return cfg


def run_experiments(names, subset: Prepared, log=print, progress: bool = True,
                    **config) -> list[dict]:
    """Train every variant of the named experiments (the shared baseline once) and return
    one row per (experiment, variant): labels, the config, the results of train_variant
    and ``steps_to`` {target: steps or None} for each of ``targets``."""
    cfg = check_config(names, {**DEFAULTS, **config})
    train_keys = ("arch", "crop", "batch_size", "lr", "momentum", "weight_decay", "init",
                  "seed", "val_images")
    done: dict[str, dict] = {}
    rows = []
    for name in names:
        section, what, variants = EXPERIMENTS[name]
        for label, changes in variants:
            variant = variant_config(changes)
            key = json.dumps(variant, sort_keys=True)
            if key not in done:
                log(f"{name}: training '{label}' ({cfg['steps']} steps)")
                done[key] = train_variant(subset, cfg["steps"], progress=progress,
                                          desc=f"{name}: {label}",
                                          **{k: cfg[k] for k in train_keys}, **variant)
            result = done[key]
            steps_to = {t: steps_to_error(result["train_err"], t, cfg["window"])
                        for t in cfg["targets"]}
            rows.append({"experiment": name, "section": section, "what": what,
                         "variant": label, "config": variant, "steps_to": steps_to,
                         **{k: v for k, v in result.items() if k != "net"},
                         "final_train_err": float(np.mean(result["train_err"][-cfg["window"]:])),
                         "net": result["net"]})
    return rows


def relu_vs_tanh(subset: Prepared, **config) -> list[dict]:
    """Figure 1 (§3.1): ReLU vs tanh, steps to each target training error."""
    return run_experiments(["relu-tanh"], subset, **config)


def lrn_ablation(subset: Prepared, **config) -> list[dict]:
    """§3.3: with and without local response normalization."""
    return run_experiments(["lrn"], subset, **config)


def pooling_ablation(subset: Prepared, **config) -> list[dict]:
    """§3.4: overlapping 3/2 vs non-overlapping 2/2 max pooling."""
    return run_experiments(["pooling"], subset, **config)


def pca_ablation(subset: Prepared, **config) -> list[dict]:
    """§4.1: with and without PCA colour augmentation."""
    return run_experiments(["pca"], subset, **config)


def _fmt_steps(s) -> str:
    return "-" if s is None else str(s)


def format_table(rows: list[dict]) -> str:
    """A Markdown table: one line per variant, steps to each target training error,
    the final running training error, validation top-1/top-5 error, seconds per step."""
    targets = list(rows[0]["steps_to"]) if rows else []
    head = ["experiment", "variant"] + [f"steps to {t:.0%} train err" for t in targets] + [
        "train err (last steps)", "val top-1", "val top-5", "s/step"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r['experiment']} ({r['section']})", r["variant"]]
        cells += [_fmt_steps(r["steps_to"][t]) for t in targets]
        cells += [f"{r['final_train_err']:.1%}", f"{r['val_top1_err']:.1%}",
                  f"{r['val_top5_err']:.1%}", f"{r['step_seconds']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(rows: list[dict], window: int = 20, ax=None):
    """Running training error against steps, one line per variant (as Figure 1), on the
    current matplotlib backend (inline in a notebook)."""
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6, 3.5))
    seen = set()
    for r in rows:
        key = (r["experiment"], r["variant"])
        if key in seen:
            continue
        seen.add(key)
        e = np.asarray(r["train_err"])
        if len(e) >= window:
            running = np.convolve(e, np.ones(window) / window, mode="valid")
            ax.plot(np.arange(window, len(e) + 1), running,
                    label=f"{r['experiment']}: {r['variant']}")
    ax.set_xlabel("SGD step")
    ax.set_ylabel(f"training error (mean of last {window} batches)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return ax


def to_json(rows: list[dict]) -> list[dict]:
    """Rows without the nets, JSON-ready (tuples as lists, targets as strings)."""
    out = []
    for r in rows:
        r = {k: v for k, v in r.items() if k != "net"}
        r["steps_to"] = {str(k): v for k, v in r["steps_to"].items()}
        r["config"] = {k: list(v) if isinstance(v, tuple) else v for k, v in r["config"].items()}
        out.append(r)
    return out


# ------------------------------------------------------------------------------ CLI

def build_parser():
    p = cli.parser("python -m tinyalex.experiments",
                   __doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument("experiments", nargs="*", default=["all"],
                   metavar="EXPERIMENT", help=f"{', '.join(EXPERIMENTS)} or all (default: all)")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="dataset (default: the first Tiny ImageNet in $TINYALEX_DATA, ./data, "
                        "the repository's data/ or $TINYALEX_REAL_DATA, else the synthetic "
                        "set)")
    p.add_argument("--arch", default=DEFAULTS["arch"],
                   choices=["alexnet-mini", "alexnet-small"],
                   help="the net every variant starts from (alexnet-small: the paper's "
                        "widths, ~15x slower)")
    p.add_argument("--classes", type=int, default=DEFAULTS["classes"],
                   help="use the first N classes of the dataset")
    p.add_argument("--per-class", type=int, default=DEFAULTS["per_class"], metavar="N",
                   help="at most N training images per class (default: all)")
    p.add_argument("--steps", type=int, default=DEFAULTS["steps"], help="SGD steps per variant")
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"],
                   help="images per SGD step")
    p.add_argument("--crop", type=int, default=DEFAULTS["crop"],
                   help="crop side (46: the same map sizes with 3/2 and 2/2 pooling)")
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"],
                   help="learning rate, the same for every variant (§5's rule, constant)")
    p.add_argument("--init", default=DEFAULTS["init"], choices=sorted(INITS),
                   help="weight init ('paper' is §5's, which stalls at chance on these "
                        "subsets; see the README)")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                   help="initial weights, batch order, augmentation and dropout masks")
    p.add_argument("--val-images", type=int, default=None, metavar="N",
                   help="validate on the first N validation images of the subset")
    p.add_argument("--window", type=int, default=DEFAULTS["window"],
                   help="steps in the running training error")
    p.add_argument("--targets", default=",".join(str(t) for t in DEFAULTS["targets"]),
                   help="training errors to time, comma-separated fractions")
    p.add_argument("--out", default=None, metavar="FILE", help="write the rows as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def parse_targets(text: str) -> tuple[float, ...]:
    try:
        targets = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise cli.UserError(f"--targets must be comma-separated fractions, not {text!r}") from None
    if not targets or not all(0 < t < 1 for t in targets):
        raise cli.UserError(f"--targets must be fractions between 0 and 1, not {text!r}")
    return targets


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    names = list(EXPERIMENTS) if args.experiments in ([], ["all"]) else args.experiments
    targets = parse_targets(args.targets)
    config = dict(arch=args.arch, classes=args.classes, steps=args.steps,
                  batch_size=args.batch_size, crop=args.crop, lr=args.lr, init=args.init,
                  seed=args.seed, val_images=args.val_images, window=args.window,
                  targets=targets)
    check_config(names, {**DEFAULTS, **config, "per_class": args.per_class})
    prepared = load_dataset(args.data, progress=not args.no_progress)
    subset = class_subset(prepared, args.classes, args.per_class)
    print(f"{subset.num_classes} classes of {subset.meta.get('kind', '?')}: {len(subset.train_labels)} train / "
          f"{len(subset.val_labels)} val images; {args.arch}, {args.crop}-px crops, batch "
          f"{args.batch_size}, {args.steps} steps per variant")
    rows = run_experiments(names, subset, progress=not args.no_progress, **config)
    print(format_table(rows))
    if args.out:
        Path(args.out).write_text(json.dumps(to_json(rows), indent=1))
        print(f"wrote {args.out}")
    return 0


run_command = cli.command(main)  # python -m, and the script's entry


if __name__ == "__main__":
    raise SystemExit(run_command())
