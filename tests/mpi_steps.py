"""A few SGD steps of alexnet-mini on fixed random batches, for tests/test_distributed.py.

    mpiexec -n K python tests/mpi_steps.py OUT      each rank takes its rows of every batch
    python tests/mpi_steps.py OUT --slices K        one process: K slices, added in order
    python tests/mpi_steps.py OUT                   one process: the whole batch at once

Three runs each time: float64 with the ordered reduction, float32 with one allreduce,
and float32 with the per-layer allreduce overlapped with backward (in one process: the
same as float32).
Writes OUT/rank<r>.npz (every rank's final weights) with keys "<dtype>/<param>".
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from tinyalex import distributed
from tinyalex.layers import SoftmaxCrossEntropy
from tinyalex.loop import train_step
from tinyalex.net import build
from tinyalex.optim import SGD

BATCH, STEPS, CLASSES, SIZE = 16, 3, 10, 56


def run(dtype, comm, seed: int = 3) -> dict:
    net = build("alexnet-mini", CLASSES, seed=seed, input_size=SIZE, init="pytorch")
    net = net.astype(dtype)
    comm.broadcast_params(net.params)
    opt = SGD(net.params, lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss_fn = SoftmaxCrossEntropy()
    rows = None
    if comm.size > 1:
        rows = (*comm.part(BATCH), BATCH)
    for step in range(STEPS):
        rng = np.random.default_rng(step)
        x = rng.standard_normal((BATCH, 3, SIZE, SIZE)).astype(dtype)
        y = rng.integers(0, CLASSES, BATCH)
        if rows is not None:
            x, y = x[rows[0]:rows[1]], y[rows[0]:rows[1]]
        train_step(net, loss_fn, opt, x, y, step=step, seed=seed, comm=comm, rows=rows)
    return {k: np.array(v) for k, v in net.params.items()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--slices", type=int, default=1)
    args = p.parse_args()
    comm = distributed.world()
    arrays = {}
    for dtype, mode in ((np.float64, "ordered"), (np.float32, "allreduce"),
                        (np.float32, "overlap")):
        if comm.size > 1:
            comm.ordered, comm.overlap = mode == "ordered", mode == "overlap"
            use = comm
        else:
            use = distributed.Local(slices=args.slices)
        name = np.dtype(dtype).name + ("-overlap" if mode == "overlap" else "")
        for k, v in run(dtype, use).items():
            arrays[f"{name}/{k}"] = v
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez(args.out / f"rank{comm.rank}.npz", **arrays)


if __name__ == "__main__":
    main()
