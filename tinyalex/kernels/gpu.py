"""CuPy twins of the hot loops, for CuPy arrays (kernels/dispatch.py picks them by the array).

Each function has the signature and result of the readable body it replaces (named in its
docstring) and is tested equal to it on a GPU (tests/test_gpu.py, skipped without one).
They are CuPy ElementwiseKernels: one thread per OUTPUT element, which gathers what it
needs. So col2im and max-pool backward, the two scatters of the CPU code, become gathers
here: each input pixel sums the column entries (or window gradients) that came from it, in
the readable body's (i, j) order, with no atomics and no duplicate-index loss (plain
fancy-index ``+=`` on CuPy drops duplicates; cupyx.scatter_add would not, but is
nondeterministic in its sum order).

Not here, so the readable body runs on the GPU: ReLU, dropout, softmax, the FC layers. The
convolution is the readable body with this file's im2col and col2im (its GEMMs are cuBLAS
already). This module imports cupy: import it only where a CuPy array exists
(kernels/dispatch.py does).
"""

from __future__ import annotations

import cupy as cp

from tinyalex.kernels.shapes import conv_output_size, pool_output_size
from tinyalex.layers import conv as readable_conv

# Index arithmetic in long long: paper conv2's columns for 128 images hold 2.2e8 entries.
_IM2COL = cp.ElementwiseKernel(
    "raw T x, int64 C, int64 H, int64 W, int64 kh, int64 kw, int64 s, int64 p, int64 N, "
    "int64 OH, int64 OW",
    "T col",
    """
    long long t = i;
    const long long ow = t % OW; t /= OW;
    const long long oh = t % OH; t /= OH;
    const long long n = t % N; t /= N;
    const long long j = t % kw; t /= kw;
    const long long ii = t % kh;
    const long long c = t / kh;
    const long long h = oh * s + ii - p, w = ow * s + j - p;
    col = (h >= 0 && h < H && w >= 0 && w < W) ? x[((n * C + c) * H + h) * W + w] : (T)0;
    """,
    "tinyalex_im2col")

# The two gathers (col2im, max-pool backward) ask the same of each window offset: which
# output position, if any, read this input pixel from there.
_OUTPUT_OF = """
__device__ inline bool tinyalex_output_of(long long at, long long s, long long size,
                                          long long& o) {
    // o with o * s == at and 0 <= o < size, if there is one
    if (at < 0 || at % s != 0) return false;
    o = at / s;
    return o < size;
}
"""

_COL2IM = cp.ElementwiseKernel(
    "raw T cols, int64 C, int64 H, int64 W, int64 kh, int64 kw, int64 s, int64 p, int64 N, "
    "int64 OH, int64 OW",
    "T dx",
    """
    long long t = i;
    const long long w = t % W; t /= W;
    const long long h = t % H; t /= H;
    const long long c = t % C;
    const long long n = t / C;
    const long long P = N * OH * OW;
    T total = 0;
    for (long long ii = 0; ii < kh; ++ii) {
        long long oh, ow;
        if (!tinyalex_output_of(h + p - ii, s, OH, oh)) continue;
        for (long long j = 0; j < kw; ++j) {
            if (!tinyalex_output_of(w + p - j, s, OW, ow)) continue;
            total += cols[((c * kh + ii) * kw + j) * P + (n * OH + oh) * OW + ow];
        }
    }
    dx = total;
    """,
    "tinyalex_col2im", preamble=_OUTPUT_OF)

_MAXPOOL_FORWARD = cp.ElementwiseKernel(
    "raw T x, int64 H, int64 W, int64 z, int64 s, int64 OH, int64 OW",
    "T y, int32 argmax",
    """
    long long t = i;
    const long long ow = t % OW; t /= OW;
    const long long oh = t % OH;
    const long long plane = t / OH;  // n * C + c
    const long long corner = plane * H * W + (oh * s) * W + ow * s;
    T best = x[corner];
    int where = 0;
    for (int a = 0; a < z; ++a)
        for (int b = 0; b < z; ++b) {
            const T v = x[corner + a * W + b];
            if (v > best) { best = v; where = a * z + b; }  // the first maximum wins ties
        }
    y = best;
    argmax = where;
    """,
    "tinyalex_maxpool_forward")

_MAXPOOL_BACKWARD = cp.ElementwiseKernel(
    "raw T dout, raw int32 argmax, int64 H, int64 W, int64 z, int64 s, int64 OH, int64 OW",
    "T dx",
    """
    long long t = i;
    const long long w = t % W; t /= W;
    const long long h = t % H;
    const long long plane = t / H;
    T total = 0;
    for (long long a = 0; a < z; ++a) {
        long long oh, ow;
        if (!tinyalex_output_of(h - a, s, OH, oh)) continue;
        for (long long b = 0; b < z; ++b) {
            if (!tinyalex_output_of(w - b, s, OW, ow)) continue;
            const long long o = (plane * OH + oh) * OW + ow;
            if (argmax[o] == a * z + b) total += dout[o];
        }
    }
    dx = total;
    """,
    "tinyalex_maxpool_backward", preamble=_OUTPUT_OF)

