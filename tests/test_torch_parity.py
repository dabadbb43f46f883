"""PyTorch as the oracle: every layer's forward AND backward against torch's.

Gradient checks prove a backward pass matches its own forward; they cannot tell that the
forward computes the right function (a window off by one, the LRN alpha convention, a
transposed weight). Here each layer is compared with the PyTorch operation of the same
definition, outputs and gradients (dx and every parameter's), through torch.autograd:

- float64 to 1e-10 relative (the largest error against the largest entry), float32 to 1e-5;
- with tinyalex's Numba fast paths on, and with TINYALEX_NO_NUMBA=1.
"""

from __future__ import annotations

import numpy as np
import pytest

from tinyalex.gradcheck import rel_error
from tinyalex.layers import (
    Conv2D,
    Dropout,
    Flatten,
    Linear,
    LocalResponseNorm,
    MaxPool2D,
    ReLU,
    SoftmaxCrossEntropy,
    Tanh,
)

torch = pytest.importorskip("torch", reason="PyTorch (CPU) is the test oracle; "
                                            "pip install torch==2.13.0")
F = torch.nn.functional

PRECISION = {"float64": (np.float64, 1e-10), "float32": (np.float32, 1e-5)}


pytestmark = pytest.mark.usefixtures("fast_path")  # every test twice (tests/conftest.py)


@pytest.fixture(params=list(PRECISION))
def precision(request):
    """(NumPy dtype, relative tolerance)."""
    return PRECISION[request.param]


def assert_close(ours, theirs, dtype, tol, what):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    ours = np.asarray(ours)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} vs torch {theirs.shape}"
    assert ours.dtype == dtype, f"{what}: dtype {ours.dtype}, expected {np.dtype(dtype)}"
    err = rel_error(ours, theirs)
    assert err < tol, f"{what}: relative error {err:.3g} vs torch (tolerance {tol:g})"


def torch_forward_backward(fn, dout, *arrays):
    """fn(*tensors) and the gradients of sum(fn(...) * dout) w.r.t. each array."""
    tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    out.backward(torch.tensor(dout))
    return out, [t.grad for t in tensors]


def check_layer_against(layer, x, fn, params, dtype, tol, seed=0, train=True):
    """Compare layer forward/backward with fn(x_t, *param_tensors) under torch.autograd.

    params: names of layer.params passed to fn after x, in order.
    """
    rng = np.random.default_rng(seed)
    y = layer.forward(x, train)
    dout = rng.standard_normal(y.shape).astype(dtype)
    dx = layer.backward(dout)
    y_t, grads_t = torch_forward_backward(fn, dout, x, *[layer.params[p] for p in params])
    assert_close(y, y_t, dtype, tol, "forward")
    assert_close(dx, grads_t[0], dtype, tol, "dx")
    for name, g_t in zip(params, grads_t[1:], strict=True):
        assert_close(layer.grads[name], g_t, dtype, tol, f"d{name}")


# ------------------------------------------------------------------------------- Conv2D

CONV_CASES = {
    #                  N, C, H,   W,   F,  k, s, p, G
    "groups2-s2-p1":  (2, 4, 9, 9, 6, 3, 2, 1, 2),
    "conv2-like":     (2, 8, 13, 13, 8, 5, 1, 2, 2),   # 5x5 pad 2 groups 2 (AlexNet conv2)
    "non-square":     (2, 3, 7, 10, 4, 3, 2, 2, 1),
    "conv1-alexnet":  (2, 3, 227, 227, 96, 11, 4, 0, 1),  # 11x11 stride 4 -> 96x55x55
}


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv2d(case, precision):
    """Conv2D equals F.conv2d (cross-correlation, W (F, C/G, k, k)) with stride/pad/groups."""
    dtype, tol = precision
    N, C, H, W, Fo, k, s, p, G = CONV_CASES[case]
    rng = np.random.default_rng(0)
    layer = Conv2D(C, Fo, k, stride=s, padding=p, groups=G, weight_std=0.1, rng=1, dtype=dtype)
    layer.params["b"] = rng.standard_normal(Fo).astype(dtype)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    check_layer_against(layer, x, lambda x, w, b: F.conv2d(x, w, b, stride=s, padding=p,
                                                             groups=G),
                        ["W", "b"], dtype, tol)
    if case == "conv1-alexnet":
        assert layer.output_shape((C, H, W)) == (96, 55, 55)


# ---------------------------------------------------------------------------------- LRN

