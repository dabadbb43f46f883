"""Which body runs each hot loop: the one place a fast path is chosen.

Every op is registered here once, with

- its readable NumPy body, in its layer file, which ``@registry.IM2COL.readable`` marks;
- its Numba twins (kernels/<file>.py), each with the condition under which it runs;
- its CuPy twin (kernels/gpu.py), or the reason there is none.

The layer calls the function it marked. That function asks ``op.pick(*args)`` and runs the
twin it gets, or its own body on None. ``pick`` decides, in this order:

1. TINYALEX_NO_NUMBA (``fast_kernels_on``): set, the readable body runs, for any array.
2. The kind of the op's deciding array (``array_kind``: the first argument, dout for the
   conv backward): a float32/float64 NumPy array -> the Numba twins, a CuPy array -> the
   CuPy twin, anything else -> the readable body.
3. The first of those twins whose condition holds: Winograd, Winograd on a strided one's
   space-to-depth maps, or im2col for a convolution (``use_winograd``,
   ``use_space_to_depth``), and none without OpenBLAS (``batch_parallel_conv``); parallel
   or serial for the elementwise loops (``ELEMENTWISE_MIN_PARALLEL``); contiguous
   parameters for SGD; matching dtypes for the ReLU backward. None holds: the readable
   body.

A twin is named by file and function and imported on first use (numba takes ~0.3 s to
import, kernels/gpu.py needs CuPy); a name its file does not define is a RegistryError
here, at import. tests/test_kernel_registry.py walks the table: every op has its readable
body, every Numba twin is callable and equals that body, every CuPy twin is in gpu.py.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
from pathlib import Path

import numpy as np

from .. import flags
from ..backend import is_gpu_array
from . import space_to_depth, winograd


class RegistryError(Exception):
    """An op registered wrongly: a twin its file does not define, a second readable body,
    no CuPy twin and no reason given."""


OPS: dict[str, Op] = {}
_FLOATS = (np.float32, np.float64)


# ------------------------------------------------------------------------ the choices

def fast_kernels_on() -> bool:
    """The fast twins run unless TINYALEX_NO_NUMBA is set. Off gives the same results,
    slower: the readable bodies are the reference every twin is tested against."""
    return not flags.boolean("TINYALEX_NO_NUMBA")


def array_kind(x) -> str | None:
    """"numpy" for a float32/float64 NumPy array, "cupy" for a CuPy array, else None."""
    if isinstance(x, np.ndarray):
        return "numpy" if x.dtype in _FLOATS else None
    return "cupy" if is_gpu_array(x) else None


def cupy_kernels():
    """The module of CuPy twins, kernels/gpu.py; None where CuPy does not import."""
    try:
        from . import gpu
    except ImportError:
        return None
    return gpu


def batch_parallel_conv() -> bool:
    """The batch-parallel convolution (kernels/conv.py, winograd_numba.py) runs each
    worker's GEMMs on one thread, so it needs numpy's BLAS to be an OpenBLAS whose thread
    count it can set (kernels/threads.py); TINYALEX_NO_BATCH_PARALLEL_CONV turns it off.
    Without it Conv2D runs its readable body (whose im2col and col2im still have twins)."""
    if flags.boolean("TINYALEX_NO_BATCH_PARALLEL_CONV"):
        return False
    from . import threads

    return threads.OPENBLAS_THREADS is not None


def use_winograd(kh: int, kw: int, stride: int, pad: int) -> bool:
    """Winograd (F(3x3, 3x3), F(5x5, 3x3), F(3x3, 5x5)) for the convolutions they compute
    (``winograd.applies``: 3x3 pad 1, 5x5 pad 2, stride 1) unless TINYALEX_NO_WINOGRAD is
    set; im2col for the others."""
    return not flags.boolean("TINYALEX_NO_WINOGRAD") and winograd.applies(kh, kw, stride, pad)


def use_space_to_depth(C: int, kh: int, kw: int, stride: int, groups: int) -> bool:
    """Winograd F(2x2, 3x3) on the space-to-depth maps of a strided convolution (the
    paper's conv1: ``space_to_depth.applies``) unless TINYALEX_NO_WINOGRAD is set."""
    return (not flags.boolean("TINYALEX_NO_WINOGRAD")
            and space_to_depth.applies(C, kh, kw, stride, groups))


def conv_method(C: int, k: int, stride: int, pad: int, groups: int) -> str:
    """"winograd", "space-to-depth" or "im2col": what computes a k x k convolution of C
    channels on the CPU's fast path (the benchmark names it; the twins' conditions above
    decide it)."""
    if use_winograd(k, k, stride, pad):
        return "winograd"
    return "space-to-depth" if use_space_to_depth(C, k, k, stride, groups) else "im2col"


# Below this many elements a parallel pass costs more than it saves: fc6/fc7's ReLUs
# (0.5 M elements) took 8 ms each way in parallel on the shared machine, 0.3 ms serially.
ELEMENTWISE_MIN_PARALLEL = 2**20


def _large(x, *_) -> bool:
    return x.size >= ELEMENTWISE_MIN_PARALLEL


def _conv_by_winograd(x, W, b_or_dout, stride, pad, *_) -> bool:
    return batch_parallel_conv() and use_winograd(W.shape[2], W.shape[3], stride, pad)


def _conv_by_space_to_depth(x, W, b_or_dout, stride, pad, groups, *_) -> bool:
    return batch_parallel_conv() and use_space_to_depth(x.shape[1], W.shape[2], W.shape[3],
                                                        stride, groups)


def _conv_by_im2col(*_) -> bool:
    return batch_parallel_conv()


def _same_dtypes(dout, y) -> bool:
    return dout.dtype == y.dtype


def _same_dtypes_large(dout, y) -> bool:
    return dout.dtype == y.dtype and _large(dout)


def _contiguous(w, v, *_) -> bool:
    return w.flags.c_contiguous and v.flags.c_contiguous


def _contiguous_large(w, v, *_) -> bool:
    return _contiguous(w, v) and _large(w)


# -------------------------------------------------------------------- ops and twins

@functools.cache
def _defined_names(module: str) -> frozenset:
    """The names kernels/<module>.py defines at its top level (``def name(`` or
    ``name =``), read from its source without importing it."""
    path = Path(__file__).with_name(f"{module}.py")
    try:
        source = path.read_text()
    except OSError:
        raise RegistryError(f"no kernels/{module}.py") from None
    found = re.findall(r"^def (\w+)\(|^(\w+) =", source, re.M)
    return frozenset(name for pair in found for name in pair if name)


class Twin:
    """A fast body: the function ``name`` of kernels/<module>.py, run where ``when(*args)``
    holds (always when None). RegistryError if that file does not define it."""

    __slots__ = ("module", "name", "when", "_function")

    def __init__(self, module: str, name: str, when=None):
        if name not in _defined_names(module):
            raise RegistryError(f"kernels/{module}.py defines no {name}")
        self.module, self.name, self.when = module, name, when
        self._function = None

    def function(self):
        """The twin itself, imported on first use; None for a CuPy twin without CuPy."""
        if self.module == "gpu":
            gpu = cupy_kernels()
            return None if gpu is None else getattr(gpu, self.name)
        if self._function is None:
            module = importlib.import_module(f"{__package__}.{self.module}")
            self._function = getattr(module, self.name)
        return self._function

    def __repr__(self):
        return f"Twin(kernels/{self.module}.py: {self.name})"


class Op:
    """One hot loop: its Numba twins in order of preference, its CuPy twin (a Twin of
    kernels/gpu.py, or a string: why there is none), the position of the argument whose
    array decides (``key``), and its readable body once a layer file has marked it."""

    def __init__(self, name: str, numba, cupy, key: int = 0):
        if name in OPS:
            raise RegistryError(f"op {name} is registered twice")
        if not numba:
            raise RegistryError(f"op {name} has no Numba twin")
        self.name, self.numba, self.key = name, tuple(numba), key
        if isinstance(cupy, Twin):
            self.cupy, self.no_cupy = (cupy,), None
        elif isinstance(cupy, str) and cupy:
            self.cupy, self.no_cupy = (), cupy
        else:
            raise RegistryError(f"op {name}: give its CuPy twin, or say why it has none")
        self.body = None
        OPS[name] = self

    def readable(self, body):
        """Decorator for the op's readable NumPy body in its layer file: registers it and
        returns the function the layer calls (the picked twin, else the body). The twins
        and conditions take the body's arguments positionally: keywords are bound first."""
        if self.body is not None and _where(self.body) != _where(body):  # (a reload is fine)
            raise RegistryError(f"op {self.name} has a readable body already: "
                                f"{_where(self.body)}")
        self.body = body
        signature = inspect.signature(body)
        count = len(signature.parameters)

        @functools.wraps(body)
        def fast_or_readable(*args, **kwargs):
            if kwargs or len(args) != count:
                bound = signature.bind(*args, **kwargs)
                bound.apply_defaults()
                args = bound.args
            twin = self.pick(*args)  # looked up per call: a test may stand in for it
            return body(*args) if twin is None else twin(*args)

        fast_or_readable.op = self
        return fast_or_readable

    def candidates(self, x) -> tuple:
        """The twins that may run when x is the deciding array, before their conditions."""
        if not fast_kernels_on():
            return ()
        kind = array_kind(x)
        return self.numba if kind == "numpy" else self.cupy if kind == "cupy" else ()

    def pick(self, *args):
        """The twin to run on these arguments (the readable body's, positional), or None
        for the readable body."""
        for twin in self.candidates(args[self.key]):
            if twin.when is None or twin.when(*args):
                return twin.function()
        return None

    def __repr__(self):
        return f"Op({self.name})"


def _where(function) -> str:
    return f"{function.__module__}.{function.__qualname__}"


_NO_CUPY_CONV = ("the readable body runs on the GPU: its products are cuBLAS GEMMs and its "
                 "im2col/col2im have CuPy twins")
_NO_CUPY_RELU = "the readable body is one CuPy elementwise expression already"

# layers/conv.py
IM2COL = Op("im2col", [Twin("conv", "im2col")], Twin("gpu", "im2col"))
COL2IM = Op("col2im", [Twin("conv", "col2im")], Twin("gpu", "col2im"))
CONV_FORWARD = Op("conv_forward", [Twin("winograd_numba", "conv_forward", _conv_by_winograd),
                                   Twin("space_to_depth_numba", "conv_forward",
                                        _conv_by_space_to_depth),
                                   Twin("conv", "conv_forward", _conv_by_im2col)],
                  _NO_CUPY_CONV)
CONV_BACKWARD = Op("conv_backward",
                   [Twin("winograd_numba", "conv_backward", _conv_by_winograd),
                    Twin("space_to_depth_numba", "conv_backward", _conv_by_space_to_depth),
                    Twin("conv", "conv_backward", _conv_by_im2col)],
                   _NO_CUPY_CONV, key=2)  # dout decides, as the layer's backward sees it
# layers/pool.py
MAXPOOL_FORWARD = Op("maxpool_forward", [Twin("pool", "maxpool_forward")],
                     Twin("gpu", "maxpool_forward"))
MAXPOOL_BACKWARD = Op("maxpool_backward", [Twin("pool", "maxpool_backward")],
                      Twin("gpu", "maxpool_backward"))
# layers/activations.py
RELU_FORWARD = Op("relu_forward", [Twin("relu", "relu_forward", _large),
                                   Twin("relu", "relu_forward_serial")], _NO_CUPY_RELU)
RELU_BACKWARD = Op("relu_backward", [Twin("relu", "relu_backward", _same_dtypes_large),
                                     Twin("relu", "relu_backward_serial", _same_dtypes)],
                   _NO_CUPY_RELU)
# layers/lrn.py
LRN_FORWARD = Op("lrn_forward", [Twin("lrn", "lrn_forward")], Twin("gpu", "lrn_forward"))
LRN_BACKWARD = Op("lrn_backward", [Twin("lrn", "lrn_backward")], Twin("gpu", "lrn_backward"))
# optim.py
SGD_UPDATE = Op("sgd_update", [Twin("sgd", "sgd_update", _contiguous_large),
                               Twin("sgd", "sgd_update_serial", _contiguous)],
                Twin("gpu", "sgd_update", _contiguous))
