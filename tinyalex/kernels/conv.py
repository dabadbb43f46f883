"""Numba twins of layers/conv.py: im2col, col2im, and the whole convolution forward and
backward, batch-parallel (kernels/registry.py sends the 3x3 stride-1 pad-1 ones to
kernels/winograd_numba.py instead, and runs neither without OpenBLAS). A layer with few
taps per group runs its products in kernels/gemm_numba.py, the others in OpenBLAS.

Each public function has exactly the signature and result of the readable NumPy body it
replaces (named in its docstring); tests/test_kernels_cpu.py proves them equal.
"""

from __future__ import annotations

import numba
import numpy as np

from . import gemm_numba, threads
from .shapes import conv_output_size
from .threads import JIT, run_tasks, serial_twin, sum_in_task_order, timed


@numba.njit(inline="always")
def _valid_range(out_size, stride, offset, size):
    """The o in [lo, hi) with 0 <= o*stride + offset < size (offset = kernel tap - pad)."""
    lo = 0
    while lo < out_size and lo * stride + offset < 0:
        lo += 1
    hi = out_size
    while hi > lo and (hi - 1) * stride + offset >= size:
        hi -= 1
    return lo, hi


# Indices into arrays are np.uint64 in the hot copies below: numba checks every signed
# index for a negative value to wrap around (Python's a[-1]), and that check keeps LLVM
# from vectorising a copy whose offset it cannot prove >= 0 (here `ow + off`, off = j - pad).
# Unsigned indices skip it: im2col measured 3-4x faster (paper conv2, one image: 2.3 ->
# 0.6 ms). x must be C-contiguous (it is read flat). cols may have more columns than
# N*OH*OW (only those are written): pass the whole buffer, not a view of its first
# columns, whose rows numba would address with a stride it cannot vectorise over.
_U = np.uint64


# Most rows of cols are copies of another row, shifted: tap (c, i, j) sees what tap
# (c, i, j - stride) sees one output column to the right, and what tap (c, i - stride, j)
# sees one output row down. So only the taps with i, j < stride gather from x (4 of 25 for
# 5x5 stride 2); the others copy a row already in cache, contiguously, and gather only the
# last column (or row) of their outputs. im2col of one image, on a worker: the small net's
# conv1 (5x5 stride 2) 19.4 -> 9.2 us; 5x5 stride 1 on 96 x 27 x 27 343 -> 205, 11x11
# stride 4 on 3 x 227 x 227 375 -> 196.
@numba.njit(**JIT)
def _im2col(x, cols, kh, kw, stride, pad, OH, OW):
    N, C, H, W = x.shape
    P = OH * OW
    flat = x.reshape(-1)
    for c in numba.prange(C):  # a channel's rows in order: a row copies an earlier one
        for i in range(kh):
            for j in range(kw):
                dst_row = cols[(c * kh + i) * kw + j]
                if j >= stride:  # tap j - stride's row one to the left; then each last column
                    left = cols[(c * kh + i) * kw + j - stride]
                    for q in range(_U(N * P - 1)):
                        dst_row[q] = left[q + 1]
                    w = (OW - 1) * stride - pad + j
                    for n in range(N):
                        for oh in range(OH):
                            h = oh * stride - pad + i
                            inside = 0 <= h < H and 0 <= w < W
                            dst_row[_U(n * P + oh * OW + OW - 1)] = (
                                flat[_U(((n * C + c) * H + h) * W + w)] if inside else 0)
                    continue
                first = 0
                if i >= stride:  # tap i - stride's row one output row up; then the last row
                    up = cols[(c * kh + i - stride) * kw + j]
                    for n in range(N):
                        start = _U(n * P)
                        for q in range(_U((OH - 1) * OW)):
                            dst_row[start + q] = up[start + q + _U(OW)]
                    first = OH - 1
                off = j - pad
                lo, hi = _valid_range(OW, stride, off, W)
                for n in range(N):
                    for oh in range(first, OH):
                        h = oh * stride - pad + i
                        dst = n * P + oh * OW
                        if h < 0 or h >= H:
                            for ow in range(OW):
                                dst_row[_U(dst + ow)] = 0
                            continue
                        src = ((n * C + c) * H + h) * W + off  # x[n, c, h, off]
                        # Plain loops, not slice assignments (each slice is an array
                        # object), and a stride-1 branch whose copy is contiguous.
                        for ow in range(lo):
                            dst_row[_U(dst + ow)] = 0
                        if stride == 1:
                            d, s = _U(dst + lo), _U(src + lo)
                            for k in range(_U(hi - lo)):
                                dst_row[d + k] = flat[s + k]
                        else:
                            for ow in range(lo, hi):
                                dst_row[_U(dst + ow)] = flat[_U(src + ow * stride)]
                        for ow in range(hi, OW):
                            dst_row[_U(dst + ow)] = 0


