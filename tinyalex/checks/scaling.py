"""``python -m tinyalex.bench scaling``: what data parallelism over MPI gives, measured on
this machine and modelled for many (issue 19, tinyalex/distributed.py).

    python -m tinyalex.bench scaling                      # the paper net, batch 128
    python -m tinyalex.bench scaling --arch alexnet-small --num-classes 100 --no-ranks

1. **Measured here**: training steps of the same global batch in one process with every
   core, and under ``mpiexec -n 2`` with cores/2 threads per rank (each rank computes half
   the batch; one allreduce of the gradients per step). Needs the ``mpi`` extra; without it
   this part says so and the model still runs.
2. **The bytes**: one float32 per parameter per step (the paper net: 60,965,224 parameters,
   244 MB), which a ring allreduce sends and receives ``2 (K-1)/K`` times per rank.
3. **The model**: the step time on K machines like this one, each computing ``batch/K``
   images (the measured per-layer times scaled by 1/K: optimistic, as small batches use the
   cores less well), on a 10 and a 100 Gbit/s network, ring allreduce
   ``2 (K-1) (latency + bytes / (K bandwidth))``:

   * *one allreduce after backward* (what tinyalex does): compute + allreduce(all);
   * *per-layer overlap*: each layer's gradients enter the (one) link as soon as its
     backward is done, while the layers below it are still computing; the step ends when
     both the backward and the link are done. fc6-fc8 hold 96% of the bytes and finish their
     backward first, so most of the traffic can hide behind conv1-5's backward.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

from ..commands import cli
from ..net import ARCHITECTURES, build

NETWORKS = {"10 Gbit/s": 10e9 / 8, "100 Gbit/s": 100e9 / 8}   # bytes per second
MACHINES = (1, 2, 4, 8, 16, 32, 64)


# ------------------------------------------------------------------------------ the model

def ring_allreduce_seconds(nbytes: float, ranks: int, bandwidth: float,
                           latency: float) -> float:
    """A ring allreduce of ``nbytes`` over ``ranks``: 2 (K-1) steps, each one message of
    nbytes/K per rank (Patarasuk & Yuan 2009); 0 for one rank."""
    if ranks <= 1:
        return 0.0
    return 2 * (ranks - 1) * (latency + nbytes / ranks / bandwidth)


def step_seconds(layers: list[tuple[str, float, float, int]], update: float, ranks: int,
                 bandwidth: float, latency: float, overlap: bool) -> tuple[float, float]:
    """(step seconds, allreduce seconds) on ``ranks`` machines.

    layers: (name, forward s, backward s, gradient bytes) at the global batch, in forward
    order; each machine computes 1/ranks of it. update: the SGD step's seconds (the same on
    every machine: each updates all the weights)."""
    forward = sum(f for _, f, _, _ in layers) / ranks
    total_bytes = sum(b for *_, b in layers)
    if not overlap:
        comm = ring_allreduce_seconds(total_bytes, ranks, bandwidth, latency)
        backward = sum(b for _, _, b, _ in layers) / ranks
        return forward + backward + comm + update, comm
    clock = link_free = forward
    comm = 0.0
    for _, _, back, nbytes in reversed(layers):
        clock += back / ranks
        if nbytes:
            seconds = ring_allreduce_seconds(nbytes, ranks, bandwidth, latency)
            link_free = max(clock, link_free) + seconds
            comm += seconds
    return max(clock, link_free) + update, comm


def layer_bytes(net) -> dict[str, int]:
    """Gradient bytes per layer (float32), by the layer's name."""
    out: dict[str, int] = {}
    for key, value in net.params.items():
        name = key.split(".")[0]
        out[name] = out.get(name, 0) + 4 * int(np.prod(value.shape))
    return out


