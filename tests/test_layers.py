"""The layer contract: shapes, dtypes, bounded memory, errors, statistics, edge cases.

See tinyalex/layers/base.py: forward(x, train) / backward(dout), params and grads with the
same keys, output_shape for one example (no batch axis), astype. Every test runs with the
Numba fast paths on and off (TINYALEX_NO_NUMBA=1).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from tinyalex.kernels import dispatch
from tinyalex.layers import (
    Conv2D,
    Dropout,
    Flatten,
    Layer,
    Linear,
    LocalResponseNorm,
    MaxPool2D,
    ReLU,
    SoftmaxCrossEntropy,
    Tanh,
    conv,
    log_softmax,
    softmax,
)

pytestmark = pytest.mark.usefixtures("fast_path")  # every test twice (tests/conftest.py)


def layer_cases():
    """(id, factory, one example's input shape): every layer, several configurations."""
    return [
        ("conv-plain", lambda: Conv2D(3, 4, 3, rng=0), (3, 8, 8)),
        ("conv-s2-p1-g2", lambda: Conv2D(4, 6, 3, stride=2, padding=1, groups=2, rng=0),
         (4, 9, 7)),
        ("conv1-like", lambda: Conv2D(3, 8, 11, stride=4, rng=0), (3, 67, 67)),
        ("conv-1x1", lambda: Conv2D(4, 2, 1, rng=0), (4, 3, 5)),
        ("conv-kernel=input", lambda: Conv2D(2, 3, 5, rng=0), (2, 5, 5)),
        ("relu", ReLU, (3, 4, 4)),
        ("tanh", Tanh, (5,)),
        ("lrn-paper", lambda: LocalResponseNorm(5), (7, 3, 3)),
        ("lrn-alpha/n-even", lambda: LocalResponseNorm(4, convention="alpha/n"), (3, 3, 3)),
        ("pool-3/2", lambda: MaxPool2D(3, 2), (3, 13, 11)),
        ("pool-2/2", lambda: MaxPool2D(2, 2), (3, 8, 9)),
        ("dropout", lambda: Dropout(0.5, rng=0), (10,)),
        ("dropout-paper", lambda: Dropout(0.5, mode="paper", rng=0), (2, 3, 3)),
        ("linear", lambda: Linear(12, 5, rng=0), (12,)),
        ("flatten", Flatten, (3, 2, 4)),
    ]


CASES = {case[0]: case[1:] for case in layer_cases()}


# ---------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("case", list(CASES))
def test_output_shape_matches_forward(case):
    """output_shape (one example) agrees with what forward returns for a batch of 3."""
    factory, shape = CASES[case]
    layer = factory()
    x = np.random.default_rng(0).standard_normal((3,) + shape).astype(np.float32)
    y = layer.forward(x, True)
    assert y.shape == (3,) + tuple(layer.output_shape(shape))
    dx = layer.backward(np.ones_like(y))
    assert dx.shape == x.shape


def test_alexnet_shapes():
    """The paper's §3.5 shapes from 3x227x227: 96x55x55 -> 27 -> 13 -> 13 -> 13 -> 6 -> 9216."""
    stack = [Conv2D(3, 96, 11, stride=4), MaxPool2D(3, 2),
             Conv2D(96, 256, 5, padding=2, groups=2), MaxPool2D(3, 2),
             Conv2D(256, 384, 3, padding=1), Conv2D(384, 384, 3, padding=1, groups=2),
             Conv2D(384, 256, 3, padding=1, groups=2), MaxPool2D(3, 2), Flatten(),
             Linear(9216, 4096), Linear(4096, 4096), Linear(4096, 1000)]
    shape = (3, 227, 227)
    shapes = []
    for layer in stack:
        shape = layer.output_shape(shape)
        shapes.append(shape)
    assert shapes[:4] == [(96, 55, 55), (96, 27, 27), (256, 27, 27), (256, 13, 13)]
    assert shapes[6:9] == [(256, 13, 13), (256, 6, 6), (9216,)]
    assert shapes[-1] == (1000,)
    assert stack[2].params["W"].shape == (256, 48, 5, 5)       # 5x5x48: groups=2
    assert stack[4].params["W"].shape == (384, 256, 3, 3)      # conv3 sees everything
    n_params = sum(v.size for layer in stack for v in layer.params.values())
    assert 60e6 < n_params < 62e6                              # "about 61 M"


# ---------------------------------------------------------------------------- contract

@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", list(CASES))
def test_dtype_in_dtype_out(case, dtype):
    """float32 in -> float32 out (forward, dx, every grad); float64 likewise after astype."""
    factory, shape = CASES[case]
    layer = factory().astype(dtype)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2,) + shape).astype(dtype)
    y = layer.forward(x, True)
    assert y.dtype == dtype
    dx = layer.backward(rng.standard_normal(y.shape).astype(dtype))
    assert dx.dtype == dtype
    assert set(layer.grads) == set(layer.params)
    for name, g in layer.grads.items():
        assert g.dtype == dtype, f"grad {name} is {g.dtype}"
        assert g.shape == layer.params[name].shape
    assert layer.forward(x, False).dtype == dtype


