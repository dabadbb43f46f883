"""The CuPy path (tinyalex/kernels/gpu.py, net.to(cupy), the prefetch, train, evaluate and
bench --device gpu) against the NumPy path. On a machine with CuPy and an NVIDIA GPU these
tests run on them; elsewhere (CI) on the strict CuPy stand-in of tests/stand_in/cupy, whose
docstring says what it checks (device arrays that never turn into NumPy ones implicitly,
the kernels' CUDA C as host C++, the order of streams and events) and what it cannot
(timing, memory, real CUDA semantics): a green run on the stand-in is not a run on a GPU.
On a GPU machine: python -m pytest -q tests/test_gpu.py (.ci/gpu-check).

- each CuPy kernel against the readable NumPy body it replaces: exact where both do the
  same arithmetic in the same order (im2col, max pool forward and argmax, col2im and max
  pool backward in float64, which sum in the readable order), else a few ulps (LRN's pow,
  the fused SGD update: 1e-5 float32, 1e-12 float64);
- every layer's forward and backward on the GPU against the CPU (cuBLAS sums in another
  order): 1e-5 float32, 1e-12 float64;
- gradient checks on the GPU in float64 (central differences, 1e-6);
- a whole training step, and ten steps of SGD, GPU against CPU;
- the host->device prefetch yields the very batches; on the stand-in, each batch is used
  only after its stream was waited on, and broken copies of the prefetch are caught;
- checkpoints move both ways; ``train --device gpu`` equals the CPU run from the same seed
  (float32: TRAIN_TOL), resumes exactly on the GPU, and a run moves GPU -> CPU -> GPU;
  ``evaluate --device gpu`` scores as the CPU; ``bench --device gpu`` runs.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import stand_in

from tinyalex import backend, checkpoint
from tinyalex.backend import gpu_available, to_numpy
from tinyalex.gradcheck import numerical_gradient, rel_error
from tinyalex.kernels import dispatch
from tinyalex.layers import (
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
from tinyalex.loop import forward_backward
from tinyalex.net import build
from tinyalex.optim import SGD

REAL_GPU, WHY_NOT = gpu_available()
ON_STAND_IN = not REAL_GPU
only_on_stand_in = pytest.mark.skipif(REAL_GPU, reason="checks the CuPy stand-in's records")


@pytest.fixture(scope="module", autouse=True)
def cp():
    """cupy: the real one with a GPU, else the stand-in (installed for this file only)."""
    if REAL_GPU:
        import cupy

        yield cupy
        return
    if shutil.which("g++") is None:
        why = (f"no GPU ({WHY_NOT}), and the CuPy stand-in needs g++ to compile the kernels "
               "(apt-get install g++)")
        if os.environ.get("CI"):
            pytest.fail(f"{why}; in CI this is an error, not a skip (.ci/run installs g++)")
        pytest.skip(why)
    with stand_in.installed() as module:
        yield module


@pytest.fixture(scope="module")
def gpu(cp):
    """tinyalex/kernels/gpu.py, on this file's cupy."""
    from tinyalex.kernels import gpu as module

    return module


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
def test_im2col_col2im(dtype, shape, k, s, p, readable, cp, gpu):
    x = cp.asarray(np.random.default_rng(0).standard_normal(shape).astype(dtype))
    cols = gpu.im2col(x, k, k, s, p)
    assert np.array_equal(to_numpy(cols), readable(conv.im2col, x, k, k, s, p))
    back = gpu.col2im(cols, shape, k, k, s, p)
    ref = readable(conv.col2im, cols, shape, k, k, s, p)
    assert err(back, ref) < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_maxpool(dtype, readable, cp, gpu):
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
def test_lrn(dtype, size, readable, cp, gpu):
    rng = np.random.default_rng(2)
    x = cp.asarray(rng.standard_normal((2, 9, 5, 6)).astype(dtype))
    y, s = gpu.lrn_forward(x, size, 0.1, 0.75, 2.0)
    ref_y, ref_s = readable(lrn.lrn_forward, x, size, 0.1, 0.75, 2.0)
    assert err(y, ref_y) < TOL[dtype] and err(s, ref_s) < TOL[dtype]
    dout = cp.asarray(rng.standard_normal(x.shape).astype(dtype))
    dx = gpu.lrn_backward(dout, x, y, s, size, 0.1, 0.75)
    assert err(dx, readable(lrn.lrn_backward, dout, x, ref_y, ref_s, size, 0.1, 0.75)) < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_sgd_update(dtype, cp, gpu):
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


