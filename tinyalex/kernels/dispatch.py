"""Which body runs each hot loop: the one place a fast variant is chosen.

Each layer asks here, in one visible line, and runs what it gets, or its own readable body
on None:

    forward = dispatch.conv_forward(x, W, stride, pad, groups) or conv_forward

The choices are plain ``if``s over the array (NumPy float or CuPy), its dtype and shape,
and three settings read once from the environment (``SETTINGS``; tests change them with
``with dispatch.settings(...)``):

- TINYALEX_NO_NUMBA: no fast variant at all, the readable bodies run (same results,
  slower: they are the reference every variant is tested against).
- TINYALEX_NO_WINOGRAD: every convolution by im2col.
- TINYALEX_NO_BATCH_PARALLEL_CONV: convolutions by the readable body.

float64 is for checks: its convolutions take the exact algorithms (im2col), never
Winograd, whose transforms round. ``VARIANTS`` lists every fast variant of every op by
name; tests/test_dispatch.py walks it, each variant against its readable body.
"""

from __future__ import annotations

import contextlib
import os
from typing import NamedTuple

import numpy as np

from .. import flags
from ..backend import is_gpu_array
from . import space_to_depth
from .winograd import readable as winograd

FLOATS = (np.float32, np.float64)

# Below this many elements a parallel pass costs more than it saves (fc6/fc7's ReLUs).
ELEMENTWISE_MIN_PARALLEL = 2**20
# Taps per group (C/G * kh * kw) up to which a convolution's products run in
# kernels/gemm_numba.py rather than OpenBLAS (the small nets' conv1 has 75).
FEW_TAPS_MAX = 128


class Settings(NamedTuple):
    """The switches of the fast path (True: on)."""
    fast: bool = True
    winograd: bool = True
    batch_parallel_conv: bool = True


def read_settings(environ=None) -> Settings:
    """The settings the environment asks for (TINYALEX_NO_NUMBA, TINYALEX_NO_WINOGRAD and
    TINYALEX_NO_BATCH_PARALLEL_CONV, read by tinyalex.flags' one rule)."""
    environ = os.environ if environ is None else environ
    def off(name):
        return flags.parse(name, environ.get(name))
    return Settings(fast=not off("TINYALEX_NO_NUMBA"),
                    winograd=not off("TINYALEX_NO_WINOGRAD"),
                    batch_parallel_conv=not off("TINYALEX_NO_BATCH_PARALLEL_CONV"))


SETTINGS = read_settings()


@contextlib.contextmanager
def settings(**changes):
    """``with dispatch.settings(fast=False): ...``: the settings changed inside the block."""
    global SETTINGS
    before = SETTINGS
    SETTINGS = before._replace(**changes)
    try:
        yield SETTINGS
    finally:
        SETTINGS = before


def _numba_array(x) -> bool:
    """A float32/float64 NumPy array, with the fast path on: the Numba variants apply."""
    return SETTINGS.fast and isinstance(x, np.ndarray) and x.dtype in FLOATS


def _gpu_array(x) -> bool:
    """A CuPy array, with the fast path on: the CuPy variants apply."""
    return SETTINGS.fast and is_gpu_array(x)


def gpu_kernels():
    """The module of CuPy variants, kernels/gpu.py (it imports CuPy: only for CuPy arrays)."""
    from . import gpu

    return gpu


# ------------------------------------------------------------------ the convolution

def conv_algorithm(x_shape, W_shape, stride: int, pad: int, groups: int, dtype) -> str:
    """How the CPU's fast path computes this convolution: "winograd" (3x3 pad 1, 5x5 pad 2,
    stride 1), "space-to-depth" (the paper's strided conv1, by Winograd on its
    space-to-depth maps), "few-taps" (im2col with register-blocked products, for few taps
    per group), "im2col", or "readable" (the layer's own body). float64 takes im2col."""
    if not (SETTINGS.batch_parallel_conv and _blas_threads_settable()):
        return "readable"
    C, kh, kw = x_shape[1], W_shape[2], W_shape[3]
    exact = np.dtype(dtype) == np.float64
    if SETTINGS.winograd and not exact:
        if winograd.applies(kh, kw, stride, pad):
            return "winograd"
        if space_to_depth.applies(C, kh, kw, stride, groups):
            return "space-to-depth"
    if C // groups * kh * kw <= FEW_TAPS_MAX:
        return "few-taps"
    return "im2col"


def _blas_threads_settable() -> bool:
    from .threads import blas_threads

    return blas_threads() is not None


def conv_forward(x, W, stride: int, pad: int, groups: int):
    """Conv2D's forward (x, W, b, stride, pad, groups) -> out: a fast variant, or None."""
    if _gpu_array(x):
        return gpu_kernels().conv_forward
    if not _numba_array(x):
        return None
    algorithm = conv_algorithm(x.shape, W.shape, stride, pad, groups, x.dtype)
    return None if algorithm == "readable" else _conv_module(algorithm).conv_forward


