"""Figures of a run (PNG, matplotlib's Agg backend): what the net learned (§6.1) and how.

* ``plot_filters``: conv1's kernels as RGB tiles, Figure 3 of the paper. The paper's 96
  kernels were learned on two GPUs, 48 each (the first set came out largely colour-agnostic,
  the second colour-specific); the figure keeps that layout, the first 48 above the second
  48, even when conv1 here is one group.
* ``plot_curves``: training loss per logged step (raw and smoothed), train/val top-1 and
  val top-5 error per epoch, and the learning rate, from a run's ``metrics.jsonl``.
* ``plot_diagnostics``: activation and gradient RMS per layer and dead ReLUs over steps,
  from the ``diag`` lines of ``metrics.jsonl`` (``tinyalex.commands.diagnostics``).
* ``plot_predictions``: Figure 4 (left): validation images with their top-5 classes.
* ``nearest_neighbours``: Figure 4 (right): for a few validation images, the training
  images whose last-hidden-layer (relu7, 4096-d) codes are closest in Euclidean distance.
* ``plot_compare``: several runs' training loss and validation error on the same axes;
  ``python -m tinyalex.figures compare RUN RUN ... --out FILE``.
* ``make_all``: all of them for a checkpoint; ``python -m tinyalex.figures CKPT``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from ..backend import get_array_module, to_numpy
from . import cli

FILTER_COLS = 12


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path, note: str | None = None) -> Path:
    """Write the figure (with ``note`` in red across its bottom, e.g. that it comes from a
    smoke run of seconds) and close it."""
    if note:
        fig.subplots_adjust(bottom=max(fig.subplotpars.bottom, 0.08))
        stamp(fig, note)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=fig.dpi)
    _pyplot().close(fig)
    return path


# --------------------------------------------------------------------------- Figure 3
def stamp(fig, note: str):
    """``note`` in red across the bottom of a figure (e.g. that it comes from a smoke run)."""
    fig.text(0.5, 0.005, note, ha="center", va="bottom", fontsize=8, color="tab:red")
    return fig


def filter_tiles(W) -> np.ndarray:
    """(F, C, k, k) kernels -> (F, k, k, 3) RGB in [0, 1], each kernel min-max normalised
    on its own (as the paper's figure; single-channel kernels are shown grey)."""
    W = to_numpy(W).astype(np.float64)
    if W.shape[1] == 1:
        W = np.repeat(W, 3, axis=1)
    W = W[:, :3].transpose(0, 2, 3, 1)
    lo = W.min(axis=(1, 2, 3), keepdims=True)
    hi = W.max(axis=(1, 2, 3), keepdims=True)
    return (W - lo) / np.maximum(hi - lo, 1e-12)


def mosaic(tiles: np.ndarray, cols: int, pad: int = 1, fill: float = 1.0) -> np.ndarray:
    """(n, h, w, 3) tiles -> one (rows*(h+pad)+pad, cols*(w+pad)+pad, 3) image, row-major."""
    n, h, w = tiles.shape[:3]
    rows = max(1, math.ceil(n / cols))
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), fill, np.float64)
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        out[y:y + h, x:x + w] = tiles[i]
    return out


def plot_filters(net, path, layer: str = "conv1", title: str | None = None,
                 note: str | None = None) -> Path:
    """conv1's kernels as an RGB grid (Figure 3): two halves, like the paper's two GPUs.
    ``title`` heads the figure (e.g. "trained 10 epochs" or "untrained")."""
    plt = _pyplot()
    conv = net[layer]
    tiles = filter_tiles(conv.params["W"])
    n, k = len(tiles), tiles.shape[1]
    half = math.ceil(n / 2)
    cols = FILTER_COLS if n >= 2 * FILTER_COLS else max(1, math.ceil(math.sqrt(half)))
    groups = getattr(conv, "groups", 1)
    halves = [(0, half), (half, n)]
    fig, axes = plt.subplots(2, 1, figsize=(cols * 0.75 + 0.5, 2 * math.ceil(half / cols) * 0.75 + 1.4),
                             dpi=100)
    for gpu, (ax, (a, b)) in enumerate(zip(axes, halves, strict=True), start=1):
        ax.imshow(mosaic(tiles[a:b], cols), interpolation="nearest")
        ax.set_title(f"kernels {a + 1}-{b} (the paper's GPU {gpu})", fontsize=9)
        ax.axis("off")
    nxt = _next_grouped(net, layer)
    if groups > 1:
        split = f"{layer} in {groups} groups"
    elif nxt:
        # The paper's conv1 is this too: each GPU's 48 kernels see the whole image; the split
        # is in what the next layer reads, so the halves are the two GPUs' kernels.
        split = f"{nxt} reads each half on its own (groups=2): the paper's two GPUs"
    else:
        split = "nothing after it is grouped: the halves only mirror the paper's layout"
    head = f"{title}: " if title else ""
    fig.suptitle(f"{head}{layer}, {n} kernels of {k}x{k}x{conv.params['W'].shape[1]}, each "
                 f"min-max normalised\n({split})", fontsize=9)
    fig.tight_layout()
    return _save(fig, path, note)


