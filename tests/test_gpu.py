"""The CuPy path (tinyalex/kernels/gpu.py, net.to(cupy), train --device gpu) equals the NumPy
path. Needs CuPy and an NVIDIA GPU; without them every test here skips with the reason (CI
has no GPU). Run them on a GPU machine: python -m pytest -q tests/test_gpu.py

- each CuPy kernel against the readable NumPy body it replaces: exact where both do the
  same arithmetic in the same order (im2col, max pool forward and argmax, col2im and max
  pool backward in float64, which sum in the readable order), else a few ulps (LRN's pow,
  the fused SGD update: 1e-5 float32, 1e-12 float64);
- every layer's forward and backward on the GPU against the CPU (cuBLAS sums in another
  order): 1e-5 float32, 1e-12 float64;
- gradient checks on the GPU in float64 (central differences, 1e-6);
- a whole training step, and ten steps of SGD, GPU against CPU;
- the host->device prefetch yields the very batches, and checkpoints move both ways.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from tinyalex.backend import gpu_available, to_numpy

ok, why = gpu_available()
pytestmark = pytest.mark.skipif(not ok, reason=f"needs CuPy and an NVIDIA GPU: {why}")

if ok:
    import cupy as cp

    from tinyalex.kernels import gpu

from tinyalex import checkpoint  # noqa: E402
from tinyalex.gradcheck import numerical_gradient, rel_error  # noqa: E402
from tinyalex.kernels import dispatch  # noqa: E402
from tinyalex.layers import (  # noqa: E402
    Conv2D,
    Dropout,
    Linear,
    LocalResponseNorm,
    MaxPool2D,
    ReLU,
    SoftmaxCrossEntropy,
    conv,
    lrn,
    pool,
)
from tinyalex.loop import forward_backward  # noqa: E402
from tinyalex.net import build  # noqa: E402
from tinyalex.optim import SGD  # noqa: E402

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 1e-5, np.float64: 1e-12}


def err(a, b) -> float:
    return rel_error(to_numpy(a), to_numpy(b))


@pytest.fixture
def readable():
    """Call a layer-module function on NumPy arrays with the fast paths off."""
    def call(fn, *args):
        with dispatch.settings(fast=False):
            return fn(*[to_numpy(a) if hasattr(a, "shape") else a for a in args])
    return call


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape, k, s, p", [((2, 3, 13, 13), 5, 1, 2), ((2, 3, 35, 35), 11, 4, 0),
                                            ((3, 4, 7, 9), 3, 2, 1)])
def test_im2col_col2im(dtype, shape, k, s, p, readable):
    x = cp.asarray(np.random.default_rng(0).standard_normal(shape).astype(dtype))
    cols = gpu.im2col(x, k, k, s, p)
    assert np.array_equal(to_numpy(cols), readable(conv.im2col, x, k, k, s, p))
    back = gpu.col2im(cols, shape, k, k, s, p)
    ref = readable(conv.col2im, cols, shape, k, k, s, p)
    assert err(back, ref) < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_maxpool(dtype, readable):
    rng = np.random.default_rng(1)
    x = cp.asarray(rng.integers(-3, 4, (2, 3, 13, 13)).astype(dtype))  # many ties
    y, argmax = gpu.maxpool_forward(x, 3, 2)
    ref_y, ref_arg = readable(pool.maxpool_forward, x, 3, 2)
    assert np.array_equal(to_numpy(y), ref_y) and np.array_equal(to_numpy(argmax), ref_arg)
    dout = cp.asarray(rng.standard_normal(y.shape).astype(dtype))
    dx = gpu.maxpool_backward(dout, argmax, x.shape, 3, 2)
    assert err(dx, readable(pool.maxpool_backward, dout, ref_arg, x.shape, 3, 2)) < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("size", [5, 4])
def test_lrn(dtype, size, readable):
    rng = np.random.default_rng(2)
    x = cp.asarray(rng.standard_normal((2, 9, 5, 6)).astype(dtype))
    y, s = gpu.lrn_forward(x, size, 0.1, 0.75, 2.0)
    ref_y, ref_s = readable(lrn.lrn_forward, x, size, 0.1, 0.75, 2.0)
    assert err(y, ref_y) < TOL[dtype] and err(s, ref_s) < TOL[dtype]
    dout = cp.asarray(rng.standard_normal(x.shape).astype(dtype))
    dx = gpu.lrn_backward(dout, x, y, s, size, 0.1, 0.75)
    assert err(dx, readable(lrn.lrn_backward, dout, x, ref_y, ref_s, size, 0.1, 0.75)) < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_sgd_update(dtype):
    rng = np.random.default_rng(3)
    w, v, g = (rng.standard_normal(1000).astype(dtype) for _ in range(3))
    wg, vg = cp.asarray(w), cp.asarray(v)
    gpu.sgd_update(wg, vg, cp.asarray(g), 0.01, 0.9, 5e-4)
    v = v * dtype(0.9) - dtype(5e-4 * 0.01) * w - dtype(0.01) * g
    assert err(vg, v) < TOL[dtype] and err(wg, w + v) < TOL[dtype]


LAYERS = [
    lambda d: Conv2D(6, 8, 3, padding=1, groups=2, weight_std=0.1, rng=0, dtype=d),
    lambda d: Conv2D(3, 4, 5, stride=2, padding=2, weight_std=0.1, rng=1, dtype=d),
    lambda d: LocalResponseNorm(5),
    lambda d: MaxPool2D(3, 2),
    lambda d: ReLU(),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("make", LAYERS, ids=["conv-g2", "conv-s2", "lrn", "pool", "relu"])
def test_layer_on_gpu_equals_cpu(make, dtype):
    rng = np.random.default_rng(4)
    shape = (3, 6, 11, 11) if make is LAYERS[0] else (3, 3, 11, 11)
    x = rng.standard_normal(shape).astype(dtype)
    cpu_layer, gpu_layer = make(dtype), make(dtype)
    gpu_layer.params = {k: cp.asarray(v) for k, v in cpu_layer.params.items()}
    y = cpu_layer.forward(x)
    dout = rng.standard_normal(y.shape).astype(dtype)
    dx = cpu_layer.backward(dout)
    yg = gpu_layer.forward(cp.asarray(x))
    dxg = gpu_layer.backward(cp.asarray(dout))
    assert isinstance(yg, cp.ndarray) and yg.dtype == dtype
    assert err(yg, y) < TOL[dtype] and err(dxg, dx) < TOL[dtype]
    for name, grad in cpu_layer.grads.items():
        assert err(gpu_layer.grads[name], grad) < TOL[dtype], name


@pytest.mark.parametrize("make", [LAYERS[0], LAYERS[2], lambda d: Linear(12, 5, rng=2, dtype=d)],
                         ids=["conv", "lrn", "linear"])
def test_gradient_check_on_gpu(make):
    """Central differences on the GPU, float64: dx and every parameter gradient."""
    layer = make(np.float64)
    layer.params = {k: cp.asarray(v, dtype=cp.float64) for k, v in layer.params.items()}
    rng = np.random.default_rng(5)
    shape = (2, 12) if isinstance(layer, Linear) else (2, 6, 5, 5) if isinstance(layer, Conv2D) \
        else (2, 7, 3, 3)
    x = cp.asarray(rng.standard_normal(shape))
    dout = cp.asarray(rng.standard_normal(layer.forward(x).shape))

    def loss():
        return float(cp.sum(layer.forward(x) * dout))

    layer.forward(x)
    dx = layer.backward(dout)
    analytic = {k: to_numpy(g) for k, g in layer.grads.items()}
    # numerical_gradient perturbs the CuPy arrays in place (np.zeros_like gives CuPy too)
    assert err(dx, numerical_gradient(loss, x)) < 1e-6
    for name, value in layer.params.items():
        assert err(analytic[name], numerical_gradient(loss, value)) < 1e-6, name


def test_dropout_and_loss_on_gpu():
    rng = np.random.default_rng(6)
    z = rng.standard_normal((4, 10))
    y = np.array([1, 0, 9, 3], dtype=np.int32)
    drop = Dropout(0.5, rng=0)
    drop.fixed_mask = rng.random(z.shape) >= 0.5
    assert err(drop.forward(cp.asarray(z)), drop.forward(z)) == 0
    cpu_loss, gpu_loss = SoftmaxCrossEntropy(), SoftmaxCrossEntropy()
    assert abs(float(gpu_loss(cp.asarray(z), cp.asarray(y))) - float(cpu_loss(z, y))) < 1e-12
    assert err(gpu_loss.backward(), cpu_loss.backward()) < 1e-12


@pytest.mark.parametrize("dtype, steps, tol", [(np.float64, 10, 1e-9), (np.float32, 1, 1e-4)],
                         ids=["f64-10-steps", "f32-1-step"])
def test_training_steps_gpu_equal_cpu(dtype, steps, tol):
    """alexnet-mini, the same batches and dropout masks: the weights after the SGD steps.
    float32 takes one step only: over several, a max-pool near-tie that rounds the other way
    on one device sends a gradient elsewhere (tests/test_lockstep.py met this on the CPU)."""
    nets = [build("alexnet-mini", 10, seed=0).astype(dtype) for _ in range(2)]
    nets[1].to(cp)
    opts = [SGD(net.params) for net in nets]
    rng = np.random.default_rng(7)
    for step in range(steps):
        x = rng.standard_normal((8,) + nets[0].input_shape).astype(dtype)
        y = rng.integers(0, 10, 8).astype(np.int32)
        for net, opt in zip(nets, opts, strict=True):
            for k, (_, layer) in enumerate(net.layers):
                if isinstance(layer, Dropout):
                    layer.rng = np.random.default_rng([step, k])
            forward_backward(net, SoftmaxCrossEntropy(), x, y)
            opt.step(net.grads)
    for name, w in nets[0].params.items():
        assert err(nets[1].params[name], w) < tol, name


def test_prefetch_yields_the_same_batches():
    from tinyalex.backend import prefetch_to_gpu

    rng = np.random.default_rng(8)
    batches = [(rng.standard_normal((4, 3, 5, 5)).astype(np.float32),
                rng.integers(0, 10, 4).astype(np.int32)) for _ in range(5)]
    out = list(prefetch_to_gpu(iter(batches)))
    assert len(out) == 5
    for (x, y), (xg, yg) in zip(batches, out, strict=True):
        assert isinstance(xg, cp.ndarray) and np.array_equal(to_numpy(xg), x)
        assert np.array_equal(to_numpy(yg), y)


def test_checkpoints_move_between_cpu_and_gpu(tmp_path):
    net = build("alexnet-mini", 10, seed=1)
    gpu_net = build("alexnet-mini", 10, seed=2).to(cp)
    gpu_net.load_params(net.params)
    path = checkpoint.save(tmp_path / "g.npz", gpu_net.params, {"from": "gpu"})
    back = build("alexnet-mini", 10, seed=3)
    back.load_params(checkpoint.load(path).params)
    for name, w in net.params.items():
        assert np.array_equal(back.params[name], w)
        assert np.array_equal(to_numpy(gpu_net.params[name]), w)


def test_train_device_gpu_then_resume_on_cpu(tiny_prepared, tmp_path):
    """train --device gpu runs, writes a plain checkpoint, and --resume --device cpu goes on."""
    out = tmp_path / "run"
    base = [sys.executable, "-m", "tinyalex.train", "--data", str(tiny_prepared), "--out",
            str(out), "--arch", "alexnet-mini", "--batch-size", "8", "--no-figures"]
    env = {**os.environ, "TINYALEX_UNVERIFIED_GPU": "1"}
    r = subprocess.run(base + ["--epochs", "1", "--device", "gpu"], capture_output=True,
                       text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    assert checkpoint.load(out / "last.npz").meta["config"]["device"] == "gpu"
    r = subprocess.run([sys.executable, "-m", "tinyalex.train", "--resume", str(out),
                        "--epochs", "2", "--device", "cpu", "--no-figures"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert checkpoint.load(out / "last.npz").meta["epoch"] == 2