def im2col(x, kh, kw, stride, pad):
    """Twin of tinyalex.layers.conv.im2col: (N, C, H, W) -> (C*kh*kw, N*OH*OW)."""
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, kh, stride, pad), conv_output_size(W, kw, stride, pad)
    cols = np.empty((C * kh * kw, N * OH * OW), dtype=x.dtype)
    _im2col(np.ascontiguousarray(x), cols, kh, kw, stride, pad, OH, OW)
    return cols


@numba.njit(**JIT)
def _col2im(cols, dx, kh, kw, stride, pad, OH, OW):
    # unsigned indices as in _im2col; dx must be C-contiguous (written flat)
    N, C, H, W = dx.shape
    flat = dx.reshape(-1)
    for c in numba.prange(C):  # each channel of dx is written by its own rows only
        dx[:, c] = 0
        for i in range(kh):
            for j in range(kw):
                src_row = cols[(c * kh + i) * kw + j]
                off = j - pad
                lo, hi = _valid_range(OW, stride, off, W)
                for n in range(N):
                    base = n * OH * OW
                    for oh in range(OH):
                        h = oh * stride - pad + i
                        if h < 0 or h >= H:
                            continue
                        src = base + oh * OW
                        dst = ((n * C + c) * H + h) * W + off  # dx[n, c, h, off]
                        if stride == 1:
                            d, s = _U(dst + lo), _U(src + lo)
                            for k in range(_U(hi - lo)):
                                flat[d + k] += src_row[s + k]
                        else:
                            for ow in range(lo, hi):
                                flat[_U(dst + ow * stride)] += src_row[_U(src + ow)]


def col2im(cols, x_shape, kh, kw, stride, pad):
    """Twin of tinyalex.layers.conv.col2im: (C*kh*kw, N*OH*OW) -> x_shape."""
    N, C, H, W = x_shape
    OH, OW = conv_output_size(H, kh, stride, pad), conv_output_size(W, kw, stride, pad)
    dx = np.empty(x_shape, dtype=cols.dtype)
    _col2im(np.ascontiguousarray(cols), dx, kh, kw, stride, pad, OH, OW)
    return dx


# -------------------------------------------------------- the convolution, batch-parallel
#
# The readable Conv2D builds the columns of a whole chunk of the batch, then runs one big
# multi-threaded GEMM per group and transposes the result to NCHW. On 2 cores that spends
# much of its time waiting: every im2col, col2im and GEMM is a parallel region whose
# threads meet at a barrier, OpenBLAS splits each product statically, and a thread that
# the OS runs late (anything else on the machine) stalls its partner. Here each worker
# thread takes whole images instead (a "task" of a few of them): its own im2col into a
# small buffer that stays in cache, single-threaded GEMMs straight into the output's
# NCHW rows (no transpose), its own col2im. Workers pull tasks as they finish, so a slow
# core costs only its share. Measured (2 cores, shared machine, batch 16, forward +
# backward, readable -> this): conv1 2.38 -> 0.38 s, conv2 1.58 -> 0.68 s, conv3 0.51 ->
# 0.31 s; on one core the work is about the same either way.
#
# Results do not depend on the thread count or on which worker ran which task: the tasks
# are fixed slices of the batch, each writes its own images and its own partial dW, and
# the partials are summed in task order.

