"""tinyalex.learning.notebook (what every chapter shares) and the figure marks it relies on:
the first output names the data, CI-budget figures say they are a smoke run, suggested
commands run in-process with the CI budget's extra arguments, progress bars stay quiet off a
terminal, class names are cut at a word."""

from __future__ import annotations

import io

import matplotlib
import pytest

matplotlib.use("Agg")

from tinyalex.commands import cli, figures  # noqa: E402
from tinyalex.data import find  # noqa: E402
from tinyalex.learning import notebook  # noqa: E402


@pytest.fixture
def no_data(tmp_path, monkeypatch):
    """A working folder and repository with no data, no data variables."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(find, "REPO_DATA", tmp_path / "repo-data")
    monkeypatch.delenv("TINYALEX_DATA", raising=False)
    monkeypatch.delenv("TINYALEX_REAL_DATA", raising=False)
    return tmp_path


def lines_of(**kwargs) -> list[str]:
    out = []
    budget = notebook.start(log=out.append, **kwargs)
    return [budget] + out


def test_start_names_the_data_it_found(no_data, monkeypatch):
    folder = no_data / "elsewhere"
    folder.mkdir()
    (folder / "tiny-imagenet-100.zip").write_bytes(b"")
    monkeypatch.setenv("TINYALEX_REAL_DATA", str(folder))
    monkeypatch.setenv("TINYALEX_NOTEBOOK_BUDGET", "ci")
    budget, first, data = lines_of(data=["tiny"])
    assert budget == "ci"
    assert "tinyalex" in first and "budget 'ci'" in first
    assert data == f"data: Tiny ImageNet from {folder / 'tiny-imagenet-100.zip'}"


def test_start_says_when_there_is_no_data_and_how_to_get_it(no_data, monkeypatch):
    monkeypatch.delenv("TINYALEX_NOTEBOOK_BUDGET", raising=False)
    budget, _, tiny, samples = lines_of(data=["tiny", "samples"])
    assert budget == "full"
    assert "no Tiny ImageNet found" in tiny and "SYNTHETIC" in tiny
    assert "python -m tinyalex.data download tiny-imagenet" in tiny
    assert "no full-size ImageNet samples found" in samples and "synthetic picture" in samples


def test_start_without_data(no_data):
    assert lines_of()[2].startswith("data: none needed")


def test_a_wrong_budget_is_an_error(monkeypatch):
    monkeypatch.setenv("TINYALEX_NOTEBOOK_BUDGET", "fast")
    with pytest.raises(ValueError, match="TINYALEX_NOTEBOOK_BUDGET='fast'"):
        notebook.budget()


def test_mark_writes_the_smoke_note_at_the_ci_budget_only():
    import matplotlib.pyplot as plt

    for budget, expected in (("ci", [notebook.SMOKE_NOTE]), ("full", [])):
        fig = plt.figure()
        notebook.mark(fig, budget)
        assert [t.get_text() for t in fig.texts] == expected
        plt.close(fig)
    assert notebook.note("ci") == notebook.SMOKE_NOTE and notebook.note("full") is None


def test_figures_carry_the_note_and_the_title(tmp_path):
    from tinyalex.net import alexnet_mini

    net = alexnet_mini(10, init="pytorch")
    plain = figures.plot_filters(net, tmp_path / "a.png").read_bytes()
    marked = figures.plot_filters(net, tmp_path / "b.png", title="untrained",
                                  note=notebook.SMOKE_NOTE).read_bytes()
    assert plain != marked


def test_filters_caption_names_the_grouped_layer_after_conv1():
    from tinyalex.layers import Conv2D, ReLU
    from tinyalex.net import Sequential, alexnet_mini

    assert figures._next_grouped(alexnet_mini(10, init="pytorch"), "conv1") == "conv2"
    plain = Sequential([("conv1", Conv2D(3, 4, 3)), ("relu1", ReLU()),
                        ("conv2", Conv2D(4, 4, 3))], input_shape=(3, 9, 9))
    assert figures._next_grouped(plain, "conv1") is None


def test_run_calls_the_command_in_process_with_the_smoke_arguments(capsys):
    assert notebook.run("python -m tinyalex.summary --arch alexnet", "ci",
                        smoke="--arch alexnet-mini --num-classes 10") == 0
    out = capsys.readouterr().out
    assert out.startswith("$ python -m tinyalex.summary --arch alexnet   # + --arch alexnet-mini")
    assert "alexnet-mini" in out and "60,965,224" not in out
    notebook.run("python -m tinyalex.summary --arch alexnet", "full", smoke="--arch alexnet-mini")
    assert "60,965,224" in capsys.readouterr().out


def test_run_raises_on_a_failing_command_and_refuses_other_lines():
    with pytest.raises(RuntimeError, match="exit status 2"):
        notebook.run("python -m tinyalex.predict no-such.npz no-such.jpg", "full")
    with pytest.raises(ValueError, match="not a 'python -m tinyalex"):
        notebook.run("ls -l", "full")


class _Tty(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("stream,interval", [(io.StringIO(), cli.QUIET_INTERVAL), (_Tty(), 0.5)])
def test_progress_bars_off_a_terminal_redraw_rarely(monkeypatch, stream, interval):
    monkeypatch.setattr("sys.stderr", stream)
    bar = cli.progress_bar(10, "x")
    assert bar.mininterval == interval
    bar.close()


@pytest.mark.parametrize("name,width,short", [
    ("great white shark, white shark", 18, "great white shark"),
    ("great white shark, white shark", 12, "great white…"),
    ("American alligator, Alligator mississipiensis", 16, "American…"),
    ("Chihuahua", 6, "Chihu…"),                     # one word: no boundary to cut at
    ("tabby, tabby cat", 18, "tabby"),
])
def test_short_names_are_cut_at_a_word(name, width, short):
    assert figures.short_name(name, width) == short
    assert len(figures.short_name(name, width)) <= width
