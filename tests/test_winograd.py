"""Winograd F(2x2, 3x3), F(3x3, 3x3), F(5x5, 3x3), F(2x2, 5x5) and F(3x3, 5x5) (tinyalex/
kernels/winograd/readable.py; the Numba twins of all but F(2x2, 5x5) in kernels/winograd/,
one module per algorithm, run by batch.py) compute the same convolution as Conv2D's
readable im2col body.

- The matrices are Winograd's: in one dimension A^T [(G g) * (B^T d)] is the correlation
  of g and d, to 1e-14 in float64 (rounding only).
- The readable Winograd equals im2col in float64 to 1e-13 (rel_error): both are exact
  algebra, they differ only in rounding. Odd and even sizes (the last tile hangs over the
  edge), non-square maps, 1x1 maps, groups; 3x3 and 5x5.
- Each Numba transform equals its readable twin: 1e-14 in float64; in float32 a few ulps
  (1e-6), as the two round their sums in another order. The 3x3-tile and 7x7-patch
  ones work channels-last, (K, G, tiles, C/G) arrays: they are compared through the transpose.
- The fast Conv2D (Numba transforms + BLAS products) equals the readable im2col layer: for
  3x3 (F(3x3, 3x3), F(5x5, 3x3) on 13x13) within 1e-5 in float32 (its entries, up to 4 in A^T and 1/6 in G,
  round more than im2col) and 1e-13 in float64; for 5x5 (F(3x3, 5x5)) in float32 within
  2e-5, since its entries (up to 12 in B^T, 1/120 in G) round more.
- The float32 error against float64 im2col at the nets' sizes (FLOAT32_ERROR): F(3x3, 5x5)
  at conv2's (48 channels a group, 13x13 and 27x27 maps): forward and dx within 1e-5, dW
  within 4e-5 (float32 im2col's: 4e-7); at conv4's (192 channels a group) F(3x3, 3x3) on
  6x6 all three within 1e-5, F(5x5, 3x3) on 13x13 forward and dx within 3e-5, dW 1e-5.
- The backward is a true gradient: central differences in float64, tolerance 1e-6.
- TINYALEX_NO_WINOGRAD=1 (dispatch.settings(winograd=False)) and float64 take the im2col
  fast path instead.
"""

from __future__ import annotations

import numpy as np
import pytest

from tinyalex.gradcheck import numerical_gradient, rel_error
from tinyalex.kernels import conv_few_taps, dispatch
from tinyalex.kernels.tasks import CONV_MAX_TASKS
from tinyalex.kernels.winograd import batch as kwino
from tinyalex.kernels.winograd import readable as winograd
from tinyalex.layers import Conv2D

SHAPES = {
    #              (N, C, H, W), F, groups
    "6x6":        ((3, 4, 6, 6), 6, 1),
    "13x13-g2":   ((2, 6, 13, 13), 8, 2),
    "5x7":        ((2, 2, 5, 7), 4, 2),
    "1x1":        ((2, 3, 1, 1), 2, 1),
    "many-images": ((37, 4, 6, 5), 4, 2),
}
TOL = {3: {np.float32: 1e-5, np.float64: 1e-13}, 5: {np.float32: 2e-5, np.float64: 1e-13}}
SIZES = [3, 5]


