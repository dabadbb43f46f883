"""tinyalex.diagnostics: the numbers against a hand computation, dead/zero ReLU fractions,
the trainer's --diagnostics-every lines and diagnostics.png, and what they show: §5's init
(N(0, 0.01²), biases 1) leaves almost no input-dependent signal in the last layers and
~100x smaller gradients in the conv layers than the fan-in (pytorch) init."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinyalex import checkpoint
from tinyalex.commands.diagnostics import diagnostics, format_header, format_row, relu_stats
from tinyalex.commands.figures import plot_diagnostics
from tinyalex.layers import Linear, ReLU, SoftmaxCrossEntropy
from tinyalex.loop import forward_backward
from tinyalex.net import Sequential, build
from tinyalex.optim import SGD


def hand_rms(a) -> float:
    return float(np.sqrt(np.mean(np.asarray(a, np.float64) ** 2)))


def test_numbers_equal_a_hand_computation_on_a_tiny_net():
    """fc1 (3->4) -> relu1 -> fc2 (4->2); after forward, backward and one SGD update."""
    rng = np.random.default_rng(0)
    net = Sequential([("fc1", Linear(3, 4, weight_std=1.0, rng=1, dtype=np.float64)),
                      ("relu1", ReLU()),
                      ("fc2", Linear(4, 2, weight_std=1.0, rng=2, dtype=np.float64))], (3,))
    net["fc1"].params["W"][0] = -10.0  # unit 0 of relu1: negative for these inputs -> dead
    net["fc1"].params["b"][0] = -1.0
    x = np.abs(rng.standard_normal((5, 3)))
    y = np.array([0, 1, 1, 0, 1])
    W1, b1 = net["fc1"].params["W"].copy(), net["fc1"].params["b"].copy()
    W2, b2 = net["fc2"].params["W"].copy(), net["fc2"].params["b"].copy()
    opt = SGD(net.params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    _, logits = forward_backward(net, SoftmaxCrossEntropy(), x, y)
    opt.step(net.grads)
    d = diagnostics(net, logits, opt)

    h = np.maximum(x @ W1.T + b1, 0)                      # relu1's output
    z = h @ W2.T + b2                                     # logits
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dz = (p - np.eye(2)[y]) / len(y)                      # mean cross-entropy
    dW2 = dz.T @ h
    dW1 = ((dz @ W2) * (h > 0)).T @ x
    v1 = -0.1 * dW1 - 5e-4 * 0.1 * W1                     # first step: v = -lr*g - wd*lr*w
    v2 = -0.1 * dW2 - 5e-4 * 0.1 * W2
    expect = {
        "fc1.act_rms": hand_rms(h), "fc1.act_signal": hand_rms(h - h.mean(0)),
        "fc1.weight_rms": hand_rms(W1 + v1), "fc1.grad_rms": hand_rms(dW1),
        "fc1.update_ratio": hand_rms(v1) / hand_rms(W1 + v1),
        "fc2.act_rms": hand_rms(z), "fc2.act_signal": hand_rms(z - z.mean(0)),
        "fc2.weight_rms": hand_rms(W2 + v2), "fc2.grad_rms": hand_rms(dW2),
        "fc2.update_ratio": hand_rms(v2) / hand_rms(W2 + v2),
        "relu1.dead": np.mean(~(h > 0).any(0)), "relu1.zero": np.mean(h == 0),
    }
    assert set(d) == set(expect)
    for key, value in expect.items():
        assert d[key] == pytest.approx(value, rel=1e-10), key
    assert d["relu1.dead"] >= 0.25  # unit 0 at least
    assert all(isinstance(v, float) for v in d.values())
    json.dumps(d)  # goes into metrics.jsonl as is
    header, row = format_header(d), format_row(d, 7)
    assert "fc1" in header and "r1" in header and row.startswith("diag      7")


def test_dead_fraction_all_negative_all_positive_and_per_channel():
    x = -np.random.default_rng(0).random((4, 3, 5, 5)) - 0.1
    relu = ReLU()
    assert relu_stats(relu.forward(x)) == (1.0, 1.0)
    assert relu_stats(relu.forward(-x)) == (0.0, 0.0)
    assert relu_stats(relu.forward(x[:, :, 0, 0])) == (1.0, 1.0)  # FC: per unit
    assert relu_stats(relu.forward(-x[:, :, 0, 0])) == (0.0, 0.0)
    # A channel is alive if ONE example at ONE position is positive; the zero fraction
    # still counts every other value.
    y = np.zeros((4, 3, 5, 5))
    y[2, 1, 3, 4] = 0.5
    dead, zero = relu_stats(y)
    assert dead == pytest.approx(2 / 3) and zero == pytest.approx(1 - 1 / y.size)


def train(data: Path, out: Path, *extra):
    cmd = [sys.executable, "-m", "tinyalex.train", "--data", str(data), "--out", str(out),
           "--arch", "alexnet-mini", "--batch-size", "8", "--max-steps", "5", "--seed", "3",
           "--val-max-images", "8", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_training_writes_diag_lines_and_figure_and_leaves_the_weights_alone(
        tiny_prepared, tmp_path):
    """--diagnostics-every 1: a diag line per step, a printed table, diagnostics.png; the
    weights come out bit-identical to a run with --diagnostics-every 0 (no RNG or state
    that training uses is touched)."""
    on = tmp_path / "on"
    r = train(tiny_prepared, on, "--diagnostics-every", "1", "--show-diagnostics")
    records = [json.loads(line) for line in open(on / "metrics.jsonl")]
    diag = [rec for rec in records if rec["kind"] == "diag"]
    assert [rec["step"] for rec in diag] == [1, 2, 3, 4, 5]
    assert all(rec["epoch"] == 0 for rec in diag)
    for key in ("conv1.act_rms", "fc8.act_rms", "conv1.grad_rms", "fc7.update_ratio",
                "relu1.dead", "relu7.zero"):
        assert np.isfinite(diag[-1][key]), key
    assert (on / "diagnostics.png").stat().st_size > 10_000
    out = r.stdout + r.stderr
    assert "act rms" in out and "diag      5 |" in out

    off = tmp_path / "off"
    train(tiny_prepared, off, "--diagnostics-every", "0", "--no-figures")
    assert not any(json.loads(line)["kind"] == "diag" for line in open(off / "metrics.jsonl"))
    a, b = checkpoint.load(on / "last.npz").params, checkpoint.load(off / "last.npz").params
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    assert plot_diagnostics(off / "metrics.jsonl", tmp_path / "none.png") is None


def first_step(init: str) -> dict:
    rng = np.random.default_rng(0)
    net = build("alexnet-mini", 100, seed=0, init=init, input_size=56)
    opt = SGD(net.params)
    x = (60 * rng.standard_normal((32, 3, 56, 56))).astype(np.float32)  # images' scale
    y = rng.integers(0, 100, 32)
    _, logits = forward_backward(net, SoftmaxCrossEntropy(), x, y)
    opt.step(net.grads)
    return diagnostics(net, logits, opt)


def test_paper_init_loses_the_image_signal_and_the_conv_gradients():
    """Why §5's init stalls at chance here. The activation RMS alone does not show it: the
    biases of 1 keep conv4, conv5, fc6 and fc7 at ~1, as large as or LARGER than with the fan-in init. What
    shrinks ~10x per layer is the part that depends on the image (act_signal): by fc6 it is
    ~1e-4 against ~3e-2, so every image gives the same features; and the gradients reaching
    conv1-conv4 are ~100x smaller, so those layers hardly move (update/weight ~1e-5)."""
    paper, torch_init = first_step("paper"), first_step("pytorch")
    for layer in ("conv5", "fc6"):
        assert paper[f"{layer}.act_rms"] > 2 * torch_init[f"{layer}.act_rms"], layer
    for layer in ("conv4", "conv5", "fc6"):
        assert paper[f"{layer}.act_signal"] < torch_init[f"{layer}.act_signal"] / 20, layer
    assert paper["fc6.act_signal"] / paper["fc6.act_rms"] < 1e-3
    assert torch_init["fc6.act_signal"] / torch_init["fc6.act_rms"] > 0.05
    for layer in ("conv1", "conv2", "conv3", "conv4"):
        assert paper[f"{layer}.grad_rms"] < torch_init[f"{layer}.grad_rms"] / 30, layer
        assert paper[f"{layer}.update_ratio"] < 1e-4 < torch_init[f"{layer}.update_ratio"]