@pytest.mark.parametrize("case", list(CASES))
def test_inputs_not_modified(case):
    """forward and backward never write into x or dout (the caller may reuse them)."""
    factory, shape = CASES[case]
    layer = factory()
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2,) + shape).astype(np.float32)
    x0 = x.copy()
    y = layer.forward(x, True)
    dout = rng.standard_normal(y.shape).astype(np.float32)
    d0 = dout.copy()
    layer.backward(dout)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(dout, d0)


@pytest.mark.parametrize("case", [c for c in CASES if not c.startswith("dropout")])
def test_non_contiguous_input(case):
    """A strided view gives the same forward and backward as its contiguous copy."""
    factory, shape = CASES[case]
    layer = factory()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4,) + shape).astype(np.float32)[::2]
    assert not x.flags.c_contiguous
    y = layer.forward(x, True)
    dout = rng.standard_normal(y.shape).astype(np.float32)
    dx = layer.backward(dout)
    grads = {k: v.copy() for k, v in layer.grads.items()}
    np.testing.assert_array_equal(layer.forward(np.ascontiguousarray(x), True), y)
    np.testing.assert_array_equal(layer.backward(dout), dx)
    for name, g in grads.items():
        np.testing.assert_array_equal(layer.grads[name], g)


def test_astype_casts_params_and_clears_grads():
    layer = Conv2D(2, 2, 3, rng=0)
    assert layer.params["W"].dtype == np.float32 and layer.params["b"].dtype == np.float32
    layer.forward(np.ones((1, 2, 4, 4), np.float32))
    layer.backward(np.ones((1, 2, 2, 2), np.float32))
    assert layer.astype(np.float64) is layer
    assert all(v.dtype == np.float64 for v in layer.params.values())
    assert layer.grads == {}


def test_base_layer():
    layer = Layer()
    assert layer.params == {} and layer.grads == {}
    assert layer.output_shape((3, 4)) == (3, 4) and layer.flops((3, 4)) == 0
    with pytest.raises(NotImplementedError):
        layer.forward(np.zeros(1))
    assert isinstance(ReLU(), Layer)
    x = np.array([[-1.0, 2.0]])
    np.testing.assert_array_equal(ReLU()(x), [[0.0, 2.0]])   # __call__ is forward


def test_conv_params_and_init():
    """W (F, C/groups, k, k) ~ N(0, std^2), b filled with the given bias (paper §5: 0 or 1)."""
    layer = Conv2D(8, 64, 3, groups=2, weight_std=0.01, bias=1.0, rng=0)
    assert layer.params["W"].shape == (64, 4, 3, 3)
    assert abs(layer.params["W"].std() - 0.01) < 0.001
    np.testing.assert_array_equal(layer.params["b"], np.ones(64, np.float32))
    a = Conv2D(3, 4, 3, rng=5).params["W"]
    np.testing.assert_array_equal(a, Conv2D(3, 4, 3, rng=5).params["W"])   # seeded


