"""Finding data (--data, TINYALEX_DATA, ./data, synthetic fallback) and the
``python -m tinyalex.data`` command line: exit codes, one-line errors, prepare and info."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinyalex.data.find as find
from tinyalex.data.__main__ import main
from tinyalex.data.cache import write_prepared
from tinyalex.data.errors import DataError

sys.path.insert(0, str(Path(__file__).parent))
from test_data_readers import layout, materialise  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No TINYALEX_DATA, a private cache, and the cwd in an empty tmp folder."""
    monkeypatch.delenv("TINYALEX_DATA", raising=False)
    monkeypatch.setenv("TINYALEX_CACHE", str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def fake_build_synthetic(path, num_classes=100, size=64, seed=0, train_per_class=3,
                         val_per_class=2):
    """Stand-in for synthetic.build_synthetic: a tiny valid prepared folder."""
    rng = np.random.default_rng(seed)
    n, m = num_classes * train_per_class, num_classes * val_per_class
    return write_prepared(path, rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                          np.repeat(np.arange(num_classes), train_per_class),
                          rng.integers(0, 256, (m, size, size, 3), dtype=np.uint8),
                          np.repeat(np.arange(num_classes), val_per_class),
                          {"kind": "synthetic", "classes": [f"syn{i:03d}" for i in range(num_classes)]})


def test_missing_path_exit_2_one_line_no_traceback(tmp_path):
    """A real `python -m tinyalex.data prepare --data MISSING`: exit status 2, exactly one line
    on stderr naming the path and the expected layouts, no traceback."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TINYALEX_CACHE=str(tmp_path / "c"))
    r = subprocess.run([sys.executable, "-m", "tinyalex.data", "prepare", "--data",
                        str(tmp_path / "nope")], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --data ")
    assert "does not exist" in lines[0] and "Tiny ImageNet" in lines[0]
    assert "Traceback" not in r.stderr


def test_help_lists_the_subcommands(capsys):
    """--help exits 0 and lists prepare and info."""
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "prepare" in out and "info" in out


def test_user_errors_exit_2(clean_env, capsys):
    """Impossible subset (Imagenette + 100-class), a folder with no dataset, a bad subset
    value: each is exit 2 with one 'error:' line."""
    nette = materialise(layout("imagenette", n_train=1, n_val=1), clean_env / "imagenette2", "tgz")
    junk = clean_env / "junk"
    junk.mkdir()
    (junk / "readme.md").write_text("hi")
    for argv, pattern in [(["prepare", "--data", str(nette)], "Imagenette has 10 classes"),
                          (["info", "--data", str(junk)], "holds no recognised dataset"),
                          (["prepare", "--data", str(nette), "--subset", "nonsense"],
                           "--subset must be"),
                          (["prepare", "--data", str(nette), "--subset", "all",
                            "--max-per-class", "0"], "at least 1")]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and pattern in err, err


def test_prepare_then_reuse_then_open_prepared(clean_env, capsys):
    """prepare prints the cache folder (exit 0); a second prepare reuses it; --data pointing at
    the prepared folder opens it as it is."""
    ds = materialise(layout("tiny", n_train=2, n_val=1), clean_env / "tiny-imagenet-200", "zip")
    assert main(["prepare", "--data", str(ds), "--subset", "all", "--quiet"]) == 0
    out = capsys.readouterr().out
    folder = Path(out.strip().splitlines()[-1])
    assert folder.parent == clean_env.parent / "cache" and folder.name.startswith("tiny-imagenet-all-64px-")
    assert main(["prepare", "--data", str(ds), "--subset", "all", "--quiet"]) == 0
    assert "reusing prepared dataset" in capsys.readouterr().out
    assert main(["info", "--data", str(folder)]) == 0
    assert "prepared dataset" in capsys.readouterr().out


def test_info_does_not_prepare(clean_env, capsys):
    """info reports kind, classes, counts, the subset and the cache folder, writes nothing."""
    ds = materialise(layout("ilsvrc-flat-csv"), clean_env / "ilsvrc", "folder")
    assert main(["info", "--data", str(ds), "--subset", "all"]) == 0
    out = capsys.readouterr().out
    assert "ILSVRC-2012-style" in out and "3 classes, 6 train / 6 val" in out
    assert "LOC_val_solution.csv" in out and "not prepared yet" in out
    assert not (clean_env.parent / "cache").exists()


def test_default_data_folder_and_env(clean_env, monkeypatch):
    """./data with one archive is found; TINYALEX_DATA wins over ./data; a missing
    TINYALEX_DATA is an error (it was asked for explicitly)."""
    (clean_env / "data").mkdir()
    (clean_env / "data" / "README.md").write_text("put datasets here")
    materialise(layout("tiny"), clean_env / "data" / "tiny-imagenet-200", "zip")
    found = find.locate(log=lambda m: None)
    assert found.what == "source" and found.source.kind == "tiny-imagenet"
    other = materialise(layout("ilsvrc"), clean_env / "elsewhere", "folder")
    monkeypatch.setenv("TINYALEX_DATA", str(other))
    assert find.locate(log=lambda m: None).source.kind == "ilsvrc"
    monkeypatch.setenv("TINYALEX_DATA", str(clean_env / "missing"))
    with pytest.raises(DataError, match=r"\$TINYALEX_DATA .* does not exist"):
        find.locate()


def test_several_datasets_pick_first_by_name_and_say_so(clean_env):
    """Two datasets in one folder: the first by name is used and the log names both."""
    data = clean_env / "data"
    data.mkdir()
    materialise(layout("tiny"), data / "b-tiny", "zip")
    materialise(layout("imagenette", n_train=1, n_val=1), data / "a-nette", "tgz")
    messages = []
    found = find.locate(log=messages.append)
    assert found.source.kind == "imagenette"
    assert any("a-nette.tgz, b-tiny.zip; using a-nette.tgz" in m for m in messages)


def test_resolve_dataset_real_layout_logs_what_it_uses(clean_env):
    """resolve_dataset on ./data prepares once and logs source, kind, classes and folder."""
    materialise(layout("ilsvrc"), clean_env / "data", "folder")
    messages = []
    d = find.resolve_dataset(subset="all", size=8, log=messages.append, progress=False)
    log = "\n".join(messages)
    assert d.num_classes == 3 and "found ILSVRC-2012-style" in log and str(d.path) in log


def test_nothing_found_uses_synthetic_loudly(clean_env, monkeypatch):
    """No data anywhere: a multi-line banner says where it looked, that the run uses the
    SYNTHETIC set and how to get real data; the synthetic set is built once, then reused. With
    allow_synthetic=False it is a DataError instead."""
    from tinyalex.data import synthetic
    if not hasattr(synthetic, "build_synthetic"):
        monkeypatch.setattr(synthetic, "build_synthetic", fake_build_synthetic, raising=False)
    else:
        monkeypatch.setattr(synthetic, "build_synthetic", fake_build_synthetic)
    messages = []
    d = find.resolve_dataset(log=messages.append)
    banner = next(m for m in messages if "NO DATASET FOUND" in m)
    assert banner.count("\n") >= 5 and "SYNTHETIC" in banner
    assert str(clean_env / "data") in banner and "--data" in banner and "Tiny ImageNet" in banner
    assert d.num_classes == 100 and d.path.name.startswith("synthetic-100class-64px-")
    messages.clear()
    find.resolve_dataset(log=messages.append)
    assert any("reusing synthetic" in m for m in messages)
    with pytest.raises(DataError, match="no dataset found"):
        find.resolve_dataset(allow_synthetic=False, log=lambda m: None)


def test_real_info_on_shared_folder(real_data, capsys):
    """info on the real data folder: picks one of the archives, says which, no prepare."""
    assert main(["info", "--data", str(real_data), "--subset", "all"]) == 0
    out = capsys.readouterr().out
    assert "using imagenette2-224.tgz" in out and "10 classes, 5000 train / 3000 val" in out


def test_shared_data_flags_for_other_clis(clean_env):
    """add_data_arguments + resolve_from_args: the flags train/evaluate CLIs reuse give the same
    prepared dataset as the prepare command."""
    import argparse
    ds = materialise(layout("ilsvrc"), clean_env / "ilsvrc", "zip")
    parser = argparse.ArgumentParser()
    find.add_data_arguments(parser)
    args = parser.parse_args(["--data", str(ds), "--subset", "all", "--size", "8",
                              "--max-per-class", "1"])
    d = find.resolve_from_args(args, log=lambda m: None, progress=False)
    assert d.train_images.shape == (3, 8, 8, 3) and d.meta["max_per_class"] == 1


def test_the_repository_data_folder_is_found_from_any_folder(tiny_prepared, tmp_path,
                                                             monkeypatch):
    """A dataset in the repository's data/ (where the README says to put it) is found from
    any working folder, e.g. a notebook kernel's notebooks/: by the CLIs' lookup and by the
    notebooks' and experiments' (find_kind), and the log says where it came from."""
    import shutil

    from tinyalex.learning import experiments

    repo_data = tmp_path / "repo" / "data"
    repo_data.mkdir(parents=True)
    shutil.copytree(tiny_prepared, repo_data / "tiny-imagenet-100")
    monkeypatch.setattr(find, "REPO_DATA", repo_data)
    monkeypatch.delenv("TINYALEX_DATA", raising=False)
    notebooks = tmp_path / "repo" / "notebooks"
    notebooks.mkdir()
    monkeypatch.chdir(notebooks)                        # no ./data here
    messages = []
    prepared = find.resolve_dataset(log=messages.append)
    assert prepared.path == repo_data / "tiny-imagenet-100"
    assert experiments.find_data("tiny", log=messages.append) == repo_data / "tiny-imagenet-100"
    assert any("the repository's data/" in m for m in messages)
    assert not any("NO DATASET" in m for m in messages)


def test_the_real_data_folder_is_the_last_default_place(tiny_prepared, tmp_path, monkeypatch):
    """$TINYALEX_REAL_DATA (the tests' folder of real data) is looked at after ./data and the
    repository's data/, and ./data wins when both hold a dataset."""
    import shutil

    real = tmp_path / "real"
    real.mkdir()
    shutil.copytree(tiny_prepared, real / "tiny-imagenet-100")
    monkeypatch.setenv("TINYALEX_REAL_DATA", str(real))
    monkeypatch.delenv("TINYALEX_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    assert find.locate(log=lambda m: None).path == real / "tiny-imagenet-100"
    (tmp_path / "data").mkdir()
    shutil.copytree(tiny_prepared, tmp_path / "data" / "mine")
    assert find.locate(log=lambda m: None).path == tmp_path / "data" / "mine"


def test_a_folder_with_imagenette_and_tiny_gives_the_one_that_has_the_subset(real_data, tmp_path):
    """By name Imagenette comes first; '100-class' takes Tiny ImageNet instead of failing on
    Imagenette's 10 classes, and 'all' still takes the first."""
    from tinyalex.data import find

    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("imagenette2-224.tgz", "tiny-imagenet-100.zip"):
        (folder / name).symlink_to(real_data / name)
    lines = []
    p = find.resolve_dataset(folder, subset="100-class", max_per_class=1, cache=tmp_path / "c",
                             log=lines.append, progress=False)
    assert p.num_classes == 100
    assert any("imagenette2-224.tgz has no '100-class' subset (it has 10 classes); using "
               "tiny-imagenet-100.zip" in line for line in lines)
    p = find.resolve_dataset(folder, subset="all", max_per_class=1, cache=tmp_path / "c",
                             log=lines.append, progress=False)
    assert p.num_classes == 10
