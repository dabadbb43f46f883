"""tinyalex.experiments: the ablation runner, on the 4-class colour set (seconds)."""

import json

import numpy as np
import pytest

from tinyalex.commands.cli import UserError
from tinyalex.data.cache import open_prepared
from tinyalex.learning import experiments as ex
from tinyalex.net import alexnet_mini, alexnet_small

FAST = dict(arch="alexnet-mini", crop=46, batch_size=8, steps=6, window=2, lr=0.01,
            targets=(0.9, 0.5))


@pytest.fixture(scope="module")
def subset(tiny_prepared):
    return ex.class_subset(open_prepared(tiny_prepared), classes=3, per_class=10)


def test_variants_change_one_thing():
    """activation/lrn/pool build the ablations; the defaults are the paper's net."""
    base = alexnet_small(10, init="pytorch")
    assert [n for n, _ in base.layers][:4] == ["conv1", "relu1", "lrn1", "pool1"]
    tanh = alexnet_mini(10, activation="tanh", init="pytorch")
    assert sum(n.startswith("tanh") for n, _ in tanh.layers) == 7
    assert not any(n.startswith("relu") for n, _ in tanh.layers)
    assert not any(n.startswith("lrn") for n, _ in alexnet_mini(10, lrn=False).layers)
    pool22 = alexnet_mini(10, pool=(2, 2), input_size=46)
    assert pool22["pool1"].window == 2 and pool22["pool5"].stride == 2
    # 46-px crops: the same map sizes with 3/2 and 2/2 pooling (23 -> 11 -> 5 -> 2)
    sizes = [[o for n, _, _, o in net.shapes() if n.startswith("pool")]
             for net in (alexnet_mini(10, input_size=46), pool22)]
    assert sizes[0] == sizes[1] == [(24, 11, 11), (64, 5, 5), (64, 2, 2)]
    # same init weights where the shapes agree: only the activation differs
    relu = alexnet_mini(10, init="pytorch")
    for k, v in relu.params.items():
        np.testing.assert_array_equal(v, tanh.params[k])
    with pytest.raises(ValueError, match="activation"):
        alexnet_mini(10, activation="sigmoid")


def test_steps_to_error():
    errors = [1.0, 1.0, 0.8, 0.6, 0.4, 0.2]
    assert ex.steps_to_error(errors, 0.5, window=2) == 5   # mean of steps 4-5 = 0.5
    assert ex.steps_to_error(errors, 0.05, window=2) is None
    assert ex.steps_to_error(errors[:1], 0.9, window=2) is None


def test_class_subset(tiny_prepared):
    p = open_prepared(tiny_prepared)
    s = ex.class_subset(p, classes=2, per_class=5, val_per_class=2)
    assert s.num_classes == 2 and s.names == p.names[:2]
    assert np.bincount(s.train_labels).tolist() == [5, 5]
    assert np.bincount(s.val_labels).tolist() == [2, 2]
    with pytest.raises(UserError, match="classes"):
        ex.class_subset(p, classes=9)


def test_run_experiments_shares_the_baseline(subset):
    """Two experiments, three trainings (the baseline once); rows carry curves and errors."""
    trained = []
    real = ex.train_variant

    def spy(*a, **kw):
        trained.append(kw["desc"])
        return real(*a, **kw)

    ex.train_variant = spy
    try:
        rows = ex.run_experiments(["relu-tanh", "lrn"], subset, progress=False, log=lambda m: None,
                                  **FAST)
    finally:
        ex.train_variant = real
    assert len(trained) == 3 and len(rows) == 4
    assert rows[0]["train_err"] == rows[2]["train_err"]        # ReLU == with LRN
    assert rows[1]["config"]["activation"] == "tanh" and rows[3]["config"]["lrn"] is False
    for r in rows:
        assert len(r["train_err"]) == 6 and 0 <= r["val_top1_err"] <= 1
        assert set(r["steps_to"]) == {0.9, 0.5}
    table = ex.format_table(rows)
    assert table.count("\n") == 5 and "steps to 50% train err" in table
    json.dumps(ex.to_json(rows))


def test_pooling_and_pca_run(subset):
    rows = ex.pooling_ablation(subset, progress=False, log=lambda m: None, **FAST)
    assert [r["variant"] for r in rows] == ["overlapping 3/2", "non-overlapping 2/2"]
    assert rows[0]["params"] == rows[1]["params"]               # same map sizes at 46 px
    rows = ex.pca_ablation(subset, progress=False, log=lambda m: None, **FAST)
    assert rows[1]["config"]["pca_std"] == 0.0


def test_learns_the_colour_set(subset):
    """The runner really trains: 3 colour classes are learnt in 40 steps."""
    cfg = {**FAST, "steps": 40}
    result = ex.train_variant(subset, progress=False, **{k: cfg[k] for k in
                                                          ("steps", "arch", "crop", "batch_size", "lr")})
    assert np.mean(result["train_err"][-10:]) < np.mean(result["train_err"][:10])
    assert result["val_top1_err"] < 0.5


def test_find_data(tmp_path, monkeypatch):
    monkeypatch.delenv("TINYALEX_DATA", raising=False)
    monkeypatch.chdir(tmp_path)                         # no ./data
    assert ex.find_data(log=lambda m: None) is None
    monkeypatch.setenv("TINYALEX_REAL_DATA", str(tmp_path))
    assert ex.find_data(log=lambda m: None) is None
    (tmp_path / "tiny-imagenet-100.zip").write_bytes(b"")
    (tmp_path / "imagenette2-224.tgz").write_bytes(b"")
    assert ex.find_data("tiny", log=lambda m: None).name == "tiny-imagenet-100.zip"
    assert ex.find_data("imagenette", log=lambda m: None).name == "imagenette2-224.tgz"


def test_cli(tiny_prepared, tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert ex.main(["pca", "--data", str(tiny_prepared), "--classes", "2", "--steps", "3",
                    "--batch-size", "8", "--window", "2", "--no-progress",
                    "--out", str(out)]) == 0
    assert "| pca (§4.1) | without PCA colour |" in capsys.readouterr().out
    assert len(json.loads(out.read_text())) == 2


@pytest.mark.parametrize("argv,message", [
    (["bogus"], "unknown experiment"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--targets", "2"], "--targets"),
    (["--classes", "0"], "--classes must be at least 1"),
])
def test_cli_errors(argv, message, capsys):
    from tinyalex.commands.cli import run

    assert run(ex.main, argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_help():
    with pytest.raises(SystemExit) as exit_:
        ex.main(["--help"])
    assert exit_.value.code == 0


def test_plot_curves(subset, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    rows = ex.relu_vs_tanh(subset, progress=False, log=lambda m: None, **FAST)
    ax = ex.plot_curves(rows, window=2)
    assert len(ax.get_lines()) == 2
    ax.figure.savefig(tmp_path / "curves.png")
