"""python -m tinyalex.bench runs and prints its figures (timings themselves are not tested:
speed is checked by reading the benchmark's ratios, not by timed tests)."""

import subprocess
import sys

import numpy as np
import pytest


def test_bench_step_prints_layers_step_and_ratios():
    pytest.importorskip("torch", reason="--compare-torch needs PyTorch (pip install torch==2.13.0)")
    r = subprocess.run([sys.executable, "-m", "tinyalex.bench", "--arch", "alexnet-mini",
                        "--batch-size", "4", "--steps", "1", "--repeats", "1",
                        "--compare-torch"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "BLAS:" in out and "kernel=" in out
    for layer in ("conv1", "lrn1", "pool5", "fc8", "sum"):
        assert layer in out
    assert "img/s" in out and "peak RSS" in out and "tinyalex / torch:" in out
    assert "convolutions: 3x3 and 5x5 stride-1 by Winograd" in out
    assert "bound: the most any code could beat the textbook by" in out


def test_bench_rejects_bad_numbers():
    r = subprocess.run([sys.executable, "-m", "tinyalex.bench", "--steps", "0"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error:")


def test_bench_device_gpu_without_a_gpu_says_why():
    """On a machine without CuPy or a GPU (CI's): one line and exit 2, no traceback."""
    from tinyalex.backend import gpu_available

    if gpu_available()[0]:
        pytest.skip("this machine has a GPU: the benchmark would run (tests/test_gpu.py)")
    r = subprocess.run([sys.executable, "-m", "tinyalex.bench", "--device", "gpu"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: --device gpu:") and "Traceback" not in r.stderr


def test_textbook_bounds_divide_the_twin_time_by_the_least_the_work_takes(monkeypatch):
    """Products at the sgemm rate (Winograd's 2.25x fewer), bytes at the streaming rate."""
    monkeypatch.delenv("TINYALEX_NO_WINOGRAD", raising=False)
    from tinyalex.checks.bench import layer_gemm_flops, textbook_bounds
    from tinyalex.net import build

    net = build("alexnet-mini", 10)
    shapes = net.shapes()
    rows = [(name, 1.0, 1.0) for name, *_ in shapes]  # every twin takes 2 s
    flops = layer_gemm_flops(net, 4)
    bounds = textbook_bounds(net, 4, rows, sgemm_rate=10.0, memory_rate=2.0)
    by_name = {name: (layer, i) for i, (name, layer, _, _) in enumerate(shapes)}
    layer, i = by_name["conv1"]
    assert flops[i] == 2 * layer.flops(shapes[i][2]) * 4  # the first layer computes no dx
    assert bounds[i] == pytest.approx(2.0 / (flops[i] / 10e9))
    layer, i = by_name["conv3"]  # 3x3 stride 1 pad 1: Winograd
    assert bounds[i] == pytest.approx(2.0 / (flops[i] / 2.25 / 10e9))
    _, i = by_name["relu1"]
    size = 4 * 4 * int(np.prod(shapes[i][2]))
    assert bounds[i] == pytest.approx(2.0 / (5 * size / 2e9))
    _, i = by_name["pool1"]
    pool_bytes = 2 * size + 2 * 4 * 4 * int(np.prod(shapes[i][3]))
    assert bounds[i] == pytest.approx(2.0 / (pool_bytes / 2e9))
    assert bounds[by_name["flatten"][1]] is None
