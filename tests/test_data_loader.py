"""Tests for tinyalex/data/loader.py: background batches that are reproducible and resumable.

The promise under test: batch k of epoch e depends only on (seed, epoch, k), never on
thread timing or on where a run started, so a resumed run is bit-identical to an
uninterrupted one; and the thread never outlives its use (no hang, no leak).
"""

import threading
import time

import numpy as np
import pytest

from tinyalex.data.augment import Augmenter
from tinyalex.data.cache import open_prepared, write_prepared
from tinyalex.data.loader import (
    BatchLoader,
    batch_rng,
    eval_loader,
    measure_throughput,
    order_rng,
    train_loader,
)

N, S = 53, 12  # 53 samples: with batches of 8 there is a partial last batch of 5


@pytest.fixture(scope="module")
def data():
    """Small random uint8 images; label i for sample i so batches show which samples."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N, S, S, 3), dtype=np.uint8)
    return images, np.arange(N, dtype=np.int32)


@pytest.fixture(scope="module")
def augmenter(data):
    images, _ = data
    return Augmenter(images.mean(axis=0), np.array([300.0, 30.0, 3.0]), np.eye(3), crop=10)


def collect(iterator):
    return [(x.copy(), y.copy()) for x, y in iterator]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(xa, xb)


def threads_named_loader():
    return [t for t in threading.enumerate() if t.name.startswith("tinyalex-loader")]


def wait_no_loader_threads(timeout=3.0):
    deadline = time.monotonic() + timeout
    while threads_named_loader() and time.monotonic() < deadline:
        time.sleep(0.01)
    return not threads_named_loader()


def test_len_counts_full_or_partial_batches(data, augmenter):
    """len() = batches per epoch: 53 // 8 = 6 when dropping the last partial batch,
    ceil(53 / 8) = 7 when keeping it."""
    images, labels = data
    assert len(BatchLoader(images, labels, augmenter.train, batch_size=8)) == 6
    assert len(BatchLoader(images, labels, augmenter.train, batch_size=8,
                           drop_last=False)) == 7


def test_batches_have_the_training_shapes_and_types(data, augmenter):
    """x is float32 (B, 3, crop, crop), y int32 (B,), and y belongs to x's images."""
    images, labels = data
    loader = BatchLoader(images, labels, augmenter.center, batch_size=8, shuffle=True)
    x, y = next(iter(loader))
    assert x.shape == (8, 3, 10, 10) and x.dtype == np.float32
    assert y.shape == (8,) and y.dtype == np.int32
    np.testing.assert_array_equal(x, augmenter.center(images[y]))


def test_each_epoch_covers_every_sample_once_in_a_new_order(data, augmenter):
    """Shuffling: within an epoch no sample repeats (all 53 seen when the last batch is
    kept); the order changes from epoch to epoch and from seed to seed, but the same
    (seed, epoch) always gives the same order."""
    images, labels = data
    loader = BatchLoader(images, labels, augmenter.center, batch_size=8, drop_last=False)
    seen = np.concatenate([y for _, y in loader.iter_epoch(0)])
    assert sorted(seen.tolist()) == list(range(N))
    dropped = BatchLoader(images, labels, augmenter.center, batch_size=8)
    seen = np.concatenate([y for _, y in dropped.iter_epoch(0)])
    assert len(seen) == 48 and len(set(seen.tolist())) == 48
    assert not np.array_equal(loader.order(0), loader.order(1))
    np.testing.assert_array_equal(loader.order(3), loader.order(3))
    other = BatchLoader(images, labels, augmenter.center, batch_size=8, seed=1)
    assert not np.array_equal(loader.order(0), other.order(0))
    np.testing.assert_array_equal(loader.order(2), order_rng(0, 2).permutation(N))


def test_batches_are_determined_by_seed_epoch_and_index(data, augmenter):
    """Two loaders with the same seed give bit-identical augmented batches, even with
    different prefetch depths and a consumer that dawdles at random (thread timing must
    not matter); each batch equals make_batch(epoch, k), which uses batch_rng(seed,
    epoch, k) for its randomness."""
    images, labels = data
    a = BatchLoader(images, labels, augmenter.train, batch_size=8, seed=5, prefetch=1)
    b = BatchLoader(images, labels, augmenter.train, batch_size=8, seed=5, prefetch=4)
    first = collect(a.iter_epoch(2))
    slow = []
    pause = np.random.default_rng(1)
    for x, y in b.iter_epoch(2):
        time.sleep(float(pause.uniform(0, 0.01)))
        slow.append((x.copy(), y.copy()))
    assert_same_batches(first, slow)
    for k, (x, y) in enumerate(first):
        idx = a.batch_indices(2, k)
        np.testing.assert_array_equal(y, labels[idx])
        np.testing.assert_array_equal(x, augmenter.train(images[idx], batch_rng(5, 2, k)))
    # a different seed changes the augmentation
    c = BatchLoader(images, labels, augmenter.train, batch_size=8, seed=6)
    assert not np.array_equal(collect(c.iter_epoch(2))[0][0], first[0][0])


