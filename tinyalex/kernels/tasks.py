"""How the batch-parallel convolutions cut a batch into tasks, and the pieces they share.

The readable Conv2D builds the columns of a whole chunk of the batch and runs one big
multi-threaded GEMM per group. On a few cores that spends much of its time waiting: every
im2col, col2im and GEMM is a parallel region whose threads meet at a barrier, and a thread
the OS runs late stalls its partner. The fast variants (kernels/conv_im2col.py,
conv_few_taps.py, winograd/batch.py) give each worker thread whole images instead (a
"task" of a few of them): its own transforms into small buffers that stay in cache, its
own single-threaded GEMMs straight into the output's NCHW rows. Workers pull tasks as they
finish, so a slow core costs only its share.

Results do not depend on the thread count or on which worker ran which task: the tasks are
fixed slices of the batch, each writes its own images and its own partial dW and db, and
the partials are summed in task order (threads.sum_in_task_order).
"""

from __future__ import annotations

import numba
import numpy as np

from .jit import U
from .shapes import conv_output_size

CONV_MAX_TASKS = 16     # tasks per layer call: enough to balance 2-8 workers
CONV_MIN_COLUMNS = 512  # images per GEMM: at least this many output columns (13x13 -> 4)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def conv_tasks(N: int, P: int, one_image: bool = False) -> tuple[int, list]:
    """Images per GEMM (1 if one_image) and the tasks: fixed slices of range(N), each a
    multiple of it. P: output pixels per image."""
    per_gemm = 1 if one_image else min(N, max(1, ceil_div(CONV_MIN_COLUMNS, P)))
    per_task = per_gemm * ceil_div(ceil_div(N, per_gemm), CONV_MAX_TASKS)
    return per_gemm, [slice(start, min(N, start + per_task)) for start in range(0, N, per_task)]


def conv_geometry(x_shape, W_shape, stride: int, pad: int, groups: int) -> tuple:
    """(N, F, kh, kw, OH, OW, Fg, Kg) of a convolution of x_shape by W_shape: Fg filters
    and Kg taps (C/G * kh * kw) per group."""
    N, C, H, Wd = x_shape
    F, _, kh, kw = W_shape
    OH, OW = conv_output_size(H, kh, stride, pad), conv_output_size(Wd, kw, stride, pad)
    return N, F, kh, kw, OH, OW, F // groups, C // groups * kh * kw


# reassoc lets LLVM keep several float64 partial sums in vector lanes instead of one add
# chain; the order is fixed when the loop compiles, so results do not change between runs.
@numba.njit(nogil=True, cache=True, fastmath={"reassoc"})
def add_channel_sums(d, sums):
    """sums[f] += sum over n, p of d[n, f, p], each image's channel summed in float64:
    a task's share of db. d (n, F, P), sums (F,) float64."""
    N, F, P = d.shape
    for n in range(N):
        for f in range(F):
            row = d[n, f]
            total = 0.0
            for p in range(U(P)):
                total += np.float64(row[p])
            sums[f] += total