def test_relu_gradient_at_zero_is_zero():
    """ReLU's derivative at exactly 0 is taken as 0 (as in PyTorch)."""
    layer = ReLU()
    layer.forward(np.array([-1.0, 0.0, 1.0]))
    np.testing.assert_array_equal(layer.backward(np.ones(3)), [0.0, 0.0, 1.0])


def test_maxpool_leftover_rows_get_zero_gradient():
    """With (H - z) % s != 0 the last row/column feeds no output: its dx is 0."""
    layer = MaxPool2D(3, 2)
    x = np.random.default_rng(4).standard_normal((1, 2, 8, 8))
    y = layer.forward(x)
    assert y.shape == (1, 2, 3, 3)
    dx = layer.backward(np.ones_like(y))
    assert np.all(dx[:, :, 7, :] == 0) and np.all(dx[:, :, :, 7] == 0)
    assert dx.sum() == y.size


def test_lrn_values_by_hand():
    """LRN at one pixel, by the §3.3 formula, in both conventions; window clipped at edges."""
    x = np.arange(1.0, 6.0).reshape(1, 5, 1, 1)    # channels 1..5
    for convention, a in [("paper", 0.1), ("alpha/n", 0.1 / 3)]:
        layer = LocalResponseNorm(size=3, alpha=0.1, beta=0.75, k=2.0, convention=convention)
        assert layer.coefficient == pytest.approx(a)
        y = layer.forward(x)[0, :, 0, 0]
        sums = [1 + 4, 1 + 4 + 9, 4 + 9 + 16, 9 + 16 + 25, 16 + 25]
        expected = np.arange(1.0, 6.0) / (2.0 + a * np.array(sums)) ** 0.75
        np.testing.assert_allclose(y, expected, rtol=1e-12)


def test_lrn_even_size_window():
    """Even n: n//2 channels before and (n-1)//2 after (PyTorch's padding)."""
    x = np.zeros((1, 5, 1, 1))
    x[0, 2] = 1.0                                  # only channel 2 is nonzero
    layer = LocalResponseNorm(size=4, alpha=1.0, beta=1.0, k=1.0)
    layer.forward(x)
    s = layer.cache[2][0, :, 0, 0]
    # s_i includes channel 2 iff i - 2 <= 2 <= i + 1, i.e. i in {1, 2, 3, 4}
    np.testing.assert_allclose(s, [1.0, 2.0, 2.0, 2.0, 2.0])


# -------------------------------------------------------------------- Conv2D memory bound

def _conv_run(layer, x, dout):
    y = layer.forward(x, True)
    dx = layer.backward(dout)
    return y, dx, layer.grads["W"].copy(), layer.grads["b"].copy()