CONV_MAX_TASKS = 16     # tasks per layer call: enough to balance 2-8 workers
CONV_MIN_COLUMNS = 512  # images per GEMM: at least this many output columns (13x13 -> 4)

_im2col_serial = serial_twin(_im2col, "_im2col_serial")
_col2im_serial = serial_twin(_col2im, "_col2im_serial")


@numba.njit(nogil=True, cache=True)
def _columns_to_images(y, out, b):
    """out[n, f, p] = y[f, n*P + p] + b[f]: a GEMM's (F, n*P) result as n NCHW images."""
    N, F, P = out.shape
    for n in range(N):
        for f in range(F):
            for p in range(P):
                out[n, f, p] = y[f, n * P + p] + b[f]


# reassoc lets LLVM keep several float64 partial sums in vector lanes: one add chain of
# 4-cycle latency per element made db 30-45% of the small net's conv1 backward (one task
# of 8 images of 96 x 28 x 28: 465 -> 45 us). The order is fixed when the loop compiles,
# so a result does not change from run to run or with the thread count.
@numba.njit(nogil=True, cache=True, fastmath={"reassoc"})
def _add_channel_sums(d, sums):
    """sums[f] += sum over n, p of d[n, f, p], each image's channel summed in float64."""
    N, F, P = d.shape
    for n in range(N):
        for f in range(F):
            row = d[n, f]
            total = 0.0
            for p in range(_U(P)):
                total += np.float64(row[p])
            sums[f] += total


@numba.njit(nogil=True, cache=True)
def _images_to_columns(d, d_cols):
    """d_cols[f, n*P + p] = d[n, f, p]: n NCHW gradients as one (F, n*P) GEMM operand."""
    N, F, P = d.shape
    for n in range(N):
        for f in range(F):
            for p in range(P):
                d_cols[f, n * P + p] = d[n, f, p]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _conv_tasks(N: int, P: int, one_image: bool = False) -> tuple[int, list]:
    """Images per GEMM (1 if one_image) and the tasks: fixed slices of range(N), each a
    multiple of it."""
    per_gemm = 1 if one_image else min(N, max(1, _ceil_div(CONV_MIN_COLUMNS, P)))
    per_task = per_gemm * _ceil_div(_ceil_div(N, per_gemm), CONV_MAX_TASKS)
    return per_gemm, [slice(start, min(N, start + per_task)) for start in range(0, N, per_task)]


def _conv_geometry(x_shape, W_shape, stride, pad, groups):
    N, C, H, Wd = x_shape
    F, _, kh, kw = W_shape
    OH, OW = conv_output_size(H, kh, stride, pad), conv_output_size(Wd, kw, stride, pad)
    return N, F, kh, kw, OH, OW, F // groups, C // groups * kh * kw