@pytest.mark.parametrize("size", [5, 4, 3])
@pytest.mark.parametrize("convention", ["alpha/n", "paper"])
@pytest.mark.parametrize("alpha,k", [(1e-4, 2.0), (0.1, 1.0)], ids=["paper-constants", "strong"])
def test_lrn(size, convention, alpha, k, precision):
    """LRN: "alpha/n" is torch.nn.LocalResponseNorm; "paper" is it with alpha * n.

    This is the §3.3 convention trap: the paper's k + alpha * sum is PyTorch's (and
    Caffe's) k + (alpha/n) * sum with alpha replaced by alpha * n. Even sizes check the
    asymmetric window (n//2 channels before, (n-1)//2 after, as PyTorch pads).
    """
    dtype, tol = precision
    rng = np.random.default_rng(2)
    beta = 0.75
    layer = LocalResponseNorm(size=size, alpha=alpha, beta=beta, k=k, convention=convention)
    torch_alpha = alpha * size if convention == "paper" else alpha
    oracle = torch.nn.LocalResponseNorm(size, alpha=torch_alpha, beta=beta, k=k)
    x = (2 * rng.standard_normal((2, 7, 4, 5))).astype(dtype)
    check_layer_against(layer, x, oracle, [], dtype, tol)


# ----------------------------------------------------------------------------- MaxPool

@pytest.mark.parametrize("window,stride,shape", [
    pytest.param(3, 2, (2, 3, 13, 11), id="3/2"),
    pytest.param(2, 2, (2, 3, 8, 10), id="2/2"),
    pytest.param(3, 2, (1, 4, 55, 55), id="3/2-pool1"),  # 55 -> 27
])
def test_maxpool(window, stride, shape, precision):
    """MaxPool2D equals F.max_pool2d (no padding, floor mode); inputs without ties."""
    dtype, tol = precision
    rng = np.random.default_rng(3)
    n = int(np.prod(shape))
    x = ((rng.permutation(n) - n / 2) / n).reshape(shape).astype(dtype)
    check_layer_against(MaxPool2D(window, stride), x,
                        lambda x: F.max_pool2d(x, window, stride), [], dtype, tol)


# ------------------------------------------------------------- Linear, Flatten, activations

def test_linear(precision):
    """Linear equals F.linear: the same (out, in) weight layout, y = x W^T + b."""
    dtype, tol = precision
    rng = np.random.default_rng(4)
    layer = Linear(12, 7, weight_std=0.3, rng=5, dtype=dtype)
    layer.params["b"] = rng.standard_normal(7).astype(dtype)
    check_layer_against(layer, rng.standard_normal((5, 12)).astype(dtype), F.linear,
                        ["W", "b"], dtype, tol)


def test_flatten(precision):
    """Flatten equals torch.flatten(x, 1): C, H, W order (what fc6's weights assume)."""
    dtype, tol = precision
    rng = np.random.default_rng(6)
    check_layer_against(Flatten(), rng.standard_normal((2, 3, 4, 5)).astype(dtype),
                        lambda x: torch.flatten(x, 1), [], dtype, tol)


@pytest.mark.parametrize("layer,fn", [(ReLU, F.relu), (Tanh, torch.tanh)], ids=["ReLU", "Tanh"])
def test_activation(layer, fn, precision):
    """ReLU and Tanh equal torch's (ReLU's gradient at exactly 0 is 0 in both)."""
    dtype, tol = precision
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 4, 5)).astype(dtype)
    x[0, 0, :2] = 0.0
    check_layer_against(layer(), x, fn, [], dtype, tol)


# ------------------------------------------------------------------------ cross-entropy

def test_cross_entropy(precision):
    """SoftmaxCrossEntropy equals F.cross_entropy (mean reduction): loss and dz."""
    dtype, tol = precision
    rng = np.random.default_rng(8)
    z = (4 * rng.standard_normal((6, 10))).astype(dtype)
    y = rng.integers(0, 10, 6)
    loss = SoftmaxCrossEntropy()
    value = loss.forward(z, y)
    dz = loss.backward()
    z_t = torch.tensor(z, requires_grad=True)
    value_t = F.cross_entropy(z_t, torch.tensor(y))
    value_t.backward()
    assert_close(value, value_t, dtype, tol, "loss")
    assert_close(dz, z_t.grad, dtype, tol, "dz")


# ------------------------------------------------------------------------------ dropout