@pytest.mark.parametrize("fast", [True, False], ids=["kernels", "readable"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("make", LAYERS, ids=["conv-g2", "conv-s2", "lrn", "pool", "relu"])
def test_layer_on_gpu_equals_cpu(make, dtype, fast, cp):
    """Each layer on the GPU against the CPU, through the CuPy kernels, and with the fast
    paths off (TINYALEX_NO_NUMBA: the readable NumPy bodies run on CuPy arrays)."""
    rng = np.random.default_rng(4)
    shape = (3, 6, 11, 11) if make is LAYERS[0] else (3, 3, 11, 11)
    x = rng.standard_normal(shape).astype(dtype)
    cpu_layer, gpu_layer = make(dtype), make(dtype)
    gpu_layer.params = {k: cp.asarray(v) for k, v in cpu_layer.params.items()}
    y = cpu_layer.forward(x)
    dout = rng.standard_normal(y.shape).astype(dtype)
    dx = cpu_layer.backward(dout)
    with dispatch.settings(fast=fast):
        yg = gpu_layer.forward(cp.asarray(x))
        dxg = gpu_layer.backward(cp.asarray(dout))
    assert isinstance(yg, cp.ndarray) and yg.dtype == dtype
    assert err(yg, y) < TOL[dtype] and err(dxg, dx) < TOL[dtype]
    for name, grad in cpu_layer.grads.items():
        assert err(gpu_layer.grads[name], grad) < TOL[dtype], name


@pytest.mark.parametrize("make", [LAYERS[0], LAYERS[2], lambda d: Linear(12, 5, rng=2, dtype=d)],
                         ids=["conv", "lrn", "linear"])
def test_gradient_check_on_gpu(make, cp):
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


def test_dropout_and_loss_on_gpu(cp):
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
def test_training_steps_gpu_equal_cpu(dtype, steps, tol, cp):
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
        # conv1.b starts at 0 and holds after a step -lr*db, a nearly cancelling sum (1e-8
        # of terms of 1e-3): each parameter is measured on its layer's weight scale
        scale = max(np.abs(w).max(), np.abs(nets[0].params[name[:-1] + "W"]).max())
        assert np.abs(to_numpy(nets[1].params[name]) - w).max() < tol * scale, name


def test_prefetch_yields_the_same_batches(cp):
    from tinyalex.backend import prefetch_to_gpu

    rng = np.random.default_rng(8)
    batches = [(rng.standard_normal((4, 3, 5, 5)).astype(np.float32),
                rng.integers(0, 10, 4).astype(np.int32)) for _ in range(5)]
    out = list(prefetch_to_gpu(iter(batches)))
    assert len(out) == 5
    for (x, y), (xg, yg) in zip(batches, out, strict=True):
        assert isinstance(xg, cp.ndarray) and np.array_equal(to_numpy(xg), x)
        assert np.array_equal(to_numpy(yg), y)


def test_checkpoints_move_between_cpu_and_gpu(tmp_path, cp):
    net = build("alexnet-mini", 10, seed=1)
    gpu_net = build("alexnet-mini", 10, seed=2).to(cp)
    gpu_net.load_params(net.params)
    path = checkpoint.save(tmp_path / "g.npz", gpu_net.params, {"from": "gpu"})
    back = build("alexnet-mini", 10, seed=3)
    back.load_params(checkpoint.load(path).params)
    for name, w in net.params.items():
        assert np.array_equal(back.params[name], w)
        assert np.array_equal(to_numpy(gpu_net.params[name]), w)



# ------------------------------------------------------------------- the prefetch's order

def consume(batches):
    """Use each yielded batch on the default stream, with no host synchronisation until all
    are used (the strictest consumer: a training step's float(loss) would synchronise);
    then the host copies of what it used."""
    used = [(xg.copy(), yg + 0) for xg, yg in batches]
    return [(to_numpy(x), to_numpy(y)) for x, y in used]


def host_batches(n=5, shape=(4, 3, 5, 5)):
    rng = np.random.default_rng(9)
    return [(rng.standard_normal(shape).astype(np.float32),
             rng.integers(0, 10, shape[0]).astype(np.int32)) for _ in range(n)]


@only_on_stand_in
def test_prefetch_waits_for_each_copy_and_for_the_default_stream(cp):
    """The stand-in's record of one prefetch: each batch's copy is issued on the side stream
    after that stream waited for the default stream's work (the pool's reuse), the default
    stream waits for the copy's event before the batch is used (else StreamOrderError), and a
    page-locked buffer is refilled only after the host synchronised its last copy."""
    batches = host_batches()
    cp.cuda.LOG.clear()
    seen = consume(backend.prefetch_to_gpu(iter(batches)))
    for (x, y), (xh, yh) in zip(seen, batches, strict=True):
        assert np.array_equal(x, xh) and np.array_equal(y, yh)
    log = cp.cuda.LOG
    side = next(e[1] for e in log if e[0] == "Stream" and e[2])   # the non-blocking one
    events = {e[1]: e[2] for e in log if e[0] == "record"}        # event -> its stream
    copies = [i for i, e in enumerate(log) if e[0] == "copy" and e[1] == side]
    assert len(copies) == 2 * len(batches)                        # x and y of each batch
    for i in copies[::2]:
        waits = [e for e in log[:i] if e[0] == "wait_event" and e[1] == side]
        assert waits and events[waits[-1][2]] == "null", log[:i]
    waited = [e[2] for e in log if e[0] == "wait_event" and e[1] == "null"]
    assert len(waited) == len(batches) and all(events[w] == side for w in waited)
    assert sum(e[0] == "alloc_pinned_memory" for e in log) == 2   # two buffers, reused


# A line of backend.prefetch_to_gpu, and what a broken copy has there instead.
BROKEN_PREFETCH = {
    "no-wait-before-use": ("cp.cuda.get_current_stream().wait_event(sent[2])", "pass"),
    "refill-while-copying": ('slot["event"].synchronize()', "pass"),
}


@only_on_stand_in
@pytest.mark.parametrize("case", list(BROKEN_PREFETCH))
def test_stand_in_catches_a_broken_prefetch(cp, case):
    """The checks above can fail: a prefetch that lets the default stream use a batch before
    its copy is waited on, or refills a page-locked buffer an unsynchronised copy still
    reads, raises StreamOrderError on the stand-in (on a GPU: wrong batches, sometimes)."""
    good, bad = BROKEN_PREFETCH[case]
    source = inspect.getsource(backend.prefetch_to_gpu)
    assert good in source, f"prefetch_to_gpu changed: update BROKEN_PREFETCH[{case!r}]"
    namespace = dict(vars(backend))
    exec(source.replace(good, bad), namespace)   # the broken copy, in backend's globals
    with pytest.raises(cp.cuda.StreamOrderError):
        consume(namespace["prefetch_to_gpu"](iter(host_batches())))
    consume(backend.prefetch_to_gpu(iter(host_batches())))   # the real one passes


# ------------------------------------------------------------------ the commands, end to end

#: float32 weights after TRAIN_STEPS steps, GPU against CPU: max |difference| over max |w|
#: per parameter (cuBLAS, and on the CPU Numba's and Winograd's sums, round differently;
#: the stand-in measured 2e-7).
TRAIN_TOL = 1e-4
TRAIN_STEPS = 4


def command(args, gpu=False, timeout=600):
    """python -m tinyalex.<args>; with gpu, on the stand-in where there is no GPU."""
    env = {**os.environ, "TINYALEX_UNVERIFIED_GPU": "1"} if gpu else dict(os.environ)
    if gpu and ON_STAND_IN:
        env = stand_in.environ(env)
    r = subprocess.run([sys.executable, "-m", "tinyalex." + args[0], *map(str, args[1:])],
                       capture_output=True, text=True, timeout=timeout, env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    return r


def train(data, out, device, *extra):
    return command(["train", "--data", data, "--out", out, "--arch", "alexnet-mini",
                    "--batch-size", "8", "--no-figures", "--val-max-images", "8", "--seed", "3",
                    "--device", device, *extra], gpu=device == "gpu")


def resume(out, device, *extra):
    return command(["train", "--resume", out, "--device", device, *extra],
                   gpu=device == "gpu")


def state(out) -> tuple[dict, dict]:
    ckpt = checkpoint.load(out / "last.npz")
    return {**{f"params/{k}": v for k, v in ckpt.params.items()},
            **{f"velocity/{k}": v for k, v in ckpt.velocity.items()}}, ckpt.meta


def largest_difference(a: dict, b: dict) -> float:
    return max(float(np.abs(a[k] - b[k]).max() / max(np.abs(b[k]).max(), 1e-30))
               for k in b if k.startswith("params/"))


@pytest.fixture(scope="module")
def runs(tiny_prepared, tmp_path_factory):
    """The runs the tests below compare: CPU and GPU straight to TRAIN_STEPS steps, and a GPU
    run stopped halfway and resumed on the GPU, and on the CPU then on the GPU."""
    root = tmp_path_factory.mktemp("gpu_runs")
    half = TRAIN_STEPS // 2
    train(tiny_prepared, root / "cpu", "cpu", "--max-steps", TRAIN_STEPS)
    train(tiny_prepared, root / "gpu", "gpu", "--max-steps", TRAIN_STEPS)
    train(tiny_prepared, root / "half", "gpu", "--max-steps", half)
    shutil.copytree(root / "half", root / "gpu-gpu")
    shutil.copytree(root / "half", root / "gpu-cpu-gpu")
    resume(root / "gpu-gpu", "gpu", "--max-steps", TRAIN_STEPS)
    resume(root / "gpu-cpu-gpu", "cpu", "--max-steps", TRAIN_STEPS)
    shutil.copytree(root / "gpu-cpu-gpu", root / "gpu-cpu")
    resume(root / "gpu-cpu-gpu", "gpu", "--max-steps", TRAIN_STEPS + half)
    return root


def test_train_on_gpu_equals_the_cpu_run(runs):
    """train --device gpu from the same seed: the same batches, dropout masks and steps;
    the weights equal the CPU run's to float32 rounding (TRAIN_TOL)."""
    (gpu, meta), (cpu, _) = state(runs / "gpu"), state(runs / "cpu")
    assert meta["config"]["device"] == "gpu" and meta["step"] == TRAIN_STEPS
    assert sorted(gpu) == sorted(cpu)
    assert largest_difference(gpu, cpu) <= TRAIN_TOL
    assert not np.array_equal(gpu["params/fc8.W"], checkpoint.load(
        runs / "half" / "last.npz").params["fc8.W"])   # it did train


def test_a_gpu_run_resumed_on_the_gpu_is_exact(runs):
    """Stopped halfway and resumed on the GPU: bit for bit the straight GPU run (the CuPy
    kernels are deterministic: gathers, no atomics)."""
    (resumed, meta), (straight, _) = state(runs / "gpu-gpu"), state(runs / "gpu")
    assert meta["step"] == TRAIN_STEPS
    for k, v in straight.items():
        assert np.array_equal(resumed[k], v), k


def test_a_gpu_checkpoint_goes_on_on_the_cpu_and_back(runs):
    """A run from the GPU's checkpoint goes on on the CPU, then on the GPU again: each
    resume records its device and takes the steps after the checkpoint's; the GPU->CPU
    half equals the CPU run to float32 rounding."""
    (mixed, meta), (cpu, _) = state(runs / "gpu-cpu"), state(runs / "cpu")
    assert meta["config"]["device"] == "cpu" and meta["step"] == TRAIN_STEPS
    assert largest_difference(mixed, cpu) <= TRAIN_TOL
    (back, meta) = state(runs / "gpu-cpu-gpu")
    assert meta["config"]["device"] == "gpu" and meta["step"] == TRAIN_STEPS * 3 // 2
    steps = [json.loads(line)["step"] for line in open(runs / "gpu-cpu-gpu" / "metrics.jsonl")
             if json.loads(line)["kind"] == "train"]
    assert steps == sorted(set(steps))   # no step taken twice
    assert all(np.all(np.isfinite(v)) for v in back.values())


def test_checkpoint_state_crosses_devices_bit_exact(runs, cp):
    """The weights and momentum of a GPU checkpoint, loaded into a net and optimizer on the
    device and saved again from there, are the very same bits (what a resume on either
    device starts from)."""
    ckpt = checkpoint.load(runs / "half" / "last.npz")
    spec = ckpt.meta["net"]
    net = build(spec["arch"], spec["num_classes"], **spec["kwargs"]).to(cp)
    net.load_params(ckpt.params)
    opt = SGD(net.params)
    opt.load_state_dict({**{f"velocity/{k}": v for k, v in ckpt.velocity.items()}, "lr": 0.1})
    again = checkpoint.load(checkpoint.save(runs / "again.npz", net.params, {},
                                            velocity=opt.velocity))
    for k, v in ckpt.params.items():
        assert np.array_equal(again.params[k], v), k
    for k, v in ckpt.velocity.items():
        assert np.array_equal(again.velocity[k], v), k


def test_evaluate_on_gpu_scores_as_on_the_cpu(runs):
    """evaluate --device gpu, centre crop and ten crops: the errors of the CPU's evaluation,
    the mean loss to float32 rounding."""
    results = {}
    for device in ("cpu", "gpu"):
        r = command(["evaluate", runs / "gpu" / "last.npz", "--ten-crop", "--device", device],
                    gpu=device == "gpu")
        results[device] = r.stdout
    cpu, gpu = (dict((line[:13].strip(), line[13:].split()) for line in out.splitlines()[2:])
                for out in (results["cpu"], results["gpu"]))
    assert sorted(cpu) == ["centre crop", "ten crops"]
    for mode, (top1, top5, loss) in cpu.items():
        assert gpu[mode][:2] == [top1, top5], (results["cpu"], results["gpu"])
        assert abs(float(gpu[mode][2]) - float(loss)) <= 2e-4


def test_bench_on_gpu_runs():
    r = command(["bench", "--device", "gpu", "--arch", "alexnet-mini", "--batch-size", "8",
                 "--num-classes", "10", "--steps", "1"], gpu=True)
    assert "tinyalex (CuPy)" in r.stdout and "img/s" in r.stdout


def test_device_gpu_is_refused_until_it_has_run_on_a_gpu(runs):
    """The gate stays until the path has run on a GPU: with a GPU (or the stand-in) found,
    train and evaluate --device gpu refuse in one line unless TINYALEX_UNVERIFIED_GPU=1."""
    env = {k: v for k, v in os.environ.items() if k != "TINYALEX_UNVERIFIED_GPU"}
    env = stand_in.environ(env) if ON_STAND_IN else env
    for args in (["train", "--resume", runs / "gpu", "--device", "gpu"],
                 ["evaluate", runs / "gpu" / "last.npz", "--device", "gpu"]):
        r = subprocess.run([sys.executable, "-m", "tinyalex." + args[0], *map(str, args[1:])],
                           capture_output=True, text=True, timeout=120, env=env)
        assert r.returncode == 2, r.stderr
        assert "TINYALEX_UNVERIFIED_GPU=1" in r.stderr and "Traceback" not in r.stderr