@pytest.mark.parametrize("budget", [1, "two-examples"])
def test_conv_chunking_does_not_change_the_answer(budget, monkeypatch, fast_path):
    """With COLUMN_BUDGET_BYTES tiny the readable body does the batch in chunks; the result
    is the same as the whole batch at once, done by the readable body (numpy) or by the
    batch-parallel fast path (numba), which slices the batch its own way.

    Bitwise the same for integer-valued data (every sum is exact in any order, so a chunk
    boundary bug cannot hide); for random data the same to rounding (dW adds the chunks'
    products in another order, and BLAS may block a narrower product differently).
    """
    rng = np.random.default_rng(5)
    N, C, F, H = 5, 4, 6, 9
    layer = Conv2D(C, F, 3, stride=2, padding=1, groups=2, rng=0, dtype=np.float64)
    OH = 5
    per_example = (C * 9) * OH * OH * 8          # forward's im2col bytes for one example
    limit = 1 if budget == 1 else 2 * per_example + 7

    layer.params["W"] = rng.integers(-3, 4, layer.params["W"].shape).astype(np.float64)
    layer.params["b"] = rng.integers(-3, 4, F).astype(np.float64)
    x_int = rng.integers(-4, 5, (N, C, H, H)).astype(np.float64)
    d_int = rng.integers(-4, 5, (N, F, OH, OH)).astype(np.float64)
    x_rand = rng.standard_normal((N, C, H, H))
    d_rand = rng.standard_normal((N, F, OH, OH))

    whole_int, whole_rand = _conv_run(layer, x_int, d_int), _conv_run(layer, x_rand, d_rand)

    seen = []
    real_im2col = conv.im2col

    def spy(x, *args):
        seen.append(x.shape[0])
        return real_im2col(x, *args)

    monkeypatch.setattr(conv, "COLUMN_BUDGET_BYTES", limit)
    monkeypatch.setattr(conv, "conv_forward", functools.partial(conv.conv_forward, im2col=spy))
    monkeypatch.setattr(conv, "conv_backward", functools.partial(conv.conv_backward, im2col=spy))
    with dispatch.settings(fast=False):  # the chunks are the readable body's
        chunked_int = _conv_run(layer, x_int, d_int)
    expected = [1] * 5 if budget == 1 else [2, 2, 1]
    assert seen == expected + [1] * 5, f"chunks of the batch: {seen}"   # backward: 2x bytes
    with dispatch.settings(fast=False):
        chunked_rand = _conv_run(layer, x_rand, d_rand)

    for a, b in zip(whole_int, chunked_int, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(whole_rand, chunked_rand, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(a).max())


def test_batch_chunks():
    """Slices cover range(n) in order, each within the budget and at least one example."""
    assert conv.batch_chunks(5, 10, budget=25) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert conv.batch_chunks(3, 100, budget=1) == [slice(0, 1), slice(1, 2), slice(2, 3)]
    assert conv.batch_chunks(4, 1, budget=10**9) == [slice(0, 4)]
    assert conv.batch_chunks(0, 10) == []


# ----------------------------------------------------------------------------- errors

def test_conv_channels_not_divisible_by_groups():
    with pytest.raises(ValueError, match="not divisible by groups=2"):
        Conv2D(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="not divisible by groups=4"):
        Conv2D(8, 6, 3, groups=4)


def test_conv_wrong_channel_count():
    layer = Conv2D(3, 4, 3)
    with pytest.raises(ValueError, match="expects 3 channels, got 4"):
        layer.forward(np.zeros((1, 4, 5, 5), np.float32))
    with pytest.raises(ValueError, match="expects 3 channels"):
        layer.output_shape((1, 5, 5))


def test_linear_wrong_input_shape():
    with pytest.raises(ValueError, match=r"expects \(12,\)"):
        Linear(12, 3).output_shape((11,))


def test_bad_configs():
    with pytest.raises(ValueError, match="convention"):
        LocalResponseNorm(convention="caffe")
    for p in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="p must be in"):
            Dropout(p)
    with pytest.raises(ValueError, match="mode"):
        Dropout(0.5, mode="scaled")
    with pytest.raises(ValueError, match="do not match logits"):
        SoftmaxCrossEntropy().forward(np.zeros((3, 4)), np.array([0, 1]))
    with pytest.raises(ValueError, match="do not match logits"):
        SoftmaxCrossEntropy().forward(np.zeros((2, 4)), np.array([[0, 1]]))


# ---------------------------------------------------------------------------- dropout

def test_dropout_inverted_keeps_the_mean():
    """Inverted: train E[y] = x (kept units scaled by 1/(1-p)), about p dropped; test y = x."""
    layer = Dropout(0.5, rng=0)
    x = np.ones((200, 1000), np.float32)
    y = layer.forward(x, True)
    kept = y != 0
    assert abs(kept.mean() - 0.5) < 0.005                 # 200k draws: sd 0.0011
    np.testing.assert_array_equal(y[kept], 2.0)
    assert abs(y.mean() - 1.0) < 0.01
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), y)   # the same mask
    np.testing.assert_array_equal(layer.forward(x, False), x)
    np.testing.assert_array_equal(layer.backward(x), x)

    layer = Dropout(0.2, rng=1)
    y = layer.forward(x, True)
    assert abs((y != 0).mean() - 0.8) < 0.005 and abs(y.mean() - 1.0) < 0.01
    np.testing.assert_allclose(y[y != 0], 1.25)


