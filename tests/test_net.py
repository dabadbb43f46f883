"""The assembled network: the paper's shapes and parameter count, init, names, .npz, and an
end-to-end gradient check of a small net built from every kind of layer."""

import numpy as np
import pytest

from tinyalex.gradcheck import TOLERANCE, numerical_gradient, rel_error
from tinyalex.layers import (
    Conv2D,
    Dropout,
    Flatten,
    Linear,
    LocalResponseNorm,
    MaxPool2D,
    ReLU,
    SoftmaxCrossEntropy,
)
from tinyalex.loop import forward_backward
from tinyalex.net import PAPER_BIAS_ONE, Sequential, alexnet, alexnet_small, build


def test_alexnet_has_the_papers_parameter_count_and_shapes():
    """§3.5: 60,965,224 parameters for 1000 classes; the maps are 55, 27, 13, 13, 6."""
    net = alexnet(1000)
    assert net.num_params() == 60_965_224
    out = {name: shape for name, _, _, shape in net.shapes()}
    assert out["conv1"] == (96, 55, 55)
    assert out["pool1"] == (96, 27, 27)
    assert out["pool2"] == (256, 13, 13)
    assert out["conv5"] == (256, 13, 13)
    assert out["pool5"] == (256, 6, 6)
    assert out["fc8"] == (1000,)
    # neurons per layer as listed in the paper (§3.5): conv1 .. fc8
    neurons = [np.prod(out[n]) for n in ("conv1", "conv2", "conv3", "conv4", "conv5")]
    assert neurons == [290400, 186624, 64896, 64896, 43264]  # 253,440 in the paper's 224 count


def test_alexnet_groups_are_on_conv2_conv4_conv5_only():
    """§3.2: conv2, conv4, conv5 see only their own GPU's half of the maps."""
    net = alexnet(10)
    groups = {n: net[n].groups for n in ("conv1", "conv2", "conv3", "conv4", "conv5")}
    assert groups == {"conv1": 1, "conv2": 2, "conv3": 1, "conv4": 2, "conv5": 2}
    assert net.params["conv2.W"].shape == (256, 48, 5, 5)
    assert net.params["conv4.W"].shape == (384, 192, 3, 3)


def test_paper_init():
    """§5: weights N(0, 0.01^2), biases 1 on conv2/4/5, fc6/7 and 0 on conv1, conv3, fc8."""
    net = alexnet(100, seed=3)
    for name, value in net.params.items():
        layer, kind = name.split(".")
        if kind == "W":
            assert abs(value.std() - 0.01) < 0.001, name
            assert abs(value.mean()) < 0.001, name
        else:
            assert np.all(value == (1.0 if layer in PAPER_BIAS_ONE else 0.0)), name
    assert np.array_equal(alexnet(100, seed=3).params["conv1.W"], net.params["conv1.W"])
    assert not np.array_equal(alexnet(100, seed=4).params["conv1.W"], net.params["conv1.W"])


def test_paper_bias0_init_is_paper_weights_with_zero_biases():
    net = alexnet_small(10, seed=3, init="paper-bias0")
    paper = alexnet_small(10, seed=3, init="paper")
    for name, value in net.params.items():
        if name.endswith(".W"):
            assert np.array_equal(value, paper.params[name]), name
        else:
            assert not value.any(), name


def test_small_variant_shapes():
    """alexnet_small keeps the paper's layers after conv1: 56-px crops give a 256x2x2 pool5."""
    net = alexnet_small(100, input_size=56)
    out = {name: shape for name, _, _, shape in net.shapes()}
    assert out["conv1"] == (96, 28, 28) and out["pool5"] == (256, 2, 2)
    assert net.params["fc6.W"].shape == (4096, 1024)
    assert alexnet_small(100, input_size=64).params["fc6.W"].shape == (4096, 2304)
    with pytest.raises(ValueError):
        alexnet_small(10, input_size=8)
    with pytest.raises(ValueError):
        build("vgg", 10)


def test_params_round_trip_through_npz(tmp_path):
    """The flat named mapping saves to .npz (numpy alone reads it) and loads back exactly."""
    net = alexnet_small(7, seed=1)
    net.save(tmp_path / "w.npz")
    with np.load(tmp_path / "w.npz") as f:
        assert set(f.files) == set(net.params)
    other = alexnet_small(7, seed=2)
    other.load(tmp_path / "w.npz")
    for name, value in net.params.items():
        assert np.array_equal(other.params[name], value), name
    with pytest.raises(KeyError):
        alexnet_small(8).load_params({"nope.W": np.zeros(1)})
    with pytest.raises(ValueError):
        alexnet_small(8).load(tmp_path / "w.npz")  # fc8 has 7 outputs there, 8 here


def test_params_dict_shares_memory_with_layers():
    """Updating net.params[name] in place updates the layer: the optimizer relies on it."""
    net = alexnet_small(5)
    net.params["conv1.W"][...] = 0
    assert np.all(net["conv1"].params["W"] == 0)


def test_wrong_input_shape_is_a_clear_error():
    net = alexnet_small(5)
    with pytest.raises(ValueError, match="expects inputs of shape"):
        net.forward(np.zeros((1, 3, 64, 64), np.float32))