def _next_grouped(net, layer: str) -> str | None:
    """The name of the convolution right after ``layer`` when it has 2 groups, else None."""
    names = [name for name, _ in getattr(net, "layers", [])]
    if layer not in names:
        return None
    for name in names[names.index(layer) + 1:]:
        if hasattr(net[name], "groups"):
            return name if net[name].groups == 2 else None
    return None


# --------------------------------------------------------------------------- curves
def read_metrics(metrics_path, log=None) -> list[dict]:
    """The JSON objects of a metrics.jsonl. Blank lines are skipped; so are broken ones (a
    torn last line, from a run stopped while appending it or a line being written when the
    file was read), which ``log`` (default: print on stderr) is told of in one line."""
    rows, broken, last_broken = [], 0, False
    with open(metrics_path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
                last_broken = False
            except json.JSONDecodeError:
                broken += 1
                last_broken = True
                continue
            if isinstance(obj, dict):
                rows.append(obj)
    if broken:
        (log or (lambda m: print(m, file=sys.stderr)))(
            f"{metrics_path}: skipped " + ("a torn last line (a run stopped while writing it)"
                                          if broken == 1 and last_broken else
                                          f"{broken} unreadable lines"))
    return rows


def smooth(values, window: int | None = None) -> np.ndarray:
    """Trailing moving average (window ~ 1/20 of the series, at least 1); same length."""
    v = np.asarray(values, np.float64)
    if len(v) == 0:
        return v
    window = window or max(1, len(v) // 20)
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def _series(rows, kind, x, y):
    pts = [(r[x], r[y]) for r in rows if r.get("kind") == kind
           and isinstance(r.get(x), (int, float)) and isinstance(r.get(y), (int, float))
           and math.isfinite(r[y])]
    return (np.array([p[0] for p in pts], np.float64), np.array([p[1] for p in pts], np.float64))


def plot_curves(metrics_path, path, note: str | None = None) -> Path:
    """Loss, error and learning-rate curves of a run from its metrics.jsonl.

    Panels: training loss per logged step (faint) and smoothed, with the validation loss
    at each epoch's end; top-1 error (train, val) and val top-5 error per epoch (the
    smoothed per-step training error when no epoch has ended yet); the learning rate.
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    rows = read_metrics(metrics_path)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), dpi=100)
    ax_loss, ax_err, ax_lr = axes
    mark = dict(marker="o", markersize=3)

    s, loss = _series(rows, "train", "step", "loss")
    if len(s):
        ax_loss.plot(s, loss, color="tab:blue", alpha=0.25, linewidth=0.8)
        ax_loss.plot(s, smooth(loss), color="tab:blue", label="train (smoothed)",
                     **(mark if len(s) == 1 else {}))
    s, vloss = _series(rows, "epoch", "step", "val_loss")
    if len(s):
        ax_loss.plot(s, vloss, color="tab:orange", label="val", **mark)
    ax_loss.set(xlabel="step", ylabel="cross-entropy", title="loss")

    e, _ = _series(rows, "epoch", "epoch", "step")
    e += 1  # metrics.jsonl counts epochs from 0; the log and the docs count them from 1
    if len(e):
        for key, label, colour in (("train_top1_err", "train top-1", "tab:blue"),
                                   ("val_top1_err", "val top-1", "tab:orange"),
                                   ("val_top5_err", "val top-5", "tab:green")):
            ex, err = _series(rows, "epoch", "epoch", key)
            if len(ex):
                ax_err.plot(ex + 1, 100 * err, color=colour, label=label, **mark)
        ax_err.set(xlabel="epoch", title="error per epoch")
        ax_err.set_xlim(e.min() - 0.5, e.max() + 0.5)
        if len(np.unique(e)) <= 10:
            ax_err.set_xticks(np.unique(e))
        else:
            ax_err.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        s, err = _series(rows, "train", "step", "top1_err")
        if len(s):
            ax_err.plot(s, 100 * smooth(err), color="tab:blue", label="train top-1 (smoothed)",
                        **(mark if len(s) == 1 else {}))
        ax_err.set(xlabel="step", title="error (no epoch finished yet)")
    ax_err.set_ylabel("error (%)")

    s, lr = _series(rows, "train", "step", "lr")
    if not len(s):
        s, lr = _series(rows, "epoch", "step", "lr")
    if len(s):
        ax_lr.plot(s, lr, color="tab:purple", drawstyle="steps-post", **(mark if len(s) == 1 else {}))
        if (lr > 0).all():
            ax_lr.set_yscale("log")
    ax_lr.set(xlabel="step", ylabel="learning rate", title="learning rate")

    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        if not ax.lines:
            ax.text(0.5, 0.5, "nothing logged yet", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{Path(metrics_path).parent.name}: {len(rows)} log lines", fontsize=10)
    fig.tight_layout()
    return _save(fig, path, note)



def plot_compare(run_dirs, path, labels=None, title: str | None = None) -> Path:
    """Runs side by side from their metrics.jsonl: training loss per step (smoothed, over
    the faint raw values) and validation top-1 error at each epoch's end, one colour a run.

    labels: one per run (default: the run folder's name).
    """
    plt = _pyplot()
    run_dirs = [Path(d) for d in run_dirs]
    labels = list(labels) if labels else [d.name for d in run_dirs]
    if len(labels) != len(run_dirs):
        raise ValueError(f"{len(labels)} labels for {len(run_dirs)} runs")
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(12, 4), dpi=100)
    mark = dict(marker="o", markersize=3)
    for i, (run, label) in enumerate(zip(run_dirs, labels)):
        rows = read_metrics(run / "metrics.jsonl")
        colour = f"C{i}"
        s, loss = _series(rows, "train", "step", "loss")
        if len(s):
            ax_loss.plot(s, loss, color=colour, alpha=0.2, linewidth=0.8)
            ax_loss.plot(s, smooth(loss), color=colour, label=label)
        s, err = _series(rows, "epoch", "step", "val_top1_err")
        if len(s):
            ax_err.plot(s, 100 * err, color=colour, label=label, **mark)
    ax_loss.set(xlabel="step", ylabel="cross-entropy", title="training loss")
    ax_err.set(xlabel="step", ylabel="error (%)", title="validation top-1 error (each epoch)")
    for ax in (ax_loss, ax_err):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------- diagnostics
def _diag_layers(rows, suffix: str) -> list[str]:
    names = []
    for r in rows:
        for k in r:
            if k.endswith(suffix) and k[: -len(suffix)] not in names:
                names.append(k[: -len(suffix)])
    return names


def plot_diagnostics(metrics_path, path, note: str | None = None) -> Path | None:
    """The ``diag`` lines of a run's metrics.jsonl (``tinyalex.commands.diagnostics``) over steps:
    per learnable layer the activation RMS (solid) and its input-dependent part (dashed),
    the weight-gradient RMS and the update/weight ratio, all on log scales; per ReLU the
    fraction of dead units. Returns None (and draws nothing) when there is no diag line.
    """
    rows = [r for r in read_metrics(metrics_path) if r.get("kind") == "diag"]
    if not rows:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), dpi=100)
    (ax_act, ax_grad), (ax_ratio, ax_dead) = axes
    layers = _diag_layers(rows, ".weight_rms")
    cmap = plt.get_cmap("viridis")
    colour = {n: cmap(i / max(len(layers) - 1, 1)) for i, n in enumerate(layers)}
    mark = dict(marker="o", markersize=3) if len(rows) == 1 else {}

    def draw(ax, key, name, **kw):
        s, v = _series(rows, "diag", "step", f"{name}.{key}")
        keep = v > 0  # log scale
        if keep.any():
            ax.plot(s[keep], v[keep], color=colour.get(name), **{**mark, **kw})

    for name in layers:
        draw(ax_act, "act_rms", name, label=name)
        draw(ax_act, "act_signal", name, linestyle="--", linewidth=0.9)
        draw(ax_grad, "grad_rms", name, label=name)
        draw(ax_ratio, "update_ratio", name, label=name)
    ax_act.set(title="activation RMS after each layer's ReLU (logits for the last)\n"
                     "solid: all; dashed: the part that varies with the image",
               xlabel="step", ylabel="RMS")
    ax_grad.set(title="RMS of dL/dW per layer", xlabel="step", ylabel="RMS")
    ax_ratio.set(title="update / weight: RMS(v) / RMS(W) per step", xlabel="step",
                 ylabel="ratio")
    relus = _diag_layers(rows, ".dead")
    rcolour = {n: cmap(i / max(len(relus) - 1, 1)) for i, n in enumerate(relus)}
    for name in relus:
        s, v = _series(rows, "diag", "step", f"{name}.dead")
        if len(s):
            ax_dead.plot(s, 100 * v, color=rcolour[name], label=name, **mark)
    ax_dead.set(title="dead ReLU units (0 for every example of the batch; conv: per channel)",
                xlabel="step", ylabel="% of units", ylim=(-3, 103))
    for ax in (ax_act, ax_grad, ax_ratio):
        if ax.lines:
            ax.set_yscale("log")
    for ax in axes.flat:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2)
        if not ax.lines:
            ax.text(0.5, 0.5, "nothing logged", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
        ax.grid(alpha=0.3)
        ax.title.set_fontsize(9)
    fig.suptitle(f"{Path(metrics_path).parent.name}: diagnostics, {len(rows)} checks "
                 f"(steps {rows[0].get('step')}..{rows[-1].get('step')})", fontsize=10)
    fig.tight_layout()
    return _save(fig, path, note)


# --------------------------------------------------------------------------- Figure 4
def relu7_features(net, augmenter, images, batch_size: int = 128, progress=None) -> np.ndarray:
    """Last-hidden-layer codes (N, 4096) of uint8 (N, S, S, 3) images, centre crops, test
    mode; computed on the net's device, returned as float32 NumPy."""
    xp = get_array_module(next(iter(net.params.values())))
    out = []
    for start in range(0, len(images), batch_size):
        block = np.asarray(images[start:start + batch_size])
        out.append(to_numpy(net.features(xp.asarray(augmenter.center(block)), "relu7"))
                   .reshape(len(block), -1).astype(np.float32))
        if progress is not None:
            progress(len(block))
    return np.concatenate(out)


def nearest(queries: np.ndarray, database: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (Q, k) of the k database rows nearest each query (Euclidean), and distances."""
    q, d = queries.astype(np.float64), database.astype(np.float64)
    d2 = (q * q).sum(1)[:, None] + (d * d).sum(1)[None, :] - 2 * q @ d.T
    d2 = np.maximum(d2, 0.0)
    k = min(k, d.shape[0])
    idx = np.argsort(d2, axis=1, kind="stable")[:, :k]
    return idx, np.sqrt(np.take_along_axis(d2, idx, axis=1))


def nearest_neighbours(net, prepared, path, queries: int = 6, neighbours: int = 6,
                       max_train: int = 2000, seed: int = 0, augmenter=None,
                       batch_size: int = 128, progress: bool = False,
                       note: str | None = None) -> Path:
    """Figure 4 (right): validation images (first column) and the training images nearest
    to them in the 4096-d relu7 feature space (Euclidean), nearest first.

    Searches a seeded random sample of at most ``max_train`` training images (feature
    extraction dominates: about 80 img/s for alexnet-small on 2 CPU cores). ``augmenter``
    should be the checkpoint's (``checkpoint.augmenter``); by default it is built from the
    dataset's own mean with the net's input size as the crop.
    """
    plt = _pyplot()
    if augmenter is None:
        from ..data.augment import Augmenter

        augmenter = Augmenter.from_prepared(prepared, crop=net.input_shape[-1])
    rng = np.random.default_rng(seed)
    n_train, n_val = len(prepared.train_labels), len(prepared.val_labels)
    if n_train == 0 or n_val == 0:
        raise ValueError("nearest_neighbours needs training and validation images")
    train_idx = np.sort(rng.choice(n_train, min(max_train, n_train), replace=False))
    query_idx = np.sort(rng.choice(n_val, min(queries, n_val), replace=False))
    train_imgs = np.asarray(prepared.train_images[train_idx])
    query_imgs = np.asarray(prepared.val_images[query_idx])
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(train_idx) + len(query_idx), desc="relu7 codes", unit="img",
                   file=sys.stderr, leave=False)
    try:
        upd = bar.update if bar else None
        f_train = relu7_features(net, augmenter, train_imgs, batch_size, upd)
        f_query = relu7_features(net, augmenter, query_imgs, batch_size, upd)
    finally:
        if bar:
            bar.close()
    idx, dist = nearest(f_query, f_train, neighbours)
    names = prepared.names
    train_labels = np.asarray(prepared.train_labels)[train_idx]
    query_labels = np.asarray(prepared.val_labels)[query_idx]

    rows, cols = len(query_idx), 1 + idx.shape[1]
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.75 * rows + 0.6), dpi=100,
                             squeeze=False)
    for r in range(rows):
        ax = axes[r, 0]
        ax.imshow(query_imgs[r])
        ax.set_title(f"query: {short_name(names[query_labels[r]])}", fontsize=7, color="black",
                     fontweight="bold")
        for c in range(idx.shape[1]):
            ax = axes[r, c + 1]
            j = idx[r, c]
            same = train_labels[j] == query_labels[r]
            ax.imshow(train_imgs[j])
            ax.set_title(f"{short_name(names[train_labels[j]])}\nd={dist[r, c]:.3g}", fontsize=6,
                         color="tab:green" if same else "tab:red")
            for spine in ax.spines.values():
                spine.set_edgecolor("tab:green" if same else "tab:red")
                spine.set_linewidth(2)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    searched = (f"all {n_train} training images" if len(train_idx) == n_train else
                f"a random {len(train_idx)} of the {n_train} training images (max_train, "
                f"to keep it to seconds)")
    fig.suptitle(f"validation images (first column) and their nearest training images by "
                 f"Euclidean distance of relu7 ({f_train.shape[1]}-d) codes\nsearched in {searched}; "
                 f"green: same class, red: another class", fontsize=8)
    fig.tight_layout()
    return _save(fig, path, note)


def plot_predictions(net, prepared, path, count: int = 8, top: int = 5, seed: int = 0,
                     augmenter=None, note: str | None = None) -> Path:
    """Figure 4 (left): validation images with the net's top-5 classes (centre crop, test
    mode) as bars; the true class is written under each image and its bar is red when it
    is among the five (the paper's convention)."""
    from ..layers.loss import softmax

    plt = _pyplot()
    if augmenter is None:
        from ..data.augment import Augmenter

        augmenter = Augmenter.from_prepared(prepared, crop=net.input_shape[-1])
    n_val = len(prepared.val_labels)
    if n_val == 0:
        raise ValueError("plot_predictions needs validation images")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n_val, min(count, n_val), replace=False))
    imgs = np.asarray(prepared.val_images[idx])
    labels = np.asarray(prepared.val_labels)[idx]
    xp = get_array_module(next(iter(net.params.values())))
    probs = to_numpy(softmax(net.forward(xp.asarray(augmenter.center(imgs)), train=False)))
    names = prepared.names
    k = min(top, probs.shape[1])
    cols = min(4, len(idx))
    rows = math.ceil(len(idx) / cols)
    fig = plt.figure(figsize=(3.0 * cols, 3.9 * rows), dpi=100)
    grid = fig.add_gridspec(2 * rows, cols, height_ratios=[2.2, 1.3] * rows)
    for i in range(len(idx)):
        r, c = divmod(i, cols)
        ax = fig.add_subplot(grid[2 * r, c])
        ax.imshow(imgs[i])
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(short_name(names[labels[i]], 28), fontsize=8, fontweight="bold")
        order = np.argsort(-probs[i], kind="stable")[:k]
        bx = fig.add_subplot(grid[2 * r + 1, c])
        colours = ["tab:red" if j == labels[i] else "tab:blue" for j in order]
        bx.barh(np.arange(k), probs[i][order], color=colours)
        bx.set_yticks(np.arange(k), [short_name(names[j], 22) for j in order], fontsize=7)
        bx.invert_yaxis()
        bx.set_xlim(0, 1)
        bx.tick_params(axis="x", labelsize=6)
    fig.suptitle("top-5 predictions on validation images (centre crop); true class under each "
                 "image, its bar in red", fontsize=9)
    fig.tight_layout()
    return _save(fig, path, note)


def short_name(name: str, width: int = 18) -> str:
    """A class name for a small title: its first synonym ("tabby, tabby cat" -> "tabby"),
    cut at a word boundary with "…" when longer than ``width`` (a single word longer than
    that is cut inside it, as there is no boundary)."""
    name = " ".join(str(name).split(",")[0].split())
    if len(name) <= width:
        return name
    cut = name[:width].rsplit(" ", 1)[0] if " " in name[:width] else name[:width - 1]
    return cut.rstrip() + "…"


# --------------------------------------------------------------------------- all of them
def make_all(ckpt_path, out_dir=None, data=None, queries: int = 6, neighbours: int = 6,
             max_train: int = 2000, log=print) -> dict:
    """filters.png, curves.png (when the run folder has metrics.jsonl), predictions.png and
    neighbours.png (when the dataset can be found) for a checkpoint; returns {name: path}.

    out_dir defaults to ``<run folder>/figures``. Raises cli.UserError for a bad checkpoint.
    """
    from .. import pretrained
    from ..data.errors import DataError
    from .evaluate import dataset_for_checkpoint, load_checkpoint, load_net

    ckpt = load_checkpoint(ckpt_path)
    out = Path(out_dir) if out_dir is not None else ckpt.path.parent / "figures"
    net = load_net(ckpt)
    written = {"filters": plot_filters(net, out / "filters.png")}
    metrics = ckpt.path.parent / "metrics.jsonl"
    if metrics.is_file():
        written["curves"] = plot_curves(metrics, out / "curves.png")
    else:
        log(f"no {metrics}: no curves")
    try:
        prepared = dataset_for_checkpoint(ckpt, data, log=log)
    except (cli.UserError, DataError) as err:
        if data is not None:
            raise
        log(f"no nearest-neighbour figure: {err}")
        return written
    written["predictions"] = plot_predictions(net, prepared, out / "predictions.png",
                                              count=8, augmenter=pretrained.augmenter(ckpt))
    written["neighbours"] = nearest_neighbours(
        net, prepared, out / "neighbours.png", queries=queries, neighbours=neighbours,
        max_train=max_train, augmenter=pretrained.augmenter(ckpt), progress=True)
    return written


def compare_main(argv) -> int:
    p = cli.parser("python -m tinyalex.figures compare",
                   "Several runs' training loss and validation error on the same axes.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (each with a metrics.jsonl)")
    p.add_argument("--out", required=True, metavar="FILE", help="the PNG to write")
    p.add_argument("--labels", nargs="+", default=None, metavar="LABEL",
                   help="one legend entry per run (default: the folders' names)")
    p.add_argument("--title", default=None, help="a title above the panels")
    args = p.parse_args(argv)
    for run in args.runs:
        if not (Path(run) / "metrics.jsonl").is_file():
            raise cli.UserError(f"{run}: no metrics.jsonl (is it a run folder?)")
    if args.labels and len(args.labels) != len(args.runs):
        raise cli.UserError(f"--labels: {len(args.labels)} labels for {len(args.runs)} runs")
    print(plot_compare(args.runs, args.out, args.labels, args.title))
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compare"]:
        return compare_main(argv[1:])
    p = cli.parser("python -m tinyalex.figures",
                   __doc__.splitlines()[0] + " (python -m tinyalex.figures compare --help: "
                   "several runs on the same axes)")
    p.add_argument("checkpoint", help="a checkpoint .npz (e.g. runs/NAME/best.npz)")
    p.add_argument("--out", default=None, help="output folder (default: <run>/figures)")
    p.add_argument("--data", default=None,
                   help="dataset for the neighbours figure (default: the checkpoint's)")
    p.add_argument("--queries", type=int, default=6, help="validation images (rows)")
    p.add_argument("--neighbours", type=int, default=6, help="neighbours per query")
    p.add_argument("--max-train", type=int, default=2000,
                   help="training images searched for neighbours (a random sample)")
    args = p.parse_args(argv)
    for name in ("queries", "neighbours", "max_train"):
        if getattr(args, name) < 1:
            raise cli.UserError(f"--{name.replace('_', '-')} must be at least 1")
    written = make_all(args.checkpoint, args.out, data=args.data, queries=args.queries,
                       neighbours=args.neighbours, max_train=args.max_train,
                       log=lambda m: print(m, file=sys.stderr))
    for path in written.values():
        print(path)
    return 0


run_command = cli.command(main)  # python -m, and the script's entry


if __name__ == "__main__":
    raise SystemExit(run_command())
