"""``python -m tinyalex.bench twin``: train tinyalex and its PyTorch twin side by side.

The twin is ``interop.to_torch`` of the very net tinyalex starts from (same layers, same
freshly initialised weights). Both are trained with the same rule, SGD with momentum 0.9
and weight decay 5e-4 at a constant learning rate: tinyalex's ``optim.SGD`` (the paper's
v <- m*v - wd*lr*w - lr*g) and ``torch.optim.SGD`` (b <- m*b + g + wd*w, w <- w - lr*b),
the same trajectory while lr stays constant (see interop's module doc), which it does
here (no schedule).

Both eat the same batches: tinyalex's own training loader is played once per epoch and
every batch (crops, flips, PCA colour, order) goes to tinyalex, then to torch. Dropout
(``--masks``): ``shared`` (the default) gives torch the very masks tinyalex drew at that
step (tinyalex's Dropout seeded per step as in train.py), so the two runs are one
computation twice and differ only by rounding (oneDNN's float32 sums against im2col +
OpenBLAS's); ``own`` lets torch's nn.Dropout draw from torch's generator seeded with
--seed, so the two runs are two draws of the same training. After every epoch both are evaluated on
the same validation batches (centre crop; torch in eval mode, no grad) with the same
metric code.

Time: each framework's training time is the sum of its own step times (forward, loss,
backward, update), so alternating the two does not bill one for the other; the loader
works in its background thread for both. One throw-away step of each on zeros first
compiles the kernels and warms the allocators, so epoch 1 is not billed for it.

The target (the issue's): tinyalex's val top-1 error is at most the twin's plus 1 point
at every epoch.

A long comparison (5 Tiny-100 epochs take about two hours on 2 cores) need not run in one
sitting: with ``--state DIR`` both nets, both optimizers, torch's RNG and the rows so far
are saved after every epoch, and the same command later continues from the last finished
epoch (the one that was running is redone from its start, so nothing differs from a run
that was never stopped).
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from ..backend import to_numpy
from ..commands import cli
from ..layers import Dropout, SoftmaxCrossEntropy
from ..loop import evaluate, forward_backward, train_step
from ..metrics import topk_correct
from ..net import ARCHITECTURES, INITS, build
from ..optim import SGD

#: tinyalex's val top-1 error may exceed the twin's by at most this much, at every epoch.
TARGET_POINTS = 1.0
FRAMEWORKS = ("tinyalex", "torch")
#: --masks: torch gets tinyalex's dropout masks of the step, or draws its own.
MASKS = ("shared", "own")


def import_torch():
    """torch, or a UserError saying how to install it."""
    try:
        import torch
    except ImportError:
        raise cli.UserError("bench twin needs PyTorch: pip install torch==2.13.0 (the CPU "
                            "build; torch is never a runtime dependency)") from None
    return torch


# ------------------------------------------------------------------------------ pieces

class _TorchForward:
    """A torch model seen as a tinyalex net by loop.evaluate: forward(x, train=False) gives
    NumPy logits, computed in eval mode without autograd."""

    def __init__(self, model):
        self.model = model

    def forward(self, x, train=False):
        torch = import_torch()
        with torch.no_grad():
            return self.model(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def evaluate_both(net, model, val_loader, max_images: int | None = None) -> dict:
    """Both nets in test mode on the same validation batches (at most max_images images)."""
    model.eval()
    try:
        results = {}
        for name, forward in (("tinyalex", net), ("torch", _TorchForward(model))):
            with val_loader.iter_epoch(0) as batches:
                results[name] = evaluate(forward, batches, max_images=max_images)
    finally:
        model.train()
    return {name: {f"val_{k}": v for k, v in r.items()} for name, r in results.items()}


def make_twins(arch: str, num_classes: int, crop: int, init: str = "pytorch", seed: int = 0,
               dropout: float = 0.5, lr: float = 0.01, momentum: float = 0.9,
               weight_decay: float = 5e-4):
    """(net, opt, model, torch_opt): a fresh tinyalex net and its torch twin, same weights."""
    torch = import_torch()
    from ..commands.train import net_kwargs
    from .interop import to_torch

    net = build(arch, num_classes, seed=seed, init=init, **net_kwargs(arch, crop, dropout=dropout))
    opt = SGD(net.params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    model = to_torch(net)
    model.train()
    topt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                           weight_decay=weight_decay)
    return net, opt, model, topt


def share_masks(net, model, names) -> None:
    """Give torch's dropout layers the keep masks tinyalex's drew in its last forward."""
    from .interop import set_torch_dropout_mask

    for name in names:
        layer = net[name]
        set_torch_dropout_mask(model, name, to_numpy(layer.cache) != 0, layer.p)


def warm_up(net, model, batch_size: int, num_classes: int) -> None:
    """One step of each on zeros, on throw-away copies (kernels compiled, allocators warm)."""
    torch = import_torch()
    x = np.zeros((batch_size,) + net.input_shape, dtype=np.float32)
    y = (np.arange(batch_size) % num_classes).astype(np.int32)
    scratch = copy.deepcopy(net)
    forward_backward(scratch, SoftmaxCrossEntropy(), x, y)
    scratch_model = copy.deepcopy(model)
    torch.nn.functional.cross_entropy(scratch_model(torch.from_numpy(x)),
                                      torch.from_numpy(y.astype(np.int64))).backward()


# ------------------------------------------------------------------------------ state

#: Settings a run continued from --state must share with the run that saved it.
SAME_ON_RESUME = ("arch", "num_classes", "crop", "batch_size", "batches_per_epoch", "lr",
                  "momentum", "weight_decay", "init", "seed", "dropout", "masks",
                  "val_max_images", "train_images", "schedule", "warmup_steps")

#: --schedule: a constant lr, or train.py's warm-up + decay to 0 over the planned steps.
SCHEDULES = ("constant", "linear", "cosine")


def save_state(state_dir, net, opt, model, topt, config: dict, rows: list, step: int) -> Path:
    """Both nets after a finished epoch. torch's file is named by epoch and written first;
    tinyalex.npz, renamed into place last, says which epoch is complete."""
    torch = import_torch()
    from .. import checkpoint

    state_dir = Path(state_dir)
    epoch = len(rows)
    torch_path = state_dir / f"torch-epoch{epoch}.pt"
    saved = {"epoch": epoch, "model": model.state_dict(), "optimizer": topt.state_dict(),
             "rng": torch.get_rng_state()}
    checkpoint.atomic_write(torch_path, lambda fh: torch.save(saved, fh))
    meta = {"twin": {k: config[k] for k in SAME_ON_RESUME}, "epoch": epoch, "step": step,
            "rows": _jsonable(rows)}
    path = checkpoint.save(state_dir / "tinyalex.npz", net.params, meta, velocity=opt.velocity)
    for old in state_dir.glob("torch-epoch*.pt"):
        if old != torch_path:
            old.unlink()
    return path


def load_state(state_dir, net, opt, model, topt, config: dict) -> tuple[list, int]:
    """Restore what save_state wrote into fresh twins: returns (rows, step); ([], 0) when
    the folder holds no finished epoch yet. UserError if its settings differ."""
    torch = import_torch()
    from .. import checkpoint

    path = Path(state_dir) / "tinyalex.npz"
    if not path.is_file():
        return [], 0
    try:
        ckpt = checkpoint.load(path)
        saved = ckpt.meta["twin"]
    except (ValueError, KeyError):
        raise cli.UserError(f"--state: {path} is not a twin state; give another folder") from None
    # saved before --masks existed: torch's own masks; before --schedule: a constant lr
    saved = {"masks": "own", "schedule": "constant", "warmup_steps": 0, **saved}
    differ = [f"{k} {saved.get(k)!r} -> {config[k]!r}" for k in SAME_ON_RESUME
              if saved.get(k) != config[k]]
    if differ:
        raise cli.UserError(f"--state {state_dir} was saved with other settings "
                            f"({'; '.join(differ)}); use the same settings or another folder")
    epoch = ckpt.meta["epoch"]
    torch_path = Path(state_dir) / f"torch-epoch{epoch}.pt"
    if not torch_path.is_file():
        raise cli.UserError(f"--state: {torch_path} is missing; the folder is incomplete")
    net.load_params(ckpt.params)
    opt.load_state_dict({**{f"velocity/{k}": v for k, v in ckpt.velocity.items()},
                         "lr": opt.lr})
    saved_torch = torch.load(torch_path, weights_only=True)
    model.load_state_dict(saved_torch["model"])
    topt.load_state_dict(saved_torch["optimizer"])
    torch.set_rng_state(saved_torch["rng"])
    return list(ckpt.meta["rows"]), int(ckpt.meta["step"])


def run_twin(prepared, arch: str = "alexnet-small", epochs: int = 5, batch_size: int = 128,
             lr: float = 0.01, init: str = "pytorch", seed: int = 0,
             val_max_images: int | None = None, dropout: float = 0.5,
             momentum: float = 0.9, weight_decay: float = 5e-4, progress: bool = True,
             log=print, warmup: bool = True, state_dir=None, masks: str = "shared",
             schedule: str = "constant", warmup_steps: int = 0) -> dict:
    """Train tinyalex and its torch twin on the same batches; return the report (a dict:
    "config", "epochs" [{"epoch", "tinyalex": {...}, "torch": {...}, "top1_diff_points"}],
    "within_target", "failed_epochs", "totals"). ``log`` gets the table rows as they come.
    With ``state_dir`` both nets are saved after every epoch, and a run given the same
    folder continues from the last finished epoch. ``schedule`` "linear" or "cosine": both
    get the step's lr of optim.BudgetSchedule (``warmup_steps``, then down to 0 at the last
    step of ``epochs``), tinyalex through train_step, torch by setting its param group's lr,
    as a PyTorch scheduler does; with a changing lr the paper's rule and torch's part by
    the ratio of consecutive lrs on the momentum term (chapter 09), which is the recipe
    each framework's users get."""

    from ..data.augment import Augmenter
    from ..data.loader import eval_loader, train_loader

    torch = import_torch()
    if epochs < 1 or batch_size < 1:
        raise cli.UserError("--epochs and --batch-size must be at least 1")
    if not lr > 0:
        raise cli.UserError("--lr must be positive")
    if val_max_images is not None and val_max_images < 1:
        raise cli.UserError("--val-max-images must be at least 1")
    if not 0 <= dropout < 1:
        raise cli.UserError("--dropout must be in [0, 1)")
    if masks not in MASKS:
        raise cli.UserError(f"--masks must be one of {', '.join(MASKS)}")
    if schedule not in SCHEDULES:
        raise cli.UserError(f"--schedule must be one of {', '.join(SCHEDULES)}")
    if warmup_steps < 0:
        raise cli.UserError("--warmup-steps must be at least 0")
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(seed)

    augmenter = Augmenter.from_prepared(prepared)  # train.py's defaults: paper §4.1
    num_classes = prepared.num_classes
    net, opt, model, topt = make_twins(arch, num_classes, augmenter.crop, init=init, seed=seed,
                                       dropout=dropout, lr=lr, momentum=momentum,
                                       weight_decay=weight_decay)
    loader = train_loader(prepared, augmenter, batch_size=batch_size, seed=seed)
    n_batches = len(loader)
    if n_batches == 0:
        raise cli.UserError(f"{len(prepared.train_labels)} training images make no full batch "
                            f"of {batch_size}; lower --batch-size")
    val_loader = eval_loader(prepared, augmenter, batch_size=batch_size)
    plan = None
    if schedule != "constant":
        from ..optim import BudgetSchedule

        plan = BudgetSchedule(lr, epochs * n_batches, warmup_steps, schedule)
    loss_fn = SoftmaxCrossEntropy()
    criterion = torch.nn.CrossEntropyLoss()
    if warmup:
        warm_up(net, model, batch_size, num_classes)
    dropout_names = [name for name, layer in net.layers
                     if isinstance(layer, Dropout) and layer.p > 0]

    config = {"arch": arch, "num_classes": num_classes, "crop": augmenter.crop,
              "epochs": epochs, "batch_size": batch_size, "batches_per_epoch": n_batches,
              "lr": lr, "momentum": momentum, "weight_decay": weight_decay, "init": init,
              "seed": seed, "dropout": dropout, "masks": masks, "schedule": schedule,
              "warmup_steps": warmup_steps,
              "val_max_images": val_max_images, "data": str(prepared.path), "data_kind": prepared.meta.get("kind"),
              "train_images": int(len(prepared.train_labels)),
              "optimizer": {"tinyalex": "tinyalex.optim.SGD (paper rule)",
                            "torch": "torch.optim.SGD"},
              "threads": {"cpu_count": os.cpu_count(), "torch": torch.get_num_threads()},
              "target": f"tinyalex val top-1 error <= torch's + {TARGET_POINTS:g} point "
                        "at every epoch"}
    log(f"twin: {arch} ({net.num_params():,} parameters, init {init}, dropout {dropout:g}, "
        f"masks {masks}) "
        f"on {num_classes} classes, {n_batches} batches of {batch_size} per epoch, "
        f"{epochs} epoch{'s' if epochs != 1 else ''}, lr {lr:g}"
        + (f" ({schedule} to 0 after {warmup_steps} warm-up steps)" if plan else "")
        + f", momentum {momentum:g}, weight decay {weight_decay:g}; "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads")
    log("both run in this one process, so torch gets tinyalex's process settings too (glibc "
        "reusing freed memory): it runs as the bench's 'torch + tinyalex's settings', faster "
        "than plain torch (python -m tinyalex.bench --compare-torch times both)")
    rows, step = [], 0
    if state_dir is not None:
        rows, step = load_state(state_dir, net, opt, model, topt, config)
        if rows:
            log(f"continuing from {state_dir}: {len(rows)} epoch{'s' if len(rows) != 1 else ''} "
                f"done, step {step}")
    log(format_header())
    for row in rows[:epochs]:
        log(format_row(row))

    for epoch in range(len(rows), epochs):
        seconds = {"tinyalex": 0.0, "torch": 0.0}
        loss_sum = {"tinyalex": 0.0, "torch": 0.0}
        correct = {"tinyalex": 0, "torch": 0}
        n = 0
        bar = cli.progress_bar(n_batches, f"epoch {epoch + 1}/{epochs}", "batch", progress)
        with loader.iter_epoch(epoch) as batches:
            for x, y in batches:
                step_lr = plan.lr_at(step) if plan is not None else None
                t0 = time.perf_counter()
                loss, logits = train_step(net, loss_fn, opt, x, y, step=step, seed=seed,
                                          lr=step_lr)
                seconds["tinyalex"] += time.perf_counter() - t0

                if masks == "shared" and dropout_names:
                    share_masks(net, model, dropout_names)
                t0 = time.perf_counter()
                xt = torch.from_numpy(x)
                yt = torch.from_numpy(y.astype(np.int64))
                if step_lr is not None:
                    for group in topt.param_groups:
                        group["lr"] = step_lr
                topt.zero_grad(set_to_none=True)
                out = model(xt)
                tloss = criterion(out, yt)
                tloss.backward()
                topt.step()
                tloss = float(tloss.detach())
                seconds["torch"] += time.perf_counter() - t0

                step += 1
                n += len(y)
                loss_sum["tinyalex"] += loss * len(y)
                loss_sum["torch"] += tloss * len(y)
                correct["tinyalex"] += int(topk_correct(to_numpy(logits), y, 1).sum())
                correct["torch"] += int(topk_correct(out.detach().numpy(), y, 1).sum())
                bar.update(1)
                bar.set_postfix(tinyalex=f"{loss:.3f}", torch=f"{tloss:.3f}")
        bar.close()
        t0 = time.perf_counter()
        val = evaluate_both(net, model, val_loader, val_max_images)
        eval_seconds = time.perf_counter() - t0
        row = {"epoch": epoch + 1, "step": step, "eval_seconds": eval_seconds}
        for fw in FRAMEWORKS:
            row[fw] = {"train_loss": loss_sum[fw] / n, "train_top1_err": 1 - correct[fw] / n,
                       **val[fw], "train_seconds": seconds[fw],
                       "img_per_s": n / seconds[fw] if seconds[fw] > 0 else float("nan")}
        diff = 100 * (row["tinyalex"]["val_top1_err"] - row["torch"]["val_top1_err"])
        row["top1_diff_points"] = round(diff, 9) + 0.0  # no "-0.0" for equal errors
        rows.append(row)
        log(format_row(row))
        if state_dir is not None:
            save_state(state_dir, net, opt, model, topt, config, rows, step)

    rows = rows[:epochs]
    failed = [r["epoch"] for r in rows if not r["top1_diff_points"] <= TARGET_POINTS]
    totals = {fw: sum(r[fw]["train_seconds"] for r in rows) for fw in FRAMEWORKS}
    return {"config": config, "epochs": rows, "within_target": not failed,
            "failed_epochs": failed, "totals": {"train_seconds": totals,
                                                "torch_over_tinyalex_time":
                                                    totals["torch"] / totals["tinyalex"]
                                                    if totals["tinyalex"] > 0 else None}}


# ------------------------------------------------------------------------------ report

_COLS = f"{'loss':>7} {'top-1':>6} {'top-5':>6} {'train s':>8}"


def format_header() -> str:
    width = len(_COLS)
    return "\n".join([
        f"{'':>5} | {'tinyalex':^{width}} | {'torch (twin)':^{width}} | {'top-1':>6}",
        f"{'epoch':>5} | {_COLS} | {_COLS} | {'diff':>6}",
        "-" * (5 + 2 * width + 6 + 9 + 3),
    ])


def _cells(r: dict) -> str:
    return (f"{r['train_loss']:>7.3f} {r['val_top1_err']:>6.1%} {r['val_top5_err']:>6.1%} "
            f"{r['train_seconds']:>8.1f}")


def format_row(row: dict) -> str:
    return (f"{row['epoch']:>5} | {_cells(row['tinyalex'])} | {_cells(row['torch'])} | "
            f"{row['top1_diff_points']:>+6.1f}")


def format_summary(report: dict) -> str:
    rows = report["epochs"]
    diffs = ", ".join(f"{r['epoch']}: {r['top1_diff_points']:+.1f}" for r in rows)
    t = report["totals"]["train_seconds"]
    ratio = report["totals"]["torch_over_tinyalex_time"]
    verdict = ("MET" if report["within_target"] else
               "NOT MET at epoch(s) " + ", ".join(map(str, report["failed_epochs"])))
    lines = [
        "loss = mean training loss of the epoch; top-1 / top-5 = validation error (centre "
        "crop); train s = the sum of that framework's step times",
        f"val top-1 error difference, tinyalex - torch, in points, per epoch: {diffs}",
        f"target (tinyalex's val top-1 error at most the twin's + {TARGET_POINTS:g} point at "
        f"every epoch): {verdict}",
    ]
    if ratio is not None:
        lines.append(f"training time: tinyalex {t['tinyalex']:.1f} s, torch {t['torch']:.1f} s "
                     f"(torch / tinyalex = {ratio:.2f}x)")
    return "\n".join(lines)


def format_report(report: dict) -> str:
    return "\n".join([format_header(), *map(format_row, report["epochs"]),
                      format_summary(report)])


def seeds_summary(reports: list) -> dict:
    """Several seeds of the pair: per epoch, each seed's top-1 difference (points), their
    mean, and each framework's seed-to-seed spread of val top-1 error (max - min, points),
    which is how far apart two runs of the SAME framework land. Judged: the mean difference
    at most TARGET_POINTS at every epoch."""
    epochs = min(len(r["epochs"]) for r in reports)
    rows = []
    for e in range(epochs):
        diffs = [r["epochs"][e]["top1_diff_points"] for r in reports]
        spread = {fw: 100 * (max(r["epochs"][e][fw]["val_top1_err"] for r in reports)
                             - min(r["epochs"][e][fw]["val_top1_err"] for r in reports))
                  for fw in FRAMEWORKS}
        rows.append({"epoch": e + 1, "diffs": diffs, "mean_diff": sum(diffs) / len(diffs),
                     "spread": spread})
    failed = [row["epoch"] for row in rows if not row["mean_diff"] <= TARGET_POINTS]
    return {"seeds": [r["config"]["seed"] for r in reports], "epochs": rows,
            "mean_within_target": not failed, "failed_epochs": failed}


def format_seeds_summary(summary: dict) -> str:
    seeds = summary["seeds"]
    head = (f"{'epoch':>5} | " + " ".join(f"{'seed ' + str(s):>8}" for s in seeds)
            + f" | {'mean':>6} | {'tinyalex spread':>15} {'torch spread':>12}")
    lines = [f"val top-1 error difference, tinyalex - torch, in points, over seeds "
             f"{', '.join(map(str, seeds))}; spread = max - min of one framework's error "
             f"over the seeds", head, "-" * len(head)]
    for row in summary["epochs"]:
        lines.append(f"{row['epoch']:>5} | " + " ".join(f"{d:>+8.1f}" for d in row["diffs"])
                     + f" | {row['mean_diff']:>+6.1f} | {row['spread']['tinyalex']:>15.1f} "
                       f"{row['spread']['torch']:>12.1f}")
    verdict = ("MET" if summary["mean_within_target"] else
               "NOT MET at epoch(s) " + ", ".join(map(str, summary["failed_epochs"])))
    lines.append(f"mean over the seeds within +{TARGET_POINTS:g} point at every epoch: {verdict}")
    return "\n".join(lines)


def write_json(report: dict, path) -> Path:
    path = Path(path)
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(report), indent=1))
    return path


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --------------------------------------------------------------------------------- CLI

