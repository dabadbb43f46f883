"""A strict stand-in for CuPy, for tests only: never a runtime path of tinyalex.

tests/test_gpu.py runs tinyalex's whole CuPy path under it where no GPU is found (in process
through ``stand_in.installed()``; in subprocesses through ``PYTHONPATH=tests/stand_in``, so
that ``import cupy`` finds this package). As pySDC says of its NumPy-backed fake_cupy: a
green run here does NOT mean the code works on a GPU.

What it checks, behaving as CuPy does where host/device bugs hide:

- device arrays are their own type (``ndarray``, around a NumPy array that no caller sees);
  converting one to NumPy implicitly raises TypeError as CuPy's does: ``np.asarray(a)``
  (``__array__``), ``float()``/``int()`` of an array that is not 0-d, mixing it with a NumPy
  array in an operator, a NumPy ufunc or function (``__array_ufunc__``,
  ``__array_function__``, which send NumPy's functions on device arrays here, as CuPy's
  do), a NumPy array given to a cupy function or kernel, and (ValueError, as CuPy's
  ``fill``) a NumPy array assigned into a device array. Only ``.get()``, ``asnumpy`` (and
  ``.item()``/``.tolist()``) cross to the host; ``asarray`` and ``.set()`` to the device.
- reductions and integer indexing give 0-d device arrays, as CuPy's, not NumPy scalars.
- ``ElementwiseKernel`` runs the kernel's CUDA C body compiled as host C++
  (tests/host_kernels.py, as tests/test_gpu_kernels_host.py), with CuPy's argument checks.
- streams, events, page-locked memory and the device record their use in order
  (``cuda.LOG``), and a read of a copied batch before its stream was waited on, or a refill
  of page-locked memory still being copied from, raises ``cuda.StreamOrderError``
  (tests/stand_in/cupy/cuda.py says exactly when).

What it cannot check: timing; memory (no pool: neither running out nor a block the pool
hands to one stream while another still reads it); real CUDA semantics: work runs on the
host at once in the order issued, so asynchronous errors, races inside or between kernels,
launch limits, cuBLAS's summation order and TF32 are not seen; the arithmetic is NumPy's and
g++'s, not the GPU's. It holds only what tinyalex's CuPy path calls: a missing name fails
with AttributeError, to be added here when the path starts using it.
"""

from __future__ import annotations

import operator
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as _np

from . import cuda

_TESTS = Path(__file__).resolve().parents[2]
if str(_TESTS) not in sys.path:   # tests/host_kernels.py, in a subprocess too
    sys.path.append(str(_TESTS))
import host_kernels  # noqa: E402

__version__ = "0.0.0+stand-in"
STAND_IN = True
# CuPy's dtypes are NumPy's.
bool_, int32, int64 = _np.bool_, _np.int32, _np.int64
float32, float64 = _np.float32, _np.float64

_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to "
             "construct a NumPy array explicitly.")


def _unsupported(x):
    return TypeError(f"Unsupported type {type(x)} (a NumPy array where CuPy needs a device "
                     "array: copy it with cupy.asarray first)")


def _operand(x):
    """A device array's data for an operation; NumPy arrays refused, scalars passed."""
    if isinstance(x, ndarray):
        return x._read()
    if isinstance(x, _np.ndarray):
        raise _unsupported(x)
    if isinstance(x, (list, tuple)):
        return type(x)(_operand(v) for v in x)
    return x


def _result(r):
    """Device arrays of a NumPy result: a scalar becomes a 0-d device array, as in CuPy."""
    if isinstance(r, _np.ndarray):
        return ndarray._wrap(r)
    if isinstance(r, (_np.generic, bool, int, float)):
        return ndarray._wrap(_np.asarray(r))
    if isinstance(r, tuple):
        return tuple(_result(v) for v in r)
    return r


