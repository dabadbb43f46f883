"""``tinyalex.evaluate``: top-1/top-5 error of a checkpoint, centre crop and ten crops (§2,
§4.1), finding its data, class checks, the table and the command line's exit codes.

``make_run`` (also used by test_predict and test_figures) builds a small training run the
way the trainer leaves one: a prepared 5-class dataset of 64-px images whose classes differ
in colour, and ``<run>/best.npz`` + ``metrics.jsonl`` following the checkpoint contract.
Its alexnet-small has the paper's random init except fc8, which is fitted by least squares
on the training images' relu7 codes (a linear probe, one forward pass), so the checkpoint
really tells the classes apart and the errors mean something.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinyalex import checkpoint
from tinyalex.commands import cli
from tinyalex.commands.evaluate import evaluate_checkpoint, format_table, main, subsample
from tinyalex.data.augment import Augmenter
from tinyalex.data.cache import open_prepared, write_prepared
from tinyalex.data.errors import DataError
from tinyalex.data.loader import eval_loader
from tinyalex.loop import evaluate
from tinyalex.net import alexnet_small

ROOT = Path(__file__).resolve().parents[1]
K, SIZE, CROP = 5, 64, 56
CLASSES = [f"n0000000{i}" for i in range(K)]
NAMES = ["red thing", "green thing", "blue thing", "yellow thing", "magenta thing"]
COLOURS = np.array([[220, 40, 40], [40, 200, 40], [40, 60, 220], [230, 220, 50],
                    [200, 60, 210]], np.float64)
TRAIN_PER_CLASS, VAL_PER_CLASS = 4, 2


def class_images(labels, seed: int, size: int = SIZE) -> np.ndarray:
    """uint8 (N, size, size, 3): each image its class colour plus noise and a bright square."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    x = COLOURS[labels][:, None, None, :] + rng.normal(0, 35, (len(labels), size, size, 3))
    for i in range(len(labels)):
        y0, x0 = rng.integers(0, size // 2, 2)
        x[i, y0:y0 + size // 3, x0:x0 + size // 3] += 60
    return np.clip(x, 0, 255).astype(np.uint8)


def make_prepared(folder: Path, classes=CLASSES, names=NAMES, seed: int = 0,
                  train_per_class=TRAIN_PER_CLASS, val_per_class=VAL_PER_CLASS,
                  size: int = SIZE):
    """A prepared folder (write_prepared) with images stored class by class."""
    k = len(classes)
    ty = np.repeat(np.arange(k), train_per_class)
    vy = np.repeat(np.arange(k), val_per_class)
    meta = {"kind": "tiny", "source": "test", "subset": "test", "classes": list(classes),
            "names": list(names)}
    write_prepared(folder, class_images(ty, seed, size), ty, class_images(vy, seed + 1, size),
                   vy, meta)
    return open_prepared(folder)


def fit_fc8(net, prepared, augmenter, scale: float = 4.0) -> None:
    """Set fc8 to the least-squares map from standardised relu7 codes of the training
    images to scale * (one-hot - 1/K): a linear probe on the random conv features."""
    f = net.features(augmenter.center(np.asarray(prepared.train_images)), "relu7")
    f = f.astype(np.float64)
    mu, sd = f.mean(0), f.std(0) + 1e-6
    design = np.c_[(f - mu) / sd, np.ones(len(f))]
    target = scale * (np.eye(K)[prepared.train_labels] - 1.0 / K)
    w = np.linalg.lstsq(design, target, rcond=None)[0]          # (4097, K)
    W = w[:-1] / sd[:, None]
    net["fc8"].params["W"][...] = W.T
    net["fc8"].params["b"][...] = w[-1] - (mu / sd) @ w[:-1]


def metrics_lines(epochs: int = 3, steps_per_epoch: int = 5) -> list[dict]:
    rows, step = [], 0
    for e in range(epochs):
        for _ in range(steps_per_epoch):
            step += 1
            rows.append({"kind": "train", "epoch": e, "step": step,
                         "loss": 1.6 * 0.9 ** step + 0.05 * np.sin(step), "top1_err": 0.8 * 0.95 ** step,
                         "lr": 0.01 if e < 2 else 0.001, "img_per_s": 80.0, "time": step})
        rows.append({"kind": "epoch", "epoch": e, "step": step, "train_loss": 1.5 - 0.3 * e,
                     "train_top1_err": 0.7 - 0.2 * e, "val_loss": 1.55 - 0.25 * e,
                     "val_top1_err": 0.72 - 0.15 * e, "val_top5_err": 0.2 - 0.05 * e,
                     "lr": 0.01 if e < 2 else 0.001, "seconds": 10.0})
    rows.append({"kind": "something-new", "step": step})
    return rows


def make_run(root: Path) -> dict:
    """A prepared dataset and a run folder (best.npz, metrics.jsonl) as the trainer writes."""
    prepared = make_prepared(root / "prepared")
    net = alexnet_small(num_classes=K, input_size=CROP)
    aug = Augmenter.from_prepared(prepared, crop=CROP)
    fit_fc8(net, prepared, aug)
    run = root / "run"
    meta = {"net": {"arch": "alexnet-small", "num_classes": K, "kwargs": {"input_size": CROP}},
            "classes": CLASSES, "names": NAMES,
            "data": {"kind": "tiny", "source": "test", "path": str(prepared.path),
                     "subset": "test", "size": SIZE, "crop": CROP, "mean_mode": "pixel"},
            "config": {"batch_size": 4}, "epoch": 3, "batch": 0, "step": 15, "lr": 0.001,
            "schedule": {"plateaus": 0}, "best_val_top1_err": 0.42}
    data = {"mean": prepared.mean, "pca_eigvals": prepared.pca_eigvals,
            "pca_eigvecs": prepared.pca_eigvecs}
    ckpt = checkpoint.save(run / "best.npz", net.params, meta, data=data)
    with open(run / "metrics.jsonl", "w") as fh:
        for row in metrics_lines():
            fh.write(json.dumps(row) + "\n")
    return {"ckpt": ckpt, "prepared": prepared, "net": net, "meta": meta, "data": data,
            "run": run, "root": root}


_SHARED: dict = {}


def shared_run(tmp_path_factory) -> dict:
    """make_run once per test session: test_evaluate, test_predict and test_figures share
    it (none of them changes it), which saves building and probing the net three times."""
    if "run" not in _SHARED:
        _SHARED["run"] = make_run(tmp_path_factory.mktemp("shared-run"))
    return _SHARED["run"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return shared_run(tmp_path_factory)


def quiet(*_):
    pass


# --------------------------------------------------------------------------- evaluate
def test_evaluate_equals_loop_evaluate_by_hand(trained):
    """Centre-crop errors and loss equal loop.evaluate over an eval_loader built by hand with
    the checkpoint's augmenter, on the recorded prepared folder; the probe beats chance."""
    r = evaluate_checkpoint(trained["ckpt"], batch_size=16, progress=False, log=quiet)
    n_val = K * VAL_PER_CLASS
    assert r["n"] == n_val and r["split"] == "val" and "ten_crop" not in r
    assert r["data"] == str(trained["prepared"].path)
    c = r["centre"]
    assert 0 <= c["top1_err"] <= 1 and 0 <= c["top5_err"] <= 1 and c["top5_err"] <= c["top1_err"]
    ck = checkpoint.load(trained["ckpt"])
    loader = eval_loader(trained["prepared"], checkpoint.augmenter(ck), batch_size=16)
    hand = evaluate(trained["net"], loader)         # the net the checkpoint was saved from
    assert c == pytest.approx(hand, rel=1e-6, abs=1e-9)
    assert c["top1_err"] < 0.5          # chance is 0.8: the checkpoint's weights were used
    assert c["top5_err"] == 0.0         # only 5 classes


def test_ten_crop_adds_a_second_result(trained):
    """--ten-crop keeps the centre result and adds the ten-crop average, which equals
    evaluate(ten_crop=True) by hand and differs from the centre crop's loss."""
    r = evaluate_checkpoint(trained["ckpt"], ten_crop=True, batch_size=2, max_images=2,
                            progress=False, log=quiet)
    assert set(r) >= {"centre", "ten_crop"} and r["n"] == 2
    t, c = r["ten_crop"], r["centre"]
    assert 0 <= t["top1_err"] <= 1 and t["top5_err"] == 0.0 and t["n"] == 2
    assert np.isfinite(t["loss"]) and 0 < t["loss"] < np.log(K) + 1
    assert t["loss"] != c["loss"]
    ck = checkpoint.load(trained["ckpt"])
    sub = subsample(trained["prepared"], "val", 2)
    hand = evaluate(trained["net"], eval_loader(
        sub, checkpoint.augmenter(ck), batch_size=2, ten_crop=True), ten_crop=True)
    assert t == pytest.approx(hand, rel=1e-6, abs=1e-9)
    assert "ten crops" in format_table(r) and "centre crop" in format_table(r)


def test_subsample_is_evenly_spaced(trained):
    """--max-images keeps every class's share of a split stored class by class."""
    sub = subsample(trained["prepared"], "val", K)
    assert sorted(sub.val_labels.tolist()) == list(range(K))
    assert len(sub.train_labels) == K * TRAIN_PER_CLASS        # the other split untouched
    assert subsample(trained["prepared"], "val", 10_000) is trained["prepared"]


def test_train_split(trained):
    """--split train evaluates the training images (the probe was fitted on them)."""
    r = evaluate_checkpoint(trained["ckpt"], split="train", batch_size=32, progress=False,
                            log=quiet)
    assert r["n"] == K * TRAIN_PER_CLASS and r["centre"]["top1_err"] <= 0.1


def test_class_mismatch_is_a_user_error(trained, tmp_path):
    """A dataset with other classes, or the same classes in another order, is refused."""
    other = make_prepared(tmp_path / "other", classes=[f"n1{i}" for i in range(K)],
                          train_per_class=1, val_per_class=1)
    with pytest.raises(cli.UserError, match="classes"):
        evaluate_checkpoint(trained["ckpt"], data=other.path, progress=False, log=quiet)
    shuffled = make_prepared(tmp_path / "shuffled", classes=CLASSES[::-1], names=NAMES[::-1],
                             train_per_class=1, val_per_class=1)
    with pytest.raises(cli.UserError, match="another order"):
        evaluate_checkpoint(trained["ckpt"], data=shuffled.path, progress=False, log=quiet)


def test_size_mismatch_is_a_user_error(trained, tmp_path):
    """Same classes at another image size: refused with the two sizes named."""
    small = make_prepared(tmp_path / "small", size=32, train_per_class=1, val_per_class=1)
    with pytest.raises(cli.UserError, match="32-px"):
        evaluate_checkpoint(trained["ckpt"], data=small.path, progress=False, log=quiet)


def test_recorded_folder_gone(trained, tmp_path, monkeypatch):
    """When meta["data"]["path"] no longer exists the usual search is used
    ($TINYALEX_DATA here); with nothing found a non-synthetic run is a DataError."""
    meta = json.loads(json.dumps(trained["meta"]))
    meta["data"]["path"] = str(tmp_path / "gone")
    moved = checkpoint.save(tmp_path / "moved.npz", trained["net"].params, meta,
                            data=trained["data"])
    monkeypatch.setenv("TINYALEX_DATA", str(trained["prepared"].path))
    r = evaluate_checkpoint(moved, max_images=2, batch_size=2, progress=False, log=quiet)
    assert r["n"] == 2 and r["data"] == str(trained["prepared"].path)
    monkeypatch.delenv("TINYALEX_DATA")
    monkeypatch.chdir(tmp_path)                      # no ./data here
    with pytest.raises(DataError, match="no dataset found"):
        evaluate_checkpoint(moved, progress=False, log=quiet)


def test_bad_arguments(trained):
    """Nonsense numbers are user errors, raised before any work."""
    for kwargs in ({"batch_size": 0}, {"max_images": 0}, {"split": "test"}):
        with pytest.raises(cli.UserError):
            evaluate_checkpoint(trained["ckpt"], progress=False, log=quiet, **kwargs)


# --------------------------------------------------------------------------- the CLI
def test_cli_prints_the_table(trained, capsys):
    """The command prints the table (percentages) and exits 0."""
    rc = cli.run(main, [str(trained["ckpt"]), "--max-images", "2", "--batch-size", "2"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "top-1 err" in out and "centre crop" in out and "ten crops" not in out
    assert out.count("%") == 2 and "2 images" in out


def test_cli_device_gpu_without_a_gpu_is_one_line(trained, capsys, monkeypatch):
    """--device gpu where CuPy sees no GPU (CI), and on a GPU while the path is unverified:
    one line, exit 2, before any data is read (tests/test_gpu.py runs it on the stand-in)."""
    from tinyalex.backend import gpu_available

    monkeypatch.delenv("TINYALEX_UNVERIFIED_GPU", raising=False)
    assert cli.run(main, [str(trained["ckpt"]), "--device", "gpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --device gpu") and "\n" not in err
    assert ("TINYALEX_UNVERIFIED_GPU=1" in err) == gpu_available()[0]


def test_cli_bad_checkpoints_exit_2(trained, tmp_path, capsys):
    """A missing file, a corrupt file, a text file, a checkpoint cut short and an .npz that
    is no checkpoint: one line that says which, exit 2."""
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    text = tmp_path / "text.npz"
    text.write_text("a text file\n")
    cut = tmp_path / "cut.npz"
    cut.write_bytes(Path(trained["ckpt"]).read_bytes()[:20_000])
    for path, words in ((tmp_path / "missing.npz", "no checkpoint"), (corrupt, "damaged"),
                        (other, "not a tinyalex checkpoint"), (text, "not a tinyalex checkpoint"),
                        (cut, "damaged (20,000 bytes; its end is missing")):
        assert cli.run(main, [str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err and str(path) in err
        assert words in err and "pickled" not in err, err


def test_cli_subprocess_help_and_exit_codes(tmp_path):
    """python -m tinyalex.evaluate: --help exits 0; a missing checkpoint exits 2 with one
    line and no traceback."""
    cmd = [sys.executable, "-m", "tinyalex.evaluate"]
    r = subprocess.run(cmd + ["--help"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "--ten-crop" in r.stdout and "--max-images" in r.stdout
    r = subprocess.run(cmd + [str(tmp_path / "nope.npz")], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "no checkpoint" in r.stderr
