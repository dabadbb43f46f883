"""python -m tinyalex.bench scaling: the allreduce model and the command (issue 19, item 4)."""

from __future__ import annotations

import pytest

from tinyalex.checks import scaling
from tinyalex.net import alexnet

# (name, forward s, backward s, gradient bytes): a conv stack that is slow and small, then
# FC layers that are fast and big, as in AlexNet
LAYERS = [("conv1", 1.0, 2.0, 1_000), ("relu1", 0.1, 0.1, 0), ("conv2", 1.0, 2.0, 4_000),
          ("fc6", 0.1, 0.2, 100_000_000), ("fc7", 0.05, 0.1, 50_000_000)]


def test_ring_allreduce_is_2_k_minus_1_messages_of_a_kth():
    assert scaling.ring_allreduce_seconds(1e9, 1, 1e9, 1e-3) == 0
    assert scaling.ring_allreduce_seconds(1e9, 2, 1e9, 0.0) == pytest.approx(1.0)
    assert scaling.ring_allreduce_seconds(1e9, 4, 1e9, 0.0) == pytest.approx(1.5)
    assert scaling.ring_allreduce_seconds(0, 4, 1e9, 1e-3) == pytest.approx(6e-3)


def test_one_machine_is_the_compute_and_the_update():
    for overlap in (False, True):
        step, comm = scaling.step_seconds(LAYERS, 0.5, 1, 1e9, 1e-5, overlap)
        assert comm == 0 and step == pytest.approx(6.65 + 0.5)


def test_overlap_hides_the_fc_traffic_behind_the_conv_backward():
    bandwidth = 1.25e9                                   # 10 Gbit/s
    plain, comm = scaling.step_seconds(LAYERS, 0.0, 2, bandwidth, 0.0, False)
    over, comm_over = scaling.step_seconds(LAYERS, 0.0, 2, bandwidth, 0.0, True)
    assert comm == pytest.approx(comm_over)              # the same bytes, no latency
    assert plain == pytest.approx(6.65 / 2 + comm)
    assert over < plain
    # never faster than the compute or the link alone
    assert over >= max(6.65 / 2, 2.25 / 2 + 0.1 / 2 + comm) - 1e-12   # link starts after fc7


def test_per_layer_messages_pay_the_latency_once_each():
    slow_link = dict(bandwidth=1e15, latency=1e-3)
    _, comm_plain = scaling.step_seconds(LAYERS, 0.0, 8, overlap=False, **slow_link)
    _, comm_over = scaling.step_seconds(LAYERS, 0.0, 8, overlap=True, **slow_link)
    assert comm_over == pytest.approx(4 * comm_plain, rel=1e-4)   # 4 layers with gradients


def test_layer_bytes_are_the_paper_nets_244_mb():
    sizes = scaling.layer_bytes(alexnet(num_classes=1000))
    assert sum(sizes.values()) == 4 * 60_965_224
    assert sum(v for k, v in sizes.items() if k.startswith("fc")) / sum(sizes.values()) > 0.95


def test_the_command_measures_two_ranks_and_prints_the_model(capsys):
    assert scaling.mpi_missing() is None, "the test extra brings mpi4py and mpich"
    assert scaling.main(["--arch", "alexnet-mini", "--num-classes", "10", "--batch-size", "8",
                         "--steps", "1", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "mpiexec -n 2  1 thread(s) per process" in out
    assert "2 ranks / 1 process:" in out and "  + --overlap" in out
    table = [line for line in out.splitlines() if line.startswith(("10 Gbit/s", "100 Gbit/s"))]
    assert len(table) == 2 * len(scaling.MACHINES)


def test_bad_arguments_are_one_line_errors():
    from tinyalex.commands import cli

    with pytest.raises(cli.UserError, match="--batch-size must be at least 2"):
        scaling.main(["--batch-size", "1", "--no-ranks"])


def test_scaling_does_not_import_the_bench():
    """bench.py routes ``bench scaling`` to scaling.py; what both time with is in timing.py,
    so the imports go one way (bench -> scaling -> timing), never back."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(scaling))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "bench" not in imported and "tinyalex.checks.bench" not in imported
