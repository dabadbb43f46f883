"""``tinyalex.predict``: top-k classes of image files with a checkpoint: the same
preprocessing as the prepared data (§2) and the test-time crops (§4.1), any image mode,
bad files reported on their own line, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinyalex import checkpoint
from tinyalex.commands import cli
from tinyalex.commands.predict import format_result, main, predict_images, read_image
from tinyalex.layers.loss import softmax

sys.path.insert(0, str(Path(__file__).parent))
from test_evaluate import CLASSES, NAMES, SIZE, K, class_images, shared_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return shared_run(tmp_path_factory)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Files of several kinds: an RGB JPEG per class (bigger, not square), a grayscale
    PNG, a CMYK JPEG, an RGBA PNG, a text file named .jpg and an empty file."""
    d = tmp_path_factory.mktemp("images")
    paths = {}
    big = class_images(np.arange(K), seed=7, size=96)
    for c in range(K):
        p = d / f"class{c}.jpg"
        Image.fromarray(big[c]).resize((128, 96)).save(p, quality=95)
        paths[f"class{c}"] = p
    paths["gray"] = d / "gray.png"
    Image.fromarray(big[0]).convert("L").save(paths["gray"])
    paths["cmyk"] = d / "cmyk.jpg"
    Image.fromarray(big[2]).convert("CMYK").save(paths["cmyk"], quality=95)
    paths["rgba"] = d / "rgba.png"
    Image.fromarray(big[3]).convert("RGBA").save(paths["rgba"])
    paths["text"] = d / "notes.jpg"
    paths["text"].write_text("not an image")
    paths["empty"] = d / "empty.png"
    paths["empty"].write_bytes(b"")
    paths["missing"] = d / "missing.jpg"
    return paths


def check_top(top, k=5):
    """k (wnid, name, p) triples from the checkpoint's classes, p descending, sum <= 1."""
    assert len(top) == k
    probs = [p for _, _, p in top]
    assert all(0 <= p <= 1 for p in probs)
    assert probs == sorted(probs, reverse=True)
    assert sum(probs) <= 1 + 1e-6
    for wnid, name, _ in top:
        assert NAMES[CLASSES.index(wnid)] == name


def test_predicts_the_class_colours(trained, images):
    """Five named classes per image, probabilities descending and summing to <= 1; the
    class each image was drawn from comes first (the probe separates the colours)."""
    paths = [images[f"class{c}"] for c in range(K)]
    results = predict_images(trained["ckpt"], paths)
    assert [r["path"] for r in results] == [str(p) for p in paths]
    for r in results:
        assert "error" not in r
        check_top(r["top"])
        assert sum(p for _, _, p in r["top"]) == pytest.approx(1, abs=1e-5)   # all 5 classes
    hits = sum(r["top"][0][0] == CLASSES[c] for c, r in enumerate(results))
    assert hits >= K - 1


def test_any_mode_and_bad_files_reported(trained, images):
    """Grayscale PNG, CMYK JPEG and RGBA PNG are predicted; a missing file, an empty file
    and a text file each get an error on their own entry, the others are unaffected."""
    names = ["gray", "missing", "cmyk", "text", "rgba", "empty"]
    results = predict_images(trained["ckpt"], [images[n] for n in names], top=3)
    by = dict(zip(names, results, strict=True))
    for n in ("gray", "cmyk", "rgba"):
        check_top(by[n]["top"], k=3)
    assert by["missing"]["error"] == "no such file"
    assert "empty" in by["empty"]["error"]
    assert by["text"]["error"]
    assert by["cmyk"]["top"][0][1] == "blue thing"
    assert format_result(by["missing"]).endswith(": error: no such file")


def test_same_pixels_as_the_prepared_data(trained, tmp_path):
    """An S x S PNG of a validation image reads back byte for byte, and its prediction is
    the softmax of the net on the checkpoint's centre crop of the stored image."""
    prepared = trained["prepared"]
    img = np.asarray(prepared.val_images[3])
    path = tmp_path / "val3.png"
    Image.fromarray(img).save(path)
    assert np.array_equal(read_image(path, SIZE), img)
    aug = checkpoint.augmenter(checkpoint.load(trained["ckpt"]))
    p = softmax(trained["net"].forward(aug.center(img[None]), train=False))[0]
    (r,) = predict_images(trained["ckpt"], [path], top=K)
    got = {wnid: prob for wnid, _, prob in r["top"]}
    assert [got[w] for w in CLASSES] == pytest.approx(p.tolist(), rel=1e-5, abs=1e-7)