def conv_forward(x, W, b, stride, pad, groups):
    """Twin of layers.conv.conv_forward: x (N, C, H, W), W (F, C/G, kh, kw), b (F,)
    -> out (N, F, OH, OW) = the grouped im2col products plus b."""
    x = np.ascontiguousarray(x)
    geometry = _conv_geometry(x.shape, W.shape, stride, pad, groups)
    N, F, kh, kw, OH, OW, Fg, Kg = geometry
    if gemm_numba.suits(Kg):
        return _few_taps_forward(x, W, b, stride, pad, groups, geometry)
    P = OH * OW
    Wg = np.ascontiguousarray(W).reshape(groups, Fg, Kg)
    b = np.ascontiguousarray(b)
    out = np.empty((N, F, P), dtype=x.dtype)
    per_gemm, tasks = _conv_tasks(N, P)

    def task(t):
        cols = np.empty((groups * Kg, per_gemm * P), dtype=x.dtype)
        y = np.empty((F, per_gemm * P), dtype=x.dtype) if per_gemm > 1 else None
        chunk = tasks[t]
        for start in range(chunk.start, chunk.stop, per_gemm):
            n = min(per_gemm, chunk.stop - start)
            c = cols[:, :n * P]
            with timed("transform"):
                _im2col_serial(x[start:start + n], cols, kh, kw, stride, pad, OH, OW)
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
    geometry = _conv_geometry(x.shape, W.shape, stride, pad, groups)
    N, F, kh, kw, OH, OW, Fg, Kg = geometry
    if gemm_numba.suits(Kg):
        return _few_taps_backward(x, W, dout, stride, pad, groups, need_input_grad, geometry)
    P = OH * OW
    Wg = np.ascontiguousarray(W).reshape(groups, Fg, Kg)
    d = dout.reshape(N, F, P)
    per_gemm, tasks = _conv_tasks(N, P)
    dW_parts = np.zeros((len(tasks), groups, Fg, Kg), dtype=x.dtype)
    db_parts = np.zeros((len(tasks), F), dtype=np.float64)
    dx = np.empty_like(x) if need_input_grad else None

    def task(t):
        cols = np.empty((groups * Kg, per_gemm * P), dtype=x.dtype)
        d_cols = np.empty((F, per_gemm * P), dtype=x.dtype) if per_gemm > 1 else None
        product = np.empty((Fg, Kg), dtype=x.dtype)
        chunk = tasks[t]
        with timed("elementwise"):
            _add_channel_sums(d[chunk], db_parts[t])
        for start in range(chunk.start, chunk.stop, per_gemm):
            n = min(per_gemm, chunk.stop - start)
            c = cols[:, :n * P]
            with timed("transform"):
                _im2col_serial(x[start:start + n], cols, kh, kw, stride, pad, OH, OW)
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
                    _col2im_serial(c, dx[start:start + n], kh, kw, stride, pad, OH, OW)

    run_tasks(task, len(tasks))
    dW, db = sum_in_task_order(dW_parts), sum_in_task_order(db_parts)
    return dW.reshape(W.shape), db.astype(x.dtype), dx


# ----------------------------------------- few taps: the products of kernels/gemm_numba.py
#
# A layer whose groups have few taps (K = C/G*kh*kw <= gemm_numba.MAX_K: the small nets'
# conv1, K = 75) runs its forward and dW products in kernels/gemm_numba.py, one image at a
# time, the bias added as the forward product is stored. Each task's images run in one
# Numba call (_few_taps_*_images), not a Python loop over them: that loop cost 0.6 ms of the
# forward's 9.5 and 1.2 of the backward's 12 (small net conv1, batch 128, 2 cores). With
# the benchmark's time split on (and for dx), the same steps run one call each, timed.

@numba.njit(nogil=True, cache=True)
def _few_taps_forward_images(x, Wt, b, out, cols, start, stop, kh, kw, stride, pad, OH, OW):
    """out[n] for n in [start, stop). Wt (G, Kg, Fg), b (G, Fg), out (N, G, Fg, P),
    cols (G, Kg, >= padded(P)) scratch."""
    G, Kg, _ = Wt.shape
    P = OH * OW
    rows = cols.reshape(G * Kg, cols.shape[2])
    for n in range(start, stop):
        _im2col_serial(x[n:n + 1], rows, kh, kw, stride, pad, OH, OW)
        for g in range(G):
            gemm_numba.forward(Wt[g], cols[g], b[g], out[n, g], P)


@numba.njit(nogil=True, cache=True)
def _few_taps_weight_grad_images(x, d, dW, db, cols, start, stop, kh, kw, stride, pad, OH, OW):
    """dW (G, Fg, Kg) and db (F,) float64 += the images' in [start, stop). d (N, G, Fg, P),
    cols (G, Kg, padded(P)) scratch, zeros past P."""
    G, Fg, Kg = dW.shape
    P = OH * OW
    rows = cols.reshape(G * Kg, cols.shape[2])
    for n in range(start, stop):
        _add_channel_sums(d[n:n + 1].reshape(1, G * Fg, P), db)  # d now in cache for dW
        _im2col_serial(x[n:n + 1], rows, kh, kw, stride, pad, OH, OW)
        for g in range(G):
            gemm_numba.weight_grad(d[n, g], cols[g], dW[g], P)