_LRN_FORWARD = cp.ElementwiseKernel(
    "raw T x, int64 C, int64 HW, int64 before, int64 after, T a, T beta, T k",
    "T y, T s",
    """
    const long long pix = i % HW, c = (i / HW) % C, n = i / (HW * C);
    const long long lo = c - before < 0 ? 0 : c - before;
    const long long hi = c + after > C - 1 ? C - 1 : c + after;
    T sum = 0;
    for (long long j = lo; j <= hi; ++j) {
        const T v = x[(n * C + j) * HW + pix];
        sum += v * v;
    }
    s = k + a * sum;
    y = x[i] * pow(s, -beta);
    """,
    "tinyalex_lrn_forward")

_LRN_BACKWARD = cp.ElementwiseKernel(
    "raw T dout, raw T x, raw T y, raw T s, int64 C, int64 HW, int64 before, int64 after, "
    "T a, T beta",
    "T dx",
    """
    const long long pix = i % HW, c = (i / HW) % C, n = i / (HW * C);
    const long long lo = c - before < 0 ? 0 : c - before;
    const long long hi = c + after > C - 1 ? C - 1 : c + after;
    T back = 0;
    for (long long j = lo; j <= hi; ++j) {
        const long long q = (n * C + j) * HW + pix;
        back += dout[q] * y[q] / s[q];
    }
    dx = dout[i] * pow(s[i], -beta) - (2 * a * beta) * x[i] * back;
    """,
    "tinyalex_lrn_backward")

_SGD_UPDATE = cp.ElementwiseKernel(
    "T g, T lr, T momentum, T decay",
    "T w, T v",
    """
    T vel = v * momentum;
    vel -= decay * w;
    vel -= lr * g;
    v = vel;
    w += vel;
    """,
    "tinyalex_sgd_update")


def im2col(x, kh, kw, stride, pad):
    """Twin of tinyalex.layers.conv.im2col."""
    x = cp.ascontiguousarray(x)
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, kh, stride, pad), conv_output_size(W, kw, stride, pad)
    cols = cp.empty((C * kh * kw, N * OH * OW), dtype=x.dtype)
    _IM2COL(x, C, H, W, kh, kw, stride, pad, N, OH, OW, cols)
    return cols


def col2im(cols, x_shape, kh, kw, stride, pad):
    """Twin of tinyalex.layers.conv.col2im."""
    cols = cp.ascontiguousarray(cols)
    N, C, H, W = x_shape
    OH, OW = conv_output_size(H, kh, stride, pad), conv_output_size(W, kw, stride, pad)
    dx = cp.empty(x_shape, dtype=cols.dtype)
    _COL2IM(cols, C, H, W, kh, kw, stride, pad, N, OH, OW, dx)
    return dx


def maxpool_forward(x, window, stride):
    """Twin of tinyalex.layers.pool.maxpool_forward: (y, argmax int32)."""
    x = cp.ascontiguousarray(x)
    N, C, H, W = x.shape
    OH, OW = pool_output_size(H, window, stride), pool_output_size(W, window, stride)
    y = cp.empty((N, C, OH, OW), dtype=x.dtype)
    argmax = cp.empty((N, C, OH, OW), dtype=cp.int32)
    _MAXPOOL_FORWARD(x, H, W, window, stride, OH, OW, y, argmax)
    return y, argmax


def maxpool_backward(dout, argmax, x_shape, window, stride):
    """Twin of tinyalex.layers.pool.maxpool_backward."""
    dout = cp.ascontiguousarray(dout)
    argmax = cp.ascontiguousarray(argmax)
    OH, OW = dout.shape[2:]
    dx = cp.empty(x_shape, dtype=dout.dtype)
    _MAXPOOL_BACKWARD(dout, argmax, x_shape[2], x_shape[3], window, stride, OH, OW, dx)
    return dx


def lrn_forward(x, size, a, beta, k):
    """Twin of tinyalex.layers.lrn.lrn_forward: (y, s)."""
    x = cp.ascontiguousarray(x)
    N, C, H, W = x.shape
    y, s = cp.empty_like(x), cp.empty_like(x)
    t = x.dtype.type
    _LRN_FORWARD(x, C, H * W, size // 2, (size - 1) // 2, t(a), t(beta), t(k), y, s)
    return y, s


def lrn_backward(dout, x, y, s, size, a, beta):
    """Twin of tinyalex.layers.lrn.lrn_backward (the transposed window)."""
    dout, x, y, s = (cp.ascontiguousarray(v) for v in (dout, x, y, s))
    N, C, H, W = x.shape
    dx = cp.empty_like(x)
    t = x.dtype.type
    _LRN_BACKWARD(dout, x, y, s, C, H * W, (size - 1) // 2, size // 2, t(a), t(beta), dx)
    return dx


def sgd_update(w, v, g, lr, momentum, weight_decay):
    """Twin of optim.sgd_update, in place: v <- m*v - wd*lr*w - lr*g; w <- w + v."""
    t = w.dtype.type
    _SGD_UPDATE(g, t(lr), t(momentum), t(weight_decay * lr), w, v)


def conv_forward(x, W, b, stride, pad, groups):
    """layers.conv.conv_forward with this file's im2col: (N, C, H, W) -> (N, F, OH, OW)."""
    return readable_conv.conv_forward(x, W, b, stride, pad, groups, im2col=im2col)


def conv_backward(x, W, dout, stride, pad, groups, need_input_grad=True):
    """layers.conv.conv_backward with this file's im2col and col2im: (dW, db, dx)."""
    return readable_conv.conv_backward(x, W, dout, stride, pad, groups, need_input_grad,
                                       im2col=im2col, col2im=col2im)
