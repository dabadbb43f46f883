"""``tinyalex.figures``: conv1's kernels (Figure 3), training curves from metrics.jsonl,
nearest neighbours in relu7 space (Figure 4, right), make_all and the command line.
Every figure is checked to be a PNG Pillow can open, of a plausible size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinyalex import checkpoint
from tinyalex.commands import cli
from tinyalex.commands.figures import (
    filter_tiles,
    main,
    make_all,
    mosaic,
    nearest,
    nearest_neighbours,
    plot_compare,
    plot_curves,
    plot_filters,
    plot_predictions,
    read_metrics,
    relu7_features,
    smooth,
)

sys.path.insert(0, str(Path(__file__).parent))
from test_evaluate import metrics_lines, shared_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return shared_run(tmp_path_factory)


def assert_png(path, min_w=300, min_h=200, max_side=4000):
    """A real PNG, not blank, of a plausible size."""
    path = Path(path)
    assert path.is_file() and path.stat().st_size > 5_000
    with Image.open(path) as im:
        assert im.format == "PNG"
        w, h = im.size
        assert min_w <= w <= max_side and min_h <= h <= max_side
        arr = np.asarray(im.convert("RGB"))
    assert arr.std() > 5          # something is drawn
    return w, h


# --------------------------------------------------------------------------- Figure 3
def test_filter_tiles_min_max_each_kernel():
    """Each kernel becomes (k, k, 3) RGB spanning exactly [0, 1]; a constant kernel is 0."""
    W = np.random.default_rng(0).normal(size=(6, 3, 5, 5)).astype(np.float32)
    W[5] = 0.3
    t = filter_tiles(W)
    assert t.shape == (6, 5, 5, 3)
    assert np.allclose(t[:5].min(axis=(1, 2, 3)), 0) and np.allclose(t[:5].max(axis=(1, 2, 3)), 1)
    assert np.all(t[5] == 0)
    assert np.allclose(t[2, 1, 4, 0], (W[2, 0, 1, 4] - W[2].min()) / (W[2].max() - W[2].min()))
    m = mosaic(t, cols=4)
    assert m.shape == (2 * 6 + 1, 4 * 6 + 1, 3)
    assert np.array_equal(m[1:6, 7:12], t[1])


def test_plot_filters(trained, tmp_path):
    """96 kernels in two labelled halves of 48 (8 x 12 tiles): a wide-ish PNG."""
    w, h = assert_png(plot_filters(trained["net"], tmp_path / "f" / "filters.png"))
    assert w > 600 and h > 400


# --------------------------------------------------------------------------- curves
def write_jsonl(path, rows, extra=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + extra)
    return path


def test_plot_curves_full_run(tmp_path):
    """Train lines, three epochs and an unknown kind (ignored): a 3-panel PNG."""
    p = write_jsonl(tmp_path / "metrics.jsonl", metrics_lines(3, 20))
    w, h = assert_png(plot_curves(p, tmp_path / "curves.png"))
    assert w > 2 * h


@pytest.mark.parametrize("case", ["train-only", "one-epoch", "one-line", "empty", "torn"])
def test_plot_curves_is_robust(tmp_path, case):
    """Only train lines, one epoch, a single line, an empty file and a half-written last
    line all give a figure."""
    rows = metrics_lines(1, 4)
    if case == "train-only":
        rows = [r for r in rows if r["kind"] == "train"]
    elif case == "one-line":
        rows = rows[:1]
    elif case == "empty":
        rows = []
    extra = '{"kind": "train", "step": 9, "lo' if case == "torn" else ""
    p = write_jsonl(tmp_path / "metrics.jsonl", rows, extra)
    assert len(read_metrics(p)) == len(rows)
    assert_png(plot_curves(p, tmp_path / f"{case}.png"))


def test_smooth():
    """Trailing moving average: same length, constant stays constant, window respected."""
    assert np.allclose(smooth([2.0] * 50), 2.0)
    s = smooth(np.arange(10.0), window=3)
    assert len(s) == 10 and s[0] == 0 and s[1] == 0.5 and s[9] == 8.0
    assert len(smooth([])) == 0


# --------------------------------------------------------------------------- Figure 4
def test_nearest_is_brute_force():
    """The expanded ||a-b||^2 search agrees with a brute-force one."""
    rng = np.random.default_rng(1)
    q, d = rng.normal(size=(4, 16)), rng.normal(size=(30, 16))
    idx, dist = nearest(q, d, 5)
    brute = np.linalg.norm(q[:, None] - d[None], axis=2)
    assert np.array_equal(idx, np.argsort(brute, axis=1)[:, :5])
    assert np.allclose(dist, np.sort(brute, axis=1)[:, :5])


def test_relu7_codes_find_the_image_itself(trained):
    """relu7 codes are 4096-d; a training image's nearest training image is itself."""
    aug = checkpoint.augmenter(checkpoint.load(trained["ckpt"]))
    imgs = np.asarray(trained["prepared"].train_images[:8])
    f = relu7_features(trained["net"], aug, imgs, batch_size=4)
    assert f.shape == (8, 4096) and f.dtype == np.float32 and (f >= 0).all()
    idx, dist = nearest(f[:3], f, 2)
    assert np.array_equal(idx[:, 0], [0, 1, 2]) and np.allclose(dist[:, 0], 0, atol=1e-3)


