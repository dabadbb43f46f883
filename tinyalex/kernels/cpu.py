"""Numba twins of the hot loops: im2col/col2im, max pooling with argmax, ReLU, LRN fused,
the whole convolution forward/backward, batch-parallel (the 3x3 stride-1 ones by Winograd
F(2x2,3x3), kernels/winograd.py), and the SGD update in one pass.

Each function has exactly the signature and result of the readable NumPy body it replaces
(named in its docstring), and tests/test_kernels_cpu.py proves them equal. All loops are
``parallel=True`` over an axis whose iterations write disjoint memory, and ``cache=True`` so
the compile cost is paid once per machine. The convolution is parallel over the batch
instead: see ``conv_forward``.
"""

from __future__ import annotations

import ctypes
import os
import threading
import types
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

JIT = dict(parallel=True, cache=True)


def _out_size(size, kernel, stride, pad):
    return (size + 2 * pad - kernel) // stride + 1


def _serial_twin(parallel_kernel, name: str):
    """The same Python body compiled without ``parallel`` (prange runs as range) and without
    the GIL, for a caller that is itself one of several worker threads. It gets its own
    name: numba's on-disk cache is keyed by the function's name and first line, not by the
    compile options, so the body under its old name loaded the PARALLEL build from the cache
    (measured: a 0.5 M-element ReLU took 20 ms "serially", 0.5 ms once renamed)."""
    body = parallel_kernel.py_func
    twin = types.FunctionType(body.__code__, body.__globals__, name, body.__defaults__,
                              body.__closure__)
    twin.__qualname__ = name
    return numba.njit(nogil=True, cache=True)(twin)


# ---------------------------------------------------------------- im2col / col2im (conv.py)

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
# 0.6 ms). x must be C-contiguous (it is read flat); cols may be a view of wider rows.
_U = np.uint64