def tiny_net(seed=0):
    """Every kind of layer, small enough for numerical gradients of every parameter."""
    rng = np.random.default_rng(seed)
    layers = [
        ("conv1", Conv2D(3, 4, 3, stride=2, padding=1, weight_std=0.5, rng=rng)),
        ("relu1", ReLU()),
        ("lrn1", LocalResponseNorm(3, alpha=0.5, beta=0.75, k=1.0)),
        ("pool1", MaxPool2D(3, 2)),
        ("conv2", Conv2D(4, 6, 3, padding=1, groups=2, weight_std=0.5, bias=0.1, rng=rng)),
        ("relu2", ReLU()),
        ("flatten", Flatten()),
        ("fc1", Linear(6 * 2 * 2, 8, weight_std=0.3, rng=rng)),
        ("relu3", ReLU()),
        ("drop", Dropout(0.5)),
        ("fc2", Linear(8, 5, weight_std=0.3, rng=rng)),
    ]
    return Sequential(layers, (3, 12, 12)).astype(np.float64)


def test_whole_small_net_gradient_check():
    """End to end: the loss's gradient w.r.t. every parameter and the input, by backprop
    through all layers, equals central differences (float64, TOLERANCE)."""
    net = tiny_net()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 3, 12, 12))
    y = np.array([0, 3, 4])
    net["drop"].fixed_mask = rng.random((3, 8)) >= 0.5
    loss_fn = SoftmaxCrossEntropy()

    def loss():
        return float(loss_fn.forward(net.forward(x), y))

    loss()
    dx = net.backward(loss_fn.backward())
    analytic = {k: v.copy() for k, v in net.grads.items()}
    assert rel_error(dx, numerical_gradient(loss, x)) < TOLERANCE
    for name, value in net.params.items():
        assert rel_error(analytic[name], numerical_gradient(loss, value)) < TOLERANCE, name


def test_train_step_skips_first_input_gradient_but_keeps_params():
    """forward_backward does not compute dL/dx for the image (nothing uses it) and the parameter
    gradients are the same as with it."""
    net = tiny_net()
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((2, 3, 12, 12)), np.array([1, 2])
    net["drop"].fixed_mask = np.ones((2, 8), bool)
    loss_fn = SoftmaxCrossEntropy()
    loss_fn.forward(net.forward(x), y)
    assert net.backward(loss_fn.backward()) is not None
    full = {k: v.copy() for k, v in net.grads.items()}
    forward_backward(net, loss_fn, x, y)
    for name, g in net.grads.items():
        assert np.allclose(g, full[name], rtol=1e-12, atol=1e-14), name


def test_float32_by_default_and_float64_on_request():
    net = alexnet_small(4)
    assert net.dtype == np.float32
    x = np.zeros((1, 3, 56, 56), np.float32)
    assert net.forward(x, train=False).dtype == np.float32
    net.astype(np.float64)
    assert net.forward(x.astype(np.float64), train=False).dtype == np.float64


def test_caffe_lrn_is_caffes_formula():
    """alexnet(lrn_convention="caffe") is bvlc_alexnet's LRN: Caffe's LRNLayer
    (ACROSS_CHANNELS) with its LRNParameter defaults k = 1 and local_size 5, alpha 1e-4,
    beta 0.75 from deploy.prototxt, written out here from Caffe's definition:
    scale_c = k + alpha / n * sum_{c' = c - (n-1)/2}^{c + (n-1)/2} x_{c'}^2 (channels outside
    are zero padding), y_c = x_c * scale_c^(-beta)."""
    net = alexnet(10, lrn_convention="caffe", dtype=np.float64)
    x = np.random.default_rng(0).uniform(0, 40, (2, 96, 3, 3))
    n, alpha, beta, k = 5, 1e-4, 0.75, 1.0
    want = np.empty_like(x)
    for c in range(x.shape[1]):
        lo, hi = max(0, c - (n - 1) // 2), min(x.shape[1] - 1, c + (n - 1) // 2)
        scale = k + alpha / n * (x[:, lo:hi + 1] ** 2).sum(axis=1)
        want[:, c] = x[:, c] * scale ** (-beta)
    for name in ("lrn1", "lrn2"):
        np.testing.assert_allclose(net[name].forward(x, False), want, rtol=1e-13)
    with pytest.raises(ValueError, match="unknown lrn_convention"):
        alexnet(10, lrn_convention="caffee")


def test_caffe_init():
    """Caffe's bvlc_alexnet fillers: biases 0.1 in conv2, conv4, conv5, fc6, fc7, else 0;
    weight std 0.005 in fc6, fc7, 0.01 elsewhere."""
    net = alexnet(1000, init="caffe", lrn_convention="caffe")
    p = net.params
    for name in ("conv1", "conv3", "fc8"):
        assert not p[f"{name}.b"].any()
    for name in ("conv2", "conv4", "conv5", "fc6", "fc7"):
        assert np.all(p[f"{name}.b"] == np.float32(0.1))
    assert abs(p["fc7.W"].std() - 0.005) < 1e-4 and abs(p["conv3.W"].std() - 0.01) < 1e-4
