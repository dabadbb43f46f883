"""The CuPy stand-in (tests/stand_in/cupy) is as strict as its docstring says: what CuPy
refuses it refuses, what CuPy gives (0-d device arrays, the kernels' results) it gives, and
its stream records catch a copy used before it was waited on. Without these, a green
tests/test_gpu.py would prove little. Each runs in milliseconds (one kernel compiles)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import stand_in

from tinyalex import backend


@pytest.fixture
def cp():
    with stand_in.installed() as module:
        yield module


def test_device_arrays_do_not_become_numpy_arrays_implicitly(cp):
    a = cp.asarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    host = np.ones((2, 3), np.float32)
    for implicit in (lambda: np.asarray(a), lambda: np.array([a, a]), lambda: a + host,
                     lambda: host + a, lambda: host * a, lambda: np.add(a, host),
                     lambda: np.concatenate([a, host]), lambda: float(a), lambda: int(a[0]),
                     lambda: cp.exp(host), lambda: cp.zeros_like(host)):
        with pytest.raises(TypeError):
            implicit()
    with pytest.raises(ValueError, match="non-scalar numpy"):
        a[...] = host
    with pytest.raises(TypeError):
        np.median(a)   # a NumPy function the stand-in does not have: refused, as by CuPy


def test_explicit_crossings_and_what_stays_on_the_device(cp):
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    a = cp.asarray(host)
    assert isinstance(a, cp.ndarray) and not isinstance(a, np.ndarray)
    assert np.array_equal(a.get(), host) and np.array_equal(cp.asnumpy(a), host)
    assert np.array_equal(backend.to_numpy(a), host) and backend.is_gpu_array(a)
    total = a.sum()
    assert isinstance(total, cp.ndarray) and total.shape == () and float(total) == 15.0
    assert isinstance(a[1, 2], cp.ndarray) and int(a[1, 2]) == 5
    assert isinstance(np.exp(a), cp.ndarray) and isinstance(np.zeros_like(a), cp.ndarray)
    assert cp.get_array_module(a) is cp and cp.get_array_module(host) is np
    b = a.copy()
    b[0] = np.float32(7)
    b[:, 1] += a[:, 0]
    assert np.array_equal(b.get(), [[7, 7, 7], [3, 7, 5]])
    assert np.array_equal(a[np.array([1, 0])].get(), host[[1, 0]])   # NumPy indices: copied


def test_an_elementwise_kernel_runs_its_cuda_c_on_the_host(cp):
    if shutil.which("g++") is None:
        pytest.skip("needs g++")
    axpy = cp.ElementwiseKernel("T x, T y, T a", "T z", "z = a * x + y", "stand_in_axpy")
    x, y = cp.asarray(np.arange(4.0)), cp.asarray(np.ones(4))
    z = cp.empty(4, np.float64)
    assert axpy(x, y, np.float64(2), z) is z
    assert np.array_equal(z.get(), [1, 3, 5, 7])
    with pytest.raises(TypeError, match="Unsupported type"):
        axpy(np.arange(4.0), y, np.float64(2), z)


def test_a_copy_on_a_stream_must_be_waited_for(cp):
    stream = cp.cuda.Stream(non_blocking=True)
    memory = cp.cuda.alloc_pinned_memory(16)
    host = np.frombuffer(memory, np.float32, 4)
    host[...] = 1
    a = cp.empty(4, np.float32)
    a.set(host, stream=stream)
    with pytest.raises(cp.cuda.StreamOrderError, match="has not waited"):
        a + 1
    cp.cuda.get_current_stream().wait_event(stream.record())
    assert float((a + 1).sum()) == 8.0
    b = cp.empty(4, np.float32)
    b.set(host, stream=stream)
    with pytest.raises(cp.cuda.StreamOrderError, match="page-locked"):
        cp.empty(4, np.float32).set(host, stream=stream)   # b's copy may still read it
    stream.synchronize()
    cp.empty(4, np.float32).set(host, stream=stream)
    assert np.array_equal(b.get(), host)


def test_import_cupy_finds_the_stand_in_through_pythonpath():
    r = subprocess.run([sys.executable, "-c", "import cupy, tinyalex.backend as b; "
                        "print(cupy.STAND_IN, b.gpu_available())"],
                       capture_output=True, text=True, env=stand_in.environ(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "True" and "(True, '')" in r.stdout


def test_the_stand_in_stays_inside_its_context():
    before = backend.gpu_available(), sys.modules.get("tinyalex.kernels.gpu")
    with stand_in.installed():
        from tinyalex.kernels import gpu

        assert sys.modules["cupy"].STAND_IN and gpu.cp.STAND_IN and backend.gpu_available()[0]
    assert (backend.gpu_available(), sys.modules.get("tinyalex.kernels.gpu")) == before
    assert getattr(sys.modules.get("cupy"), "STAND_IN", False) is False
    assert not backend.is_gpu_array(np.zeros(3))
