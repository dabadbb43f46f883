"""python -m tinyalex.bench runs and prints its figures (timings themselves are not tested:
speed is checked by reading the benchmark's ratios, not by timed tests)."""

import subprocess
import sys

import numpy as np
import pytest

from tinyalex.kernels import dispatch


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
    assert "each PyTorch layer timed right after tinyalex's" in out
    torch_fwd = [line.split()[3] for line in out.splitlines() if line.startswith("conv1 ")]
    assert torch_fwd and float(torch_fwd[0]) > 0, "conv1's row has PyTorch's forward time"
    assert "convolutions: 3x3 and 5x5 stride-1 by Winograd" in out
    assert "bound: the most any code could beat the textbook by" in out
    assert "least ms" in out and "x least" in out
    assert "tinyalex's step, split" in out
    split = [line for line in out.splitlines() if line.rstrip().endswith("%")]
    assert len(split) == 6 and split[0].lstrip().startswith("GEMM")


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


@pytest.fixture
def fast_winograd():
    """The fast variants on, Winograd included, whatever the environment says."""
    with dispatch.settings(fast=True, winograd=True, batch_parallel_conv=True):
        yield


def test_least_times_and_textbook_bounds(fast_winograd):
    """Least time: products at the sgemm rate (Winograd's fewer at the layer's size: F(2x2,
    3x3) on 6x6 2.25x, F(3x3, 5x5) on 13x13 3.45x, its 25 tiles of 9 for 169 outputs),
    bytes at the streaming rate; the textbook bound is the twin's time / it."""
    from tinyalex.checks.bench import layer_gemm_flops, least_times, textbook_bounds
    from tinyalex.net import build

    net = build("alexnet-mini", 10)
    shapes = net.shapes()
    rows = [(name, 1.0, 1.0) for name, *_ in shapes]  # every twin takes 2 s
    flops = layer_gemm_flops(net, 4)
    least = least_times(net, 4, sgemm_rate=10.0, memory_rate=2.0)
    bounds = textbook_bounds(rows, least)
    by_name = {name: (layer, i) for i, (name, layer, _, _) in enumerate(shapes)}
    layer, i = by_name["conv1"]  # 5x5 stride 2: im2col (few taps)
    assert flops[i] == 2 * layer.flops(shapes[i][2]) * 4  # the first layer computes no dx
    assert least[i] == pytest.approx(flops[i] / 10e9)
    assert bounds[i] == pytest.approx(2.0 / (flops[i] / 10e9))
    layer, i = by_name["conv2"]  # 5x5 stride 1 pad 2, 13x13: F(3x3, 5x5)
    assert least[i] == pytest.approx(flops[i] / (169 * 25 / (25 * 49)) / 10e9)
    layer, i = by_name["conv3"]  # 3x3 stride 1 pad 1, 6x6: F(3x3, 3x3)
    assert bounds[i] == pytest.approx(2.0 / (flops[i] / 3.24 / 10e9))
    _, i = by_name["relu1"]
    size = 4 * 4 * int(np.prod(shapes[i][2]))
    assert least[i] == pytest.approx(5 * size / 2e9)
    _, i = by_name["pool1"]
    pool_bytes = 2 * size + 2 * 4 * 4 * int(np.prod(shapes[i][3]))
    assert bounds[i] == pytest.approx(2.0 / (pool_bytes / 2e9))
    assert least[by_name["flatten"][1]] is None and bounds[by_name["flatten"][1]] is None


def test_least_time_of_a_conv_by_space_to_depth(fast_winograd):
    """The paper's conv1 (11x11 stride 4 on 227 px) goes to Winograd on its 48 phase maps:
    its least time counts 16 * 4^2 multiplications per 2x2 tile of 55x55 outputs (28x28
    tiles) against 11^2 per output, 1.82x fewer; its reason names the method."""
    from tinyalex.checks.bench import (
        FAR_FROM_BOUND,
        far_from_bound_reason,
        layer_gemm_flops,
        least_times,
    )
    from tinyalex.layers import Conv2D
    from tinyalex.net import Sequential

    net = Sequential([("conv1", Conv2D(3, 8, 11, stride=4))], (3, 227, 227))
    flops = layer_gemm_flops(net, 4)[0]
    fewer = 55 * 55 * 121 / (28 * 28 * 16 * 16)
    assert least_times(net, 4, sgemm_rate=10.0, memory_rate=2.0)[0] == pytest.approx(
        flops / fewer / 10e9)
    assert far_from_bound_reason(net.layers[0][1]) == FAR_FROM_BOUND["space-to-depth"]
    with dispatch.settings(winograd=False):
        assert least_times(net, 4, sgemm_rate=10.0, memory_rate=2.0)[0] == pytest.approx(
            flops / 10e9)
        assert far_from_bound_reason(net.layers[0][1]) == FAR_FROM_BOUND["im2col"]


def test_layers_far_from_their_bound_get_a_reason(fast_winograd):
    from tinyalex.checks.bench import (
        FAR_FROM_BOUND,
        SHORT_REASON,
        far_from_bound_lines,
        far_from_bound_reason,
    )
    from tinyalex.net import build

    net = build("alexnet-mini", 10)
    layers = dict(net.layers)
    assert far_from_bound_reason(layers["conv1"]) == FAR_FROM_BOUND["few-taps"]
    assert far_from_bound_reason(layers["conv3"]) == FAR_FROM_BOUND["winograd"]
    assert far_from_bound_reason(layers["drop6"]) == FAR_FROM_BOUND["Dropout"]
    ours = [(name, 1.0, 1.0) for name, _ in net.layers]
    least = [1.5 if name == "conv1" else None if name == "flatten" else
             1e-4 if name == "relu1" else 0.5 for name, _ in net.layers]
    lines = far_from_bound_lines(net, ours, least)
    assert len(lines) == len(net.layers) - 2  # conv1 at 1.3x, flatten has no bound
    assert lines[0] == f"  relu1 at 20000.0x its least: {SHORT_REASON}"
    assert lines[1] == f"  lrn1 at 4.0x its least: {FAR_FROM_BOUND['LocalResponseNorm']}"
    assert lines[2].startswith("  pool1 at 4.0x") and lines[3].startswith("  conv2 at 4.0x")
    assert "relu2 at 4.0x its least: no reason written down yet" in "\n".join(lines)


@pytest.mark.parametrize("command", ["step", "loader", "twin", "scaling", "_step"])
def test_each_subcommand_has_its_help(command, capsys):
    """python -m tinyalex.bench COMMAND --help: argparse subcommands, each with its options."""
    from tinyalex.checks.bench import main

    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert f"python -m tinyalex.bench {command}" in capsys.readouterr().out


def test_no_subcommand_is_the_step_and_the_child_is_not_listed(capsys):
    from tinyalex.checks.bench import build_parser, main

    with pytest.raises(SystemExit):
        main(["--help"])
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("step", "loader", "twin", "scaling"))
    assert "_step" not in listed
    args = build_parser().parse_args(["step", "--arch", "alexnet-mini"])
    assert args.what == "step" and args.arch == "alexnet-mini"
    with pytest.raises(SystemExit):      # options before a subcommand name are the step's
        main(["--arch", "alexnet-mini", "--help"])
    assert "python -m tinyalex.bench step" in capsys.readouterr().out