@numba.njit(**JIT)
def _im2col(x, cols, kh, kw, stride, pad, OH, OW):
    N, C, H, W = x.shape
    flat = x.reshape(-1)
    for row in numba.prange(C * kh * kw):
        c = row // (kh * kw)
        i = (row // kw) % kh
        j = row % kw
        off = j - pad
        lo, hi = _valid_range(OW, stride, off, W)
        dst_row = cols[row]
        for n in range(N):
            base = n * OH * OW
            for oh in range(OH):
                h = oh * stride - pad + i
                dst = base + oh * OW
                if h < 0 or h >= H:
                    for ow in range(OW):
                        dst_row[_U(dst + ow)] = 0
                    continue
                src = ((n * C + c) * H + h) * W + off  # x[n, c, h, off]
                # Plain loops, not slice assignments (each slice is an array object), and a
                # stride-1 branch whose copy is contiguous: paper conv2 1.3 -> 1.0 ms/image.
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
    OH, OW = _out_size(H, kh, stride, pad), _out_size(W, kw, stride, pad)
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
    OH, OW = _out_size(H, kh, stride, pad), _out_size(W, kw, stride, pad)
    dx = np.empty(x_shape, dtype=cols.dtype)
    _col2im(np.ascontiguousarray(cols), dx, kh, kw, stride, pad, OH, OW)
    return dx


# ---------------------------------------------------------------------- max pool (pool.py)

@numba.njit(**JIT)
def _maxpool_forward(x, y, argmax, window, stride):
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    for plane in numba.prange(N * C):
        n, c = plane // C, plane % C
        for oh in range(OH):
            for ow in range(OW):
                best = x[n, c, oh * stride, ow * stride]
                best_k = 0
                for i in range(window):
                    for j in range(window):
                        v = x[n, c, oh * stride + i, ow * stride + j]
                        if v > best:  # strict: the first maximum wins, as np.argmax
                            best = v
                            best_k = i * window + j
                y[n, c, oh, ow] = best
                argmax[n, c, oh, ow] = best_k


def maxpool_forward(x, window, stride):
    """Twin of tinyalex.layers.pool.maxpool_forward."""
    N, C, H, W = x.shape
    OH, OW = (H - window) // stride + 1, (W - window) // stride + 1
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    argmax = np.empty((N, C, OH, OW), dtype=np.int32)
    _maxpool_forward(np.ascontiguousarray(x), y, argmax, window, stride)
    return y, argmax


@numba.njit(**JIT)
def _maxpool_backward(dout, argmax, dx, window, stride):
    N, C, OH, OW = dout.shape
    for plane in numba.prange(N * C):
        n, c = plane // C, plane % C
        dx[n, c] = 0
        for oh in range(OH):
            for ow in range(OW):
                k = argmax[n, c, oh, ow]
                dx[n, c, oh * stride + k // window, ow * stride + k % window] += dout[n, c, oh, ow]


def maxpool_backward(dout, argmax, x_shape, window, stride):
    """Twin of tinyalex.layers.pool.maxpool_backward."""
    dx = np.empty(x_shape, dtype=dout.dtype)
    _maxpool_backward(np.ascontiguousarray(dout), np.ascontiguousarray(argmax), dx,
                      window, stride)
    return dx


# ---------------------------------------------------------------------- ReLU (activations.py)

@numba.njit(**JIT)
def _relu_forward(x, y):
    for i in numba.prange(x.size):
        v = x[i]
        y[i] = v if v > 0 or v != v else 0  # NaN passes, as np.maximum


# Below this many elements a parallel pass costs more than it saves: fc6/fc7's ReLUs
# (0.5 M elements) took 8 ms each way in parallel on the shared machine, 0.3 ms serially.
ELEMENTWISE_MIN_PARALLEL = 2**20

_relu_forward_serial = _serial_twin(_relu_forward, "_relu_forward_serial")


def relu_forward(x):
    """Twin of ReLU.forward's body, np.maximum(x, 0): one pass (parallel if large)."""
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    kernel = _relu_forward if x.size >= ELEMENTWISE_MIN_PARALLEL else _relu_forward_serial
    kernel(x.reshape(-1), y.reshape(-1))
    return y


@numba.njit(**JIT)
def _relu_backward(dout, y, dx):
    for i in numba.prange(dout.size):
        dx[i] = dout[i] if y[i] > 0 else 0


_relu_backward_serial = _serial_twin(_relu_backward, "_relu_backward_serial")


def relu_backward(dout, y):
    """Twin of ReLU.backward's body, dout * (y > 0): one pass, no boolean mask array
    (where y <= 0 the gradient is 0 even for an infinite dout, whose product would be NaN)."""
    dout, y = np.ascontiguousarray(dout), np.ascontiguousarray(y)
    dx = np.empty_like(dout)
    kernel = _relu_backward if dout.size >= ELEMENTWISE_MIN_PARALLEL else _relu_backward_serial
    kernel(dout.reshape(-1), y.reshape(-1), dx.reshape(-1))
    return dx


# ----------------------------------------------------------------------------- LRN (lrn.py)

# Vectorising these loops needs LLVM to reorder float arithmetic a little; the results stay
# within a few ulps of the readable body (tests: 2e-6 float32, 1e-14 float64).
LRN_JIT = dict(parallel=True, cache=True, fastmath={"nsz", "arcp", "contract", "reassoc"})


@numba.njit(inline="always")
def _inverse_power(s, beta):
    """s ** -beta, with the paper's beta = 0.75 done by two square roots (pow is slow)."""
    if beta == 0.75:
        return 1.0 / np.sqrt(s * np.sqrt(s))
    return s ** (-beta)


@numba.njit(inline="always")
def _inverse_powers(s_row, out, beta, one):
    """out[w] = s_row[w] ** -beta along one row, for backward. As _inverse_power, but the
    test on beta sits outside the loop over w and ``one`` has the arrays' dtype (a literal
    1 computes in float64): with _inverse_power inside backward's loop LLVM left it scalar
    (measured: backward 3.5x slower; forward's loop vectorises either way)."""
    if beta == 0.75:
        for w in range(s_row.shape[0]):
            q = np.sqrt(one / s_row[w])
            out[w] = q * np.sqrt(q)
    else:
        for w in range(s_row.shape[0]):
            out[w] = s_row[w] ** (-beta)


@numba.njit(**LRN_JIT)
def _lrn_forward(x, y, s, before, after, a, beta, k):
    # One image per task, its channels as (C, H*W) planes: the squares of the image are
    # kept in a buffer and each window of planes is summed directly (no running sum to
    # drift), along H*W contiguous floats. (A task per (n, h) row read C rows H*W apart:
    # too many streams for the prefetcher; measured 3-7x slower, with the same results.)
    N, C, H, W = x.shape
    P = H * W
    x3, y3, s3 = x.reshape(N, C, P), y.reshape(N, C, P), s.reshape(N, C, P)
    for n in numba.prange(N):
        sq = np.empty((C, P), x.dtype)
        for c in range(C):
            for p in range(P):
                sq[c, p] = x3[n, c, p] * x3[n, c, p]
        acc = np.empty(P, x.dtype)
        for c in range(C):
            lo, hi = max(0, c - before), min(C - 1, c + after)
            acc[:] = sq[lo]
            for j in range(lo + 1, hi + 1):  # plane by plane: the p loop vectorises
                for p in range(P):
                    acc[p] += sq[j, p]
            for p in range(P):
                sc = k + a * acc[p]
                s3[n, c, p] = sc
                y3[n, c, p] = x3[n, c, p] * _inverse_power(sc, beta)


def lrn_forward(x, size, a, beta, k):
    """Twin of tinyalex.layers.lrn.lrn_forward: returns (y, s)."""
    x = np.ascontiguousarray(x)
    y, s = np.empty_like(x), np.empty_like(x)
    _lrn_forward(x, y, s, size // 2, (size - 1) // 2, x.dtype.type(a), x.dtype.type(beta),
                 x.dtype.type(k))
    return y, s


@numba.njit(**LRN_JIT)
def _lrn_backward(dout, x, y, s, dx, before, after, a, beta, one):
    # before/after are the TRANSPOSED window: x_c feeds s_i for i in [c - before, c + after].
    # One image per task as in _lrn_forward: t_i = dout_i * y_i / s_i and s_i ** -beta
    # are computed once per plane into buffers, then the window is summed plane by plane.
    N, C, H, W = x.shape
    P = H * W
    coef = 2 * a * beta
    d3, x3, y3 = dout.reshape(N, C, P), x.reshape(N, C, P), y.reshape(N, C, P)
    s3, dx3 = s.reshape(N, C, P), dx.reshape(N, C, P)
    for n in numba.prange(N):
        t = np.empty((C, P), x.dtype)
        scale = np.empty((C, P), x.dtype)
        for c in range(C):
            for p in range(P):
                t[c, p] = d3[n, c, p] * y3[n, c, p] / s3[n, c, p]
            _inverse_powers(s3[n, c], scale[c], beta, one)
        acc = np.empty(P, x.dtype)
        for c in range(C):
            lo, hi = max(0, c - before), min(C - 1, c + after)
            acc[:] = t[lo]
            for i in range(lo + 1, hi + 1):
                for p in range(P):
                    acc[p] += t[i, p]
            for p in range(P):
                dx3[n, c, p] = d3[n, c, p] * scale[c, p] - coef * x3[n, c, p] * acc[p]


def lrn_backward(dout, x, y, s, size, a, beta):
    """Twin of tinyalex.layers.lrn.lrn_backward."""
    dout, x, y, s = (np.ascontiguousarray(a_) for a_ in (dout, x, y, s))  # read as planes
    dx = np.empty_like(dout)
    t = dout.dtype.type
    _lrn_backward(dout, x, y, s, dx, (size - 1) // 2, size // 2, t(a), t(beta), t(1))
    return dx


# ------------------------------------------------ convolution, batch-parallel (conv.py)
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

_im2col_serial = _serial_twin(_im2col, "_im2col_serial")
_col2im_serial = _serial_twin(_col2im, "_col2im_serial")


@numba.njit(nogil=True, cache=True)
def _columns_to_images(y, out, b):
    """out[n, f, p] = y[f, n*P + p] + b[f]: a GEMM's (F, n*P) result as n NCHW images."""
    N, F, P = out.shape
    for n in range(N):
        for f in range(F):
            for p in range(P):
                out[n, f, p] = y[f, n * P + p] + b[f]


@numba.njit(nogil=True, cache=True)
def _add_channel_sums(d, sums):
    """sums[f] += sum over n, p of d[n, f, p], each image's channel summed in float64."""
    N, F, P = d.shape
    for n in range(N):
        for f in range(F):
            total = 0.0
            for p in range(P):
                total += d[n, f, p]
            sums[f] += total


@numba.njit(nogil=True, cache=True)
def _images_to_columns(d, d_cols):
    """d_cols[f, n*P + p] = d[n, f, p]: n NCHW gradients as one (F, n*P) GEMM operand."""
    N, F, P = d.shape
    for n in range(N):
        for f in range(F):
            for p in range(P):
                d_cols[f, n * P + p] = d[n, f, p]


def _find_openblas_threads():
    """(get, set) of the process's OpenBLAS thread count (numpy's BLAS), or None if the
    BLAS is not an OpenBLAS found in /proc/self/maps (then the batch-parallel conv is off:
    other BLAS libraries would run a thread team inside each worker)."""
    if os.environ.get("TINYALEX_NO_BATCH_PARALLEL_CONV", "0") not in ("0", ""):
        return None
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:
        return None
    for path in sorted(paths):
        if "openblas" not in os.path.basename(path).lower():
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("", "scipy_"):
            for suffix in ("", "64_", "_64"):
                get = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}", None)
                set_ = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}", None)
                if get is not None and set_ is not None:
                    set_.argtypes = [ctypes.c_int]
                    return get, set_
    return None


_OPENBLAS_THREADS = _find_openblas_threads()
_pool: ThreadPoolExecutor | None = None
_pool_pid = 0  # a forked child inherits the pool object but none of its threads
_pool_lock = threading.Lock()


def _run_tasks(task, count: int) -> None:
    """task(t) for t in range(count) on numba.get_num_threads() workers, OpenBLAS held
    to one thread meanwhile (each worker's GEMMs are its own)."""
    global _pool, _pool_pid
    workers = min(numba.get_num_threads(), count)
    get_threads, set_threads = _OPENBLAS_THREADS
    with _pool_lock:  # one layer at a time owns the BLAS thread setting
        before = get_threads()
        set_threads(1)
        try:
            if workers <= 1:
                for t in range(count):
                    task(t)
            else:
                if _pool is None or _pool._max_workers < workers or _pool_pid != os.getpid():
                    _pool = ThreadPoolExecutor(workers, thread_name_prefix="tinyalex-conv")
                    _pool_pid = os.getpid()
                for future in [_pool.submit(task, t) for t in range(count)]:
                    future.result()
        finally:
            set_threads(before)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _conv_tasks(N: int, P: int) -> tuple[int, list]:
    """Images per GEMM and the tasks: fixed slices of range(N), each a multiple of it."""
    per_gemm = min(N, max(1, _ceil_div(CONV_MIN_COLUMNS, P)))
    per_task = per_gemm * _ceil_div(_ceil_div(N, per_gemm), CONV_MAX_TASKS)
    return per_gemm, [slice(start, min(N, start + per_task)) for start in range(0, N, per_task)]


def _conv_geometry(x_shape, W_shape, stride, pad, groups):
    N, C, H, Wd = x_shape
    F, _, kh, kw = W_shape
    OH, OW = _out_size(H, kh, stride, pad), _out_size(Wd, kw, stride, pad)
    return N, F, kh, kw, OH, OW, F // groups, C // groups * kh * kw


def conv_forward(x, W, b, stride, pad, groups):
    """Twin of Conv2D.forward's readable body: x (N, C, H, W), W (F, C/G, kh, kw), b (F,)
    -> out (N, F, OH, OW) = the grouped im2col products plus b."""
    x = np.ascontiguousarray(x)
    if use_winograd(W.shape[2], W.shape[3], stride, pad):
        return _winograd_forward(x, W, b, groups)
    N, F, kh, kw, OH, OW, Fg, Kg = _conv_geometry(x.shape, W.shape, stride, pad, groups)
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
            _im2col_serial(x[start:start + n], c, kh, kw, stride, pad, OH, OW)
            target = out[start].reshape(F, P) if n == 1 else y[:, :n * P]
            for g in range(groups):
                np.matmul(Wg[g], c[g * Kg:(g + 1) * Kg], out=target[g * Fg:(g + 1) * Fg])
            if n == 1:
                target += b[:, None]
            else:
                _columns_to_images(target, out[start:start + n], b)

    _run_tasks(task, len(tasks))
    return out.reshape(N, F, OH, OW)


def conv_backward(x, W, dout, stride, pad, groups, need_input_grad=True):
    """Twin of Conv2D.backward's readable body: returns (dW (F, C/G, kh, kw), db (F,),
    dx (N, C, H, W) or None). dW = dout_r @ cols.T, dx = col2im(W.T @ dout_r), per group;
    db = dout summed over n, oh, ow in float64 (per image, then per task, in order)."""
    x = np.ascontiguousarray(x)
    dout = np.ascontiguousarray(dout)
    if use_winograd(W.shape[2], W.shape[3], stride, pad):
        return _winograd_backward(x, W, dout, groups, need_input_grad)
    N, F, kh, kw, OH, OW, Fg, Kg = _conv_geometry(x.shape, W.shape, stride, pad, groups)
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
        _add_channel_sums(d[chunk], db_parts[t])
        for start in range(chunk.start, chunk.stop, per_gemm):
            n = min(per_gemm, chunk.stop - start)
            c = cols[:, :n * P]
            _im2col_serial(x[start:start + n], c, kh, kw, stride, pad, OH, OW)
            if n == 1:
                dc = d[start]
            else:
                dc = d_cols[:, :n * P]
                _images_to_columns(d[start:start + n], dc)
            for g in range(groups):
                np.matmul(dc[g * Fg:(g + 1) * Fg], c[g * Kg:(g + 1) * Kg].T, out=product)
                dW_parts[t, g] += product
            if dx is not None:  # the columns' memory takes their gradient
                for g in range(groups):
                    np.matmul(Wg[g].T, dc[g * Fg:(g + 1) * Fg], out=c[g * Kg:(g + 1) * Kg])
                _col2im_serial(c, dx[start:start + n], kh, kw, stride, pad, OH, OW)

    _run_tasks(task, len(tasks))
    dW, db = dW_parts[0], db_parts[0]
    for t in range(1, len(tasks)):  # in task order: the same sums whatever ran where
        dW += dW_parts[t]
        db += db_parts[t]
    return dW.reshape(W.shape), db.astype(x.dtype), dx


# ------------------------------------------------ Winograd F(2x2, 3x3) (kernels/winograd.py)
#
# The 3x3 stride-1 pad-1 convolutions (conv3-5) as 16 products of 2.25x fewer
# multiplications in all. These four loops are the transforms of winograd.py, written out
# for one 4x4 tile at a time on scalars; the products are BLAS, per task as above.

@numba.njit(inline="always")
def _bt(d0, d1, d2, d3):
    """B^T v for a 4-vector (the input transform, one direction)."""
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3


@numba.njit(inline="always")
def _b(v0, v1, v2, v3):
    """B v (the input gradient's transform, one direction)."""
    return v0, v1 - v2 + v3, v1 + v2 - v0, -v3


@numba.njit(inline="always")
def _at(m0, m1, m2, m3):
    """A^T v: 4 -> 2 (the output transform, one direction)."""
    return m0 + m1 + m2, m1 - m2 - m3


@numba.njit(inline="always")
def _a(u0, u1):
    """A u: 2 -> 4 (the output gradient's transform, one direction)."""
    return u0, u0 + u1, u0 - u1, -u1


@numba.njit(inline="always")
def _g(w0, w1, w2):
    """G v: 3 -> 4 (the filter transform, one direction)."""
    h = 0.5 * (w0 + w2)
    return w0, h + 0.5 * w1, h - 0.5 * w1, w2


@numba.njit(inline="always")
def _gt(u0, u1, u2, u3):
    """G^T v: 4 -> 3 (the filter gradient's transform, one direction)."""
    h = 0.5 * (u1 + u2)
    return u0 + h, 0.5 * (u1 - u2), h + u3


# serial (as all of the convolution's loops): a forked child, e.g. a data-loader worker,
# can still run it; numba's parallel layer does not survive a fork
@numba.njit(nogil=True, cache=True)
def _winograd_filter(W, U):
    """U[4i + j, f, c] = (G g G^T)[i, j]: W (F, C, 3, 3) -> U (16, F, C)."""
    F, C = W.shape[0], W.shape[1]
    for f in range(F):
        for c in range(C):
            a0, a1, a2, a3 = _g(W[f, c, 0, 0], W[f, c, 1, 0], W[f, c, 2, 0])
            b0, b1, b2, b3 = _g(W[f, c, 0, 1], W[f, c, 1, 1], W[f, c, 2, 1])
            e0, e1, e2, e3 = _g(W[f, c, 0, 2], W[f, c, 1, 2], W[f, c, 2, 2])
            U[0, f, c], U[1, f, c], U[2, f, c], U[3, f, c] = _g(a0, b0, e0)
            U[4, f, c], U[5, f, c], U[6, f, c], U[7, f, c] = _g(a1, b1, e1)
            U[8, f, c], U[9, f, c], U[10, f, c], U[11, f, c] = _g(a2, b2, e2)
            U[12, f, c], U[13, f, c], U[14, f, c], U[15, f, c] = _g(a3, b3, e3)


@numba.njit(nogil=True, cache=True)
def _winograd_filter_grad(dU, dW):
    """dW = G^T dU G per filter: dU (16, F, C) -> dW (F, C, 3, 3)."""
    F, C = dW.shape[0], dW.shape[1]
    for f in range(F):
        for c in range(C):
            a0, a1, a2 = _gt(dU[0, f, c], dU[4, f, c], dU[8, f, c], dU[12, f, c])
            b0, b1, b2 = _gt(dU[1, f, c], dU[5, f, c], dU[9, f, c], dU[13, f, c])
            e0, e1, e2 = _gt(dU[2, f, c], dU[6, f, c], dU[10, f, c], dU[14, f, c])
            h0, h1, h2 = _gt(dU[3, f, c], dU[7, f, c], dU[11, f, c], dU[15, f, c])
            dW[f, c, 0, 0], dW[f, c, 0, 1], dW[f, c, 0, 2] = _gt(a0, b0, e0, h0)
            dW[f, c, 1, 0], dW[f, c, 1, 1], dW[f, c, 1, 2] = _gt(a1, b1, e1, h1)
            dW[f, c, 2, 0], dW[f, c, 2, 1], dW[f, c, 2, 2] = _gt(a2, b2, e2, h2)


def winograd_filter(W):
    """Twin of winograd.filter_transform."""
    W = np.ascontiguousarray(W)
    U = np.empty((16,) + W.shape[:2], dtype=W.dtype)
    _winograd_filter(W, U)
    return U


def winograd_filter_grad(dU, dtype):
    """Twin of winograd.filter_gradient."""
    dU = np.ascontiguousarray(dU)
    dW = np.empty(dU.shape[1:] + (3, 3), dtype=dU.dtype)
    _winograd_filter_grad(dU, dW)
    return dW.astype(dtype, copy=False)


@numba.njit(nogil=True, cache=True)
def _winograd_input(x, V):
    """V[4i + j, c, t] = (B^T d_t B)[i, j]: x (n, C, H, W) -> V (16, C, n*th*tw)."""
    N, C, H, W = x.shape
    th, tw = (H + 1) // 2, (W + 1) // 2
    plane = np.zeros((2 * th + 2, 2 * tw + 2), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for r in range(H):
                for q in range(W):
                    plane[r + 1, q + 1] = x[n, c, r, q]
            t = n * th * tw
            for ty in range(th):
                r = 2 * ty
                for tx in range(tw):
                    q = 2 * tx
                    # rows of B^T d, then B^T applied to each of their columns
                    a0, a1, a2, a3 = _bt(plane[r, q], plane[r + 1, q], plane[r + 2, q],
                                         plane[r + 3, q])
                    b0, b1, b2, b3 = _bt(plane[r, q + 1], plane[r + 1, q + 1],
                                         plane[r + 2, q + 1], plane[r + 3, q + 1])
                    c0, c1, c2, c3 = _bt(plane[r, q + 2], plane[r + 1, q + 2],
                                         plane[r + 2, q + 2], plane[r + 3, q + 2])
                    e0, e1, e2, e3 = _bt(plane[r, q + 3], plane[r + 1, q + 3],
                                         plane[r + 2, q + 3], plane[r + 3, q + 3])
                    V[0, c, t], V[1, c, t], V[2, c, t], V[3, c, t] = _bt(a0, b0, c0, e0)
                    V[4, c, t], V[5, c, t], V[6, c, t], V[7, c, t] = _bt(a1, b1, c1, e1)
                    V[8, c, t], V[9, c, t], V[10, c, t], V[11, c, t] = _bt(a2, b2, c2, e2)
                    V[12, c, t], V[13, c, t], V[14, c, t], V[15, c, t] = _bt(a3, b3, c3, e3)
                    t += 1


@numba.njit(nogil=True, cache=True)
def _winograd_output(M, out, b):
    """out[n, f] = A^T m_t A per tile, cropped, plus b[f]: M (16, F, n*th*tw) -> out
    (n, F, H, W)."""
    N, F, H, W = out.shape
    th, tw = (H + 1) // 2, (W + 1) // 2
    for n in range(N):
        for f in range(F):
            bias = b[f]
            t = n * th * tw
            for ty in range(th):
                for tx in range(tw):
                    p0, p1 = _at(M[0, f, t], M[4, f, t], M[8, f, t], M[12, f, t])
                    q0, q1 = _at(M[1, f, t], M[5, f, t], M[9, f, t], M[13, f, t])
                    s0, s1 = _at(M[2, f, t], M[6, f, t], M[10, f, t], M[14, f, t])
                    u0, u1 = _at(M[3, f, t], M[7, f, t], M[11, f, t], M[15, f, t])
                    y00, y01 = _at(p0, q0, s0, u0)
                    y10, y11 = _at(p1, q1, s1, u1)
                    r, q = 2 * ty, 2 * tx
                    out[n, f, r, q] = y00 + bias
                    if q + 1 < W:
                        out[n, f, r, q + 1] = y01 + bias
                    if r + 1 < H:
                        out[n, f, r + 1, q] = y10 + bias
                        if q + 1 < W:
                            out[n, f, r + 1, q + 1] = y11 + bias
                    t += 1


@numba.njit(nogil=True, cache=True)
def _winograd_output_grad(dout, Z):
    """Z[4i + j, f, t] = (A dY_t A^T)[i, j], dY_t the 2x2 tile (zeros past the edge):
    dout (n, F, H, W) -> Z (16, F, n*th*tw)."""
    N, F, H, W = dout.shape
    th, tw = (H + 1) // 2, (W + 1) // 2
    zero = dout.dtype.type(0)
    for n in range(N):
        for f in range(F):
            t = n * th * tw
            for ty in range(th):
                for tx in range(tw):
                    r, q = 2 * ty, 2 * tx
                    g00 = dout[n, f, r, q]
                    g01 = dout[n, f, r, q + 1] if q + 1 < W else zero
                    g10 = dout[n, f, r + 1, q] if r + 1 < H else zero
                    g11 = dout[n, f, r + 1, q + 1] if r + 1 < H and q + 1 < W else zero
                    a0, a1, a2, a3 = _a(g00, g10)  # A applied to each column of dY
                    b0, b1, b2, b3 = _a(g01, g11)
                    Z[0, f, t], Z[1, f, t], Z[2, f, t], Z[3, f, t] = _a(a0, b0)
                    Z[4, f, t], Z[5, f, t], Z[6, f, t], Z[7, f, t] = _a(a1, b1)
                    Z[8, f, t], Z[9, f, t], Z[10, f, t], Z[11, f, t] = _a(a2, b2)
                    Z[12, f, t], Z[13, f, t], Z[14, f, t], Z[15, f, t] = _a(a3, b3)
                    t += 1


@numba.njit(inline="always")
def _add_row(plane, r, q, w):
    plane[r, q] += w[0]
    plane[r, q + 1] += w[1]
    plane[r, q + 2] += w[2]
    plane[r, q + 3] += w[3]


@numba.njit(nogil=True, cache=True)
def _winograd_input_grad(dV, dx):
    """dx[n, c] = the patches dd_t = B dV_t B^T added back where they were read:
    dV (16, C, n*th*tw) -> dx (n, C, H, W) (overwritten)."""
    N, C, H, W = dx.shape
    th, tw = (H + 1) // 2, (W + 1) // 2
    plane = np.empty((2 * th + 2, 2 * tw + 2), dtype=dx.dtype)
    for n in range(N):
        for c in range(C):
            plane[:] = 0
            t = n * th * tw
            for ty in range(th):
                r = 2 * ty
                for tx in range(tw):
                    q = 2 * tx
                    a0, a1, a2, a3 = _b(dV[0, c, t], dV[4, c, t], dV[8, c, t], dV[12, c, t])
                    b0, b1, b2, b3 = _b(dV[1, c, t], dV[5, c, t], dV[9, c, t], dV[13, c, t])
                    c0, c1, c2, c3 = _b(dV[2, c, t], dV[6, c, t], dV[10, c, t], dV[14, c, t])
                    e0, e1, e2, e3 = _b(dV[3, c, t], dV[7, c, t], dV[11, c, t], dV[15, c, t])
                    _add_row(plane, r, q, _b(a0, b0, c0, e0))
                    _add_row(plane, r + 1, q, _b(a1, b1, c1, e1))
                    _add_row(plane, r + 2, q, _b(a2, b2, c2, e2))
                    _add_row(plane, r + 3, q, _b(a3, b3, c3, e3))
                    t += 1
            for r in range(H):
                for q in range(W):
                    dx[n, c, r, q] = plane[r + 1, q + 1]


# Tiles per product. Measured (2-core EPYC, batch 128, forward + backward ms) for 64 / 256 /
# 512 / 1024: small net's conv3 (6x6) 205 / 179 / 177 / 336 (1024 leaves one task, one
# core); paper net's conv5 (13x13) 684 / 688 / 513 / 569.
WINOGRAD_MIN_COLUMNS = 512


def use_winograd(kh, kw, stride, pad) -> bool:
    """F(2x2, 3x3) for the 3x3 stride-1 pad-1 convolutions (TINYALEX_NO_WINOGRAD=1: im2col)."""
    if os.environ.get("TINYALEX_NO_WINOGRAD", "0") not in ("0", ""):
        return False
    return kh == kw == 3 and stride == 1 and pad == 1


def _winograd_tasks(N: int, tiles_per_image: int) -> list:
    """Fixed slices of range(N), as many as keep each product at WINOGRAD_MIN_COLUMNS
    tiles (at most CONV_MAX_TASKS), an even number where there are several so that two
    workers finish together. Not a function of the thread count: the dW partial sums, and
    so the results, are the same on any machine."""
    count = max(1, min(N, CONV_MAX_TASKS, N * tiles_per_image // WINOGRAD_MIN_COLUMNS))
    if count > 2:
        count -= count % 2
    bounds = [N * t // count for t in range(count + 1)]
    return [slice(bounds[t], bounds[t + 1]) for t in range(count)]


def _winograd_forward(x, W, b, groups):
    """Twin of winograd.conv_forward: x (N, C, H, W), W (F, C/G, 3, 3), b (F,) -> out
    (N, F, H, W). Per task: V (16, C, T) and M (16, F, T) for its T tiles, 16*G GEMMs."""
    N, C, H, Wd = x.shape
    F = W.shape[0]
    Fg, Cg = F // groups, C // groups
    th, tw = (H + 1) // 2, (Wd + 1) // 2
    U = winograd_filter(W)
    b = np.ascontiguousarray(b)
    out = np.empty((N, F, H, Wd), dtype=x.dtype)
    tasks = _winograd_tasks(N, th * tw)

    def task(t):
        chunk = tasks[t]
        T = (chunk.stop - chunk.start) * th * tw
        V = np.empty((16, C, T), dtype=x.dtype)
        M = np.empty((16, F, T), dtype=x.dtype)
        _winograd_input(x[chunk], V)
        for k in range(16):
            for g in range(groups):
                np.matmul(U[k, g * Fg:(g + 1) * Fg], V[k, g * Cg:(g + 1) * Cg],
                          out=M[k, g * Fg:(g + 1) * Fg])
        _winograd_output(M, out[chunk], b)

    _run_tasks(task, len(tasks))
    return out


def _winograd_backward(x, W, dout, groups, need_input_grad):
    """Twin of winograd.conv_backward: (dW (F, C/G, 3, 3), db (F,), dx or None). Per task:
    V recomputed, Z (16, F, T) from dout, its partial dU (16, F, C/G) summed in task order."""
    N, C, H, Wd = x.shape
    F = W.shape[0]
    Fg, Cg = F // groups, C // groups
    th, tw = (H + 1) // 2, (Wd + 1) // 2
    U = winograd_filter(W)
    tasks = _winograd_tasks(N, th * tw)
    dU_parts = np.zeros((len(tasks), 16, F, Cg), dtype=x.dtype)
    db_parts = np.zeros((len(tasks), F), dtype=np.float64)
    dx = np.empty_like(x) if need_input_grad else None

    def task(t):
        chunk = tasks[t]
        T = (chunk.stop - chunk.start) * th * tw
        V = np.empty((16, C, T), dtype=x.dtype)
        Z = np.empty((16, F, T), dtype=x.dtype)
        _add_channel_sums(dout[chunk].reshape(chunk.stop - chunk.start, F, H * Wd), db_parts[t])
        _winograd_input(x[chunk], V)
        _winograd_output_grad(dout[chunk], Z)
        dU = dU_parts[t]
        for k in range(16):
            for g in range(groups):
                np.matmul(Z[k, g * Fg:(g + 1) * Fg], V[k, g * Cg:(g + 1) * Cg].T,
                          out=dU[k, g * Fg:(g + 1) * Fg])
        if dx is not None:  # V's memory takes its gradient
            for k in range(16):
                for g in range(groups):
                    np.matmul(U[k, g * Fg:(g + 1) * Fg].T, Z[k, g * Fg:(g + 1) * Fg],
                              out=V[k, g * Cg:(g + 1) * Cg])
            _winograd_input_grad(V, dx[chunk])

    _run_tasks(task, len(tasks))
    dU, db = dU_parts[0], db_parts[0]
    for t in range(1, len(tasks)):  # in task order: the same sums whatever ran where
        dU += dU_parts[t]
        db += db_parts[t]
    return winograd_filter_grad(dU, x.dtype), db.astype(x.dtype), dx


# ------------------------------------------------------------------ SGD update (optim.py)

@numba.njit(**JIT)
def _sgd_update(w, v, g, momentum, decay, lr):
    for i in numba.prange(w.size):
        # The readable body's four passes, rounded in the same order: bitwise the same.
        step = v[i] * momentum
        step = step - decay * w[i]
        step = step - lr * g[i]
        v[i] = step
        w[i] = w[i] + step


_sgd_update_serial = _serial_twin(_sgd_update, "_sgd_update_serial")


def sgd_update(w, v, g, lr, momentum, weight_decay):
    """Twin of SGD.step's body for one parameter, in place: v <- m*v - wd*lr*w - lr*g;
    w <- w + v. One pass over w, v and g instead of four (the paper net's 57 M parameters
    took ~290 ms a step in four NumPy passes). w and v must be contiguous."""
    scalar = w.dtype.type
    g = np.ascontiguousarray(g, dtype=w.dtype)
    kernel = _sgd_update if w.size >= ELEMENTWISE_MIN_PARALLEL else _sgd_update_serial
    kernel(w.reshape(-1), v.reshape(-1), g.reshape(-1), scalar(momentum),
           scalar(weight_decay * lr), scalar(lr))


if _OPENBLAS_THREADS is None:  # no way to keep each worker's GEMMs single-threaded
    conv_forward = conv_backward = None  # noqa: F811
