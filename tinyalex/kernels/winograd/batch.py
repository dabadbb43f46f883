"""The Winograd convolution, batch-parallel (kernels/tasks.py says how): the drivers that
run any F(m x m, r x r)'s Numba transforms (the modules beside this one) around OpenBLAS's
products, ``winograd_forward`` and ``winograd_backward``, and the same-size convolutions'
``conv_forward`` and ``conv_backward``, which have the signature and result of the readable
Conv2D bodies (layers/conv.py; tests/test_winograd.py). A layer takes the algorithm of
fewest multiplications on its map: F(3x3, 3x3) or F(5x5, 3x3) for 3x3, F(3x3, 5x5) for 5x5.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..tasks import CONV_MAX_TASKS, add_channel_sums
from ..threads import in_pieces, run_tasks, sum_in_task_order, timed
from . import f2x2_3x3, f3x3_3x3, f3x3_5x5, f5x5_3x3, readable
from .transforms import Transforms

WINOGRAD_MIN_COLUMNS = 512  # tiles per product at least, where the batch allows two tasks


def _winograd_tasks(N: int, tiles_per_image: int) -> list:
    """Fixed slices of range(N), as many as keep each product at WINOGRAD_MIN_COLUMNS
    tiles (at most CONV_MAX_TASKS) but at least two, an even number where there are
    several so that two workers finish together. Not a function of the thread count: the
    dW partial sums, and so the results, are the same on any machine."""
    count = max(min(N, 2),
                min(N, CONV_MAX_TASKS, N * tiles_per_image // WINOGRAD_MIN_COLUMNS))
    if count > 2:
        count -= count % 2
    bounds = [N * t // count for t in range(count + 1)]
    return [slice(bounds[t], bounds[t + 1]) for t in range(count)]


# The algorithms, by (m, r), and each same-size filter size's candidates: a layer takes the
# one of fewest multiplications on its map (``transforms_for``). F(2x2, 3x3) runs only the
# paper net's conv1, on its space-to-depth maps (kernels/space_to_depth_numba.py).
ALGORITHMS = {tf.name: tf for tf in (f2x2_3x3.TRANSFORMS, f3x3_3x3.TRANSFORMS,
                                     f5x5_3x3.TRANSFORMS, f3x3_5x5.TRANSFORMS)}
CANDIDATES = {3: (ALGORITHMS[3, 3], ALGORITHMS[5, 3]), 5: (ALGORITHMS[3, 5],)}


def transforms_for(r: int, H: int, W: int) -> Transforms:
    """The transforms of a same-size r x r convolution on an H x W map: of CANDIDATES[r],
    the one of fewest multiplications there (the first on a tie). F(3x3, 3x3) or F(5x5,
    3x3) for 3x3 (the small net's 6x6 maps or the paper net's 13x13), F(3x3, 5x5) for 5x5."""
    return max(CANDIDATES[r], key=lambda tf: tf.alg.fewer_multiplications(H, W))


def algorithm(r: int, H: int, W: int) -> readable.Winograd:
    """The F(m x m, r x r) this file runs for a same-size r x r convolution on H x W."""
    return transforms_for(r, H, W).alg


class _Frequencies:
    """One task's frequency arrays of C or F rows (V, dV; M, Z), for passes of up to
    ``most`` tiles, in its transforms' layout: (K, rows, T) planes off 4 KiB strides
    (_planes), or, channels-last, a contiguous (K, G, T, rows/G) array per pass (its rows
    must be C-contiguous for the transforms' loops to vectorise)."""

    def __init__(self, tf: Transforms, rows: int, most: int, groups: int, dtype):
        self.tf, self.rows, self.groups = tf, rows, groups
        self.memory = (np.empty(tf.K * rows * most, dtype=dtype) if tf.channels_last
                       else _planes(tf.K, rows, most, dtype))

    def of(self, T: int):
        """The array for a pass of T tiles."""
        if self.tf.channels_last:
            size = self.tf.K * self.rows * T
            return self.memory[:size].reshape(self.tf.K, self.groups, T,
                                              self.rows // self.groups)
        return self.memory[:, :, :T]


def _by_group(tf: Transforms, A, groups: int):
    """A frequency array as its groups' GEMM operands, a view: (K, G, rows/G, T), or
    channels-last (K, G, T, rows/G) as it is."""
    if tf.channels_last:
        return A
    K, rows, T = A.shape
    return A.reshape(K, groups, rows // groups, T)


def _transposed(A):
    """The (K, G) stack of A's blocks, each transposed (a view; BLAS reads it as is)."""
    return A.transpose(0, 1, 3, 2)


def _laid_out_transposed(A):
    """_transposed(A) as a contiguous array, NumPy's copy of the K blocks split among the
    workers (it releases the GIL)."""
    K, G, R, S = A.shape
    AT = np.empty((K, G, S, R), dtype=A.dtype)
    in_pieces(lambda k0, k1: np.copyto(AT[k0:k1], _transposed(A[k0:k1])), K)
    return AT


def _planes(K: int, rows: int, T: int, dtype):
    """An empty (K, rows, T) array whose K planes start 64 bytes past a multiple of 4 KiB
    from each other: the transforms touch all K planes at once, and planes a multiple of
    4 KiB apart fall into the same few L1 cache sets."""
    size = rows * T
    itemsize = np.dtype(dtype).itemsize
    gap = (64 - size * itemsize) % 4096 // itemsize
    return np.empty((K, size + gap), dtype=dtype)[:, :size].reshape(K, rows, T)


# Tiles per pass, by (m, r): a task runs its images in passes of about this many tiles, so
# that its frequency arrays stay in cache and the step's peak memory stays low.
WINOGRAD_PASS_TILES = {(2, 3): 512, (3, 3): 512, (3, 5): 50, (5, 3): 256}


def _passes(chunk: slice, tiles_per_image: int, tf: Transforms) -> list:
    """A task's images in passes of at most WINOGRAD_PASS_TILES[tf.name] tiles (at least
    one image)."""
    per_pass = max(1, WINOGRAD_PASS_TILES[tf.name] // tiles_per_image)
    return [slice(start, min(chunk.stop, start + per_pass))
            for start in range(chunk.start, chunk.stop, per_pass)]


class Plan(NamedTuple):
    """A convolution's transforms, the channels of V (C) and the output's size (H, W):
    the same-size ones' from x (``same_size``), a strided one's from
    kernels/space_to_depth_numba.py, whose input transforms read x through space-to-depth."""
    tf: Transforms
    C: int
    H: int
    W: int


def same_size(x, W) -> Plan:
    """The plan of a same-size convolution (pad r//2) of x by r x r filters W."""
    C, H, Wd = x.shape[1:]
    return Plan(transforms_for(W.shape[2], H, Wd), C, H, Wd)


def winograd_forward(x, W, b, groups, plan: Plan):
    """Twin of readable.conv_forward: x (N, C, H, W), W (F, C/G, r, r), b (F,) -> out
    (N, F, H, W). Per pass of a task: V (K, C, T) and M (K, F, T) for its T tiles, K*G
    GEMMs."""
    N = x.shape[0]
    tf, C, H, Wd = plan
    F = W.shape[0]
    Fg, Cg = F // groups, C // groups
    th, tw = readable.tiles(H, Wd, tf.alg.m)
    Ub = tf.filter(W).reshape(tf.K, groups, Fg, Cg)
    if tf.channels_last:
        # U^T laid out, not a transposed view: OpenBLAS packs a transposed operand slower
        Ub = _laid_out_transposed(Ub)  # (K, G, C/G, F/G)
    b = np.ascontiguousarray(b)
    out = np.empty((N, F, H, Wd), dtype=x.dtype)
    tasks = _winograd_tasks(N, th * tw)

    def task(t):
        passes = _passes(tasks[t], th * tw, tf)
        most = (passes[0].stop - passes[0].start) * th * tw
        V_all = _Frequencies(tf, C, most, groups, x.dtype)
        M_all = _Frequencies(tf, F, most, groups, x.dtype)
        for images in passes:
            T = (images.stop - images.start) * th * tw
            V, M = V_all.of(T), M_all.of(T)
            with timed("transform"):
                tf.input(x[images], V)
            with timed("gemm"):  # the K*G products in one call
                Vb, Mb = _by_group(tf, V, groups), _by_group(tf, M, groups)
                if tf.channels_last:  # M^T = V^T U^T: no big operand transposed
                    np.matmul(Vb, Ub, out=Mb)
                else:
                    np.matmul(Ub, Vb, out=Mb)
            with timed("transform"):
                tf.output(M, out[images], b)

    run_tasks(task, len(tasks))
    return out


def winograd_backward(x, W, dout, groups, need_input_grad, plan: Plan):
    """Twin of readable.conv_backward: (dW (F, C/G, r, r), db (F,), dx or None). Per pass of
    a task: V recomputed, Z (K, F, T) from dout, 2 K*G GEMMs; a task's partial dU (K, F,
    C/G) adds its passes' in order, and the tasks' are summed in task order."""
    N = x.shape[0]
    tf, C, H, Wd = plan
    F = W.shape[0]
    Fg, Cg = F // groups, C // groups
    th, tw = readable.tiles(H, Wd, tf.alg.m)
    Ub = tf.filter(W).reshape(tf.K, groups, Fg, Cg)
    tasks = _winograd_tasks(N, th * tw)
    dU_parts = np.zeros((len(tasks), tf.K, F, Cg), dtype=x.dtype)
    db_parts = np.zeros((len(tasks), F), dtype=np.float64)
    dx = np.empty_like(x) if need_input_grad else None

    def task(t):
        chunk = tasks[t]
        with timed("elementwise"):
            add_channel_sums(dout[chunk].reshape(chunk.stop - chunk.start, F, H * Wd),
                              db_parts[t])
        passes = _passes(chunk, th * tw, tf)
        most = (passes[0].stop - passes[0].start) * th * tw
        V_all = _Frequencies(tf, C, most, groups, x.dtype)
        Z_all = _Frequencies(tf, F, most, groups, x.dtype)
        dU = dU_parts[t].reshape(tf.K, groups, Fg, Cg)
        product = None  # the later passes' dU, before it is added
        for p, images in enumerate(passes):
            T = (images.stop - images.start) * th * tw
            V, Z = V_all.of(T), Z_all.of(T)
            with timed("transform"):
                tf.input(x[images], V)
                tf.output_grad(dout[images], Z)
            Vb, Zb = _by_group(tf, V, groups), _by_group(tf, Z, groups)
            with timed("gemm"):
                # dU = Z V^T, (F/G, T) by (T, C/G); the first pass writes the partial, the
                # others add
                if p > 0 and product is None:
                    product = np.empty_like(dU)
                if tf.channels_last:
                    np.matmul(_transposed(Zb), Vb, out=product if p else dU)
                else:
                    np.matmul(Zb, _transposed(Vb), out=product if p else dU)
                if p:
                    dU += product
            if dx is not None:  # V's memory takes its gradient
                with timed("gemm"):
                    if tf.channels_last:  # dV^T = Z^T U
                        np.matmul(Zb, Ub, out=Vb)
                    else:
                        np.matmul(_transposed(Ub), Zb, out=Vb)
            if dx is not None:
                with timed("transform"):
                    tf.input_grad(V, dx[images])

    run_tasks(task, len(tasks))
    dU, db = sum_in_task_order(dU_parts), sum_in_task_order(db_parts)
    return tf.filter_grad(dU, x.dtype), db.astype(x.dtype), dx


def conv_forward(x, W, b, stride, pad, groups):
    """Twin of layers.conv.conv_forward for a 3x3 pad-1 or 5x5 pad-2, stride-1 convolution."""
    x = np.ascontiguousarray(x)
    return winograd_forward(x, W, b, groups, same_size(x, W))


def conv_backward(x, W, dout, stride, pad, groups, need_input_grad=True):
    """Twin of layers.conv.conv_backward for a 3x3 pad-1 or 5x5 pad-2, stride-1 convolution."""
    x = np.ascontiguousarray(x)
    return winograd_backward(x, W, np.ascontiguousarray(dout), groups, need_input_grad,
                              same_size(x, W))