def _few_taps_forward(x, W, b, stride, pad, groups, geometry):
    """conv_forward for gemm_numba.suits(Kg), its _conv_geometry given."""
    N, F, kh, kw, OH, OW, Fg, Kg = geometry
    P = OH * OW
    Wt = np.ascontiguousarray(W.reshape(groups, Fg, Kg).transpose(0, 2, 1), dtype=x.dtype)
    b = np.ascontiguousarray(b, dtype=x.dtype).reshape(groups, Fg)
    out = np.empty((N, groups, Fg, P), dtype=x.dtype)
    _, tasks = _conv_tasks(N, P, one_image=True)

    def task(t):
        cols = np.empty((groups, Kg, gemm_numba.padded(P)), dtype=x.dtype)
        cols[:, :, P:] = 0  # read by the last block's lanes past P (never stored): no NaNs there
        chunk = tasks[t]
        if threads.TALLY is None:
            _few_taps_forward_images(x, Wt, b, out, cols, chunk.start, chunk.stop,
                                     kh, kw, stride, pad, OH, OW)
            return
        rows = cols.reshape(groups * Kg, -1)
        for n in range(chunk.start, chunk.stop):
            with timed("transform"):
                _im2col_serial(x[n:n + 1], rows, kh, kw, stride, pad, OH, OW)
            with timed("gemm"):
                for g in range(groups):
                    gemm_numba.forward(Wt[g], cols[g], b[g], out[n, g], P)

    run_tasks(task, len(tasks))
    return out.reshape(N, F, OH, OW)


def _few_taps_backward(x, W, dout, stride, pad, groups, need_input_grad, geometry):
    """conv_backward for gemm_numba.suits(Kg), its _conv_geometry given; dx, where asked
    for, by OpenBLAS."""
    N, F, kh, kw, OH, OW, Fg, Kg = geometry
    P = OH * OW
    W = np.ascontiguousarray(W, dtype=x.dtype).reshape(groups, Fg, Kg)
    d = np.ascontiguousarray(dout, dtype=x.dtype).reshape(N, groups, Fg, P)
    _, tasks = _conv_tasks(N, P, one_image=True)
    dW_parts = np.zeros((len(tasks), groups, Fg, Kg), dtype=x.dtype)
    db_parts = np.zeros((len(tasks), F), dtype=np.float64)
    dx = np.empty_like(x) if need_input_grad else None

    def task(t):
        cols = np.empty((groups, Kg, gemm_numba.padded(P)), dtype=x.dtype)
        cols[:, :, P:] = 0  # gemm_numba.weight_grad adds these columns' products with d's zeros
        chunk = tasks[t]
        if dx is None and threads.TALLY is None:
            _few_taps_weight_grad_images(x, d, dW_parts[t], db_parts[t], cols, chunk.start,
                                         chunk.stop, kh, kw, stride, pad, OH, OW)
            return
        rows = cols.reshape(groups * Kg, -1)
        d_cols = np.empty((groups * Kg, P), dtype=x.dtype) if dx is not None else None
        for n in range(chunk.start, chunk.stop):
            with timed("elementwise"):
                _add_channel_sums(d[n:n + 1].reshape(1, F, P), db_parts[t])
            with timed("transform"):
                _im2col_serial(x[n:n + 1], rows, kh, kw, stride, pad, OH, OW)
            with timed("gemm"):
                for g in range(groups):
                    gemm_numba.weight_grad(d[n, g], cols[g], dW_parts[t, g], P)
            if dx is not None:
                with timed("gemm"):
                    for g in range(groups):
                        np.matmul(W[g].T, d[n, g], out=d_cols[g * Kg:(g + 1) * Kg])
                with timed("transform"):
                    _col2im_serial(d_cols, dx[n:n + 1], kh, kw, stride, pad, OH, OW)

    run_tasks(task, len(tasks))
    dW, db = sum_in_task_order(dW_parts), sum_in_task_order(db_parts)
    return dW.reshape(groups * Fg, -1, kh, kw), db.astype(x.dtype), dx
