"""The im2col convolution's two products for a layer with few taps (K = C*kh*kw <=
dispatch.FEW_TAPS_MAX: the small nets' conv1, K = 75), as register-blocked Numba kernels
instead of OpenBLAS.

    forward:          out = W @ cols + b         (F, K) @ (K, P) -> (F, P)
    weight gradient:  dW += dout @ cols.T        (F, P) @ (P, K) -> (F, K)

the same products as layers/conv.py, per image (kernels/conv_few_taps.py calls them).

Why not the BLAS: a GEMM packs both operands into its own blocked layout on every call,
and with K = 75 that packing costs about as much as the product. Here nothing is packed:

- forward: a block of 8 filters x 16 output pixels is 8 vector accumulators that stay in
  registers while k runs over all K taps: per k one load of cols[k, p:p+16] and 8
  broadcasts of W[f, k]. The bias is added as the block is stored, so no second pass
  over the output.
- weight gradient: a block of 4 filters x 4 taps is 16 vector accumulators of 16 partial
  sums each (p mod 16), while p runs over the image's P pixels: per 16 pixels 4 + 4 loads
  and 16 FMAs. At the end each one's 16 partial sums are added pairwise (8, 4, 2, 1
  apart), the 16 accumulators together in 15 vector adds.

How: Numba cannot be asked for registers or vectors, so the kernels are written so that
LLVM finds them. The accumulators are an array on the stack (``_stack_array``, an LLVM
alloca; numba's own arrays live on the heap, where LLVM cannot keep them in registers)
indexed only by constants once the block loops are unrolled; and the kernels compile
with LLVM's SLP vectorizer on and its loop vectorizer off (``_compiled``), the reverse
of numba's defaults: the loop vectorizer took the k loop (with gathers and scatters,
1.7 GFLOP/s), the SLP vectorizer turns each unrolled block row into one vector FMA.
An edge block (F, K or P not a multiple of its size) is computed whole, from clamped
rows, and stored through a second stack array: a variable index into the accumulators
would keep them out of registers. docs/speed.md has the figures.
"""

from __future__ import annotations

import numba
from numba import types
from numba.core import cgutils, config
from numba.core.compiler_lock import global_compiler_lock
from numba.extending import intrinsic

from .jit import U

LANES = 16   # pixels per vector: one AVX-512 register of float32 (LLVM splits it on AVX2)