def test_dropout_paper_scales_at_test():
    """Paper (§4.2): train y = x * m (E = (1-p) x); test y = (1-p) x: the same expectation."""
    layer = Dropout(0.5, mode="paper", rng=0)
    x = np.full((200, 1000), 3.0)
    y = layer.forward(x, True)
    np.testing.assert_array_equal(np.unique(y), [0.0, 3.0])
    assert abs(y.mean() - 1.5) < 0.02
    y_test = layer.forward(x, False)
    np.testing.assert_array_equal(y_test, 1.5)
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), 0.5)


def test_dropout_masks_change_and_are_seeded():
    """A new mask every training step; the same sequence for the same seed; p = 0 is identity."""
    x = np.ones((4, 100))
    a, b = Dropout(0.5, rng=3), Dropout(0.5, rng=3)
    first = a.forward(x, True)
    assert not np.array_equal(first, a.forward(x, True))
    np.testing.assert_array_equal(first, b.forward(x, True))
    np.testing.assert_array_equal(Dropout(0.0).forward(x, True), x)


def test_dropout_fixed_mask():
    layer = Dropout(0.5)
    mask = np.array([[1, 0, 1, 0]], bool)
    layer.fixed_mask = mask
    for _ in range(2):
        np.testing.assert_array_equal(layer.forward(np.ones((1, 4)), True), [[2, 0, 2, 0]])


# -------------------------------------------------------------- softmax cross-entropy

def test_cross_entropy_equals_minus_log_p():
    """L = mean_n -log p[n, y_n], with p = softmax(z); dz = (p - onehot) / N."""
    rng = np.random.default_rng(6)
    z = rng.standard_normal((4, 5))
    y = np.array([0, 4, 2, 2])
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    loss = SoftmaxCrossEntropy()
    np.testing.assert_allclose(loss(z, y), -np.log(p[np.arange(4), y]).mean(), rtol=1e-14)
    onehot = np.eye(5)[y]
    np.testing.assert_allclose(loss.backward(), (p - onehot) / 4, rtol=1e-12, atol=1e-16)
    np.testing.assert_allclose(softmax(z), p, rtol=1e-14)
    np.testing.assert_allclose(log_softmax(z), np.log(p), rtol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_cross_entropy_huge_logits(dtype):
    """Logits of 1e4 (exp would overflow) give finite, exact answers via log-sum-exp."""
    z = np.array([[1e4, 0.0, -1e4], [1e4, 1e4, 0.0], [-1e4, -1e4, -1e4]], dtype)
    y = np.array([1, 0, 2])
    loss = SoftmaxCrossEntropy()
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        value = loss.forward(z, y)
        dz = loss.backward()
    assert value.dtype == dtype and dz.dtype == dtype
    # -log p: row 0: 1e4 (the label is 1e4 below the max), row 1: log 2, row 2: log 3.
    expected = (1e4 + np.log(2) + np.log(3)) / 3
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    p = np.array([[1, 0, 0], [0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_allclose(dz, (p - np.eye(3)[y]) / 3, atol=1e-7)
    assert np.all(np.isfinite(dz))
    np.testing.assert_allclose(dz.sum(axis=1), 0, atol=1e-7)


def test_cross_entropy_confident_and_right_is_zero():
    loss = SoftmaxCrossEntropy()
    assert loss.forward(np.array([[1e4, 0.0]]), np.array([0])) == 0.0
    np.testing.assert_array_equal(loss.backward(), [[0.0, 0.0]])


@pytest.mark.parametrize("bad", [-1, 5])
def test_cross_entropy_rejects_labels_outside_the_classes(bad):
    """A label of -1 would silently score the last class; 5 of 5 classes is past the end."""
    z = np.zeros((3, 5))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 5\)"):
        SoftmaxCrossEntropy().forward(z, np.array([0, bad, 1]))
