"""checkpoint.py: a file checked when read (not a zip, cut short, a flipped bit, no meta,
another net), the previous checkpoint kept beside the newest, a full disk as one line with
the old file intact and no temporary left."""

import errno
import json

import numpy as np
import pytest

from tinyalex import checkpoint
from tinyalex.net import build

META = {"net": {"arch": "alexnet-mini", "num_classes": 4, "kwargs": {"input_size": 56}},
        "classes": ["a", "b", "c", "d"], "config": {}, "epoch": 0, "batch": 1, "step": 1,
        "lr": 0.01, "schedule": {}}
DATA = {"mean": np.zeros((64, 64, 3), np.float32), "pca_eigvals": np.ones(3, np.float32),
        "pca_eigvecs": np.eye(3, dtype=np.float32)}


@pytest.fixture(scope="module")
def net():
    return build("alexnet-mini", 4, input_size=56)


def write(path, net, step=1, **kw):
    return checkpoint.save(path, net.params, dict(META, step=step), velocity=net.params,
                           data=DATA, **kw)


def test_a_good_checkpoint_reads_and_fits_its_net(net, tmp_path):
    ckpt = checkpoint.check_training(checkpoint.load(write(tmp_path / "c.npz", net)),
                                     resume=True)
    assert ckpt.meta["step"] == 1 and checkpoint.reads(ckpt.path)
    rebuilt = checkpoint.build_net(ckpt)
    for name, value in net.params.items():
        assert np.array_equal(rebuilt.params[name], value)


@pytest.mark.parametrize("damage, words", [
    ("truncated", "is damaged (20,000 bytes; its end is missing"),
    ("text", "is not a tinyalex checkpoint (it starts with b'this'"),
    ("empty", "is not a tinyalex checkpoint (an empty file)"),
    ("flipped", "is damaged"),
    ("bare", "a .npz without 'meta'"),
])
def test_a_damaged_file_is_named_with_what_is_wrong(net, tmp_path, damage, words):
    path = write(tmp_path / "c.npz", net)
    raw = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(raw[:20_000])
    elif damage == "text":
        path.write_text("this is a text file\n")
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "flipped":      # one bit in the middle of conv1.W's data: a bad CRC-32
        at = raw.index(b"params/conv1.W.npy") + 400
        path.write_bytes(raw[:at] + bytes([raw[at] ^ 1]) + raw[at + 1:])
    else:
        np.savez(path, w=np.zeros(3))
    with pytest.raises(checkpoint.CheckpointError) as err:
        checkpoint.load(path)
    message = str(err.value)
    assert words in message and str(path) in message and "\n" not in message
    assert not checkpoint.reads(path)


def test_missing_meta_and_another_net_are_named(net, tmp_path):
    path = checkpoint.save(tmp_path / "c.npz", net.params, {"net": META["net"]}, data=DATA)
    with pytest.raises(checkpoint.CheckpointError, match="not a training checkpoint .*no classes"):
        checkpoint.check_training(checkpoint.load(path))
    other = build("alexnet-mini", 10, input_size=56)
    ckpt = checkpoint.load(write(tmp_path / "d.npz", net))
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"holds alexnet-mini weights for 4 classes, not those of the "
                             r"net: fc8.W \(4, .*\) where the net has \(10, "):
        checkpoint.check_params(ckpt, other)


def test_keep_previous_keeps_the_last_file_that_reads(net, tmp_path):
    last = tmp_path / "last.npz"
    prev = checkpoint.previous_path(last)
    assert prev.name == "last.prev.npz"
    write(last, net, step=1, keep_previous=True)
    assert not prev.exists()
    write(last, net, step=2, keep_previous=True)
    assert checkpoint.load(prev).meta["step"] == 1 and checkpoint.load(last).meta["step"] == 2
    last.write_bytes(last.read_bytes()[:5000])           # damaged: not kept over step 1
    write(last, net, step=3, keep_previous=True)
    assert checkpoint.load(prev).meta["step"] == 1 and checkpoint.load(last).meta["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.npz", "last.prev.npz"]


def test_a_full_disk_is_one_line_and_keeps_the_old_file(net, tmp_path, monkeypatch):
    """ENOSPC in the middle of the write (as on a full disk): DiskFull whose message names
    the file, the free space and the size needed; the old checkpoint reads as before and
    no temporary file is left."""
    last = write(tmp_path / "last.npz", net, step=1)
    real_savez = np.savez

    def savez_then_full(fh, **arrays):
        real_savez(fh, **arrays)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", savez_then_full)
    with pytest.raises(checkpoint.DiskFull) as err:
        write(last, net, step=2, keep_previous=True)
    message = str(err.value)
    assert "no space left" in message and str(tmp_path) in message and "free" in message
    assert "needs about" in message and "MiB" in message and "\n" not in message
    assert checkpoint.load(last).meta["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.npz", "last.prev.npz"]
    assert json.loads(str(np.load(last)["meta"]))["step"] == 1


def test_keep_previous_copies_where_there_are_no_hard_links(net, tmp_path, monkeypatch):
    """A filesystem without hard links (os.link: EPERM, as on FAT): the previous file is
    copied instead, and nothing else is left beside the two."""
    import os

    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    last = tmp_path / "last.npz"
    write(last, net, step=1, keep_previous=True)
    write(last, net, step=2, keep_previous=True)
    assert checkpoint.load(checkpoint.previous_path(last)).meta["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.npz", "last.prev.npz"]
