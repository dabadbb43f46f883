"""python -m tinyalex.bench runs and prints its figures (timings themselves are not tested:
speed is checked by reading the benchmark's ratios, not by timed tests)."""

import subprocess
import sys

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
    assert "convolutions: 3x3 stride-1 by Winograd" in out
    assert "at GEMM peak" in out


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
