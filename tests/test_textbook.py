"""The benchmark's textbook NumPy layers (tinyalex/checks/textbook.py) compute what tinyalex's
layers compute, so ``python -m tinyalex.bench``'s speed-up over them compares equal work.

Compared in float64 with the Numba fast paths on (the path the benchmark times); the
arithmetic differs only in summation order, hence the 1e-12 relative tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest

from tinyalex.checks import textbook
from tinyalex.gradcheck import rel_error
from tinyalex.layers import (
    Conv2D,
    Dropout,
    Flatten,
    Linear,
    LocalResponseNorm,
    MaxPool2D,
    ReLU,
)

CASES = {
    #                 layer factory,                                         input shape
    "conv1-like": (lambda: Conv2D(3, 8, 11, stride=4, weight_std=0.1, rng=0), (2, 3, 35, 35)),
    "conv2-like": (lambda: Conv2D(8, 12, 5, padding=2, groups=2, weight_std=0.1, rng=0),
                   (2, 8, 9, 9)),
    "conv-s2-p1": (lambda: Conv2D(4, 6, 3, stride=2, padding=1, weight_std=0.1, rng=0),
                   (3, 4, 9, 7)),
    "pool-3/2": (lambda: MaxPool2D(3, 2), (2, 5, 13, 11)),
    "pool-2/2": (lambda: MaxPool2D(2, 2), (2, 3, 8, 8)),
    "lrn-paper": (lambda: LocalResponseNorm(5, alpha=0.1, k=1.0), (2, 9, 4, 5)),
    "lrn-alpha/n-even": (lambda: LocalResponseNorm(4, alpha=0.3, convention="alpha/n"),
                         (2, 6, 3, 3)),
    "relu": (ReLU, (2, 4, 5, 5)),
    "dropout": (lambda: Dropout(0.5, rng=0), (4, 10)),
    "linear": (lambda: Linear(12, 5, weight_std=0.1, rng=0), (3, 12)),
    "flatten": (Flatten, (2, 3, 2, 2)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_textbook_twin_computes_the_same(case):
    factory, shape = CASES[case]
    layer = factory().astype(np.float64)
    twin = textbook.textbook_twin(layer)
    assert twin is not None
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    if isinstance(layer, Dropout):  # the same mask for both
        layer.fixed_mask = rng.random(shape) >= 0.5
    y = layer.forward(x, True)
    y_t = twin.forward(x, True)
    assert y_t.shape == y.shape and y_t.dtype == y.dtype
    assert rel_error(y_t, y) < 1e-12
    dout = rng.standard_normal(y.shape)
    dx = layer.backward(dout)
    dx_t = twin.backward(dout)
    assert dx_t.shape == dx.shape
    assert rel_error(dx_t, dx) < 1e-12
    for name, grad in layer.grads.items():
        assert rel_error(twin.grads[name], grad) < 1e-12, name


def test_textbook_pool_sends_gradient_to_the_first_maximum():
    """Ties (an all-equal plane) go to the first window position, as tinyalex's argmax."""
    layer = MaxPool2D(3, 2)
    twin = textbook.textbook_twin(layer)
    x = np.ones((1, 1, 5, 5))
    y = twin.forward(x)
    dx = twin.backward(np.ones_like(y))
    np.testing.assert_array_equal(dx, layer.backward(np.ones_like(layer.forward(x))))
    expected = np.zeros((5, 5))
    expected[::2, ::2][:2, :2] = 1                         # each window's top-left corner
    np.testing.assert_array_equal(dx[0, 0], expected)


def test_textbook_im2col_col2im_match_tinyalex():
    from tinyalex.layers import conv

    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 10, 9))
    np.testing.assert_array_equal(textbook.im2col(x, 3, 3, 2, 1), conv.im2col(x, 3, 3, 2, 1))
    cols = rng.standard_normal(conv.im2col(x, 3, 3, 2, 1).shape)
    assert rel_error(textbook.col2im(cols, x.shape, 3, 3, 2, 1),
                     conv.col2im(cols, x.shape, 3, 3, 2, 1)) < 1e-14


def test_textbook_conv_skips_dx_where_tinyalex_does():
    """A net's first layer computes no dx (need_input_grad False): its textbook twin does
    the same work, so the benchmark's speed-up does not count a col2im only one side ran."""
    layer = Conv2D(3, 4, 5, stride=2, weight_std=0.1, rng=0).astype(np.float64)
    layer.need_input_grad = False
    twin = textbook.textbook_twin(layer)
    x = np.random.default_rng(0).standard_normal((2, 3, 13, 13))
    dout = np.random.default_rng(1).standard_normal(layer.forward(x, True).shape)
    twin.forward(x, True)
    assert layer.backward(dout) is None and twin.backward(dout) is None
    assert rel_error(twin.grads["W"], layer.grads["W"]) < 1e-12