def conv_backward(x, W, dout, stride: int, pad: int, groups: int):
    """Conv2D's backward (x, W, dout, stride, pad, groups, need_input_grad) -> (dW, db, dx):
    a fast variant, or None."""
    if _gpu_array(dout):
        return gpu_kernels().conv_backward
    if not _numba_array(dout):
        return None
    algorithm = conv_algorithm(x.shape, W.shape, stride, pad, groups, dout.dtype)
    return None if algorithm == "readable" else _conv_module(algorithm).conv_backward


def _conv_module(algorithm: str):
    """The module of the convolution's variant ``algorithm`` (imported on first use)."""
    if algorithm == "winograd":
        from .winograd import batch as module
    elif algorithm == "space-to-depth":
        from . import space_to_depth_numba as module
    elif algorithm == "few-taps":
        from . import conv_few_taps as module
    else:
        from . import conv_im2col as module
    return module


# ------------------------------------------------------------- the elementwise loops

def relu_forward(x):
    """ReLU's forward x -> y: the Numba pass (every core, or one for a small array), or
    None (a CuPy array: the readable body is one CuPy expression already)."""
    if not _numba_array(x):
        return None
    from . import relu

    return relu.relu_forward if x.size >= ELEMENTWISE_MIN_PARALLEL else relu.relu_forward_serial


def relu_backward(dout, y):
    """ReLU's backward (dout, y) -> dx: the Numba pass, or None."""
    if not _numba_array(dout) or dout.dtype != y.dtype:
        return None
    from . import relu

    return (relu.relu_backward if dout.size >= ELEMENTWISE_MIN_PARALLEL
            else relu.relu_backward_serial)


def maxpool_forward(x):
    """Max pooling's forward (x, window, stride) -> (y, argmax): Numba, CuPy, or None."""
    if _gpu_array(x):
        return gpu_kernels().maxpool_forward
    if not _numba_array(x):
        return None
    from . import pool

    return pool.maxpool_forward


def maxpool_backward(dout):
    """Max pooling's backward (dout, argmax, x_shape, window, stride) -> dx."""
    if _gpu_array(dout):
        return gpu_kernels().maxpool_backward
    if not _numba_array(dout):
        return None
    from . import pool

    return pool.maxpool_backward


def lrn_forward(x):
    """LRN's forward (x, size, a, beta, k) -> (y, s): Numba, CuPy, or None."""
    if _gpu_array(x):
        return gpu_kernels().lrn_forward
    if not _numba_array(x):
        return None
    from . import lrn

    return lrn.lrn_forward


def lrn_backward(dout):
    """LRN's backward (dout, x, y, s, size, a, beta) -> dx: Numba, CuPy, or None."""
    if _gpu_array(dout):
        return gpu_kernels().lrn_backward
    if not _numba_array(dout):
        return None
    from . import lrn

    return lrn.lrn_backward


def sgd_update(w, v):
    """The SGD update (w, v, g, lr, momentum, weight_decay), in place: one fused pass
    (Numba or CuPy) where w and v are contiguous, else None."""
    contiguous = w.flags.c_contiguous and v.flags.c_contiguous
    if _gpu_array(w) and contiguous:
        return gpu_kernels().sgd_update
    if not (_numba_array(w) and contiguous):
        return None
    from . import sgd

    return sgd.sgd_update if w.size >= ELEMENTWISE_MIN_PARALLEL else sgd.sgd_update_serial


# ------------------------------------------------------------------- every variant

def variants() -> dict:
    """Every fast variant, by op and name: {op: {name: function}}, the CPU's (CuPy's are in
    kernels/gpu.py). Each has its op's readable signature and result (tests/test_dispatch.py
    checks every one against the readable body)."""
    from . import conv_few_taps, conv_im2col, im2col, lrn, pool, relu, sgd, space_to_depth_numba
    from .winograd import batch

    conv = {"im2col": conv_im2col, "few-taps": conv_few_taps, "winograd": batch,
            "space-to-depth": space_to_depth_numba}
    return {
        "im2col": {"numba": im2col.im2col},
        "col2im": {"numba": im2col.col2im},
        "conv_forward": {name: module.conv_forward for name, module in conv.items()},
        "conv_backward": {name: module.conv_backward for name, module in conv.items()},
        "relu_forward": {"numba": relu.relu_forward, "numba-serial": relu.relu_forward_serial},
        "relu_backward": {"numba": relu.relu_backward,
                          "numba-serial": relu.relu_backward_serial},
        "maxpool_forward": {"numba": pool.maxpool_forward},
        "maxpool_backward": {"numba": pool.maxpool_backward},
        "lrn_forward": {"numba": lrn.lrn_forward},
        "lrn_backward": {"numba": lrn.lrn_backward},
        "sgd_update": {"numba": sgd.sgd_update, "numba-serial": sgd.sgd_update_serial},
    }
