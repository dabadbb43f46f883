"""``python -m tinyalex.train``: train AlexNet on a 100-class ImageNet subset (or any set).

    python -m tinyalex.train --subset 100-class                 # finds data, or synthetic
    python -m tinyalex.train --data ~/tiny-imagenet-200.zip --epochs 10
    python -m tinyalex.train --resume                           # the latest run, exactly
    mpiexec -n 2 python -m tinyalex.train --data ...            # data parallel, 2 processes

The loop is the paper's §5: SGD with momentum 0.9 and weight decay 5e-4 on batches of 128
augmented crops (§4.1). The learning rate is not: by default it warms up over the first
epoch to 0.02 and falls linearly to 0 at the last planned step (--epochs, or --hours), which
reached 40.6% top-1 on Tiny-100 in 10 epochs (the default command, 62 min) where the paper's rule (lr 0.01, divided by 10
when the validation error stops improving) reached 33.4% (docs/results.md, "Budget
schedules"); --schedule paper is §5's rule. Every epoch: validation top-1/top-5 error, metrics.jsonl
and curves.png (and diagnostics.png, see --diagnostics-every) in the run folder, `last.npz` (also every --checkpoint-every steps) and
`best.npz`. Ctrl-C saves and stops cleanly; `--resume` continues exactly where it stopped
(same data order, augmentation and dropout masks: on the CPU the weights come out
bit-identical to an uninterrupted run).

Under ``mpiexec -n K`` (pip install 'tinyalex[mpi]') the K processes train one model data
parallel (distributed.py): each takes 1/K of every batch of --batch-size, the gradients are
averaged before the update, and rank 0 alone prints, logs and writes the run folder. The
recipe does not change with K, and a run resumes with any K.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

from .. import checkpoint, distributed
from ..backend import to_numpy
from ..layers import SoftmaxCrossEntropy
from ..loop import Diverged, evaluate, train_step
from ..metrics import topk_correct
from ..net import ARCHITECTURES, INITS, LRN_CONVENTIONS, build
from ..optim import SGD, BudgetSchedule, PlateauSchedule, warmup_lr
from ..runlock import RunFolderBusy, RunLock
from . import cli

DEFAULTS = dict(data=None, subset="100-class", arch=None, epochs=10, batch_size=128, lr=None,
                momentum=0.9, weight_decay=5e-4, seed=0, device="cpu", out=None,
                max_steps=None, init="pytorch", checkpoint_every=500, log_every=20,
                size=None, cache=None, max_per_class=None, val_max_images=None,
                pca_std=0.1, pca_scale="paper", no_flip=False, mean_mode="pixel", lrn_convention="paper",
                patience=3, no_figures=False, diagnostics_every=50, show_diagnostics=False,
                warmup_steps=None, schedule="linear", hours=None, ordered_reduction=False,
                overlap=False)
#: The run on the built-in synthetic set, when no dataset is found and the command line does
#: not say otherwise: a demonstration that ends well in minutes, not the 10 epochs (hours) of
#: the real-data default. Measured on 2 cores: see SYNTHETIC_MINUTES and the README.
SYNTHETIC_RECIPE = dict(arch="alexnet-mini", epochs=6, schedule="cosine", lr=0.02,
                        warmup_steps=234)
SYNTHETIC_MINUTES = "3-6 minutes"   # the README's; docs/results.md measures 3-4 of training
#: What may change when resuming; everything else comes from the checkpoint.
RESUMABLE = ("epochs", "max_steps", "checkpoint_every", "log_every", "no_figures",
             "val_max_images", "diagnostics_every", "show_diagnostics", "device",
             "ordered_reduction", "overlap")


def build_parser(suppress_defaults: bool = False) -> argparse.ArgumentParser:
    p = cli.parser("python -m tinyalex.train", __doc__.split("\n\n")[0].split(": ", 1)[1])
    d = (lambda k: argparse.SUPPRESS) if suppress_defaults else DEFAULTS.get
    g = p.add_argument_group("data")
    g.add_argument("--data", default=d("data"), metavar="PATH",
                   help="dataset folder or archive, or a prepared folder "
                        "(default: $TINYALEX_DATA, then ./data/, else the synthetic set)")
    g.add_argument("--subset", default=d("subset"),
                   help="100-class (ImageNet-100 / Tiny-100), all, or a file of wnids")
    g.add_argument("--size", type=int, default=d("size"),
                   help="stored image side (default 256; 64 for Tiny ImageNet)")
    g.add_argument("--cache", default=d("cache"), metavar="DIR",
                   help="where prepared data is kept (default $TINYALEX_CACHE or ~/.cache/tinyalex)")
    g.add_argument("--max-per-class", type=int, default=d("max_per_class"), metavar="N",
                   help="use at most N images per class (quick runs)")
    g.add_argument("--pca-std", type=float, default=d("pca_std"),
                   help="std of the PCA colour alphas (§4.1; 0 turns it off)")
    g.add_argument("--pca-scale", choices=["paper", "paper-255", "sqrt"],
                   default=d("pca_scale"),
                   help="PCA colour: the paper's alpha*lambda on [0,1] RGB, literally on "
                        "0..255 (far too strong), or alpha*sqrt(lambda)")
    g.add_argument("--no-flip", action="store_true", default=d("no_flip"),
                   help="no random horizontal reflections")
    g.add_argument("--mean-mode", choices=["pixel", "channel"], default=d("mean_mode"),
                   help="subtract the mean image (§2) or the per-channel mean")
    g = p.add_argument_group("model and optimisation")
    g.add_argument("--arch", choices=sorted(ARCHITECTURES), default=d("arch"),
                   help="default: alexnet for 256-px images, alexnet-small for smaller; "
                        "alexnet-mini is alexnet-small at 1/4 width, for quick runs; "
                        "alexnet-owt is torchvision's one-column AlexNet")
    g.add_argument("--init", choices=sorted(INITS), default=d("init"),
                   help="weight init: 'paper' is §5 exactly (it stalls at chance on these "
                        "subsets, see README); 'paper-bias0' is §5's weights with zero "
                        "biases; 'pytorch' is fan-in scaled")
    g.add_argument("--lrn-convention", choices=LRN_CONVENTIONS,
                   default=d("lrn_convention"), help="LRN formula (§3.3; caffe: alpha/n with k=1, as bvlc_alexnet)")
    g.add_argument("--epochs", type=int, default=d("epochs"),
                   help="passes over the training set (10: about 1 h for Tiny-100 on 2 "
                        "cores; the lr schedule is planned over them)")
    g.add_argument("--batch-size", type=int, default=d("batch_size"),
                   help="images per SGD step (§5: 128)")
    g.add_argument("--lr", type=float, default=d("lr"),
                   help="peak (linear, cosine) or initial (paper) learning rate (default: "
                        "0.02 for linear and cosine, 0.01 for paper as in §5)")
    g.add_argument("--schedule", choices=["paper", "cosine", "linear"], default=d("schedule"),
                   help="linear or cosine: from --lr down to 0 at the last planned step "
                        "(--epochs or --hours), after --warmup-steps; paper: lr /10 when the "
                        "validation error stops improving (§5, see --patience). linear "
                        "learnt most in 10 epochs on Tiny-100: 39.9-40.6%% top-1 against "
                        "cosine's 38.9%% and paper's 33.4%% (docs/results.md)")
    g.add_argument("--hours", type=float, default=d("hours"), metavar="H",
                   help="plan the run to take about H hours: the epochs are set from the "
                        "speed of a few timed steps (instead of --epochs)")
    g.add_argument("--warmup-steps", type=int, default=d("warmup_steps"), metavar="N",
                   help="ramp the lr linearly from lr/N to lr over the first N steps (not in "
                        "the paper; 0: none; default: one epoch's steps for linear and "
                        "cosine, 0 for paper)")
    g.add_argument("--momentum", type=float, default=d("momentum"), help="§5: 0.9")
    g.add_argument("--weight-decay", type=float, default=d("weight_decay"), help="§5: 0.0005")
    g.add_argument("--patience", type=int, default=d("patience"),
                   help="epochs without validation improvement before lr /= 10 (3: a "
                        "patience of 1 cut the lr during the first epochs' plateau on "
                        "Tiny-100, before anything was learnt)")
    g.add_argument("--seed", type=int, default=d("seed"),
                   help="init, data order and augmentation, dropout masks")
    g.add_argument("--device", choices=["cpu", "gpu"], default=d("device"),
                   help="gpu needs CuPy (pip install 'tinyalex[gpu]') and an NVIDIA GPU")
    g.add_argument("--ordered-reduction", action="store_true",
                   default=d("ordered_reduction"),
                   help="under mpiexec: add the ranks' gradients in rank order on rank 0 "
                        "(a result independent of the MPI library's reduction tree; "
                        "slower) instead of one allreduce")
    g.add_argument("--overlap", action="store_true", default=d("overlap"),
                   help="under mpiexec: allreduce each layer's gradients as soon as its "
                        "backward is done, while the layers below still compute (pays on a "
                        "network between machines: python -m tinyalex.bench scaling); the "
                        "same sums as one allreduce")
    g = p.add_argument_group("run")
    g.add_argument("--out", default=d("out"), metavar="DIR",
                   help="run folder (default runs/<date>-<arch>-<dataset>)")
    g.add_argument("--resume", nargs="?", const="latest", default=argparse.SUPPRESS,
                   metavar="PATH", help="continue a run: its folder or a .npz "
                                        "(no PATH: the run in --out DIR if given, else the "
                                        "latest run under runs/)")
    g.add_argument("--max-steps", type=int, default=d("max_steps"), metavar="N",
                   help="stop after N training steps in all (smoke runs)")
    g.add_argument("--checkpoint-every", type=int, default=d("checkpoint_every"), metavar="N",
                   help="save last.npz every N steps (and at every epoch end)")
    g.add_argument("--log-every", type=int, default=d("log_every"), metavar="N",
                   help="write a train line to metrics.jsonl every N steps")
    g.add_argument("--diagnostics-every", type=int, default=d("diagnostics_every"),
                   metavar="N",
                   help="at step 1 and every N steps write a 'diag' line to metrics.jsonl "
                        "(activation and gradient RMS per layer, dead ReLUs; "
                        "diagnostics.png); 0 turns it off")
    g.add_argument("--show-diagnostics", action="store_true", default=d("show_diagnostics"),
                   help="also print each diag line as a compact table row")
    g.add_argument("--val-max-images", type=int, default=d("val_max_images"), metavar="N",
                   help="validate on the first N validation images only")
    g.add_argument("--no-figures", action="store_true", default=d("no_figures"),
                   help="do not draw the PNG figures")
    return p


# ------------------------------------------------------------------------------ helpers

class Log:
    """Print above the progress bar and append to <run>/train.log (on rank 0 only, in a
    data-parallel job: ``quiet`` for the others)."""

    def __init__(self, path: Path | None = None, quiet: bool = False):
        self.path, self.quiet = path, quiet

    def __call__(self, message: str) -> None:
        from tqdm import tqdm

        if self.quiet:
            return
        tqdm.write(message)
        if self.path is not None:
            try:
                with open(self.path, "a") as fh:
                    fh.write(message + "\n")
            except OSError as err:   # a full disk: the message is printed all the same
                tqdm.write(f"(not written to {self.path}: {err.strerror or err})")
                self.path = None


class Stopped(KeyboardInterrupt):
    """A stop request honoured at once: raised by StopFlag inside ``at_once()`` sections
    (data preparation, validation, figures), where nothing half-done can reach a checkpoint."""


class StopFlag:
    """Ctrl-C (SIGINT) or SIGTERM (what a scheduler sends before it preempts) asks the run
    to stop. Between training steps it is a flag the loop reads at the next step boundary,
    so the checkpoint never holds a half-applied update; inside ``at_once()`` (work that
    changes no training state) it raises Stopped right away. A second Ctrl-C stops at once."""

    def __init__(self):
        self.requested = False
        self.immediate = 0
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.immediate:
            self.requested = True
            raise Stopped
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    @contextlib.contextmanager
    def at_once(self):
        """Within: a stop request (or one already made) raises Stopped at once."""
        if self.requested:
            raise Stopped
        self.immediate += 1
        try:
            yield
        finally:
            self.immediate -= 1

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def latest_run(root: Path = Path("runs")) -> Path:
    """The run folder under root whose last checkpoint (or the one kept before it) is newest."""
    runs = [p for pattern in ("*/last.npz", "*/last.prev.npz")
            for p in root.glob(pattern)] if root.is_dir() else []
    if not runs:
        raise cli.UserError(f"--resume: no run with a last.npz under {root}/; "
                            "give the run folder or checkpoint path")
    return max(runs, key=lambda p: p.stat().st_mtime).parent


def resolve_resume(value: str) -> list[Path]:
    """The checkpoints --resume may take, newest first: a run folder's last.npz and the
    last.prev.npz kept beside it (a .npz given: it, then its .prev.npz)."""
    path = latest_run() if value == "latest" else Path(value)
    if path.is_dir():
        path = path / "last.npz"
    candidates = [path]
    if not path.stem.endswith(".prev"):
        candidates.append(checkpoint.previous_path(path))
    if not any(p.is_file() for p in candidates):
        raise cli.UserError(f"--resume: no checkpoint at {path}")
    return candidates   # a missing last.npz beside a last.prev.npz is said when skipped


def load_for_resume(candidates: list[Path]) -> tuple:
    """(Checkpoint, path, skipped) of the first candidate that reads and holds a training
    state; skipped: a line for each one before it, with why. UserError when none does."""
    why = []
    for path in candidates:
        try:
            ckpt = checkpoint.check_training(checkpoint.load(path), resume=True)
        except (FileNotFoundError, ValueError) as err:
            why.append(str(err))
            continue
        return ckpt, path, [f"skipping a checkpoint that does not read: {r}" for r in why]
    raise cli.UserError("--resume: no checkpoint of this run reads: " + "; ".join(why))


def at_least(low):
    return (lambda v: v >= low), f"at least {low}"


#: Every numeric option's range: (config key, test, what it must be). A value of None (an
#: option left to its default) is not tested.
RANGES = (
    ("epochs", *at_least(1)), ("batch_size", *at_least(1)), ("max_steps", *at_least(1)),
    ("checkpoint_every", *at_least(1)), ("log_every", *at_least(1)),
    ("max_per_class", *at_least(1)), ("val_max_images", *at_least(1)), ("size", *at_least(1)),
    ("patience", *at_least(1)), ("seed", *at_least(0)),
    ("warmup_steps", lambda v: v >= 0, "at least 0 (0: no warm-up)"),
    ("diagnostics_every", lambda v: v >= 0, "at least 0 (0 turns it off)"),
    ("lr", lambda v: math.isfinite(v) and v > 0, "positive (a finite number above 0)"),
    ("momentum", lambda v: 0 <= v < 1, "in [0, 1) (§5: 0.9; 1 or more never forgets a "
                                       "gradient and diverges)"),
    ("weight_decay", lambda v: math.isfinite(v) and v >= 0, "a finite number, at least 0 "
                                                             "(§5: 0.0005)"),
    ("pca_std", lambda v: math.isfinite(v) and v >= 0, "a finite number, at least 0 (0 "
                                                        "turns the PCA colour off)"),
    ("hours", lambda v: math.isfinite(v) and v > 0, "positive (a finite number above 0)"),
)


def check_config(cfg: dict) -> None:
    """UserError (one line, exit 2) for the first option out of its range (RANGES) or a
    combination that cannot run."""
    for key, ok, must in RANGES:
        value = cfg.get(key)
        if value is not None and not ok(value):
            raise cli.UserError(f"--{key.replace('_', '-')} must be {must}, not {value:g}"
                                if isinstance(value, float) else
                                f"--{key.replace('_', '-')} must be {must}, not {value}")
    if cfg.get("overlap") and cfg.get("ordered_reduction"):
        raise cli.UserError("--overlap and --ordered-reduction do not combine: choose one")
    if cfg["device"] == "gpu":
        cli.require_gpu()   # evaluate --device gpu asks the same


def default_lr(schedule: str) -> float:
    """--lr when none is given: §5's 0.01 for the paper's schedule; 0.02 for a budget
    schedule, whose lr spends half the run below its peak (0.03 learnt less in the first
    epochs on Tiny-100, docs/results.md)."""
    return 0.01 if schedule == "paper" else 0.02


def append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def truncate_metrics(path: Path, step: int, log=None) -> None:
    """Drop lines written after the checkpoint a run resumes from (they will be redone),
    and a torn line (a run stopped while appending it), which ``log`` is told of."""
    if not path.is_file():
        return
    keep, torn = [], 0
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            torn += 1
    if torn and log is not None:
        log(f"{path}: dropped {torn} torn line{'s' if torn > 1 else ''} (a run stopped "
            "while writing it)")
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text("".join(line + "\n" for line in keep))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)   # a full disk leaves the old file, not a temporary


def net_kwargs(arch: str, crop: int, **extra) -> dict:
    """build() keyword arguments for an arch fed crop-px images (UserError if it can't be)."""
    kwargs = dict(extra)
    if arch == "alexnet-owt" and crop < 63:  # pool5 would be empty below 63 px
        raise cli.UserError(f"--arch alexnet-owt needs crops of at least 63 px (torchvision "
                            f"trains on 224); this data gives {crop}-px crops (use --size 256)")
    if arch != "alexnet":
        kwargs["input_size"] = crop
    elif crop != 227:
        raise cli.UserError(f"--arch alexnet needs 227-px crops of 256-px images; this "
                            f"data gives {crop}-px crops (use --size 256 or alexnet-small)")
    return kwargs


def default_out(arch: str, kind: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path("runs") / f"{stamp}-{arch}-{kind}"
    n = 1
    while out.exists():
        n += 1
        out = Path("runs") / f"{stamp}-{arch}-{kind}-{n}"
    return out


class Estimate:
    """The run's remaining time, said once from the first steps of this process: the first
    step is left out (it compiles the Numba kernels), the next ``steps`` are timed, and the
    validation passes are counted at a third of a training step's time per image (forward
    only)."""

    def __init__(self, steps_left: int, batch_size: int, val_images: int, epochs_left: int,
                 steps: int = 5):
        self.steps_left, self.batch_size = steps_left, batch_size
        self.val_images, self.epochs_left, self.steps = val_images, epochs_left, steps
        self.taken, self.t0, self.done = 0, None, False

    def tick(self):
        """Call after each step; returns the estimate's sentence once, else None."""
        self.taken += 1
        if self.done or self.taken == 1:
            self.t0 = time.perf_counter()
            return None
        if self.taken < self.steps + 1:
            return None
        self.done = True
        per_step = (time.perf_counter() - self.t0) / self.steps
        left = self.steps_left - self.taken
        seconds = left * per_step + self.epochs_left * self.val_images * per_step / (
            3 * self.batch_size)
        finish = time.strftime("%H:%M", time.localtime(time.time() + seconds))
        return (f"estimated time left: {format_duration(seconds)} for {left:,} steps at "
                f"{per_step:.2f} s a step (timed on steps 2-{self.steps + 1} of this run) and "
                f"{self.epochs_left} validation pass{'es' if self.epochs_left != 1 else ''}; "
                f"done around {finish}")


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# -------------------------------------------------------------------------------- trainer

class Trainer:
    """Owns the net, optimizer, schedule, loaders and the run folder; ``run()`` trains."""

    def __init__(self, cfg: dict, prepared, out: Path, log: Log, ckpt=None,
                 comm=None):
        from ..data.augment import Augmenter
        from ..data.loader import eval_loader, train_loader

        self.cfg, self.prepared, self.out, self.log = cfg, prepared, out, log
        self.comm = comm if comm is not None else distributed.Local()
        ranks = (self.comm.rank, self.comm.size)
        num_classes = prepared.num_classes
        self.augmenter = Augmenter.from_prepared(
            prepared, pca_std=cfg["pca_std"], pca_scale=cfg.get("pca_scale", "paper"),
            flip=not cfg["no_flip"], mean_mode=cfg["mean_mode"])
        crop = self.augmenter.crop
        arch = cfg["arch"]
        kwargs = net_kwargs(arch, crop, lrn_convention=cfg["lrn_convention"])
        self.net_spec = {"arch": arch, "num_classes": num_classes, "kwargs": kwargs}
        self.net = build(arch, num_classes, seed=cfg["seed"], init=cfg["init"], **kwargs)
        if cfg.get("device") == "gpu":  # the same weights as a CPU run's, then on the GPU
            from ..backend import gpu_module

            self.net.to(gpu_module())
        self.opt = SGD(self.net.params, lr=cfg["lr"], momentum=cfg["momentum"],
                       weight_decay=cfg["weight_decay"])
        self.schedule = PlateauSchedule(lr=cfg["lr"], patience=cfg["patience"])  # for now
        self.loss_fn = SoftmaxCrossEntropy()
        self.epoch, self.batch, self.step = 0, 0, 0
        self.best = None
        self.last_val = None
        #: the last checkpoint this run stands behind (the divergence message names it)
        self.saved, self.saved_step = None, None
        #: this epoch's training loss sum, correct count, images and seconds so far
        self.epoch_sums = [0.0, 0, 0, 0.0]
        if ckpt is not None:
            try:
                checkpoint.check_params(ckpt, self.net, f"the run's {arch}")
            except checkpoint.CheckpointError as err:
                raise cli.UserError(str(err)) from None
            self.net.load_params(ckpt.params)
            self.opt.load_state_dict({**{f"velocity/{k}": v for k, v in ckpt.velocity.items()},
                                      "lr": ckpt.meta["lr"]})
            if cfg.get("schedule", "paper") == "paper":
                self.schedule.load_state_dict(ckpt.meta["schedule"])
            self.epoch, self.batch, self.step = (ckpt.meta[k] for k in ("epoch", "batch", "step"))
            self.best = ckpt.meta.get("best_val_top1_err")
            self.saved, self.saved_step = ckpt.path, self.step
            if self.batch and ckpt.meta.get("epoch_sums"):
                self.epoch_sums = list(ckpt.meta["epoch_sums"])
        self.comm.broadcast_params(self.net.params)   # every rank starts from rank 0's weights
        self.train_loader = train_loader(prepared, self.augmenter, batch_size=cfg["batch_size"],
                                         seed=cfg["seed"], ranks=ranks)
        if len(self.train_loader) == 0:
            raise cli.UserError(f"{prepared.train_labels.shape[0]} training images make no "
                                f"full batch of {cfg['batch_size']}; lower --batch-size")
        self.val_loader = eval_loader(prepared, self.augmenter, batch_size=cfg["batch_size"],
                                      max_images=cfg["val_max_images"], ranks=ranks)
        if cfg.get("warmup_steps") is None:  # the default: one epoch, for a budget schedule
            cfg["warmup_steps"] = (0 if cfg.get("schedule", "paper") == "paper"
                                   else len(self.train_loader))
        self.make_budget_schedule()
        self.metrics = out / "metrics.jsonl"
        self._diag_header_shown = False
        self.phase = "the start"

    def make_budget_schedule(self) -> None:
        """--schedule cosine/linear: planned over --epochs' steps (the plan is the config's,
        so a resumed run with the same --epochs takes the same steps)."""
        cfg = self.cfg
        if cfg.get("schedule", "paper") != "paper":
            self.schedule = BudgetSchedule(cfg["lr"], cfg["epochs"] * len(self.train_loader),
                                           cfg.get("warmup_steps", 0), cfg["schedule"])

    def train_step(self, net, opt, x, y, step: int, lr=None):
        """loop.train_step on this rank's rows of the batch (all of it in one process)."""
        if self.comm.size == 1:
            return train_step(net, self.loss_fn, opt, x, y, step=step, seed=self.cfg["seed"],
                              lr=lr)
        rows = (*self.comm.part(self.cfg["batch_size"]), self.cfg["batch_size"])
        return train_step(net, self.loss_fn, opt, x, y, step=step, seed=self.cfg["seed"],
                          lr=lr, comm=self.comm, rows=rows)

    def step_lr(self) -> float | None:
        """The lr of the next step (None: the optimizer's, as the plateau rule left it)."""
        if isinstance(self.schedule, BudgetSchedule):
            return self.schedule.lr_at(self.step)
        if self.cfg.get("warmup_steps", 0):
            return warmup_lr(self.schedule.lr, self.step, self.cfg["warmup_steps"])
        return None

    def plan_hours(self, hours: float) -> int:
        """Set --epochs so that the run takes about ``hours``: three steps of a copy of the net
        on the first batch are timed (after one that compiles the kernels), and validation
        is counted at a third of a step's time per image. Returns the epochs."""
        import copy

        net, opt = copy.deepcopy(self.net), copy.deepcopy(self.opt)
        with self.train_loader.iter_epoch(0) as batches:
            x, y = next(iter(batches))
        self.train_step(net, opt, x, y, step=0)
        t0 = time.perf_counter()
        for s in range(3):
            self.train_step(net, opt, x, y, step=s + 1)
        per_step = self.comm.broadcast_object((time.perf_counter() - t0) / 3)
        val_images = len(self.prepared.val_labels)
        if self.cfg["val_max_images"]:
            val_images = min(val_images, self.cfg["val_max_images"])
        epoch_seconds = per_step * (len(self.train_loader)
                                    + val_images / (3 * self.cfg["batch_size"]))
        epochs = max(1, int(hours * 3600 / epoch_seconds))
        self.cfg["epochs"] = epochs
        self.make_budget_schedule()
        self.log(f"--hours {hours:g}: {per_step:.2f} s a step (3 timed), "
                 f"{format_duration(epoch_seconds)} an epoch with validation -> {epochs} "
                 f"epoch{'s' if epochs != 1 else ''} (about {format_duration(epochs * epoch_seconds)})")
        return epochs

    # -- checkpoints
    def meta(self) -> dict:
        p = self.prepared
        return {"net": self.net_spec, "classes": p.classes, "names": p.names,
                "data": {"kind": p.meta.get("kind"), "source": p.meta.get("source"),
                         "path": str(p.path), "subset": p.meta.get("subset"),
                         "size": p.image_size, "crop": self.augmenter.crop,
                         "mean_mode": self.augmenter.mean_mode},
                "config": self.cfg, "epoch": self.epoch, "batch": self.batch,
                "step": self.step, "lr": self.opt.lr, "schedule": self.schedule.state_dict(),
                "best_val_top1_err": self.best, "epoch_sums": self.epoch_sums}

    def save(self, name: str = "last.npz") -> Path:
        """The run's state as out/name (last.npz keeps the one before as last.prev.npz)."""
        if not self.comm.is_root:   # rank 0 writes; the others hold the same weights
            return self.out / name
        p = self.prepared
        path = checkpoint.save(self.out / name, self.net.params, self.meta(),
                               velocity=self.opt.velocity,
                               data={"mean": p.mean, "pca_eigvals": p.pca_eigvals,
                                     "pca_eigvecs": p.pca_eigvecs},
                               keep_previous=name == "last.npz")
        if name == "last.npz":
            self.saved, self.saved_step = path, self.step
        return path

    def checkpoint_bytes(self) -> int:
        """The size of one checkpoint file of this run (weights, momentum, statistics)."""
        p = self.prepared
        arrays = [*self.net.params.values(), *self.opt.velocity.values(), p.mean,
                  p.pca_eigvals, p.pca_eigvecs]
        return sum(int(a.nbytes) + 300 for a in arrays) + 64 * 1024   # headers, meta

    def check_space(self) -> None:
        """UserError before training when the run folder's disk cannot hold the run's
        checkpoints: last.npz, last.prev.npz, best.npz and one being written, less what the
        files already there will give back, and 16 MiB for logs and figures."""
        if not self.comm.is_root:
            return
        size = self.checkpoint_bytes()
        have = sum(f.stat().st_size for f in (self.out / n for n in
                   ("last.npz", "last.prev.npz", "best.npz")) if f.is_file())
        needed = 4 * size - have + 16 * 2**20
        free = checkpoint.free_bytes(self.out)
        if free < needed:
            fb = checkpoint.format_bytes
            raise cli.UserError(f"the run folder {self.out} has {fb(free)} free; the run needs "
                                f"about {fb(needed)} more (last.npz, last.prev.npz, best.npz "
                                f"and one being written, {fb(size)} each, and its logs): "
                                "free some space or choose another --out")

    # -- the loop
    def run(self, stop: StopFlag) -> int:
        """Train to the end of the plan (0), or until stopped (130): a stop request made
        during training ends the step under way, one during a validation or the figures
        ends it at once; either way last.npz holds a state a resumed run goes on from
        exactly (a validation cut short is done again on resume)."""
        try:
            return self.train(stop)
        except Stopped:
            phase = self.phase
            self.save()
            self.log(f"stopped during {phase} at step {self.step}; saved "
                     f"{self.out / 'last.npz'}"
                     + (" (the validation is done again on resume)" if "validation" in phase
                        and self.batch == len(self.train_loader) else "")
                     + f". Continue with: python -m tinyalex.train --resume {self.out}")
            return 130

    def train(self, stop: StopFlag) -> int:
        """The loop of run() (Stopped passes through)."""
        cfg, n_batches = self.cfg, len(self.train_loader)
        if cfg["max_steps"] is not None and self.step >= cfg["max_steps"]:
            self.log(f"this run has taken its --max-steps {cfg['max_steps']} steps; nothing "
                     f"to do (give a larger --max-steps to go on)")
            return 0
        if self.epoch >= cfg["epochs"]:
            self.log(f"this run has finished its {cfg['epochs']} epochs; nothing to do "
                     f"(give a larger --epochs to go on)")
            return 0
        self.log(f"training {cfg['arch']} ({self.net.num_params():,} parameters, init "
                 f"{cfg['init']}"
                 + (f", lr warm-up over {cfg['warmup_steps']} steps" if cfg.get("warmup_steps")
                    else "")
                 + f", lr {cfg['lr']:g} "
                 + ("cut /10 on plateaus (§5)" if cfg.get("schedule", "paper") == "paper"
                    else f"to 0 by a {cfg['schedule']} decay over the run")
                 + f") on {self.prepared.num_classes} classes: "
                 f"{n_batches} batches of {cfg['batch_size']} per epoch, "
                 f"{cfg['epochs']} epochs; run folder {self.out}")
        steps_planned = cfg["epochs"] * n_batches
        if cfg["max_steps"] is not None:
            steps_planned = min(steps_planned, cfg["max_steps"])
        val_images = len(self.prepared.val_labels)
        if cfg["val_max_images"]:
            val_images = min(val_images, cfg["val_max_images"])
        self.log(f"{steps_planned - self.step:,} steps to go; after every epoch: validation "
                 f"on {val_images:,} images, {self.out / 'last.npz'}, {self.out / 'best.npz'}"
                 + ("" if cfg["no_figures"] else f" and figures ({self.out / 'curves.png'}, "
                    "conv1_filters.png, diagnostics.png)")
                 + "; the time it will take follows after the first steps")
        t_run = time.perf_counter()
        estimate = Estimate(steps_planned - self.step, cfg["batch_size"], val_images,
                            cfg["epochs"] - self.epoch)
        while self.epoch < cfg["epochs"]:
            epoch = self.epoch
            bar = cli.progress_bar(n_batches, f"epoch {epoch + 1}/{cfg['epochs']}", "batch",
                                   initial=self.batch, enabled=self.comm.is_root)
            window_loss, window_correct, window_n, window_t = 0.0, 0, 0, time.perf_counter()
            if self.batch == 0:
                self.epoch_sums = [0.0, 0, 0, 0.0]
            epoch_loss, epoch_correct, epoch_n, seconds_before = self.epoch_sums
            t_epoch = time.perf_counter() - seconds_before
            self.phase = f"epoch {epoch + 1}"
            with self.train_loader.iter_epoch(epoch, self.batch) as host_batches:
                batches = host_batches
                if cfg.get("device") == "gpu":
                    from ..backend import prefetch_to_gpu

                    batches = prefetch_to_gpu(host_batches)
                for x, y in batches:
                    lr = self.step_lr()
                    loss, logits = self.train_step(self.net, self.opt, x, y, self.step, lr)
                    self.step += 1
                    self.batch += 1
                    said = estimate.tick()
                    if said:
                        self.log(said)
                    if self.diagnostics_due():
                        self.write_diagnostics(epoch, logits)
                    correct = int(topk_correct(to_numpy(logits), y, 1).sum())
                    stopping = stop.requested
                    if self.comm.size > 1:   # the whole batch's count; stop all ranks alike
                        correct, stopping = self.comm.sum([correct, stopping])
                        correct, stopping = int(correct), bool(stopping)
                    n = cfg["batch_size"]
                    window_loss += loss * n
                    window_correct += correct
                    window_n += n
                    epoch_loss += loss * n
                    epoch_correct += correct
                    epoch_n += n
                    self.epoch_sums = [epoch_loss, epoch_correct, epoch_n,
                                       time.perf_counter() - t_epoch]
                    bar.update(1)
                    if self.step % cfg["log_every"] == 0 or self.batch == n_batches:
                        seconds = time.perf_counter() - window_t
                        record = {"kind": "train", "epoch": epoch, "step": self.step,
                                  "loss": window_loss / window_n,
                                  "top1_err": 1 - window_correct / window_n,
                                  "lr": self.opt.lr, "img_per_s": window_n / seconds,
                                  "time": time.time()}
                        self.append(record)
                        bar.set_postfix(loss=f"{record['loss']:.3f}",
                                        img_s=f"{record['img_per_s']:.0f}", lr=f"{self.opt.lr:g}")
                        window_loss, window_correct, window_n = 0.0, 0, 0
                        window_t = time.perf_counter()
                    if self.step % cfg["checkpoint_every"] == 0:
                        self.save()
                    if stopping:
                        bar.close()
                        self.save()
                        self.log(f"stopped at step {self.step}; saved {self.out / 'last.npz'}. "
                                 f"Continue with: python -m tinyalex.train --resume {self.out}")
                        return 130
                    if cfg["max_steps"] is not None and self.step >= cfg["max_steps"]:
                        bar.close()
                        self.save()
                        self.validate(epoch, epoch_loss, epoch_correct, epoch_n, t_epoch,
                                      partial=True, stop=stop)
                        self.log(f"reached --max-steps {cfg['max_steps']}; saved "
                                 f"{self.out / 'last.npz'}")
                        return 0
            bar.close()
            self.epoch_sums = [epoch_loss, epoch_correct, epoch_n, time.perf_counter() - t_epoch]
            if stop.requested:      # the epoch's steps are done; its validation is not
                self.phase = f"the validation of epoch {epoch + 1}"
                raise Stopped
            self.validate(epoch, epoch_loss, epoch_correct, epoch_n, t_epoch, stop=stop)
            if stop.requested:
                self.log(f"stopped after epoch {epoch + 1}; saved {self.out / 'last.npz'}. "
                         f"Continue with: python -m tinyalex.train --resume {self.out}")
                return 130
        self.figures(final=True, stop=stop)
        self.finish(time.perf_counter() - t_run)
        return 0

    def append(self, record: dict) -> None:
        """A line of metrics.jsonl (rank 0 writes it)."""
        if self.comm.is_root:
            append_jsonl(self.metrics, record)

    def finish(self, seconds: float) -> None:
        """What the run reached, what it wrote, and where to go from here."""
        if not self.comm.is_root:
            return
        cfg, val = self.cfg, self.last_val
        self.log(f"done: {cfg['epochs']} epochs ({self.step:,} steps) in "
                 f"{format_duration(seconds)}. Validation, centre crop, {val['n']:,} images: "
                 f"top-1 accuracy {1 - val['top1_err']:.1%}, top-5 {1 - val['top5_err']:.1%} "
                 f"(best epoch top-1 {1 - self.best:.1%}; chance "
                 f"{1 / self.prepared.num_classes:.1%})")
        written = sorted(p.name for p in self.out.iterdir() if p.suffix in
                         (".npz", ".png", ".jsonl", ".log", ".json"))
        self.log(f"wrote {self.out}/: {', '.join(written)}")
        self.log(f"next: python -m tinyalex.evaluate {self.out / 'best.npz'} --ten-crop")
        if self.prepared.meta.get("kind") == "synthetic":
            self.log("This was the built-in SYNTHETIC set (shapes on stripes): its accuracy "
                     "says nothing about photographs. For real images: python -m "
                     "tinyalex.data download tiny-imagenet (into ./data/), then run the same "
                     "command again: it finds ./data/ by itself (data/README.md has the "
                     "other sets).")

    def diagnostics_due(self) -> bool:
        every = self.cfg.get("diagnostics_every", DEFAULTS["diagnostics_every"])
        return (bool(every) and self.comm.is_root
                and (self.step == 1 or self.step % every == 0))

    def write_diagnostics(self, epoch: int, logits) -> None:
        """After the update: read-only (no RNG, nothing training uses), so exact resume
        and the weights are the same with or without it."""
        from .diagnostics import diagnostics, format_header, format_row

        diag = diagnostics(self.net, logits, self.opt)
        self.append({"kind": "diag", "epoch": epoch, "step": self.step,
                                    **diag, "time": time.time()})
        if self.cfg.get("show_diagnostics"):
            if not self._diag_header_shown:
                self.log(format_header(diag))
                self._diag_header_shown = True
            self.log(format_row(diag, self.step))

    def validate(self, epoch, loss_sum, correct, n, t_epoch, partial=False,
                 stop: StopFlag | None = None) -> None:
        """Validation after epoch's steps (partial: after --max-steps, the state saved
        already): the epoch line of metrics.jsonl, the schedule's step, last.npz (the run
        then stands at the next epoch's start) and best.npz, the figures. A stop request
        during the pass raises Stopped at once, with the run still before it."""
        self.phase = f"the validation of epoch {epoch + 1}"
        with stop.at_once() if stop is not None else contextlib.nullcontext():
            val = evaluate(self.net, self.val_loader, comm=self.comm)  # the loader is cut
        self.last_val = val
        seconds = time.perf_counter() - t_epoch
        record = {"kind": "partial" if partial else "epoch", "epoch": epoch, "step": self.step,
                  "train_loss": loss_sum / max(n, 1), "train_top1_err": 1 - correct / max(n, 1),
                  "val_loss": val["loss"], "val_top1_err": val["top1_err"],
                  "val_top5_err": val["top5_err"], "lr": self.opt.lr, "seconds": seconds}
        self.log(f"epoch {epoch + 1}{' (partial)' if partial else ''}: train loss "
                 f"{record['train_loss']:.3f}, val loss {val['loss']:.3f}, val top-1 error "
                 f"{val['top1_err']:.2%}, top-5 {val['top5_err']:.2%} ({val['n']} images), "
                 f"lr {self.opt.lr:g}, {seconds:.0f} s")
        if not partial:
            improved = self.best is None or val["top1_err"] < self.best
            if improved:
                self.best = val["top1_err"]
            before = self.schedule.lr  # not opt.lr, which a warm-up may still be ramping
            new_lr = self.schedule.step(val["top1_err"])
            if new_lr != before:
                self.log(f"validation error stopped improving: lr {before:g} -> {new_lr:g}")
                self.opt.lr = new_lr
            self.append(record)
            self.epoch, self.batch = epoch + 1, 0
            self.save()
            if improved:
                self.save("best.npz")
        else:
            self.append(record)
        self.figures(stop=stop)

    def figures(self, final: bool = False, stop: StopFlag | None = None) -> None:
        """The run's PNGs; a stop request ends them at once (they change no state)."""
        if self.cfg["no_figures"] or not self.comm.is_root:
            return
        self.phase = "the figures"
        with stop.at_once() if stop is not None else contextlib.nullcontext():
            self.draw_figures(final)

    def draw_figures(self, final: bool) -> None:
        from . import figures

        figures.plot_curves(self.metrics, self.out / "curves.png")
        figures.plot_diagnostics(self.metrics, self.out / "diagnostics.png")  # if diag lines
        figures.plot_filters(self.net, self.out / "conv1_filters.png")
        if final:
            figures.nearest_neighbours(self.net, self.prepared, self.out / "neighbours.png",
                                       augmenter=self.augmenter)


# ---------------------------------------------------------------------------------- main

def main(argv=None, comm=None) -> int:
    comm = comm if comm is not None else distributed.Local()
    args = build_parser().parse_args(argv)
    explicit = vars(build_parser(suppress_defaults=True).parse_args(argv))
    log = Log(quiet=not comm.is_root)
    with StopFlag() as stop:
        try:
            return train_command(args, explicit, comm, log, stop)
        except Stopped:
            log("stopped before training began: nothing to save yet (a data preparation cut "
                "short leaves no half-written cache); run the same command again")
            return 130


def lock_run_folder(folder: Path) -> RunLock:
    """The run folder's lock (UserError naming the other process if it holds it)."""
    try:
        return RunLock(folder).acquire()
    except RunFolderBusy as err:
        raise cli.UserError(str(err)) from None


def divergence_message(err: Diverged, trainer: Trainer) -> str:
    """What the user reads when the loss became NaN: the checkpoint that exists, or that none
    was written yet, and what to try."""
    first = min(trainer.cfg["checkpoint_every"], len(trainer.train_loader))
    where = (f"the last checkpoint, {trainer.saved} (step {trainer.saved_step}), holds "
             "weights from before it"
             if trainer.saved is not None and trainer.saved.is_file() else
             f"no checkpoint was written yet (the first was due at step {first})")
    return (f"{err} (epoch {trainer.epoch + 1}); stopping: {where}. Try a lower --lr (this "
            f"run: {trainer.cfg['lr']:g}) or another --init, in a new run")


def train_command(args, explicit: dict, comm, log: Log, stop: StopFlag) -> int:
    """main's body: the run's config, its folder (locked), its data, the Trainer."""
    ckpt = path = lock = None
    skipped = []
    if "resume" in explicit:
        if comm.is_root:
            # --resume with no path and --out DIR: that run, not the latest under runs/
            candidates = resolve_resume(explicit["out"] if explicit["resume"] == "latest"
                                        and "out" in explicit else explicit["resume"])
            lock = lock_run_folder(candidates[0].parent)
            ckpt, path, skipped = load_for_resume(candidates)
        ckpt, path = comm.broadcast_object((ckpt, path))   # the run folder is rank 0's
        cfg = dict(ckpt.meta["config"])
        for key in RESUMABLE:
            if key in explicit:
                cfg[key] = explicit[key]
        ignored = sorted(set(explicit) - set(RESUMABLE) - {"resume", "out"})
        out = path.parent
    else:
        cfg = {k: getattr(args, k) for k in DEFAULTS}
        ignored, out = [], None
        if cfg["lr"] is None:
            cfg["lr"] = default_lr(cfg["schedule"])
    check_config(cfg)
    if lock is None and cfg["out"] and comm.is_root:   # before the data: a clash ends at once
        lock = lock_run_folder(Path(cfg["out"]))
    if comm.size > 1:
        comm.ordered = bool(cfg.get("ordered_reduction"))
        comm.overlap = bool(cfg.get("overlap"))

    from ..data.find import resolve_dataset

    if comm.size > 1:
        log(f"data parallel: {comm.describe()}")
    prepared = None
    for turn in ("root", "others"):   # rank 0 prepares (and caches) the data first
        if (turn == "root") == comm.is_root:
            with stop.at_once():
                prepared = resolve_dataset(cfg["data"], subset=cfg["subset"], size=cfg["size"],
                                           cache=cfg["cache"],
                                           max_per_class=cfg["max_per_class"], log=log)
        comm.barrier()
    if ckpt is None and prepared.meta.get("kind") == "synthetic":
        recipe = {k: v for k, v in SYNTHETIC_RECIPE.items() if k not in explicit}
        cfg.update(recipe)
        if recipe:
            log("the synthetic set gets a short run unless told otherwise: "
                + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in recipe.items())
                + f" (about {SYNTHETIC_MINUTES} of training on 2 cores; the time left is "
                  "said after its first steps; options given on the command line win)")
    if cfg["arch"] is None:
        cfg["arch"] = "alexnet" if prepared.image_size >= 256 else "alexnet-small"
    if ckpt is not None and list(ckpt.meta["classes"]) != prepared.classes:
        raise cli.UserError("the data found now has other classes than the run being resumed")
    if out is None:
        out = Path(cfg["out"]) if cfg["out"] else default_out(cfg["arch"],
                                                             prepared.meta.get("kind", "data"))
        out = comm.broadcast_object(out)   # default_out's time stamp is rank 0's
    if comm.is_root:
        out.mkdir(parents=True, exist_ok=True)
        if lock is None:
            lock = lock_run_folder(out)
        log.path = out / "train.log"
    try:
        if ckpt is not None:
            for line in skipped:   # said here, where train.log keeps it too
                log(line)
            log(f"resuming {path} at epoch {ckpt.meta['epoch'] + 1}, step {ckpt.meta['step']}"
                + (f" (ignoring {', '.join(ignored)}: fixed by the run)" if ignored else ""))
            if comm.is_root:
                truncate_metrics(out / "metrics.jsonl", ckpt.meta["step"], log)
        with stop.at_once():
            trainer = Trainer(cfg, prepared, out, log, ckpt, comm=comm)
            if ckpt is None and cfg.get("hours"):
                trainer.plan_hours(cfg["hours"])
        trainer.check_space()
        if comm.is_root:
            (out / "config.json").write_text(json.dumps(cfg, indent=1))
        try:
            return trainer.run(stop)
        except Diverged as err:
            if comm.is_root:
                print(f"error: {divergence_message(err, trainer)}", file=sys.stderr)
            return 1
    except OSError as err:   # a full disk anywhere in the run folder: one line, exit 1
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        if comm.is_root:
            what = f"writing {Path(err.filename).name}" if err.filename else "writing the run's logs"
            print(f"error: {err}" if isinstance(err, checkpoint.DiskFull) else
                  f"error: no space left on the disk of {out}: {what}, "
                  f"{checkpoint.format_bytes(checkpoint.free_bytes(out))} free; the checkpoints "
                  "are kept as they were; free some space (or use another folder) and resume",
                  file=sys.stderr)
        return 1
    finally:
        if lock is not None:
            lock.release()


def run_command(argv=None) -> int:
    """The command line: ``main`` in this process, or in each rank of an mpiexec job.

    In a job of several ranks, a rank that ends with an error (a user error, a bug, a lost
    peer) ends the whole job (MPI_Abort): the others would otherwise wait for it forever.
    The run folder keeps its last checkpoint, written atomically by rank 0."""
    try:
        comm = distributed.world()
    except distributed.MPIMissing as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if comm.size == 1:
        return cli.run(main, argv)
    try:
        code = cli.run(lambda a: main(a, comm), argv)
    except BaseException:  # noqa: B036 -- a bug on one rank must not leave the others hanging
        import traceback

        traceback.print_exc()
        code = 1
    if code != 0:
        print(f"rank {comm.rank} of {comm.size} stopped (exit {code}): ending all ranks; a "
              "run folder keeps its last checkpoint (written atomically by rank 0)",
              file=sys.stderr)
        comm.abort(code)
    return code


if __name__ == "__main__":
    raise SystemExit(run_command())