def test_ten_crop_is_the_mean_of_ten_softmaxes(trained, images):
    """--ten-crop: the average of the ten crops' softmax outputs (§4.1), computed by hand
    from the ten crops' logits; it is not the centre crop's (crop 4) softmax alone. (The
    ten go through the net as one batch, as predict sends them: one crop at a time gives
    float32 logits that differ by ~1e-5 relative on some BLAS kernels, GEMM blocking
    depending on the batch size.)"""
    aug = checkpoint.augmenter(checkpoint.load(trained["ckpt"]))
    img = read_image(images["class1"], SIZE)
    crops = aug.ten_crop(img[None])                                 # (10, 1, 3, c, c)
    each = softmax(trained["net"].forward(crops[:, 0], train=False))
    hand = each.mean(axis=0)
    (r,) = predict_images(trained["ckpt"], [images["class1"]], top=K, ten_crop=True)
    got = np.array([{w: p for w, _, p in r["top"]}[w] for w in CLASSES])
    assert got == pytest.approx(hand, rel=1e-5, abs=1e-7)
    assert np.abs(got - each[4]).max() > 1e-4


def test_read_image_reasons(images, tmp_path):
    """Short reasons for files that are no image."""
    with pytest.raises(ValueError, match="no such file"):
        read_image(images["missing"], SIZE)
    with pytest.raises(ValueError, match="directory"):
        read_image(tmp_path, SIZE)
    with pytest.raises(ValueError, match="not an image"):
        read_image(images["text"], SIZE)
    gray = read_image(images["gray"], SIZE)
    assert gray.shape == (SIZE, SIZE, 3) and gray.dtype == np.uint8
    assert np.array_equal(gray[..., 0], gray[..., 2])


def test_top_is_clamped_and_checked(trained, images):
    """--top above the number of classes gives all classes; --top 0 is a user error."""
    (r,) = predict_images(trained["ckpt"], [images["class0"]], top=50)
    assert len(r["top"]) == K
    with pytest.raises(cli.UserError):
        predict_images(trained["ckpt"], [images["class0"]], top=0)
    assert cli.run(main, [str(trained["ckpt"]), str(images["class0"]), "--top", "0"]) == 2


def test_cli_subprocess(trained, images, tmp_path):
    """python -m tinyalex.predict: --help exits 0; a grayscale PNG, a missing file and a
    CMYK JPEG print one line each in order (5 classes with percentages, or the error) and
    the exit status is 2; a missing checkpoint is one line, exit 2."""
    cmd = [sys.executable, "-m", "tinyalex.predict"]
    r = subprocess.run(cmd + ["--help"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "--top" in r.stdout and "--ten-crop" in r.stdout
    files = [images["gray"], images["missing"], images["cmyk"]]
    r = subprocess.run(cmd + [str(trained["ckpt"])] + [str(f) for f in files],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(str(files[0])) and lines[0].count("%") == 5
    assert lines[1] == f"{files[1]}: error: no such file"
    assert lines[2].startswith(str(files[2])) and lines[2].count("%") == 5
    assert "blue thing" in lines[2].split("|")[0]
    assert "Traceback" not in r.stderr and "1 of 3" in r.stderr
    r = subprocess.run(cmd + [str(tmp_path / "none.npz"), str(files[0])], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and not r.stdout
    cut = tmp_path / "cut.npz"          # a checkpoint cut short (a copy interrupted)
    cut.write_bytes(Path(trained["ckpt"]).read_bytes()[:20_000])
    r = subprocess.run(cmd + [str(cut), str(files[0])], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and not r.stdout and "Traceback" not in r.stderr
    assert r.stderr.strip() == (f"error: {cut} is damaged (20,000 bytes; its end is missing: "
                                "cut short by a copy, a sync or a full disk)")