def test_nearest_neighbours_figure(trained, tmp_path):
    """queries rows x (1 + neighbours) columns of images, with max_train capping the search."""
    aug = checkpoint.augmenter(checkpoint.load(trained["ckpt"]))
    out = nearest_neighbours(trained["net"], trained["prepared"], tmp_path / "nn.png",
                             queries=3, neighbours=4, max_train=12, augmenter=aug)
    w, h = assert_png(out)
    assert w > h          # 5 columns, 3 rows


def test_plot_predictions(trained, tmp_path):
    """Figure 4 (left): images with top-5 bars (6 images: two rows of up to 4); fewer
    validation images than asked is fine."""
    aug = checkpoint.augmenter(checkpoint.load(trained["ckpt"]))
    w, h = assert_png(plot_predictions(trained["net"], trained["prepared"], tmp_path / "p.png",
                                       count=6, augmenter=aug))
    assert w > 500 and h > 500
    assert_png(plot_predictions(trained["net"], trained["prepared"], tmp_path / "q.png",
                                count=100, top=3, augmenter=aug))


# --------------------------------------------------------------------------- all + CLI
def test_make_all(trained, tmp_path):
    """filters, curves (the run's metrics.jsonl), predictions and neighbours (the data
    recorded in the checkpoint), all in the folder asked for."""
    written = make_all(trained["ckpt"], tmp_path / "figs", queries=2, neighbours=3,
                       max_train=10, log=lambda *_: None)
    assert set(written) == {"filters", "curves", "predictions", "neighbours"}
    for path in written.values():
        assert Path(path).parent == tmp_path / "figs"
        assert_png(path)


def test_make_all_without_data_or_metrics(trained, tmp_path):
    """A checkpoint alone (its data gone, no metrics.jsonl): just the filters; an explicit
    --data that does not exist is an error."""
    meta = json.loads(json.dumps(trained["meta"]))
    meta["data"]["path"] = str(tmp_path / "gone")
    ck = checkpoint.save(tmp_path / "lonely" / "last.npz", trained["net"].params, meta,
                         data=trained["data"])
    logged = []
    written = make_all(ck, log=logged.append)
    assert set(written) == {"filters"}
    assert written["filters"] == tmp_path / "lonely" / "figures" / "filters.png"
    assert any("no nearest-neighbour figure" in m for m in logged)
    with pytest.raises(Exception, match="does not exist"):
        make_all(ck, tmp_path / "x", data=tmp_path / "nowhere", log=lambda *_: None)


def test_cli(trained, tmp_path, capsys):
    """--help exits 0 (subprocess); a missing or corrupt checkpoint and --queries 0 exit 2
    with one line."""
    r = subprocess.run([sys.executable, "-m", "tinyalex.figures", "--help"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "--neighbours" in r.stdout and "--max-train" in r.stdout
    r = subprocess.run([sys.executable, "-m", "tinyalex.figures", str(tmp_path / "no.npz")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "Traceback" not in r.stderr
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"\x00" * 100)
    assert cli.run(main, [str(bad)]) == 2
    assert f"{bad} is not a tinyalex checkpoint (it starts with" in capsys.readouterr().err
    assert cli.run(main, [str(trained["ckpt"]), "--queries", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1


def test_compare_runs(tmp_path, capsys):
    """Two runs (one still in its first epoch) on the same axes; labels, and the CLI's
    errors for a folder without metrics and a wrong number of labels."""
    a, b = tmp_path / "paper", tmp_path / "pytorch"
    a.mkdir(), b.mkdir()
    write_jsonl(a / "metrics.jsonl", metrics_lines(3, 20))
    write_jsonl(b / "metrics.jsonl", [r for r in metrics_lines(1, 20) if r["kind"] == "train"])
    w, h = assert_png(plot_compare([a, b], tmp_path / "cmp.png", labels=["§5", "fan-in"]))
    assert w > 2 * h
    with pytest.raises(ValueError, match="1 labels for 2 runs"):
        plot_compare([a, b], tmp_path / "x.png", labels=["one"])
    out = tmp_path / "cli.png"
    assert cli.run(main, ["compare", str(a), str(b), "--out", str(out), "--title", "t"]) == 0
    assert_png(out)
    assert cli.run(main, ["compare", str(a), str(tmp_path), "--out", str(out)]) == 2
    assert cli.run(main, ["compare", str(a), str(b), "--out", str(out), "--labels", "x"]) == 2
    err = capsys.readouterr().err
    assert "no metrics.jsonl" in err and "1 labels for 2 runs" in err
