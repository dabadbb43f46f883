"""Tests for tinyalex/data/synthetic.py: the embedded, procedurally drawn dataset.

What matters: the same seed gives the same bytes (a run on another machine trains on the
same data), classes are balanced and named, the result is a valid prepared folder, and
the labels really are in the pictures -- in a way that needs more than a linear map of
raw pixels.
"""

import hashlib

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from tinyalex.data.cache import is_prepared, open_prepared
from tinyalex.data.synthetic import (
    BACKGROUNDS,
    COLOURS,
    MAX_CLASSES,
    SHAPES,
    build_synthetic,
    class_attributes,
    class_name,
    generate,
    shape_distance,
)

SMALL = dict(num_classes=12, size=32, seed=3, train_per_class=5, val_per_class=2)


def folder_hashes(path):
    """sha256 of every file of a prepared folder."""
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(path.iterdir())}


def test_same_seed_gives_the_same_bytes(tmp_path):
    """Two builds with one seed are byte-identical, file by file (the images, labels,
    mean, PCA and meta); another seed gives other images. The hashes are compared with
    a second build, not hard-coded, so the test states the promise, not one output."""
    a = build_synthetic(tmp_path / "a", **SMALL)
    b = build_synthetic(tmp_path / "b", **SMALL)
    assert folder_hashes(a) == folder_hashes(b)
    c = build_synthetic(tmp_path / "c", **{**SMALL, "seed": 4})
    assert folder_hashes(a)["train_images.npy"] != folder_hashes(c)["train_images.npy"]


def test_thread_count_does_not_change_the_bytes():
    """Each class is drawn from its own random stream, so drawing with 1 or 3 threads
    gives exactly the same images."""
    x1, y1 = generate(6, 24, seed=1, per_class=4, workers=1)
    x3, y3 = generate(6, 24, seed=1, per_class=4, workers=3)
    np.testing.assert_array_equal(x1, x3)
    np.testing.assert_array_equal(y1, y3)


def test_val_images_do_not_depend_on_the_train_size():
    """Train and val have separate streams: asking for more training images leaves the
    validation set unchanged (and train is a different draw from val)."""
    xa, _ = generate(4, 24, seed=0, per_class=3, split="val", shuffle=False)
    xb, _ = generate(4, 24, seed=0, per_class=3, split="val", shuffle=False)
    xt, _ = generate(4, 24, seed=0, per_class=3, split="train", shuffle=False)
    np.testing.assert_array_equal(xa, xb)
    assert not np.array_equal(xa, xt)


def test_prepared_folder_is_balanced_and_named(tmp_path):
    """The build is a complete prepared folder: uint8 (N, S, S, 3) images, every class
    exactly train_per_class / val_per_class times (shuffled, not sorted), ids syn000..,
    readable names, kind "synthetic", and mean / PCA of the right shapes."""
    path = build_synthetic(tmp_path / "syn", **SMALL)
    assert is_prepared(path)
    p = open_prepared(path)
    k = SMALL["num_classes"]
    assert p.train_images.shape == (k * 5, 32, 32, 3) and p.train_images.dtype == np.uint8
    assert p.val_images.shape == (k * 2, 32, 32, 3)
    assert np.bincount(p.train_labels, minlength=k).tolist() == [5] * k
    assert np.bincount(p.val_labels, minlength=k).tolist() == [2] * k
    assert not np.all(np.diff(p.train_labels) >= 0)          # shuffled
    assert p.meta["kind"] == "synthetic"
    assert p.classes == [f"syn{i:03d}" for i in range(k)]
    assert p.names[0] == "red circle on horizontal stripes"
    assert p.mean.shape == (32, 32, 3) and p.pca_eigvals.shape == (3,)
    assert np.all(np.diff(p.pca_eigvals) <= 0)                 # descending
    assert p.train_images.std() > 20                           # not blank


def test_class_names_are_distinct_combinations():
    """Class k = shape k % 10, colour (k // 10) % 5, background k // 50: the default 100
    classes are all different, named "<colour> <shape> on <background>", and more than
    MAX_CLASSES is refused."""
    assert MAX_CLASSES == len(SHAPES) * len(COLOURS) * len(BACKGROUNDS) == 200
    names = [class_name(k) for k in range(100)]
    assert len(set(names)) == 100
    assert class_attributes(0) == ("circle", "red", "horizontal stripes")
    assert class_attributes(55) == ("star", "red", "vertical stripes")
    assert len({class_attributes(k) for k in range(MAX_CLASSES)}) == MAX_CLASSES
    with pytest.raises(ValueError):
        class_attributes(MAX_CLASSES)
    with pytest.raises(ValueError):
        generate(MAX_CLASSES + 1, 32, per_class=1)


def test_the_ten_shapes_are_different_masks():
    """Every shape covers a sensible part of its box, and no two shapes have nearly the
    same mask (intersection over union below 0.85), so shape is a real cue."""
    c = (np.arange(101) - 50) / 40.0
    u, v = np.meshgrid(c, c)
    masks = {s: shape_distance(s, u, v) > 0 for s in SHAPES}
    for s, m in masks.items():
        assert 0.1 < m.mean() < 0.6, s
    for i, a in enumerate(SHAPES):
        for b in SHAPES[i + 1:]:
            iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
            assert iou < 0.85, (a, b, iou)


def _ridge_accuracy(f_train, y_train, f_val, y_val, lam, k):
    """Least-squares linear classifier on standardised features: val accuracy."""
    mu, sd = f_train.mean(0), f_train.std(0) + 1e-6
    a = np.c_[(f_train - mu) / sd, np.ones(len(f_train))]
    b = np.c_[(f_val - mu) / sd, np.ones(len(f_val))]
    w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ np.eye(k)[y_train])
    return float(((b @ w).argmax(1) == y_val).mean())


def _random_conv_features(x, filters):
    """One layer of fixed random 5x5 filters, ReLU, 2x2-grid average and global max
    pooling: a crude, untrained convnet."""
    x = x.astype(np.float32) / 255 - 0.5
    r = np.einsum("nhwcij,ijcf->nhwf", sliding_window_view(x, (5, 5), axis=(1, 2)), filters,
                  optimize=True)
    r = np.maximum(r - 0.5, 0)
    n, h, w, f = r.shape
    grid = r[:, :h // 2 * 2, :w // 2 * 2].reshape(n, 2, h // 2, 2, w // 2, f).mean((2, 4))
    return np.c_[grid.reshape(n, -1), r.max((1, 2))]


def test_learnable_but_not_linear_in_pixels():
    """On 20 classes (10 shapes x 2 colours, 32 px, 40 training images each), a linear
    classifier on raw pixels barely beats guessing the colour (it cannot follow a shape
    that moves), while the same linear classifier on untrained random convolution
    features -- translation-tolerant by construction -- does much better: the labels
    are in the images, and extracting them takes what a convnet has."""
    k = 20
    xtr, ytr = generate(k, 32, seed=0, per_class=40, split="train")
    xva, yva = generate(k, 32, seed=0, per_class=20, split="val")
    raw = _ridge_accuracy(xtr.reshape(len(xtr), -1).astype(np.float32), ytr,
                          xva.reshape(len(xva), -1).astype(np.float32), yva, 100.0, k)
    filters = np.random.default_rng(0).normal(size=(5, 5, 3, 64)).astype(np.float32)
    conv = _ridge_accuracy(_random_conv_features(xtr, filters), ytr,
                           _random_conv_features(xva, filters), yva, 10.0, k)
    assert raw < 0.25                     # chance is 0.05; colour alone gives 0.10
    assert conv > 0.3 and conv > raw + 0.15
