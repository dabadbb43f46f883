"""Every command's --help explains every option (a user should not have to read the code)."""

import argparse
import importlib

import pytest

from tinyalex.commands import cli

COMMANDS = ["tinyalex.commands.train", "tinyalex.commands.evaluate",
            "tinyalex.commands.predict", "tinyalex.commands.figures", "tinyalex.commands.summary",
            "tinyalex.checks.bench", "tinyalex.checks.twin", "tinyalex.data.__main__",
            "tinyalex.learning.experiments", "tinyalex.commands.weights",
            "tinyalex.commands.export"]
#: The short names the README gives (python -m tinyalex.X): shims over the modules above.
SHORT_NAMES = ["train", "evaluate", "predict", "figures", "summary", "bench", "experiments",
               "weights", "export"]


class _Caught(Exception):
    pass


def _parser_of(module_name, monkeypatch) -> argparse.ArgumentParser:
    """The parser a command's main() builds, caught when it parses."""
    seen = {}

    def catch(self, *args, **kwargs):
        seen["parser"] = self
        raise _Caught

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", catch)
    main = importlib.import_module(module_name).main
    with pytest.raises(_Caught):
        main(["--help"] if module_name != "tinyalex.checks.bench" else ["step", "--help"])
    return seen["parser"]


def _options_without_help(parser, prefix=""):
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += _options_without_help(sub, f"{prefix}{name} ")
        elif action.option_strings and not (action.help or "").strip():
            missing.append(prefix + "/".join(action.option_strings))
    return missing


@pytest.mark.parametrize("module_name", COMMANDS)
def test_every_option_has_help(module_name, monkeypatch):
    parser = _parser_of(module_name, monkeypatch)
    assert _options_without_help(parser) == []


def test_help_shows_a_default_once():
    p = cli.parser("prog", "test")
    p.add_argument("--a", type=int, default=3, help="a number")
    p.add_argument("--b", default="x", help="b (default: x)")
    p.add_argument("--c", default=None, help="optional")
    p.add_argument("--d", action="store_true", help="a switch")
    text = p.format_help()
    assert "a number (default: 3)" in text
    assert text.count("(default: x)") == 1
    assert "default: None" not in text and "default: False" not in text


@pytest.mark.parametrize("name", SHORT_NAMES)
def test_short_names_run_the_command(name):
    """python -m tinyalex.X (the README's spelling) runs the command in commands/, checks/
    or learning/: tinyalex.X holds its run_command, which tunes the process before the
    command's imports load numpy (importing tinyalex.X loads none)."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", f"tinyalex.{name}", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert f"python -m tinyalex.{name}" in run.stdout
    light = subprocess.run([sys.executable, "-c", f"import sys, tinyalex.{name}; "
                            "print('numpy' in sys.modules)"], capture_output=True, text=True)
    assert light.returncode == 0 and light.stdout.split() == ["False"], light.stderr


def _scripts() -> dict:
    """pyproject's [project.scripts] (read by hand: tomllib is Python 3.11+)."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    section = text.split("[project.scripts]\n", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^([\w-]+) = "([\w.:]+)"$', section, re.MULTILINE))


@pytest.mark.parametrize("script", sorted(_scripts()))
def test_each_script_is_a_command_that_returns_its_exit_status(script, capsys):
    """Every [project.scripts] entry is a command's entry point (a function of argv; its
    --help exits 0) named for a short name the README gives."""
    module_name, function = _scripts()[script].split(":")
    run = getattr(importlib.import_module(module_name), function)
    with pytest.raises(SystemExit) as exit_:
        run(["--help"])
    assert exit_.value.code == 0 and "usage:" in capsys.readouterr().out
    assert script.removeprefix("tinyalex-") in SHORT_NAMES + ["data"]