def measure_layers(arch: str, num_classes: int, batch: int, repeats: int):
    """(layers as step_seconds wants them, SGD update seconds) measured in this process."""
    from ..optim import SGD
    from .timing import batch_for, layer_times, median_time

    net = build(arch, num_classes)
    x, _ = batch_for(net, batch, num_classes)
    times, _ = layer_times(net, x, repeats)
    sizes = layer_bytes(net)
    opt = SGD(net.params)
    grads = {k: np.ones_like(v) for k, v in net.params.items()}
    opt.step(grads)
    update = median_time(lambda: opt.step(grads), repeats)
    return [(name, f, b, sizes.get(name, 0)) for name, f, b in times], update


def model_table(layers, update: float, batch: int, latency: float) -> str:
    """The step time and img/s at MACHINES machines on NETWORKS, without and with overlap."""
    one, _ = step_seconds(layers, update, 1, 1.0, latency, False)
    lines = [f"{'network':<11} {'machines':>8} {'compute s':>10} {'allreduce s':>12} "
             f"{'step s':>8} {'img/s':>8} {'eff.':>6} | {'overlapped step s':>18} "
             f"{'img/s':>8} {'eff.':>6}"]
    for net_name, bandwidth in NETWORKS.items():
        for k in MACHINES:
            plain, comm = step_seconds(layers, update, k, bandwidth, latency, False)
            over, _ = step_seconds(layers, update, k, bandwidth, latency, True)
            compute = plain - comm
            lines.append(
                f"{net_name:<11} {k:>8} {compute:>10.3f} {comm:>12.3f} {plain:>8.3f} "
                f"{batch / plain:>8.1f} {one / (k * plain):>6.0%} | {over:>18.3f} "
                f"{batch / over:>8.1f} {one / (k * over):>6.0%}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ measured

def child(arch: str, num_classes: int, batch: int, steps: int,
          overlap: bool = False) -> dict | None:
    """Training steps of one global batch in this process or, under mpiexec, this rank's
    part of it; rank 0 returns img/s of the global batch (the others None)."""
    from .. import distributed
    from ..layers import SoftmaxCrossEntropy
    from ..loop import train_step
    from ..optim import SGD
    from .timing import batch_for

    comm = distributed.world()
    distributed.share_cores(comm.size)
    if comm.size > 1:
        comm.overlap = overlap
    net = build(arch, num_classes)
    comm.broadcast_params(net.params)
    x, y = batch_for(net, batch, num_classes)
    rows = None
    if comm.size > 1:
        start, stop = comm.part(batch)
        rows = (start, stop, batch)
        x, y = x[start:stop], y[start:stop]
    opt = SGD(net.params)
    loss_fn = SoftmaxCrossEntropy()
    times = []
    for step in range(steps + 1):          # the first step warms up (compiles kernels)
        comm.barrier()
        t = time.perf_counter()
        train_step(net, loss_fn, opt, x, y, step=step, seed=0, comm=comm, rows=rows)
        times.append(time.perf_counter() - t)
    import numba

    if comm.rank != 0:
        return None
    seconds = float(np.median(times[1:]))
    return {"ranks": comm.size, "threads": numba.get_num_threads(), "seconds": seconds,
            "img_per_s": batch / seconds}


def run_child(args, ranks: int, overlap: bool = False) -> dict:
    cmd = [sys.executable, "-m", "tinyalex.bench", "scaling", "--child", "--arch", args.arch,
           "--num-classes", str(args.num_classes), "--batch-size", str(args.batch_size),
           "--steps", str(args.steps)] + (["--overlap"] if overlap else [])
    if ranks > 1:
        from ..distributed import mpiexec_path

        cmd = [mpiexec_path(), "-n", str(ranks)] + cmd
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def mpi_missing() -> str | None:
    """Why the 2-rank measurement cannot run, or None."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install 'tinyalex[mpi]')"
    from ..distributed import mpiexec_path

    if mpiexec_path() is None:
        return "no mpiexec on PATH (pip install mpich)"
    return None


# ------------------------------------------------------------------------------ command

DESCRIPTION = ("Data parallelism over MPI: 1 process against 2 ranks here, the bytes a step "
               "moves, and the step time modelled at 1-64 machines on 10 and 100 Gbit/s, "
               "without and with per-layer overlap of communication and backward.")


def build_parser():
    p = cli.parser("python -m tinyalex.bench scaling", DESCRIPTION)
    add_arguments(p)
    return p


def add_arguments(p) -> None:
    """The options of ``bench scaling``, on its own parser or on the bench's subcommand."""
    p.add_argument("--arch", default="alexnet", choices=sorted(ARCHITECTURES),
                   help="the net whose step is measured and modelled")
    p.add_argument("--num-classes", type=int, default=1000,
                   help="outputs of fc8 (1000: the paper's 60,965,224 parameters)")
    p.add_argument("--batch-size", type=int, default=128, help="the global batch (§5: 128)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per measurement (median)")
    p.add_argument("--repeats", type=int, default=2, help="timings per layer (median)")
    p.add_argument("--latency-us", type=float, default=20.0,
                   help="per-message network latency in the model, microseconds")
    p.add_argument("--no-ranks", action="store_true",
                   help="skip the 1-process / 2-rank measurement (the model only)")
    p.add_argument("--child", action="store_true", help=cli.argparse.SUPPRESS)
    p.add_argument("--overlap", action="store_true", help=cli.argparse.SUPPRESS)


def main(argv=None) -> int:
    return run(build_parser().parse_args(argv))


def run(args) -> int:
    if args.batch_size < 2 or args.steps < 1 or args.repeats < 1 or args.num_classes < 1:
        raise cli.UserError("--batch-size must be at least 2, --steps, --repeats and "
                            "--num-classes at least 1")
    if args.child:
        out = child(args.arch, args.num_classes, args.batch_size, args.steps, args.overlap)
        if out is not None:
            print(json.dumps(out))
        return 0
    from .timing import blas_info, cpu_name

    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores); BLAS: {blas_info()}")
    print(f"net: {args.arch}, {args.num_classes} classes, global batch {args.batch_size}, "
          "float32")
    if not args.no_ranks:
        why = mpi_missing()
        if why:
            print(f"\nmeasured: skipped, {why}")
        else:
            one = run_child(args, 1)
            two = run_child(args, 2)
            over = run_child(args, 2, overlap=True)
            print(f"\nmeasured here (median of {args.steps} steps after a warm-up):")
            for r, how in ((one, "1 process"), (two, "mpiexec -n 2"),
                           (over, "  + --overlap")):
                print(f"  {how:<13} {r['threads']} thread(s) per process: "
                      f"{r['img_per_s']:6.1f} img/s ({r['seconds']:.2f} s/step)")
            print(f"  2 ranks / 1 process: {two['img_per_s'] / one['img_per_s']:.2f}x (both on "
                  "the same cores: the gain or loss is what splitting the batch costs, not "
                  f"more hardware); with the overlap {over['img_per_s'] / one['img_per_s']:.2f}x "
                  "(here the ranks talk through shared memory, so it has little to hide)")
    layers, update = measure_layers(args.arch, args.num_classes, args.batch_size, args.repeats)
    total = sum(b for *_, b in layers)
    fc = sum(b for name, *_, b in layers if name.startswith("fc"))
    print(f"\nbytes: {total / 1e6:.1f} MB of float32 gradients per step ({fc / total:.0%} in "
          f"fc6-fc8); a ring allreduce sends and receives 2 (K-1)/K of it per machine")
    print(f"measured per layer at batch {args.batch_size}: forward "
          f"{sum(f for _, f, _, _ in layers):.2f} s, backward "
          f"{sum(b for _, _, b, _ in layers):.2f} s, SGD update {update:.3f} s")
    print(f"\nmodel: K machines like this one, each computing {args.batch_size}/K images "
          f"(compute scaled by 1/K), latency {args.latency_us:g} us per message; "
          "eff. = img/s / (K x one machine's):")
    print(model_table(layers, update, args.batch_size, args.latency_us * 1e-6))
    return 0