def test_resume_at_batch_k_is_bit_exact(data, augmenter):
    """A run restarted at batch k of epoch e (as from a checkpoint) sees exactly the
    batches k, k+1, ... of the uninterrupted run: through iter_epoch(e, k), through the
    constructor's (epoch, start_batch), and through set_epoch."""
    images, labels = data
    make = dict(augment_fn=augmenter.train, batch_size=8, seed=11)
    full = collect(BatchLoader(images, labels, **make).iter_epoch(1))
    for k in (0, 1, 4, 5, 6):
        resumed = collect(BatchLoader(images, labels, **make).iter_epoch(1, start_batch=k))
        assert_same_batches(full[k:], resumed)
    assert_same_batches(full[3:], collect(BatchLoader(images, labels, epoch=1, start_batch=3,
                                                      **make)))
    loader = BatchLoader(images, labels, **make)
    loader.set_epoch(1, start_batch=2)
    assert_same_batches(full[2:], collect(loader))
    # the iterator reports the position to save in a checkpoint
    it = BatchLoader(images, labels, **make).iter_epoch(1, start_batch=2)
    assert len(it) == 4
    next(it)
    assert it.batch_index == 3 and len(it) == 3
    it.close()


def test_eval_loader_keeps_every_sample_in_order_with_centre_crops(data, augmenter, tmp_path):
    """Evaluation from a Prepared folder: no shuffling, the last partial batch kept,
    every validation sample exactly once, each the centre crop (no flip, no colour);
    ten_crop=True gives (10, B, 3, c, c) batches."""
    images, labels = data
    path = write_prepared(tmp_path / "prep", images[:40], labels[:40] % 4,
                          images[40:], labels[40:] % 4, meta={"classes": list("abcd")})
    prep = open_prepared(path)
    aug = Augmenter.from_prepared(prep, crop=10)
    loader = eval_loader(prep, aug, batch_size=5)
    assert len(loader) == 3                      # 13 val samples: 5 + 5 + 3
    batches = collect(loader)
    assert [len(y) for _, y in batches] == [5, 5, 3]
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), prep.val_labels)
    np.testing.assert_array_equal(np.concatenate([x for x, _ in batches]),
                                  aug.center(prep.val_images))
    ten = collect(eval_loader(prep, aug, batch_size=5, ten_crop=True))
    assert ten[0][0].shape == (10, 5, 3, 10, 10) and ten[-1][0].shape == (10, 3, 3, 10, 10)
    # the training loader of the same folder: shuffled, full batches, crops of 10
    tr = train_loader(prep, batch_size=8, crop=10)
    assert len(tr) == 5
    x, y = next(iter(tr))
    assert x.shape == (8, 3, 10, 10) and set(y.tolist()) <= {0, 1, 2, 3}


def test_worker_exception_is_raised_in_the_consumer(data):
    """An error while building batch 2 in the thread reaches the training loop as the
    same exception, after batches 0 and 1, and the thread ends."""
    images, labels = data

    def failing(imgs, rng):
        if failing.calls == 2:
            raise ValueError("bad image in batch 2")
        failing.calls += 1
        return imgs.astype(np.float32)

    failing.calls = 0
    loader = BatchLoader(images, labels, failing, batch_size=8, shuffle=False)
    got = []
    with pytest.raises(ValueError, match="bad image in batch 2"):
        for _, y in loader:
            got.append(y)
    assert len(got) == 2
    assert wait_no_loader_threads()


def test_breaking_early_stops_the_thread_without_hanging(data):
    """A consumer that leaves after one batch (break) while the worker is blocked on a
    full prefetch queue: the loop ends at once and the thread goes away; close() and a
    with-block do the same, even before any batch was taken."""
    images, labels = data

    def slowish(imgs, rng):
        time.sleep(0.01)
        return imgs.astype(np.float32)

    loader = BatchLoader(images, labels, slowish, batch_size=2, prefetch=2)
    t0 = time.monotonic()
    for _ in loader:
        time.sleep(0.1)      # let the worker fill the queue and block
        break
    assert wait_no_loader_threads()
    with loader.iter_epoch(0) as it:
        time.sleep(0.1)      # never consumed: the worker is blocked on put
    assert not it._thread.is_alive()
    it = loader.iter_epoch(1)
    next(it)
    it.close()
    assert not it._thread.is_alive()
    with pytest.raises(StopIteration):
        next(it)
    assert time.monotonic() - t0 < 3.0


def test_prefetch_is_bounded(data):
    """The worker runs ahead by at most `prefetch` ready batches (plus the one it is
    building), so memory stays bounded however slow the training step is."""
    images, labels = data
    calls = []

    def counting(imgs, rng):
        calls.append(1)
        return imgs.astype(np.float32)

    loader = BatchLoader(images, labels, counting, batch_size=2, prefetch=2)
    with loader.iter_epoch(0) as it:
        next(it)
        time.sleep(0.3)
        assert len(calls) <= 1 + 2 + 1


def test_measure_throughput_reports_images_per_second(data, augmenter):
    """measure_throughput returns a positive img/s figure (the benchmark compares it
    with the training step's img/s)."""
    images, labels = data
    loader = BatchLoader(images, labels, augmenter.train, batch_size=8)
    rate = measure_throughput(loader, n_batches=3)
    assert rate > 0
    assert wait_no_loader_threads()


def test_bad_arguments_are_refused(data, augmenter):
    """Mismatched lengths, empty batches and a start past the end are errors."""
    images, labels = data
    with pytest.raises(ValueError):
        BatchLoader(images, labels[:-1], augmenter.train)
    with pytest.raises(ValueError):
        BatchLoader(images, labels, augmenter.train, batch_size=0)
    with pytest.raises(ValueError):
        BatchLoader(images, labels, augmenter.train, batch_size=8).iter_epoch(0, 7)
