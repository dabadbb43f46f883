"""Background batch loading: the CPU prepares the next batches while the net trains (§4.1).

The paper augments "on the CPU while the GPU is training on the previous batch of images";
here a worker thread gathers images from the (memory-mapped) uint8 arrays, augments them
and puts ready float32 batches into a bounded queue (``prefetch`` batches deep). NumPy
releases the GIL inside its array loops, so the thread overlaps with the training step.

Reproducible and resumable, whatever the thread timing:

* the sample order of epoch e is a permutation drawn from a Generator seeded by
  (seed, epoch) (identity when ``shuffle=False``);
* batch k of epoch e holds ``order[k*B:(k+1)*B]`` (sorted, for memmap locality) and its
  augmentation randomness comes from a Generator seeded by (seed, epoch, k).

So a run stopped after batch k-1 and restarted with ``start_batch=k`` sees exactly, bit
for bit, the batches an uninterrupted run would have seen. The checkpoint only needs to
store (seed, epoch, next batch index).

Data parallel (distributed.py): with ``ranks=(r, K)`` the loader of rank r yields only its
rows of every batch (``distributed.batch_part``), read and augmented alone, with the
randomness of the whole batch: the K ranks' pieces put together are the one-process batch.

Usage::

    loader = train_loader(prepared, batch_size=128, seed=0)
    for epoch in range(start_epoch, epochs):
        for x, y in loader.iter_epoch(epoch, start_batch if epoch == start_epoch else 0):
            ...                  # x float32 (B, 3, crop, crop), y int32 (B,)

Leaving a loop early (break, exception) stops the thread: the iterator is closed when it
is garbage collected, on ``close()``, or at the end of a ``with`` block.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

import numpy as np

from .augment import Augmenter

# Keys that keep the two random streams apart (SeedSequence spawn keys).
_ORDER_STREAM, _AUGMENT_STREAM = 0, 1
_DONE = object()


def order_rng(seed: int, epoch: int) -> np.random.Generator:
    """The Generator that draws the sample order of an epoch, seeded by (seed, epoch)."""
    return np.random.default_rng(np.random.SeedSequence(
        int(seed), spawn_key=(_ORDER_STREAM, int(epoch))))


def batch_rng(seed: int, epoch: int, batch_index: int) -> np.random.Generator:
    """The Generator of one batch's augmentation, seeded by (seed, epoch, batch_index)."""
    return np.random.default_rng(np.random.SeedSequence(
        int(seed), spawn_key=(_AUGMENT_STREAM, int(epoch), int(batch_index))))


