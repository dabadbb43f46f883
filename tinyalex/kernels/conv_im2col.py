"""Convolution by im2col and OpenBLAS's GEMMs, batch-parallel (kernels/tasks.py says how):
each worker builds the columns of a few images in its own buffer and multiplies them into
the output's NCHW rows on one thread. ``conv_forward`` and ``conv_backward`` have the
signature and result of the readable bodies in layers/conv.py (tests/test_kernels_cpu.py).
"""

from __future__ import annotations

import numba
import numpy as np

from .im2col import col2im_serial, im2col_serial
from .tasks import add_channel_sums, conv_geometry, conv_tasks
from .threads import run_tasks, sum_in_task_order, timed


@numba.njit(nogil=True, cache=True)
def _columns_to_images(y, out, b):
    """out[n, f, p] = y[f, n*P + p] + b[f]: a GEMM's (F, n*P) result as n NCHW images."""
    N, F, P = out.shape
    for n in range(N):
        for f in range(F):
            for p in range(P):
                out[n, f, p] = y[f, n * P + p] + b[f]


@numba.njit(nogil=True, cache=True)
def _images_to_columns(d, d_cols):
    """d_cols[f, n*P + p] = d[n, f, p]: n NCHW gradients as one (F, n*P) GEMM operand."""
    N, F, P = d.shape
    for n in range(N):
        for f in range(F):
            for p in range(P):
                d_cols[f, n * P + p] = d[n, f, p]


def conv_forward(x, W, b, stride, pad, groups):
    """Twin of layers.conv.conv_forward: x (N, C, H, W), W (F, C/G, kh, kw), b (F,)
    -> out (N, F, OH, OW) = the grouped im2col products plus b."""
    x = np.ascontiguousarray(x)
    N, F, kh, kw, OH, OW, Fg, Kg = conv_geometry(x.shape, W.shape, stride, pad, groups)
    P = OH * OW
    Wg = np.ascontiguousarray(W).reshape(groups, Fg, Kg)
    b = np.ascontiguousarray(b)
    out = np.empty((N, F, P), dtype=x.dtype)
    per_gemm, tasks = conv_tasks(N, P)

    def task(t):
        cols = np.empty((groups * Kg, per_gemm * P), dtype=x.dtype)
        y = np.empty((F, per_gemm * P), dtype=x.dtype) if per_gemm > 1 else None
        chunk = tasks[t]
        for start in range(chunk.start, chunk.stop, per_gemm):
            n = min(per_gemm, chunk.stop - start)
            c = cols[:, :n * P]
            with timed("transform"):
                im2col_serial(x[start:start + n], cols, kh, kw, stride, pad, OH, OW)
            target = out[start].reshape(F, P) if n == 1 else y[:, :n * P]
            with timed("gemm"):
                for g in range(groups):
                    np.matmul(Wg[g], c[g * Kg:(g + 1) * Kg], out=target[g * Fg:(g + 1) * Fg])
            with timed("copy"):
                if n == 1:
                    target += b[:, None]
                else:
                    _columns_to_images(target, out[start:start + n], b)

    run_tasks(task, len(tasks))
    return out.reshape(N, F, OH, OW)


def conv_backward(x, W, dout, stride, pad, groups, need_input_grad=True):
    """Twin of layers.conv.conv_backward: returns (dW (F, C/G, kh, kw), db (F,),
    dx (N, C, H, W) or None). dW = dout_r @ cols.T, dx = col2im(W.T @ dout_r), per group;
    db = dout summed over n, oh, ow in float64 (per image, then per task, in order)."""
    x = np.ascontiguousarray(x)
    dout = np.ascontiguousarray(dout)
    N, F, kh, kw, OH, OW, Fg, Kg = conv_geometry(x.shape, W.shape, stride, pad, groups)
    P = OH * OW
    Wg = np.ascontiguousarray(W).reshape(groups, Fg, Kg)
    d = dout.reshape(N, F, P)
    per_gemm, tasks = conv_tasks(N, P)
    dW_parts = np.zeros((len(tasks), groups, Fg, Kg), dtype=x.dtype)
    db_parts = np.zeros((len(tasks), F), dtype=np.float64)
    dx = np.empty_like(x) if need_input_grad else None

    def task(t):
        cols = np.empty((groups * Kg, per_gemm * P), dtype=x.dtype)
        d_cols = np.empty((F, per_gemm * P), dtype=x.dtype) if per_gemm > 1 else None
        product = np.empty((Fg, Kg), dtype=x.dtype)
        chunk = tasks[t]
        with timed("elementwise"):
            add_channel_sums(d[chunk], db_parts[t])
        for start in range(chunk.start, chunk.stop, per_gemm):
            n = min(per_gemm, chunk.stop - start)
            c = cols[:, :n * P]
            with timed("transform"):
                im2col_serial(x[start:start + n], cols, kh, kw, stride, pad, OH, OW)
            if n == 1:
                dc = d[start]
            else:
                dc = d_cols[:, :n * P]
                with timed("copy"):
                    _images_to_columns(d[start:start + n], dc)
            for g in range(groups):
                with timed("gemm"):
                    np.matmul(dc[g * Fg:(g + 1) * Fg], c[g * Kg:(g + 1) * Kg].T, out=product)
                with timed("elementwise"):
                    dW_parts[t, g] += product
            if dx is not None:  # the columns' memory takes their gradient
                with timed("gemm"):
                    for g in range(groups):
                        np.matmul(Wg[g].T, dc[g * Fg:(g + 1) * Fg], out=c[g * Kg:(g + 1) * Kg])
                with timed("transform"):
                    col2im_serial(c, dx[start:start + n], kh, kw, stride, pad, OH, OW)

    run_tasks(task, len(tasks))
    dW, db = sum_in_task_order(dW_parts), sum_in_task_order(db_parts)
    return dW.reshape(W.shape), db.astype(x.dtype), dx