DESCRIPTION = ("Train tinyalex and its PyTorch twin (same initial weights, same loader "
               "batches, SGD momentum 0.9, weight decay 5e-4) and compare validation error "
               "and training time per epoch.")


def build_parser():
    p = cli.parser("python -m tinyalex.bench twin", DESCRIPTION)
    add_arguments(p)
    return p


def add_arguments(p) -> None:
    """The options of ``bench twin``, on its own parser or on the bench's subcommand."""
    from ..data.find import add_data_arguments

    add_data_arguments(p)
    p.add_argument("--arch", choices=sorted(ARCHITECTURES), default=None,
                   help="default: alexnet for 256-px images, alexnet-small for smaller")
    p.add_argument("--epochs", type=int, default=5, help="passes over the training set")
    p.add_argument("--batch-size", type=int, default=128, help="images per SGD step")
    p.add_argument("--lr", type=float, default=0.01,
                   help="learning rate (the peak one with --schedule linear or cosine)")
    p.add_argument("--schedule", choices=SCHEDULES, default="constant",
                   help="constant, or a warm-up and a decay to 0 at the last step, as "
                        "python -m tinyalex.train --schedule linear/cosine")
    p.add_argument("--warmup-steps", type=int, default=0, metavar="N",
                   help="with --schedule linear/cosine: ramp the lr up over N steps")
    p.add_argument("--init", choices=sorted(INITS), default="pytorch",
                   help="the starting weights both nets share (see net.INITS)")
    p.add_argument("--dropout", type=float, default=0.5,
                   help="dropout probability of fc6/fc7 in both nets (0 turns it off)")
    p.add_argument("--seed", type=int, default=0,
                   help="init, data order/augmentation, tinyalex's and torch's dropout")
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="S",
                   help="run the pair once per seed (instead of --seed; with --state, each "
                        "in DIR/seed-S) and add a summary: each seed's difference, the mean, "
                        "and each framework's seed-to-seed spread")
    p.add_argument("--masks", choices=MASKS, default="shared",
                   help="dropout: 'shared' gives torch tinyalex's masks of each step (the two "
                        "runs differ only by rounding); 'own' lets torch draw its own (two "
                        "draws of the same training)")
    p.add_argument("--val-max-images", type=int, default=None, metavar="N",
                   help="validate on the first N validation images only")
    p.add_argument("--out", default=None, metavar="FILE", help="also write the report as JSON")
    p.add_argument("--state", default=None, metavar="DIR",
                   help="save both nets here after every epoch; the same command later "
                        "continues from the last finished epoch")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")