def _case(name, dtype, seed=0, r=3):
    shape, F, groups = SHAPES[name]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    W = rng.standard_normal((F, shape[1] // groups, r, r)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    dout = rng.standard_normal((shape[0], F) + shape[2:]).astype(dtype)
    return x, W, b, dout, groups


def _im2col_layer(x, W, b, groups, monkeypatch):
    """Conv2D's readable body (the fast variants off for the rest of the test) with these
    weights."""
    monkeypatch.setattr(dispatch, "SETTINGS", dispatch.SETTINGS._replace(fast=False))
    r = W.shape[2]
    layer = Conv2D(x.shape[1], W.shape[0], r, padding=r // 2, groups=groups, dtype=x.dtype)
    layer.params["W"][...] = W
    layer.params["b"][...] = b
    return layer


@pytest.mark.parametrize("alg", [winograd.F2_3, winograd.F3_3, winograd.F5_3, winograd.F2_5,
                                 winograd.F3_5],
                         ids=["2x2,3x3", "3x3,3x3", "5x5,3x3", "2x2,5x5", "3x3,5x5"])
def test_matrices_compute_a_correlation(alg):
    """y_i = sum_k g_k d_(i+k), i < m, from one a-long d and one r-long g."""
    rng = np.random.default_rng(0)
    assert alg.a == alg.m + alg.r - 1 and alg.B_T.shape == (alg.a, alg.a)
    for _ in range(20):
        d, g = rng.standard_normal(alg.a), rng.standard_normal(alg.r)
        y = alg.A_T @ ((alg.G @ g) * (alg.B_T @ d))
        assert rel_error(y, [g @ d[i:i + alg.r] for i in range(alg.m)]) < 1e-14
    assert alg.pad == alg.r // 2
    assert winograd.algorithm(3) is winograd.F2_3 and winograd.algorithm(5) is winograd.F2_5


def test_fewer_multiplications_count_whole_tiles():
    """r^2 per output against a^2 per m x m tile, a tile over the edge costing a whole one."""
    assert winograd.F2_3.fewer_multiplications(6, 6) == 2.25
    assert winograd.F3_3.fewer_multiplications(6, 6) == pytest.approx(81 / 25)
    assert winograd.F3_3.fewer_multiplications(13, 13) == pytest.approx(169 * 9 / (25 * 25))
    assert winograd.F2_5.fewer_multiplications(28, 28) == pytest.approx(100 / 36)
    assert winograd.F2_5.fewer_multiplications(13, 13) == pytest.approx(169 * 25 / (49 * 36))
    assert winograd.F3_5.fewer_multiplications(27, 27) == pytest.approx(225 / 49)
    assert winograd.F3_5.fewer_multiplications(13, 13) == pytest.approx(169 * 25 / (25 * 49))
    assert winograd.F5_3.fewer_multiplications(13, 13) == pytest.approx(169 * 9 / (9 * 49))
    assert winograd.F2_3.fewer_multiplications(1, 1) == pytest.approx(9 / 16)


ALGORITHMS = {"2x2,3x3": winograd.F2_3, "3x3,3x3": winograd.F3_3, "5x5,3x3": winograd.F5_3,
              "2x2,5x5": winograd.F2_5, "3x3,5x5": winograd.F3_5}


@pytest.mark.parametrize("alg", list(ALGORITHMS))
@pytest.mark.parametrize("name", list(SHAPES))
def test_readable_winograd_equals_im2col(name, alg, monkeypatch):
    alg = ALGORITHMS[alg]
    x, W, b, dout, groups = _case(name, np.float64, r=alg.r)
    layer = _im2col_layer(x, W, b, groups, monkeypatch)
    y = layer.forward(x)
    dx = layer.backward(dout)
    assert rel_error(winograd.conv_forward(x, W, b, groups, alg=alg), y) < 1e-13
    dW, db, dx_w = winograd.conv_backward(x, W, dout, groups, alg=alg)
    assert rel_error(dx_w, dx) < 1e-13
    assert rel_error(dW, layer.grads["W"]) < 1e-13
    assert rel_error(db, layer.grads["b"]) < 1e-13
    assert winograd.conv_backward(x, W, dout, groups, need_input_grad=False,
                                  alg=alg)[2] is None


@pytest.mark.parametrize("alg", list(ALGORITHMS))
def test_readable_winograd_gradient_is_the_derivative(alg):
    """Central differences of L = sum(out * dout), float64: dW and dx within 1e-6."""
    alg = ALGORITHMS[alg]
    x, W, b, dout, groups = _case("5x7", np.float64, seed=3, r=alg.r)
    dW, _, dx = winograd.conv_backward(x, W, dout, groups, alg=alg)

    def loss():  # numerical_gradient perturbs x and W in place
        return float((winograd.conv_forward(x, W, b, groups, alg=alg) * dout).sum())

    assert rel_error(dx, numerical_gradient(loss, x)) < 1e-6
    assert rel_error(dW, numerical_gradient(loss, W)) < 1e-6


def _to_layout(tf, A, groups):
    """A readable (K, rows, T) frequency array in the layout tf's transforms use:
    channels-last (K, G, T, rows/G) for the 5x5 ones (kernels/winograd5_numba.py)."""
    if not tf.channels_last:
        return A
    K, rows, T = A.shape
    return np.ascontiguousarray(A.reshape(K, groups, rows // groups, T).transpose(0, 1, 3, 2))


def _from_layout(tf, A):
    """The inverse of _to_layout: (K, G, T, rows/G) -> (K, rows, T)."""
    if not tf.channels_last:
        return A
    K, G, T, per_group = A.shape
    return A.transpose(0, 1, 3, 2).reshape(K, G * per_group, T)


@pytest.mark.parametrize("key", list(kwino.ALGORITHMS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_numba_transforms_equal_the_readable_ones(dtype, key):
    """Each set of transforms (F(2x2, 3x3), per plane; F(3x3, 3x3) and F(3x3, 5x5),
    channels-last), in its own layout, equals the readable one on every shape."""
    tol = 1e-6 if dtype == np.float32 else 1e-14
    tf = kwino.ALGORITHMS[key]
    alg = tf.alg
    assert (alg.m, alg.r) == key
    assert tf.channels_last == (key != (2, 3))
    for name in SHAPES:
        x, W, _, dout, groups = _case(name, dtype, seed=1, r=alg.r)
        N, C, H, Wd = x.shape
        F = W.shape[0]
        T = N * np.prod(winograd.tiles(H, Wd, alg.m))
        assert tf.K == alg.a ** 2
        assert rel_error(tf.filter(W), winograd.filter_transform(W, alg)) < tol, name
        V = kwino._Frequencies(tf, C, T, groups, dtype).of(T)
        tf.input(x, V)
        assert rel_error(_from_layout(tf, V), winograd.input_transform(x, alg)) < tol, name
        Z = kwino._Frequencies(tf, F, T, groups, dtype).of(T)
        tf.output_grad(dout, Z)
        assert rel_error(_from_layout(tf, Z),
                         winograd.output_gradient_transform(dout, alg)) < tol, name
        M = np.random.default_rng(2).standard_normal((tf.K, F, T)).astype(dtype)
        out = np.empty_like(dout)
        tf.output(_to_layout(tf, M, groups), out, np.zeros(F, dtype))
        assert rel_error(out, winograd.output_transform(M, dout.shape, alg)) < tol, name
        dV = np.random.default_rng(3).standard_normal((tf.K, C, T)).astype(dtype)
        dx = np.empty_like(x)
        tf.input_grad(_to_layout(tf, dV, groups), dx)
        assert rel_error(dx, winograd.input_gradient_transform(dV, x.shape, alg)) < tol, name
        dU = np.random.default_rng(4).standard_normal((tf.K, F, W.shape[1])).astype(dtype)
        assert rel_error(tf.filter_grad(dU, dtype),
                         winograd.filter_gradient(dU, dtype, alg)) < tol, name


def test_same_size_convolutions_take_the_fewest_multiplications():
    """A same-size 3x3 layer runs F(3x3, 3x3) or F(5x5, 3x3), whichever does fewer
    multiplications on its map (F(3x3, 3x3) on the small net's 6x6, F(5x5, 3x3) on the
    paper net's 13x13); a 5x5 one F(3x3, 5x5); the paper net's conv1 (space-to-depth)
    keeps F(2x2, 3x3)'s per-plane transforms."""
    from tinyalex.kernels import space_to_depth_numba
    for H, W, alg3 in [(1, 1, winograd.F3_3), (6, 6, winograd.F3_3), (6, 13, winograd.F3_3),
                       (13, 13, winograd.F5_3), (27, 27, winograd.F5_3)]:
        x = np.zeros((2, 4, H, W), np.float32)
        assert kwino.same_size(x, np.zeros((4, 4, 3, 3), np.float32)).tf.alg is alg3
        assert kwino.same_size(x, np.zeros((4, 4, 5, 5), np.float32)).tf.alg is winograd.F3_5
        fewest = max(winograd.F3_3.fewer_multiplications(H, W),
                     winograd.F5_3.fewer_multiplications(H, W))
        assert alg3.fewer_multiplications(H, W) == fewest
    plan = space_to_depth_numba.plan(np.zeros((2, 3, 227, 227), np.float32),
                                     np.zeros((96, 3, 11, 11), np.float32), 4, 0)
    assert plan.tf.alg is winograd.F2_3 and not plan.tf.channels_last


def test_planes_are_not_4k_apart():
    """kernels/winograd/batch._planes: (K, rows, T), each plane contiguous, planes 64 bytes
    past a multiple of 4 KiB apart (so the K planes a transform touches fall into different
    L1 sets), whatever the size."""
    for K, rows, T, dtype in [(16, 256, 512, np.float32), (36, 96, 490, np.float32),
                              (36, 3, 7, np.float64), (16, 1024, 1024, np.float32)]:
        V = kwino._planes(K, rows, T, dtype)
        assert V.shape == (K, rows, T) and V.dtype == dtype
        assert all(V[k].flags.c_contiguous for k in range(K))
        assert V.strides[0] % 4096 == 64 and V.strides[0] >= rows * T * V.itemsize


@pytest.mark.parametrize("r", SIZES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(SHAPES))
def test_fast_conv_by_winograd_equals_readable_im2col(name, dtype, r, monkeypatch):
    """The Winograd variant against the readable im2col body; the layers take it for
    float32, and im2col (exact) for float64."""
    x, W, b, dout, groups = _case(name, dtype, seed=2, r=r)
    p = r // 2
    with dispatch.settings(fast=True, winograd=True, batch_parallel_conv=True):
        algorithm = dispatch.conv_algorithm(x.shape, W.shape, 1, p, groups, dtype)
        assert (algorithm == "winograd") == (dtype == np.float32), algorithm
        if dtype == np.float32:
            assert dispatch.conv_forward(x, W, 1, p, groups) is kwino.conv_forward
            assert dispatch.conv_backward(x, W, dout, 1, p, groups) is kwino.conv_backward
    y = kwino.conv_forward(x, W, b, 1, p, groups)
    dW, db, dx = kwino.conv_backward(x, W, dout, 1, p, groups)
    assert kwino.conv_backward(x, W, dout, 1, p, groups, need_input_grad=False)[2] is None
    layer = _im2col_layer(x, W, b, groups, monkeypatch)
    y_ref = layer.forward(x)
    dx_ref = layer.backward(dout)
    for ours, ref, what in [(y, y_ref, "forward"), (dx, dx_ref, "dx"),
                            (dW, layer.grads["W"], "dW"), (db, layer.grads["b"], "db")]:
        assert ours.shape == ref.shape and ours.dtype == ref.dtype == dtype, what
        assert rel_error(ours, ref) < TOL[r][dtype], what


# The nets' layers whose float32 error is bounded: (C, F, groups, r), the map's side, the
# algorithm the fast path takes there, and the bounds for forward and dx, and for dW.
# Measured (forward, dx, dW): F(3x3, 5x5) at conv2's shape (one group: 48 channels in, 64
# kernels) 3.7e-6, 4.0e-6, 9.5e-6 on 13x13 and 4.2e-6, 4.3e-6, 7.5e-6 on 27x27 (the
# readable F(2x2, 5x5), which the fast path ran before, 3.5e-6, 3.9e-6, 1.3e-5 on 13x13);
# at conv4's (384 channels in two groups of 192) F(3x3, 3x3) 3.8e-6, 3.0e-6, 1.5e-6 on 6x6,
# F(5x5, 3x3) 1.1e-5, 9.5e-6, 3.9e-6 on 13x13, where F(2x2, 3x3) gave 4.3e-7, 5.7e-7,
# 7.2e-7; float32 im2col within 1e-6. The price of 4.6x (27x27) fewer multiplications than
# im2col for 5x5, and for 3x3 of 1.44x (6x6: F(3x3, 3x3)) to 1.78x (13x13: F(5x5, 3x3))
# fewer than F(2x2, 3x3).
FLOAT32_ERROR = {
    "5x5 conv2, 13x13": ((48, 64, 1, 5), 13, winograd.F3_5, 1e-5, 4e-5),
    "5x5 conv2, 27x27": ((48, 64, 1, 5), 27, winograd.F3_5, 1e-5, 4e-5),
    "3x3 conv4, 6x6": ((384, 384, 2, 3), 6, winograd.F3_3, 1e-5, 1e-5),
    "3x3 conv4, 13x13": ((384, 384, 2, 3), 13, winograd.F5_3, 3e-5, 1e-5),
}


@pytest.mark.parametrize("name", list(FLOAT32_ERROR))
def test_float32_error_is_bounded(name, monkeypatch):
    """A net's layer, float32 through its Winograd algorithm against float64 im2col:
    forward and dx, and dW, within FLOAT32_ERROR's bounds; more than float32 im2col's (it
    is not im2col's code), which stays within 1e-6."""
    (C, F, groups, r), H, alg, bound, bound_dW = FLOAT32_ERROR[name]
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, C, H, H))
    W = rng.standard_normal((F, C // groups, r, r)) / np.sqrt(C // groups * r * r)
    b, dout = rng.standard_normal(F), rng.standard_normal((4, F, H, H))
    layer = _im2col_layer(x, W, b, groups, monkeypatch)
    y_ref, dx_ref = layer.forward(x), layer.backward(dout)
    dW_ref = layer.grads["W"]
    f32 = [a.astype(np.float32) for a in (x, W, b, dout)]
    assert kwino.same_size(f32[0], f32[1]).tf.alg is alg
    y = kwino.conv_forward(*f32[:3], 1, r // 2, groups)
    dW, _, dx = kwino.conv_backward(f32[0], f32[1], f32[3], 1, r // 2, groups)
    assert rel_error(y, y_ref) < bound and rel_error(dx, dx_ref) < bound
    assert rel_error(dW, dW_ref) < bound_dW
    assert rel_error(y, y_ref) > 1e-6
    im2col = _im2col_layer(f32[0], f32[1], f32[2], groups, monkeypatch)
    assert rel_error(im2col.forward(f32[0]), y_ref) < 1e-6
    assert rel_error(im2col.backward(f32[3]), dx_ref) < 1e-6


@pytest.mark.parametrize("r,H", [(3, 6), (5, 6), (3, 13)])
def test_a_batch_in_halves_gives_each_image_the_same_bits(r, H):
    """What data parallelism (tinyalex/distributed.py) needs of the fast path: two ranks'
    halves of a batch give each image's output and dx bit for bit as the whole batch does
    (a task's products are per image rows, whatever the task count), and dW to rounding
    (the halves' partial sums add in another order: measured 1.1-1.4e-6 for F(3x3, 3x3),
    4.6e-6 for F(3x3, 5x5), float32). 3x3 on 13x13 runs F(5x5, 3x3)."""
    rng = np.random.default_rng(8)
    C, F, groups = 96, 64, 2
    x = rng.standard_normal((8, C, H, H), dtype=np.float32)
    W = (rng.standard_normal((F, C // groups, r, r)) / np.sqrt(C * r * r / 2)).astype(np.float32)
    b = rng.standard_normal(F).astype(np.float32)
    dout = rng.standard_normal((8, F, H, H), dtype=np.float32)
    whole = kwino.conv_forward(x, W, b, 1, r // 2, groups), kwino.conv_backward(
        x, W, dout, 1, r // 2, groups)
    halves = [(kwino.conv_forward(x[h], W, b, 1, r // 2, groups),
               kwino.conv_backward(x[h], W, dout[h], 1, r // 2, groups))
              for h in (slice(0, 4), slice(4, 8))]
    assert np.array_equal(whole[0], np.concatenate([y for y, _ in halves]))
    assert np.array_equal(whole[1][2], np.concatenate([g[2] for _, g in halves]))
    assert rel_error(whole[1][0], halves[0][1][0] + halves[1][1][0]) < 1e-5


def test_no_winograd_switch():
    """TINYALEX_NO_WINOGRAD=1 (winograd=False): the 3x3 and 5x5 convolutions take im2col
    again (other rounding); readable.applies says which convolutions Winograd computes."""
    x, W, b, _, groups = _case("13x13-g2", np.float32, seed=4)
    with dispatch.settings(fast=True, winograd=True, batch_parallel_conv=True):
        forward = dispatch.conv_forward(x, W, 1, 1, groups)
        assert forward is kwino.conv_forward
        wino = forward(x, W, b, 1, 1, groups)
    with dispatch.settings(fast=True, winograd=False, batch_parallel_conv=True):
        forward = dispatch.conv_forward(x, W, 1, 1, groups)
        assert forward is conv_few_taps.conv_forward  # 27 taps a group: im2col's few-taps rung
        im2col = forward(x, W, b, 1, 1, groups)
    assert dispatch.read_settings({"TINYALEX_NO_WINOGRAD": "1"}).winograd is False
    assert rel_error(wino, im2col) < TOL[3][np.float32]
    assert not np.array_equal(wino, im2col)  # a different computation, not the same code
    assert winograd.applies(5, 5, 1, 2) and winograd.applies(3, 3, 1, 1)
    assert not winograd.applies(5, 5, 1, 1) and not winograd.applies(5, 5, 2, 2)
    assert not winograd.applies(11, 11, 1, 5) and not winograd.applies(3, 5, 1, 1)
    assert not winograd.applies(3, 3, 2, 1)


def test_tasks_do_not_depend_on_the_machine():
    """The task slices are a function of the batch and the map size only (so are the dW
    partial sums): every image in exactly one task, an even count where several."""
    for N, tiles in [(128, 9), (128, 49), (1, 9), (37, 9), (5, 1000), (128, 4), (3, 1)]:
        tasks = kwino._winograd_tasks(N, tiles)
        covered = np.concatenate([np.arange(N)[t] for t in tasks])
        assert np.array_equal(covered, np.arange(N))
        assert len(tasks) <= CONV_MAX_TASKS
        assert len(tasks) <= 2 or len(tasks) % 2 == 0
        assert len(tasks) >= min(N, 2)  # two cores have work even on the 6x6 maps


@pytest.mark.parametrize("r,name", [(3, "many-images"), (5, "many-images"), (3, "13x13-g2")])
def test_passes_of_a_task_give_the_same_convolution(r, name, monkeypatch):
    """A task's images in several passes (WINOGRAD_PASS_TILES small): every image in one
    pass, and the result still equals the readable im2col (float64). On the 13x13 maps
    the 3x3 case runs F(5x5, 3x3), on the others F(3x3, 3x3)."""
    H, Wd = SHAPES[name][0][2:]
    tf = kwino.transforms_for(r, H, Wd)
    monkeypatch.setitem(kwino.WINOGRAD_PASS_TILES, tf.name, 9)
    passes = kwino._passes(slice(3, 40), 4, tf)
    assert np.array_equal(np.concatenate([np.arange(50)[p] for p in passes]), np.arange(3, 40))
    assert all(p.stop - p.start == 2 for p in passes[:-1])
    assert kwino._passes(slice(0, 5), 100, tf) == [slice(i, i + 1) for i in range(5)]
    x, W, b, dout, groups = _case(name, np.float64, seed=5, r=r)
    tiles = int(np.prod(winograd.tiles(H, Wd, tf.alg.m)))
    assert len(kwino._passes(slice(0, len(x)), tiles, tf)) >= 2
    y = kwino.conv_forward(x, W, b, 1, r // 2, groups)
    dW, db, dx = kwino.conv_backward(x, W, dout, 1, r // 2, groups)
    layer = _im2col_layer(x, W, b, groups, monkeypatch)
    assert rel_error(y, layer.forward(x)) < 1e-13
    assert rel_error(dx, layer.backward(dout)) < 1e-13
    assert rel_error(dW, layer.grads["W"]) < 1e-13 and rel_error(db, layer.grads["b"]) < 1e-13
