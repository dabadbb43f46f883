"""Prepare: the §2 preprocessing maths, every kind of bad input, the atomic cache folder,
and a real prepare on the shipped archives."""

from __future__ import annotations

import io
import json
import re
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tinyalex.data.prepare as prep
from tinyalex.data.cache import is_prepared
from tinyalex.data.errors import DataError
from tinyalex.data.readers import open_source

sys.path.insert(0, str(Path(__file__).parent))
from test_data_readers import CLASSES, color_of, image_bytes, layout, materialise  # noqa: E402


def png_bytes(arr: np.ndarray) -> bytes:
    """A PNG of a uint8 or uint16 (16-bit grey) array."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height pixels, with (almost) no data: what a
    decompression bomb looks like to Pillow before decoding."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grey
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


# ---------------------------------------------------------------- one image


def test_short_side_and_centre_crop_position_exact():
    """No resampling when the short side already is S: the crop is exactly the central
    columns (left = (W - S) // 2) / rows (top = (H - S) // 2), so the offset is checked to the
    pixel, for even and odd leftovers and for both orientations."""
    for w, h in [(30, 10), (31, 10), (10, 31), (10, 10)]:
        arr = np.zeros((h, w, 3), np.uint8)
        arr[..., 0] = np.arange(w)[None, :]
        arr[..., 1] = np.arange(h)[:, None]
        out = prep.preprocess(Image.fromarray(arr), 10)
        assert out.shape == (10, 10, 3) and out.dtype == np.uint8
        left, top = (w - 10) // 2, (h - 10) // 2
        assert out[0, 0, 0] == left and out[0, -1, 0] == left + 9
        assert out[0, 0, 1] == top and out[-1, 0, 1] == top + 9


def test_rescale_matches_pillow_bilinear_then_crop():
    """Short side -> S with Image.BILINEAR, long side round(long * S / short), then the centre
    crop: compared with doing the same steps by hand. Small images are scaled UP."""
    rng = np.random.default_rng(0)
    for (w, h), s in [((40, 25), 16), ((5, 9), 16), ((300, 200), 64)]:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        nw, nh = prep.short_side_size(w, h, s)
        assert min(nw, nh) == s and max(nw, nh) == round(max(w, h) * s / min(w, h))
        ref = np.asarray(img.resize((nw, nh), Image.BILINEAR))
        top, left = (nh - s) // 2, (nw - s) // 2
        np.testing.assert_array_equal(prep.preprocess(img, s), ref[top:top + s, left:left + s])


def test_decode_jpeg_of_any_size_gives_s_by_s():
    """decode_image: bytes -> (S, S, 3) uint8, for a large JPEG (draft mode path), a tiny one
    (scaled up), and a long thin one; the colour survives."""
    for w, h in [(1200, 900), (7, 5), (400, 60)]:
        out = prep.decode_image(image_bytes(w, h, (10, 200, 90)), 32)
        assert out.shape == (32, 32, 3)
        assert np.abs(out.astype(int) - [10, 200, 90]).max() < 8


@pytest.mark.parametrize("case", ["L", "1", "P", "P-transparent", "RGBA", "LA", "CMYK",
                                  "I;16", "I", "F", "PNG-16bit"])
def test_mode_conversions(case):
    """Every odd mode becomes RGB: grey/bilevel/palette replicate or look up; RGBA and LA DROP
    alpha (fully transparent pixels keep their colour); CMYK converts; 16-bit and 32-bit grey
    are value/257 (65535 -> 255); float is clipped."""
    if case == "L":
        img, want = Image.new("L", (4, 4), 77), (77, 77, 77)
    elif case == "1":
        img, want = Image.new("1", (4, 4), 1), (255, 255, 255)
    elif case == "P":
        img = Image.new("P", (4, 4), 3)
        img.putpalette([0, 0, 0] * 3 + [10, 20, 30] + [0, 0, 0] * 252)
        want = (10, 20, 30)
    elif case == "P-transparent":
        img = Image.new("P", (4, 4), 3)
        img.putpalette([0, 0, 0] * 3 + [10, 20, 30] + [0, 0, 0] * 252)
        img.info["transparency"] = bytes([255] * 3 + [0] + [255] * 252)
        want = (10, 20, 30)
    elif case == "RGBA":
        img, want = Image.new("RGBA", (4, 4), (50, 60, 70, 0)), (50, 60, 70)
    elif case == "LA":
        img, want = Image.new("LA", (4, 4), (90, 0)), (90, 90, 90)
    elif case == "CMYK":
        img = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in naive CMYK
        img = Image.open(io.BytesIO(image_bytes(16, 16, (0, 255, 255, 0), "JPEG", "CMYK")))
        assert img.mode == "CMYK"
        want = (255, 0, 0)
    elif case == "I;16":
        img, want = Image.new("I;16", (4, 4), 65535), (255, 255, 255)
    elif case == "I":
        img, want = Image.new("I", (4, 4), 257 * 100), (100, 100, 100)
    elif case == "F":
        img, want = Image.new("F", (4, 4), 300.0), (255, 255, 255)
    else:  # a real 16-bit greyscale PNG file
        data = png_bytes(np.full((4, 4), 257 * 40, np.uint16))
        img = Image.open(io.BytesIO(data))
        assert img.mode.startswith("I")
        want = (40, 40, 40)
    out = prep.preprocess(img, 4)
    assert out.shape == (4, 4, 3)
    tol = 12 if case == "CMYK" else 0
    assert np.abs(out.astype(int) - want).max() <= tol, (case, out[0, 0])


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bombs_are_refused_before_decoding():
    """A header claiming 100 M pixels (over Pillow's 89 M warning limit) or 400 M (over its
    error limit) is refused without decoding; a smaller max_pixels refuses smaller ones."""
    with pytest.raises(prep.BadImage, match="too large"):
        prep.decode_image(bomb_png(10_000, 10_000), 64)
    results = prep._decode_batch([(0, bomb_png(20_000, 20_000)), (1, bomb_png(10_000, 10_000)),
                                  (2, image_bytes())], 8, prep.MAX_PIXELS)
    assert results[0][1] is None and results[1][1] is None and results[2][2] is None
    with pytest.raises(prep.BadImage, match="too large"):
        prep.decode_image(image_bytes(20, 20), 8, max_pixels=100)


# ---------------------------------------------------------------- whole prepare


def quiet(messages):
    return lambda m: messages.append(str(m))


def small_prepare(path, tmp_path, messages=None, **kw):
    src = open_source(path)
    try:
        return prep.prepare(src, subset=kw.pop("subset", "all"), size=kw.pop("size", 8),
                            cache=tmp_path / "cache", log=quiet([] if messages is None else messages),
                            progress=False, **kw)
    finally:
        src.close()


@pytest.mark.parametrize("container", ["folder", "zip", "tgz"])
def test_prepare_small_tree(tmp_path, container):
    """A small ILSVRC tree prepares into the cache format: shapes, dtypes, labels in sorted
    (class, file) order, each image its class colour, mean/PCA from the train images, meta with
    classes, names, source, kind, subset, size; the folder name follows the key scheme."""
    path = materialise(layout("ilsvrc", n_train=3, n_val=2), tmp_path / "ds", container)
    d = small_prepare(path, tmp_path)
    assert d.train_images.shape == (9, 8, 8, 3) and d.train_images.dtype == np.uint8
    assert d.val_images.shape == (6, 8, 8, 3)
    assert d.train_labels.dtype == np.int32
    np.testing.assert_array_equal(d.train_labels, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(d.val_labels, [0, 0, 1, 1, 2, 2])
    for img, label in zip(d.train_images, d.train_labels, strict=True):
        assert np.abs(img.astype(int) - color_of(label)).max() < 8
    np.testing.assert_allclose(d.mean, d.train_images.mean(0), atol=1e-3)
    assert d.pca_eigvals[0] >= d.pca_eigvals[1] >= d.pca_eigvals[2]
    m = d.meta
    assert m["classes"] == CLASSES and m["names"] == ["tench", "goldfish", "great white shark"]
    assert m["kind"] == "ilsvrc" and m["subset"] == "all" and m["size"] == 8
    assert m["source"] == str(path.resolve()) and m["skipped"]["count"] == 0
    assert re.fullmatch(r"ilsvrc-all-8px-[0-9a-f]{10}", d.path.name)
    assert d.path.parent == tmp_path / "cache"


def test_thread_and_process_decoders_agree(tmp_path):
    """The thread pool, the process pool and one worker give identical arrays."""
    path = materialise(layout("tiny", n_train=4, n_val=2), tmp_path / "ds", "zip")
    outs = []
    for i, (executor, workers) in enumerate([("thread", 2), ("process", 2), ("thread", 1)]):
        d = small_prepare(path, tmp_path / str(i), executor=executor, workers=workers)
        outs.append((np.array(d.train_images), np.array(d.val_images), d.mean))
    for other in outs[1:]:
        for a, b in zip(outs[0], other, strict=True):
            np.testing.assert_array_equal(a, b)


def test_max_per_class_takes_the_first_n_sorted(tmp_path):
    """--max-per-class N keeps the first N files in sorted order per class in each split, and
    is part of the folder name."""
    path = materialise(layout("ilsvrc", n_train=5, n_val=4), tmp_path / "ds", "folder")
    d = small_prepare(path, tmp_path, max_per_class=2)
    assert len(d.train_labels) == 6 and len(d.val_labels) == 6
    assert d.path.name.startswith("ilsvrc-all-max2-8px-")


def test_cache_key_changes_with_what_matters(tmp_path, monkeypatch):
    """The folder name differs with size, subset, per-class limit and source content, and
    not with where the archive lies or its mtime (a copy or a fresh download of the same
    file reuses the prepared data); TINYALEX_CACHE sets the root, --cache wins over it."""
    path = materialise(layout("ilsvrc"), tmp_path / "ds", "zip")
    src = open_source(path)
    names = {prep.folder_name(src, "all", CLASSES, 8, None),
             prep.folder_name(src, "all", CLASSES, 16, None),
             prep.folder_name(src, "all", CLASSES[:2], 8, None),
             prep.folder_name(src, "all", CLASSES, 8, 3)}
    assert len(names) == 4
    before = prep.folder_name(src, "all", CLASSES, 8, None)
    import os
    import shutil
    os.utime(path, ns=(1, 1))
    assert prep.folder_name(src, "all", CLASSES, 8, None) == before
    copy = shutil.copy(path, tmp_path / "elsewhere.zip")
    assert prep.folder_name(open_source(copy), "all", CLASSES, 8, None) == before
    files = layout("ilsvrc")
    first = sorted(files)[0]
    files[first] = image_bytes(30, 20, (10, 200, 10))  # one member's pixels differ
    changed = materialise(files, tmp_path / "changed", "zip")
    assert prep.folder_name(open_source(changed), "all", CLASSES, 8, None) != before
    monkeypatch.setenv("TINYALEX_CACHE", str(tmp_path / "envcache"))
    assert prep.cache_root() == tmp_path / "envcache"
    assert prep.cache_root(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("TINYALEX_CACHE")
    assert prep.cache_root() == Path.home() / ".cache" / "tinyalex"


def bad_input_tree() -> dict[str, bytes]:
    """An ILSVRC folder with one of every kind of bad file among good ones."""
    files = layout("ilsvrc-flat-txt", n_train=3, n_val=2)
    good = image_bytes(30, 20, (120, 120, 120))
    t = "train/n01440764/"
    files[t + "truncated.JPEG"] = good[: len(good) // 2]
    files[t + "corrupt.JPEG"] = np.random.default_rng(0).bytes(300)
    files[t + "zero.JPEG"] = b""
    files[t + "text.JPEG"] = b"this is not an image\n"
    files[t + "notes.txt"] = b"not an image by extension"
    files[t + "bomb.png"] = bomb_png(10_000, 10_000)
    files[t + "hugebomb.png"] = bomb_png(20_000, 20_000)
    files["train/not_a_wnid/x.JPEG"] = good
    # odd but valid modes are KEPT
    files[t + "cmyk.JPEG"] = image_bytes(12, 12, (0, 0, 0, 0), "JPEG", "CMYK")
    files[t + "grey16.png"] = png_bytes(np.full((9, 9), 30000, np.uint16))
    files[t + "palette.gif"] = image_bytes(9, 9, 5, "GIF", "P")
    files[t + "la.png"] = image_bytes(9, 9, (100, 50), "PNG", "LA")
    # val: unknown class in the label file, a label for a missing file, an unlabelled image
    files["val/val_x.JPEG"] = good
    files["val/unlabelled.JPEG"] = good
    files["val_labels.txt"] += b"\nval_x.JPEG n09999999\nghost.JPEG n01440764\n"
    return files


BAD_NAMES = ["truncated.JPEG", "corrupt.JPEG", "zero.JPEG", "text.JPEG", "notes.txt", "bomb.png",
             "hugebomb.png", "not_a_wnid/x.JPEG", "val_x.JPEG", "ghost.JPEG", "unlabelled.JPEG",
             "n01484850/"]


@pytest.mark.parametrize("container", ["folder", "tgz"])
def test_bad_input_zoo_is_skipped_counted_reported(tmp_path, container):
    """Truncated, corrupt, zero-byte, non-image, bomb files, a non-wnid class folder, an empty
    class folder (folder only), label lines naming an unknown class or a missing file and an
    unlabelled val image: each is skipped, counted and named in the log and meta.json; the
    prepare finishes; odd-mode images (CMYK, 16-bit, palette, LA) are kept."""
    files = bad_input_tree()
    path = materialise(files, tmp_path / "ds", container)
    if container == "folder":
        (path / "train" / "n01484850").mkdir(exist_ok=True)
        for f in (path / "train" / "n01484850").iterdir():
            f.unlink()
    messages: list[str] = []
    d = small_prepare(path, tmp_path, messages)
    n_classes = 2 if container == "folder" else 3
    assert d.num_classes == n_classes
    assert len(d.train_labels) == 3 * n_classes + 4  # + cmyk, grey16, palette, la
    assert len(d.val_labels) == 2 * n_classes
    skipped = d.meta["skipped"]
    reported = " ".join(name for name, _ in skipped["first"])
    expected = [b for b in BAD_NAMES if container == "folder" or b != "n01484850/"]
    # with the n01484850 train folder empty, its 2 val images name an unknown class
    assert skipped["count"] == len(expected) + (2 if container == "folder" else 0)
    for name in expected:
        assert name in reported, name
    log = "\n".join(messages)
    assert f"skipped {skipped['count']} file(s)" in log
    assert skipped["train"]["count"] == 6 and skipped["val"]["count"] == 0
    json.loads((d.path / "meta.json").read_text())  # valid JSON


def test_split_with_no_usable_image_is_a_data_error(tmp_path):
    """When every val image is unusable the prepare stops with DataError, leaving neither a
    complete folder nor a temporary one."""
    files = layout("ilsvrc", n_train=2, n_val=1)
    for name in [n for n in files if n.startswith("val/")]:
        files[name] = b"garbage"
    path = materialise(files, tmp_path / "ds", "zip")
    with pytest.raises(DataError, match="none of the 3 val images could be decoded"):
        small_prepare(path, tmp_path)
    assert list((tmp_path / "cache").iterdir()) == []
    files = {n: v for n, v in layout("ilsvrc").items() if not n.startswith("val/")}
    with pytest.raises(DataError, match="val split has no images"):
        small_prepare(materialise(files, tmp_path / "noval", "folder"), tmp_path)


def test_interrupted_prepare_leaves_nothing_and_is_redone(tmp_path, monkeypatch):
    """A prepare that dies midway (here: the second decode batch raises) leaves no complete
    folder and no temporary folder; the next call prepares from scratch; the call after that
    reuses the complete folder and says so. A leftover '.<name>.tmp-<pid>' of a dead process is
    never reused (it is removed)."""
    path = materialise(layout("ilsvrc", n_train=40, n_val=2), tmp_path / "ds", "folder")
    real = prep._decode_batch
    calls = {"n": 0}

    def dying(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated Ctrl-C")
        return real(*args)

    monkeypatch.setattr(prep, "_decode_batch", dying)
    with pytest.raises(KeyboardInterrupt):
        small_prepare(path, tmp_path, workers=1)
    cache = tmp_path / "cache"
    assert [p for p in cache.iterdir()] == []
    monkeypatch.setattr(prep, "_decode_batch", real)
    src = open_source(path)
    final = prep.plan(src, "all", 8, cache).folder
    stale = final.parent / f".{final.name}.tmp-999999999"
    stale.mkdir()
    (stale / "meta.json").write_text("{}")
    messages: list[str] = []
    d = small_prepare(path, tmp_path, messages)
    assert d.path == final and is_prepared(final) and not stale.exists()
    assert any("removing an interrupted" in m for m in messages)
    assert not any("reusing" in m for m in messages)
    messages.clear()
    again = small_prepare(path, tmp_path, messages)
    assert again.path == final and any(m.startswith("reusing prepared dataset") for m in messages)


def test_shrink_npy_keeps_order_and_valid_header(tmp_path):
    """Compaction of skipped rows: kept rows stay in order, the file is a valid, shorter .npy."""
    path = tmp_path / "a.npy"
    mm = np.lib.format.open_memmap(path, "w+", np.uint8, (1000, 2, 2, 3))
    mm[:] = (np.arange(1000) % 251)[:, None, None, None]
    mm.flush()
    del mm
    keep = np.ones(1000, bool)
    keep[[0, 5, 6, 999, 500]] = False
    assert prep._shrink_npy(path, keep) == 995
    out = np.load(path)
    np.testing.assert_array_equal(out[:, 0, 0, 0], (np.flatnonzero(keep) % 251).astype(np.uint8))
    assert path.stat().st_size == len(open(path, "rb").read())


def test_not_enough_disk_is_a_data_error(tmp_path, monkeypatch):
    """A prepare that cannot fit in the cache's free space stops before writing, with a hint."""
    import shutil as sh
    from collections import namedtuple
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(sh, "disk_usage", lambda p: usage(10, 10, 0))
    path = materialise(layout("ilsvrc"), tmp_path / "ds", "folder")
    with pytest.raises(DataError, match="GiB are free; use --cache DIR"):
        small_prepare(path, tmp_path)


# ---------------------------------------------------------------- the real files


def test_real_prepare_small(real_data, tmp_path):
    """Real archives with 5 images per class: Tiny ImageNet at 64 px (100 classes) and
    Imagenette at 256 px (10 classes): shapes, dtype, 5 labels per class, photographs' mean
    near mid-grey, PCA eigenvalues positive and descending with orthonormal eigenvectors whose
    first one is roughly the grey axis."""
    for name, subset, n_classes, size in [("tiny-imagenet-100.zip", "100-class", 100, 64),
                                          ("imagenette2-224.tgz", "all", 10, 256)]:
        src = open_source(real_data / name)
        d = prep.prepare(src, subset=subset, cache=tmp_path, max_per_class=5, log=lambda m: None,
                         progress=False)
        src.close()
        assert d.train_images.shape == (5 * n_classes, size, size, 3)
        assert d.val_images.shape == (5 * n_classes, size, size, 3)
        assert d.train_images.dtype == np.uint8
        np.testing.assert_array_equal(np.bincount(d.train_labels), [5] * n_classes)
        np.testing.assert_array_equal(np.bincount(d.val_labels), [5] * n_classes)
        assert 70 < d.channel_mean.min() and d.channel_mean.max() < 170
        ev = d.pca_eigvals
        assert ev[2] > 0 and ev[0] > ev[1] > ev[2]
        np.testing.assert_allclose(d.pca_eigvecs.T @ d.pca_eigvecs, np.eye(3), atol=1e-5)
        assert np.abs(np.abs(d.pca_eigvecs[:, 0]) - 3 ** -0.5).max() < 0.15
        assert d.train_images.std() > 20  # real photographs, not blank
        assert d.meta["skipped"]["count"] == 0


def test_real_full_size_samples(real_data):
    """The full-size ImageNet samples (about 100 to 2400 px, some greyscale): every one becomes
    256x256x3 uint8, and for the largest ones the fast JPEG draft decode stays within a few
    grey levels of decoding at full size then resizing (so draft mode changes nothing that
    matters)."""
    files = sorted((real_data / "imagenet-samples-100").glob("*.JPEG"))
    assert len(files) == 100
    sizes = []
    for f in files:
        data = f.read_bytes()
        out = prep.decode_image(data, 256)
        assert out.shape == (256, 256, 3) and out.dtype == np.uint8
        sizes.append((Image.open(io.BytesIO(data)).size, f))
    largest = sorted(sizes, key=lambda t: -t[0][0] * t[0][1])[:8]
    assert largest[0][0][0] * largest[0][0][1] > 1024 * 1024
    for _, f in largest:
        fast = prep.decode_image(f.read_bytes(), 256).astype(float)
        slow = prep.preprocess(Image.open(f), 256).astype(float)
        assert np.abs(fast - slow).mean() < 2.0, f.name


def test_cache_key_of_a_tgz_survives_a_copy_and_of_a_plain_tar_keeps_its_mtime(tmp_path):
    """A gzip ends with its content's CRC-32, so a copied .tgz keys the same; a plain tar
    ends in padding, so its key keeps the mtime as well."""
    import os
    import shutil

    tgz = materialise(layout("ilsvrc"), tmp_path / "ds", "tgz")
    before = prep.folder_name(open_source(tgz), "all", CLASSES, 8, None)
    copy = shutil.copy(tgz, tmp_path / "copy.tgz")
    assert prep.folder_name(open_source(copy), "all", CLASSES, 8, None) == before
    plain = materialise(layout("ilsvrc"), tmp_path / "plain", "tar")
    key = prep.folder_name(open_source(plain), "all", CLASSES, 8, None)
    os.utime(plain, ns=(1, 1))
    assert prep.folder_name(open_source(plain), "all", CLASSES, 8, None) != key