def main(argv=None) -> int:
    return run(build_parser().parse_args(argv))


def run(args) -> int:
    for key in ("epochs", "batch_size", "max_per_class", "val_max_images", "size"):
        value = getattr(args, key)
        if value is not None and value < 1:
            raise cli.UserError(f"--{key.replace('_', '-')} must be at least 1")
    if not args.lr > 0:
        raise cli.UserError("--lr must be positive")
    if not 0 <= args.dropout < 1:
        raise cli.UserError("--dropout must be in [0, 1)")
    import_torch()

    from tqdm import tqdm

    from ..data.find import resolve_from_args

    prepared = resolve_from_args(args, log=tqdm.write)
    arch = args.arch or ("alexnet" if prepared.image_size >= 256 else "alexnet-small")
    common = dict(arch=arch, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                  init=args.init, val_max_images=args.val_max_images, dropout=args.dropout,
                  progress=not args.no_progress, log=tqdm.write, masks=args.masks,
                  schedule=args.schedule, warmup_steps=args.warmup_steps)
    if args.seeds is None:
        report = run_twin(prepared, seed=args.seed, state_dir=args.state, **common)
        print(format_summary(report))
    else:
        if len(set(args.seeds)) != len(args.seeds):
            raise cli.UserError("--seeds: each seed once")
        reports = []
        for seed in args.seeds:
            tqdm.write(f"--- seed {seed}")
            state = None if args.state is None else Path(args.state) / f"seed-{seed}"
            reports.append(run_twin(prepared, seed=seed, state_dir=state, **common))
            print(format_summary(reports[-1]))
        summary = seeds_summary(reports)
        print(format_seeds_summary(summary))
        report = {"runs": reports, "seeds_summary": summary}
    if args.out:
        print(f"wrote {write_json(report, args.out)}")
    return 0
