"""python -m tinyalex.summary prints the per-layer table and the paper's totals."""

import subprocess
import sys

from tinyalex.commands.summary import main, summary_rows
from tinyalex.net import alexnet


def test_summary_totals_match_the_paper(capsys):
    assert main(["--arch", "alexnet", "--num-classes", "1000"]) == 0
    out = capsys.readouterr().out
    assert "60,965,224" in out
    assert "96x55x55" in out and "256x6x6" in out


def test_conv_flops_are_two_per_multiply_add():
    rows = {r[0]: r for r in summary_rows(alexnet(1000))}
    # conv1: 96 kernels x 55x55 outputs x 363 multiply-adds x 2, plus a bias add each
    assert rows["conv1"][4] == 2 * 96 * 55 * 55 * 363 + 96 * 55 * 55
    assert rows["fc6"][3] == 9216 * 4096 + 4096


def test_summary_cli_user_error_is_one_line_exit_2():
    r = subprocess.run([sys.executable, "-m", "tinyalex.summary", "--num-classes", "0"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error:") and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "tinyalex.summary", "--help"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "--arch" in r.stdout
