"""Convolution by im2col for a layer with few taps per group (K = C/G * kh * kw <=
dispatch.FEW_TAPS_MAX: the small nets' conv1, K = 75), batch-parallel (kernels/tasks.py): the
forward and weight-gradient products run in kernels/gemm_numba.py's register-blocked
kernels, one image at a time, the bias added as the forward product is stored; dx, where
asked for, by OpenBLAS. Each task's images run in one Numba call, not a Python loop over
them. ``conv_forward`` and ``conv_backward`` have the signature and result of the readable
bodies in layers/conv.py (tests/test_kernels_cpu.py).
"""

from __future__ import annotations

import numba
import numpy as np

from . import gemm_numba
from .im2col import col2im_serial, im2col_serial
from .tasks import add_channel_sums, conv_geometry, conv_tasks
from .threads import run_tasks, sum_in_task_order, timed


@numba.njit(nogil=True, cache=True)
def _forward_images(x, Wt, b, out, cols, start, stop, kh, kw, stride, pad, OH, OW):
    """out[n] for n in [start, stop). Wt (G, Kg, Fg), b (G, Fg), out (N, G, Fg, P),
    cols (G, Kg, >= padded(P)) scratch."""
    G, Kg, _ = Wt.shape
    P = OH * OW
    rows = cols.reshape(G * Kg, cols.shape[2])
    for n in range(start, stop):
        im2col_serial(x[n:n + 1], rows, kh, kw, stride, pad, OH, OW)
        for g in range(G):
            gemm_numba.forward(Wt[g], cols[g], b[g], out[n, g], P)


@numba.njit(nogil=True, cache=True)
def _weight_grad_images(x, d, dW, db, cols, start, stop, kh, kw, stride, pad, OH, OW):
    """dW (G, Fg, Kg) and db (F,) float64 += the images' in [start, stop). d (N, G, Fg, P),
    cols (G, Kg, padded(P)) scratch, zeros past P."""
    G, Fg, Kg = dW.shape
    P = OH * OW
    rows = cols.reshape(G * Kg, cols.shape[2])
    for n in range(start, stop):
        add_channel_sums(d[n:n + 1].reshape(1, G * Fg, P), db)  # d now in cache for dW
        im2col_serial(x[n:n + 1], rows, kh, kw, stride, pad, OH, OW)
        for g in range(G):
            gemm_numba.weight_grad(d[n, g], cols[g], dW[g], P)


def conv_forward(x, W, b, stride, pad, groups):
    """Twin of layers.conv.conv_forward for few taps: x (N, C, H, W), W (F, C/G, kh, kw),
    b (F,) -> out (N, F, OH, OW)."""
    x = np.ascontiguousarray(x)
    N, F, kh, kw, OH, OW, Fg, Kg = conv_geometry(x.shape, W.shape, stride, pad, groups)
    P = OH * OW
    Wt = np.ascontiguousarray(W.reshape(groups, Fg, Kg).transpose(0, 2, 1), dtype=x.dtype)
    b = np.ascontiguousarray(b, dtype=x.dtype).reshape(groups, Fg)
    out = np.empty((N, groups, Fg, P), dtype=x.dtype)
    _, tasks = conv_tasks(N, P, one_image=True)

    def task(t):
        cols = np.empty((groups, Kg, gemm_numba.padded(P)), dtype=x.dtype)
        cols[:, :, P:] = 0  # read by the last block's lanes past P (never stored): no NaNs there
        chunk = tasks[t]
        with timed("gemm"):  # with its im2col, a few percent of it
            _forward_images(x, Wt, b, out, cols, chunk.start, chunk.stop,
                            kh, kw, stride, pad, OH, OW)

    run_tasks(task, len(tasks))
    return out.reshape(N, F, OH, OW)


def conv_backward(x, W, dout, stride, pad, groups, need_input_grad=True):
    """Twin of layers.conv.conv_backward for few taps: returns (dW (F, C/G, kh, kw),
    db (F,), dx (N, C, H, W) or None)."""
    x = np.ascontiguousarray(x)
    N, F, kh, kw, OH, OW, Fg, Kg = conv_geometry(x.shape, W.shape, stride, pad, groups)
    P = OH * OW
    W = np.ascontiguousarray(W, dtype=x.dtype).reshape(groups, Fg, Kg)
    d = np.ascontiguousarray(dout, dtype=x.dtype).reshape(N, groups, Fg, P)
    _, tasks = conv_tasks(N, P, one_image=True)
    dW_parts = np.zeros((len(tasks), groups, Fg, Kg), dtype=x.dtype)
    db_parts = np.zeros((len(tasks), F), dtype=np.float64)
    dx = np.empty_like(x) if need_input_grad else None

    def task(t):
        cols = np.empty((groups, Kg, gemm_numba.padded(P)), dtype=x.dtype)
        cols[:, :, P:] = 0  # gemm_numba.weight_grad adds these columns' products with d's zeros
        chunk = tasks[t]
        if dx is None:
            with timed("gemm"):  # with its im2col and db, a few percent of it
                _weight_grad_images(x, d, dW_parts[t], db_parts[t], cols, chunk.start,
                                    chunk.stop, kh, kw, stride, pad, OH, OW)
            return
        rows = cols.reshape(groups * Kg, -1)
        d_cols = np.empty((groups * Kg, P), dtype=x.dtype)
        for n in range(chunk.start, chunk.stop):
            with timed("elementwise"):
                add_channel_sums(d[n:n + 1].reshape(1, F, P), db_parts[t])
            with timed("transform"):
                im2col_serial(x[n:n + 1], rows, kh, kw, stride, pad, OH, OW)
            with timed("gemm"):
                for g in range(groups):
                    gemm_numba.weight_grad(d[n, g], cols[g], dW_parts[t, g], P)
                for g in range(groups):
                    np.matmul(W[g].T, d[n, g], out=d_cols[g * Kg:(g + 1) * Kg])
            with timed("transform"):
                col2im_serial(d_cols, dx[n:n + 1], kh, kw, stride, pad, OH, OW)

    run_tasks(task, len(tasks))
    dW, db = sum_in_task_order(dW_parts), sum_in_task_order(db_parts)
    return dW.reshape(groups * Fg, -1, kh, kw), db.astype(x.dtype), dx