def padded(P: int) -> int:
    """Columns of a cols buffer for P pixels: P rounded up to whole vectors."""
    return -(-P // LANES) * LANES


@intrinsic
def _stack_array(typingctx, size, dtype):
    """A pointer to ``size`` (a literal) uninitialised elements of ``dtype`` on the stack;
    numba.carray makes it an array."""
    if not isinstance(size, types.IntegerLiteral):
        return None

    def codegen(context, builder, signature, args):
        element = context.get_value_type(dtype.dtype)
        count = context.get_constant(types.int64, size.literal_value)
        return cgutils.alloca_once(builder, element, size=count)

    return types.CPointer(dtype.dtype)(size, dtype), codegen


def _forward(Wt, cols, b, out, P):
    """out[f, p] = sum_k Wt[k, f] cols[k, p] + b[f], for p < P.

    Wt (K, F) (W transposed: a block's 8 weights of one tap side by side), cols (K, >=
    padded(P)) (the columns past P any values), b (F,) -> out (F, P)."""
    K, F = Wt.shape
    acc = numba.carray(_stack_array(128, Wt.dtype), (8, 16))
    edge = numba.carray(_stack_array(128, Wt.dtype), (8, 16))
    for f0 in range(0, F, 8):
        for p0 in range(0, P, 16):
            for i in range(8):
                for lane in range(16):
                    acc[i, lane] = 0
            for k in range(K):
                row = cols[k]
                for i in range(8):
                    w = Wt[k, min(f0 + i, F - 1)]
                    for lane in range(U(16)):
                        acc[i, lane] += w * row[U(p0) + lane]
            if p0 + 16 <= P and f0 + 8 <= F:
                for i in range(8):
                    target = out[f0 + i]
                    bias = b[f0 + i]
                    for lane in range(U(16)):
                        target[U(p0) + lane] = acc[i, lane] + bias
            else:
                for i in range(8):
                    for lane in range(16):
                        edge[i, lane] = acc[i, lane]
                for i in range(min(8, F - f0)):
                    for lane in range(min(16, P - p0)):
                        out[f0 + i, p0 + lane] = edge[i, lane] + b[f0 + i]


@numba.njit(inline="always")
def _add_halves(vectors, out, half):
    """One step of adding the lanes of 16 vectors pairwise: vectors (2n, 16) hold groups of
    2*half partial sums; out[m] (n of them) gets each group of vectors[2m] and vectors[2m+1]
    in half as many, its first and second halves added."""
    groups = 8 // half
    for m in range(out.shape[0]):
        for h in range(2):
            for g in range(groups):
                for lane in range(half):
                    out[m, half * (groups * h + g) + lane] = (vectors[2 * m + h, 2 * half * g + lane]
                                                              + vectors[2 * m + h, 2 * half * g + lane + half])


def _weight_grad(d, cols, dW, P):
    """dW[f, k] += sum over p < P of d[f, p] cols[k, p].

    d (F, P), cols (K, >= padded(P)) whose columns P.. are zeros, dW (F, K), added to."""
    F = d.shape[0]
    K = cols.shape[0]
    acc = numba.carray(_stack_array(256, d.dtype), (16, 16))  # [4 * i + j, lane]
    tail = numba.carray(_stack_array(64, d.dtype), (4, 16))
    halves = numba.carray(_stack_array(128, d.dtype), (8, 16))
    quarters = numba.carray(_stack_array(64, d.dtype), (4, 16))
    eighths = numba.carray(_stack_array(32, d.dtype), (2, 16))
    sums = numba.carray(_stack_array(16, d.dtype), (1, 16))
    whole = P - P % 16
    for f0 in range(0, F, 4):
        for k0 in range(0, K, 4):
            for q in range(16):
                for lane in range(16):
                    acc[q, lane] = 0
            for p0 in range(0, whole, 16):
                for i in range(4):
                    d_row = d[U(min(f0 + i, F - 1))]
                    for j in range(4):
                        col = cols[U(min(k0 + j, K - 1))]
                        for lane in range(U(16)):
                            acc[4 * i + j, lane] += d_row[U(p0) + lane] * col[U(p0) + lane]
            if whole < P:  # the last pixels, from a copy of d's row ends padded with zeros
                for i in range(4):
                    for lane in range(16):
                        tail[i, lane] = d[min(f0 + i, F - 1), whole + lane] if whole + lane < P else 0
                for i in range(4):
                    for j in range(4):
                        col = cols[U(min(k0 + j, K - 1))]
                        for lane in range(U(16)):
                            acc[4 * i + j, lane] += tail[i, lane] * col[U(whole) + lane]
            # Each accumulator's 16 lanes added pairwise, 8 then 4, 2, 1 apart, two
            # accumulators' halves to a vector so that every step is one vector add (and
            # two shuffles): sums[0, q] = the total of acc[q].
            _add_halves(acc, halves, 8)
            _add_halves(halves, quarters, 4)
            _add_halves(quarters, eighths, 2)
            _add_halves(eighths, sums, 1)
            if f0 + 4 <= F and k0 + 4 <= K:
                for i in range(4):
                    for j in range(4):
                        dW[f0 + i, k0 + j] += sums[0, 4 * i + j]
            else:
                for i in range(min(4, F - f0)):
                    for j in range(min(4, K - k0)):
                        dW[f0 + i, k0 + j] += sums[0, 4 * i + j]


def _compiled(body, signatures):
    """body compiled now for the given signatures (and no others), with LLVM's SLP
    vectorizer on and its loop vectorizer off. numba reads both settings when it builds a
    function's optimisation passes; its compiler lock keeps another thread's compile from
    seeing them. On-disk cached like the other kernels (the cache keys on the source and
    the CPU, so a cached build is one made here)."""
    kernel = numba.njit(nogil=True, cache=True, fastmath={"contract"})(body)
    with global_compiler_lock:
        saved = config.SLP_VECTORIZE, config.LOOP_VECTORIZE
        config.SLP_VECTORIZE, config.LOOP_VECTORIZE = True, False
        try:
            for signature in signatures:
                kernel.compile(signature)
        finally:
            config.SLP_VECTORIZE, config.LOOP_VECTORIZE = saved
    kernel.disable_compile()
    return kernel


_MATRIX = {"float32": "float32[:, ::1]", "float64": "float64[:, ::1]"}
forward = _compiled(_forward, [f"void({m}, {m}, {t}[::1], {m}, int64)" for t, m in _MATRIX.items()])
weight_grad = _compiled(_weight_grad, [f"void({m}, {m}, {m}, int64)" for m in _MATRIX.values()])