class BatchLoader:
    """Batches ``(x, y) = (augment_fn(images[idx], rng), labels[idx])`` from a thread.

    images: uint8 (N, S, S, 3), typically a read-only memmap (``Prepared.train_images``).
    labels: int (N,).
    augment_fn(images_uint8, rng) -> array: e.g. ``Augmenter.train``, ``.center`` or
        ``.ten_crop`` (x is then (10, B, 3, c, c)).
    batch_size: B. shuffle: draw a new order each epoch (False: 0..N-1 in order).
    seed, epoch, start_batch: what ``iter(loader)`` plays: epoch ``epoch`` from batch
        ``start_batch`` on. ``iter_epoch(e, k)`` plays any other.
    drop_last: drop the final partial batch (training); False keeps it (evaluation).
    prefetch: how many ready batches the thread may hold ahead of the consumer.
    ranks: (rank, K) of a data-parallel job: yield only this rank's rows of each batch
        (``augment_fn`` is then called with ``rows=(start, stop, B)``). None: all rows.

    ``len(loader)`` is the number of batches in one full epoch.
    """

    def __init__(self, images, labels, augment_fn: Callable, batch_size: int = 128,
                 shuffle: bool = True, seed: int = 0, epoch: int = 0, start_batch: int = 0,
                 drop_last: bool = True, prefetch: int = 2, ranks: tuple | None = None):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1 or prefetch < 1:
            raise ValueError("batch_size and prefetch must be at least 1")
        self.images = images
        self.labels = np.asarray(labels, np.int32)
        self.augment_fn = augment_fn
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)
        self.drop_last = bool(drop_last)
        self.prefetch = int(prefetch)
        self.ranks = None if ranks is None or ranks[1] == 1 else (int(ranks[0]), int(ranks[1]))

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def order(self, epoch: int) -> np.ndarray:
        """The sample order of an epoch: a permutation seeded by (seed, epoch), or 0..N-1."""
        if not self.shuffle:
            return np.arange(self.num_samples)
        return order_rng(self.seed, epoch).permutation(self.num_samples)

    def batch_indices(self, epoch: int, batch_index: int) -> np.ndarray:
        """The sample indices of one batch (sorted: memmap reads go front to back)."""
        order = self.order(epoch)
        b = self.batch_size
        return np.sort(order[batch_index * b:(batch_index + 1) * b])

    def make_batch(self, epoch: int, batch_index: int, indices=None):
        """Build batch ``batch_index`` of ``epoch`` in the calling thread: (x, y)."""
        if indices is None:
            indices = self.batch_indices(epoch, batch_index)
        rng = batch_rng(self.seed, epoch, batch_index)
        if self.ranks is None:
            imgs = np.asarray(self.images[indices])      # gather: reads the memmap
            return self.augment_fn(imgs, rng), self.labels[indices]
        from ..distributed import batch_part

        start, stop = batch_part(len(indices), *self.ranks)
        mine = indices[start:stop]                       # read this rank's images only
        x = self.augment_fn(np.asarray(self.images[mine]), rng,
                            rows=(start, stop, len(indices)))
        return x, self.labels[mine]

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Choose what the next ``iter(loader)`` plays (as PyTorch samplers' set_epoch)."""
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def __iter__(self):
        return self.iter_epoch(self.epoch, self.start_batch)

    def iter_epoch(self, epoch: int, start_batch: int = 0) -> BatchIterator:
        """An iterator over batches start_batch .. len-1 of ``epoch``, built in a thread."""
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch {start_batch} outside 0..{len(self)}")
        return BatchIterator(self, int(epoch), int(start_batch))


def _worker(loader: BatchLoader, epoch: int, start: int, out: queue.Queue,
            stop: threading.Event) -> None:
    """Thread body: build batches in order and put them in ``out`` until done or stopped.

    It holds no reference to the BatchIterator, so dropping the iterator (a ``break``)
    lets it be collected, which sets ``stop``. Errors travel to the consumer as items.
    """

    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    try:
        order = loader.order(epoch)
        b = loader.batch_size
        for k in range(start, len(loader)):
            if stop.is_set():
                return
            idx = np.sort(order[k * b:(k + 1) * b])
            if not put(loader.make_batch(epoch, k, idx)):
                return
        put(_DONE)
    except BaseException as exc:  # noqa: B036 -- handed to the consumer, re-raised there
        put(exc)


class BatchIterator:
    """One pass over an epoch's batches, produced by a background thread.

    ``batch_index`` is the index of the next batch to be returned (what a checkpoint
    saves to resume). ``close()`` stops the thread; so do ``with`` and garbage collection.
    """

    def __init__(self, loader: BatchLoader, epoch: int, start_batch: int):
        self.epoch = epoch
        self.batch_index = start_batch
        self._end = len(loader)
        self._queue: queue.Queue = queue.Queue(maxsize=loader.prefetch)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=_worker, args=(loader, epoch, start_batch, self._queue, self._stop),
            name=f"tinyalex-loader-e{epoch}", daemon=True)
        self._thread.start()

    def __iter__(self):
        return self

    def __len__(self) -> int:
        """Batches left in this pass."""
        return self._end - self.batch_index

    def __next__(self):
        if self._stop.is_set():
            raise StopIteration
        while True:
            try:
                item = self._queue.get(timeout=0.1)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    self.close()
                    raise RuntimeError("loader thread ended without a result") from None
        if item is _DONE:
            self.close()
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        self.batch_index += 1
        return item

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker thread and wait for it (drops any prefetched batches)."""
        self._stop.set()
        while True:  # free a worker blocked on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close(timeout=1.0)
        except Exception:
            pass


# ---------------------------------------------------------------------- from a Prepared
def train_loader(prepared, augmenter: Augmenter | None = None, batch_size: int = 128,
                 seed: int = 0, epoch: int = 0, start_batch: int = 0, prefetch: int = 2,
                 ranks: tuple | None = None, **augment_kwargs) -> BatchLoader:
    """The training loader of a ``Prepared`` set: shuffled, ``augmenter.train``, full
    batches only. ``augmenter`` defaults to ``Augmenter.from_prepared(prepared,
    **augment_kwargs)`` (paper settings: random crop, flip, PCA colour with std 0.1)."""
    if augmenter is None:
        augmenter = Augmenter.from_prepared(prepared, **augment_kwargs)
    return BatchLoader(prepared.train_images, prepared.train_labels, augmenter.train,
                       batch_size=batch_size, shuffle=True, seed=seed, epoch=epoch,
                       start_batch=start_batch, drop_last=True, prefetch=prefetch,
                       ranks=ranks)


def eval_loader(prepared, augmenter: Augmenter | None = None, batch_size: int = 128,
                split: str = "val", ten_crop: bool = False, prefetch: int = 2,
                max_images: int | None = None, ranks: tuple | None = None,
                **augment_kwargs) -> BatchLoader:
    """An evaluation loader: in order, every sample (last batch partial), centre crop, or
    ten crops (x is then (10, B, 3, c, c)). split: "val" or "train". max_images: the first
    N images only. ranks: (rank, K), this rank's rows of each batch (see BatchLoader)."""
    if split not in ("val", "train"):
        raise ValueError(f"split must be 'val' or 'train', not {split!r}")
    if augmenter is None:
        augmenter = Augmenter.from_prepared(prepared, **augment_kwargs)
    images = getattr(prepared, f"{split}_images")
    labels = getattr(prepared, f"{split}_labels")
    if max_images is not None:
        images, labels = images[:max_images], labels[:max_images]
    fn = augmenter.ten_crop if ten_crop else augmenter.center
    return BatchLoader(images, labels, fn, batch_size=batch_size, shuffle=False,
                       drop_last=False, prefetch=prefetch, ranks=ranks)


def measure_throughput(loader: BatchLoader, n_batches: int = 20, warmup: int = 1,
                       epoch: int | None = None) -> float:
    """Images per second the loader delivers to a consumer that does nothing else.

    Plays up to ``warmup + n_batches`` batches of ``epoch`` (default ``loader.epoch``),
    times the last ``n_batches`` (fewer if the epoch is shorter). Compare with the
    training step's img/s: the loader keeps up when this is the larger number.
    """
    epoch = loader.epoch if epoch is None else epoch
    images = counted = 0
    with loader.iter_epoch(epoch) as it:
        t0 = time.perf_counter()
        for k, (_, y) in enumerate(it):
            if k < warmup:              # thread start-up, first-call costs: not timed
                t0 = time.perf_counter()
                continue
            images += len(y)
            counted += 1
            if counted >= n_batches:
                break
        t1 = time.perf_counter()
    if images == 0:
        raise ValueError("the epoch has no batches beyond the warm-up to time")
    return images / (t1 - t0)