@pytest.mark.parametrize("p", [0.5, 0.3])
def test_dropout_same_mask(p, precision):
    """Inverted dropout equals F.dropout given torch's own mask; paper mode is (1-p) times it.

    torch draws the mask; it is read back from which outputs are zero and given to
    tinyalex as ``fixed_mask``. Train: y = x m / (1 - p) (inverted) and x m (paper); test:
    torch's eval is the identity, tinyalex's paper mode multiplies by 1 - p (§4.2).
    """
    dtype, tol = precision
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((8, 50)) + 5).astype(dtype)   # no zeros: the mask is readable
    dout = rng.standard_normal(x.shape).astype(dtype)
    torch.manual_seed(0)
    y_t, (dx_t,) = torch_forward_backward(lambda x: F.dropout(x, p, training=True), dout, x)
    mask = y_t.detach().numpy() != 0
    assert 0 < mask.mean() < 1

    for mode, factor in [("inverted", 1.0), ("paper", 1 - p)]:
        layer = Dropout(p, mode=mode)
        layer.fixed_mask = mask
        assert_close(layer.forward(x, True), factor * y_t.detach().numpy(), dtype, tol,
                     f"{mode} forward")
        assert_close(layer.backward(dout), factor * dx_t.numpy(), dtype, tol, f"{mode} dx")
        y_eval = F.dropout(torch.tensor(x), p, training=False).numpy()
        assert_close(layer.forward(x, False), factor * y_eval, dtype, tol, f"{mode} test")


# ----------------------------------------------------------------- AlexNet front, chained

def test_alexnet_front_chain(precision):
    """conv1 -> ReLU -> LRN -> pool -> conv2 (groups 2) -> ReLU -> LRN -> pool -> fc -> loss.

    The paper's ordering (§3.5) at a small size, chained backward from the loss: an error
    that only shows when layers compose (a layout, a cached array overwritten by the next
    call) would show here. Ties in a pool after ReLU only involve zeros, whose gradient
    ReLU stops either way.
    """
    dtype, tol = precision
    rng = np.random.default_rng(10)
    conv1 = Conv2D(3, 8, 11, stride=4, weight_std=0.1, rng=11, dtype=dtype)
    conv2 = Conv2D(8, 16, 5, padding=2, groups=2, weight_std=0.1, bias=1.0, rng=12,
                   dtype=dtype)
    fc = Linear(16 * 3 * 3, 10, weight_std=0.1, rng=13, dtype=dtype)
    layers = [conv1, ReLU(), LocalResponseNorm(5, alpha=0.1, k=1.0), MaxPool2D(3, 2),
              conv2, ReLU(), LocalResponseNorm(5, alpha=0.1, k=1.0), MaxPool2D(3, 2),
              Flatten(), fc]
    x = rng.standard_normal((2, 3, 67, 67)).astype(dtype)
    labels = rng.integers(0, 10, 2)
    h = x
    for layer in layers:
        h = layer.forward(h, True)
    loss = SoftmaxCrossEntropy()
    value = loss.forward(h, labels)
    d = loss.backward()
    for layer in reversed(layers):
        d = layer.backward(d)

    def lrn(t):
        return torch.nn.LocalResponseNorm(5, alpha=0.1 * 5, beta=0.75, k=1.0)(t)

    tensors = [torch.tensor(a, requires_grad=True) for a in
               (x, conv1.params["W"], conv1.params["b"], conv2.params["W"],
                conv2.params["b"], fc.params["W"], fc.params["b"])]
    x_t, w1, b1, w2, b2, wf, bf = tensors
    h_t = F.max_pool2d(lrn(F.relu(F.conv2d(x_t, w1, b1, stride=4))), 3, 2)
    h_t = F.max_pool2d(lrn(F.relu(F.conv2d(h_t, w2, b2, padding=2, groups=2))), 3, 2)
    value_t = F.cross_entropy(F.linear(torch.flatten(h_t, 1), wf, bf), torch.tensor(labels))
    value_t.backward()
    assert_close(value, value_t, dtype, tol, "loss")
    assert_close(d, x_t.grad, dtype, tol, "dx")
    for name, layer, w_t, b_t in [("conv1", conv1, w1, b1), ("conv2", conv2, w2, b2),
                                  ("fc", fc, wf, bf)]:
        assert_close(layer.grads["W"], w_t.grad, dtype, tol, f"{name} dW")
        assert_close(layer.grads["b"], b_t.grad, dtype, tol, f"{name} db")