class ndarray:
    """A device array: a NumPy array that only ``get()`` (or ``asnumpy``) hands out."""

    __slots__ = ("_a", "pending", "__weakref__")
    __array_priority__ = 100

    def __init__(self, shape, dtype=float):
        self._a = _np.empty(shape, dtype)
        self.pending = None   # (stream, item) of a copy that wrote it: cuda.check_read

    @classmethod
    def _wrap(cls, a):
        obj = cls.__new__(cls)
        obj._a, obj.pending = a, None
        return obj

    def _read(self):
        cuda.check_read(self)
        return self._a

    # -- what CuPy keeps on the host: no data is read
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)

    def __len__(self):
        return len(self._a)

    def __repr__(self):
        return f"stand_in_cupy.{self._a!r}"

    # -- the ways to the host: explicit only
    def __array__(self, *args, **kwargs):
        raise TypeError(_IMPLICIT)

    def _to_host(self, stream=None):
        """The data, read on ``stream`` (the current one) as a device->host copy, which
        the host waits for (and so for all that stream's work)."""
        stream = cuda.get_current_stream() if stream is None else stream
        with stream:
            a = self._read()
        stream.issue("copy to host")
        cuda.host_waited(stream)
        return a

    def get(self, stream=None, order="C", out=None):
        return self._to_host(stream).copy()

    def item(self):
        return self._to_host().item()

    def tolist(self):
        return self._to_host().tolist()

    def _scalar(self, kind):
        if self.ndim != 0:
            raise TypeError(f"only a 0-d device array converts to a Python {kind.__name__} "
                            f"(this one has shape {self.shape}); take .get() of it")
        return kind(self._to_host())

    def __float__(self):
        return self._scalar(float)

    def __int__(self):
        return self._scalar(int)

    def __bool__(self):
        return bool(self._to_host())

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self)))

    # -- from the host
    def set(self, arr, stream=None):
        """Copy a NumPy array in, on ``stream`` (the current one by default); from
        page-locked memory the copy is asynchronous on a GPU: see cuda.py."""
        if not isinstance(arr, _np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, not {type(arr)}")
        if self.dtype != arr.dtype:
            raise TypeError(f"{arr.dtype} array cannot be set to {self.dtype} array")
        if self.shape != arr.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self.shape}, new shape: {arr.shape}")
        stream = cuda.get_current_stream() if stream is None else stream
        target = self._read()
        item = stream.issue("copy")
        pinned = cuda.pinned_owner(arr)
        if pinned is not None:
            pinned.start_copy(stream, item)
        _np.copyto(target, arr)
        self.pending = (stream, item)

    # -- NumPy's functions and ufuncs on device arrays come here (as CuPy's do)
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = tuple(_operand(o) if isinstance(o, ndarray) else _out_refused(o)
                                  for o in out)
        r = getattr(ufunc, method)(*(_operand(x) for x in inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _result(r)

    def __array_function__(self, func, types, args, kwargs):
        ours = _FUNCTIONS.get(func.__name__)
        if ours is None:
            return NotImplemented   # NumPy then raises TypeError, as with CuPy
        return ours(*args, **kwargs)

    # -- views and copies
    def reshape(self, *shape, order="C"):
        return _result(self._read().reshape(*shape, order=order))

    def transpose(self, *axes):
        return _result(self._read().transpose(*axes))

    T = property(lambda self: self.transpose())

    def ravel(self, order="C"):
        return _result(self._read().ravel(order))

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        return _result(self._read().astype(dtype, order=order, copy=copy))

    def copy(self, order="C"):
        return _result(self._read().copy(order))

    def fill(self, value):
        if isinstance(value, _np.ndarray) and value.ndim:
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        self._read().fill(_operand(value))

    def __deepcopy__(self, memo):
        return _result(self._read().copy())

    def __getitem__(self, key):
        a = self._read()
        key = _index(key)
        r = a[key]
        if not isinstance(r, _np.ndarray):  # an integer index: CuPy gives a 0-d view
            keys = key if isinstance(key, tuple) else (key,)
            r = (a[keys + (Ellipsis,)] if not any(k is Ellipsis for k in keys)
                 else _np.asarray(r))
        return ndarray._wrap(r)

    def __setitem__(self, key, value):
        if isinstance(value, _np.ndarray) and value.ndim:
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill (CuPy: a "
                             "NumPy array assigned into a device array; cupy.asarray it first)")
        self._read()[_index(key)] = _operand(value)

    # -- reductions: 0-d device arrays
    def sum(self, *args, **kwargs):
        return _result(self._read().sum(*args, **kwargs))

    def mean(self, *args, **kwargs):
        return _result(self._read().mean(*args, **kwargs))

    def max(self, *args, **kwargs):
        return _result(self._read().max(*args, **kwargs))

    def min(self, *args, **kwargs):
        return _result(self._read().min(*args, **kwargs))

    def argmax(self, *args, **kwargs):
        return _result(self._read().argmax(*args, **kwargs))

    __hash__ = None


def _out_refused(o):
    raise _unsupported(o)


def _index(key):
    """An index for the wrapped array: device arrays' data; NumPy index arrays pass (CuPy
    copies them to the device)."""
    if isinstance(key, ndarray):
        return key._read()
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    return key


def _binary(op, reflected=False):
    if reflected:
        return lambda self, other: _result(op(_operand(other), self._read()))
    return lambda self, other: _result(op(self._read(), _operand(other)))


def _inplace(op):
    def method(self, other):
        op(self._read(), _operand(other))
        return self
    return method


for _name, _op in [("add", operator.add), ("sub", operator.sub), ("mul", operator.mul),
                   ("truediv", operator.truediv), ("floordiv", operator.floordiv),
                   ("mod", operator.mod), ("pow", operator.pow), ("matmul", operator.matmul),
                   ("and", operator.and_), ("or", operator.or_), ("xor", operator.xor)]:
    setattr(ndarray, f"__{_name}__", _binary(_op))
    setattr(ndarray, f"__r{_name}__", _binary(_op, reflected=True))
for _name, _op in [("iadd", operator.iadd), ("isub", operator.isub), ("imul", operator.imul),
                   ("itruediv", operator.itruediv), ("ipow", operator.ipow),
                   ("iand", operator.iand), ("ior", operator.ior)]:
    setattr(ndarray, f"__{_name}__", _inplace(_op))
for _name in ("lt", "le", "gt", "ge", "eq", "ne"):
    setattr(ndarray, f"__{_name}__", _binary(getattr(operator, _name)))
for _name, _op in [("neg", operator.neg), ("pos", operator.pos), ("abs", operator.abs),
                   ("invert", operator.invert)]:
    setattr(ndarray, f"__{_name}__", lambda self, _op=_op: _result(_op(self._read())))


# ------------------------------------------------------------------ the module's functions

def get_array_module(*args):
    return _THIS if any(isinstance(a, ndarray) for a in args) else _np


def asarray(a, dtype=None, order=None):
    """A device array: ``a`` itself (cast if dtype says so), or a copy of host data issued
    on the current stream."""
    if isinstance(a, ndarray):
        return a if dtype is None or _np.dtype(dtype) == a.dtype else a.astype(dtype)
    out = ndarray._wrap(_np.array(a, dtype=dtype, order=order or "K", copy=True))
    stream = cuda.get_current_stream()
    out.pending = (stream, stream.issue("copy"))
    return out



def asnumpy(a, stream=None, order="C", out=None):
    return a.get(stream=stream) if isinstance(a, ndarray) else _np.asarray(a, order=order)


def _function(name):
    """cupy.<name>: NumPy's function on the device arrays' data; NumPy arrays refused."""
    numpy_function = getattr(_np, name)

    def function(*args, **kwargs):
        args = [_operand(a) for a in args]
        kwargs = {k: _operand(v) for k, v in kwargs.items()}
        return _result(numpy_function(*args, **kwargs))

    function.__name__ = function.__qualname__ = name
    function.__doc__ = f"cupy.{name} of the stand-in: numpy.{name} on the device arrays' data"
    return function


# Only what tinyalex's CuPy path calls (and its tests): add a name when the path needs it.
_FUNCTIONS = {name: _function(name) for name in (
    "ascontiguousarray", "empty_like", "zeros_like", "exp", "log", "maximum", "tanh",
    "count_nonzero", "take_along_axis", "stack", "concatenate", "pad", "dot", "sum")}
_FUNCTIONS.update(asarray=asarray)
globals().update(_FUNCTIONS)


def empty(shape, dtype=float, order="C"):
    return ndarray._wrap(_np.empty(shape, dtype, order))


def zeros(shape, dtype=float, order="C"):
    return ndarray._wrap(_np.zeros(shape, dtype, order))


def arange(*args, **kwargs):
    return ndarray._wrap(_np.arange(*args, **kwargs))


_FUNCTIONS.update(empty=empty, zeros=zeros, arange=arange)


# ------------------------------------------------------------------------ kernels

_compiler = None


def compiler() -> host_kernels.HostCompiler:
    """g++ into $CUPY_STAND_IN_BUILD, else a folder of this user's in the temp directory
    (each source compiled once, by its hash, for every process that uses the stand-in)."""
    global _compiler
    if _compiler is None:
        cxx = shutil.which("g++")
        if cxx is None:
            raise RuntimeError("the CuPy stand-in compiles kernels as host C++ and needs g++ "
                               "(apt-get install g++)")
        folder = os.environ.get("CUPY_STAND_IN_BUILD") or os.path.join(
            tempfile.gettempdir(), f"tinyalex-cupy-stand-in-{os.getuid()}")
        _compiler = host_kernels.HostCompiler(cxx, Path(folder))
    return _compiler


class ElementwiseKernel:
    """cupy.ElementwiseKernel: its CUDA C body run as host C++ on device arrays' data, on
    the current stream. Called as CuPy's: the inputs, then the output arrays."""

    def __init__(self, in_params, out_params, operation, name="kernel", preamble="",
                 **unsupported):
        if unsupported:
            raise TypeError(f"the stand-in's ElementwiseKernel has no {sorted(unsupported)}")
        self.in_params, self.out_params, self.operation = in_params, out_params, operation
        self.name, self.preamble = name, preamble
        self.nin = len(host_kernels.parse_params(in_params, False))
        self.calls = 0
        self.kernel = None   # built at the first call: g++ is needed only then

    def __call__(self, *args, **kwargs):
        if kwargs:
            raise TypeError(f"the stand-in's ElementwiseKernel takes no {sorted(kwargs)}")
        for a in args:
            if not isinstance(a, ndarray) and isinstance(a, (_np.ndarray, list, tuple)):
                raise _unsupported(a)
        host = [a._read() if isinstance(a, ndarray) else a for a in args]
        if self.kernel is None:
            self.kernel = host_kernels.FakeElementwiseKernel(
                compiler(), self.in_params, self.out_params, self.operation, self.name,
                self.preamble)
        cuda.get_current_stream().issue(f"kernel {self.name}")
        self.kernel(*host)
        self.calls += 1
        outs = args[self.nin:]
        return outs[0] if len(outs) == 1 else tuple(outs)


_THIS = sys.modules[__name__]


def __getattr__(name):
    raise AttributeError(f"the CuPy stand-in has no {name!r}: tinyalex's CuPy path started "
                         "using it; add it to tests/stand_in/cupy/__init__.py")
