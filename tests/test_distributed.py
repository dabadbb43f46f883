"""Data parallelism (tinyalex/distributed.py): the pieces in one process, then real 2-rank
jobs under mpiexec (mpi4py and MPICH come with the test extra; CI runs them).

* a rank's rows of a batch get the crops, flips, colours and dropout masks the one-process
  batch gives them;
* 2 ranks with the ordered reduction, float64: weights after 3 steps bit-identical across
  ranks and bit-identical to one process computing the same 2 slices in order; against the
  whole batch at once, and in float32 with one allreduce, equal to rounding;
* ``mpiexec -n 2 python -m tinyalex.train``: one run folder written once, a resume with
  another number of ranks, a rank that dies or errs ends the job and leaves the checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import stand_in

from tinyalex import checkpoint, distributed
from tinyalex.data.augment import Augmenter
from tinyalex.data.loader import BatchLoader
from tinyalex.layers import Dropout

HERE = Path(__file__).resolve().parent
MPIEXEC = distributed.mpiexec_path()
try:
    import mpi4py  # noqa: F401
    HAVE_MPI = MPIEXEC is not None
except ImportError:
    HAVE_MPI = False
needs_mpi = pytest.mark.skipif(not HAVE_MPI, reason="needs mpi4py and mpiexec "
                               "(pip install 'tinyalex[mpi]')")
# One thread a rank, and the same in the one-process runs compared with them: the batch-
# parallel convolution adds per-thread partial sums, so the thread count is in the result.
ONE_THREAD = {"NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def env(**extra):
    out = {k: v for k, v in os.environ.items() if k not in distributed.SIZE_VARIABLES}
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent),
                                                      os.environ.get("PYTHONPATH")]))
    out.update(ONE_THREAD, **extra)
    return out


def mpiexec(n, *cmd, timeout=300, extra_env=None, **kw):
    return subprocess.run([MPIEXEC, "-n", str(n), *cmd], capture_output=True, text=True,
                          timeout=timeout, env=env(**(extra_env or {})), **kw)


# ---------------------------------------------------------------- the pieces, one process

@pytest.mark.parametrize("batch,size", [(128, 2), (128, 3), (7, 4), (3, 4), (1, 2)])
def test_batch_parts_tile_the_batch(batch, size):
    parts = [distributed.batch_part(batch, r, size) for r in range(size)]
    assert parts[0][0] == 0 and parts[-1][1] == batch
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    sizes = [b - a for a, b in parts]
    assert max(sizes) - min(sizes) <= 1


def test_a_ranks_rows_are_augmented_as_in_the_whole_batch():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (40, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(40) % 5
    aug = Augmenter(images.mean(0), np.ones(3), np.eye(3), crop=28)
    whole = BatchLoader(images, labels, aug.train, batch_size=12, seed=4)
    for epoch, k in ((0, 0), (1, 2)):
        x, y = whole.make_batch(epoch, k)
        for size in (2, 3, 5):
            pieces = [BatchLoader(images, labels, aug.train, batch_size=12, seed=4,
                                  ranks=(r, size)).make_batch(epoch, k) for r in range(size)]
            assert np.array_equal(np.concatenate([p[0] for p in pieces]), x)
            assert np.array_equal(np.concatenate([p[1] for p in pieces]), y)


def test_a_ranks_dropout_masks_are_its_rows_of_the_whole_batch():
    x = np.ones((10, 6), np.float64)
    whole = Dropout(0.5, rng=7).forward(x)
    parts = []
    for r in range(3):
        layer = Dropout(0.5, rng=7)
        layer.rows = (*distributed.batch_part(10, r, 3), 10)
        parts.append(layer.forward(x[layer.rows[0]:layer.rows[1]]))
    assert np.array_equal(np.concatenate(parts), whole)
    layer = Dropout(0.5)
    layer.rows = (0, 4, 10)
    with pytest.raises(ValueError, match="rows 0:4"):
        layer.forward(x)


def test_without_mpiexec_it_is_one_process_and_mpi4py_is_not_needed(monkeypatch):
    for name in distributed.SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setitem(sys.modules, "mpi4py", None)   # as if not installed
    comm = distributed.world()
    assert isinstance(comm, distributed.Local) and comm.size == 1
    monkeypatch.setenv("PMI_SIZE", "2")
    with pytest.raises(distributed.MPIMissing, match=r"pip install 'tinyalex\[mpi\]'"):
        distributed.world()


def test_the_train_command_says_what_to_install_when_mpi4py_is_missing(monkeypatch, capsys):
    from tinyalex.commands import train

    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    assert train.run_command(["--help"]) == 2
    assert "mpi4py is not installed" in capsys.readouterr().err


# ------------------------------------------------------------------ 2 ranks, the maths

@pytest.fixture(scope="module")
def three_steps(tmp_path_factory):
    """Final weights of mpi_steps.py: 2 ranks; one process in 2 slices; the whole batch."""
    root = tmp_path_factory.mktemp("steps")
    r = mpiexec(2, sys.executable, str(HERE / "mpi_steps.py"), str(root / "mpi"))
    assert r.returncode == 0, r.stderr[-3000:]
    for name, extra in (("slices", ["--slices", "2"]), ("whole", [])):
        r = subprocess.run([sys.executable, str(HERE / "mpi_steps.py"), str(root / name),
                            *extra], capture_output=True, text=True, timeout=300, env=env())
        assert r.returncode == 0, r.stderr[-3000:]
    load = lambda name, rank=0: dict(np.load(root / name / f"rank{rank}.npz"))  # noqa: E731
    return {"rank0": load("mpi"), "rank1": load("mpi", 1), "slices": load("slices"),
            "whole": load("whole")}


def largest_relative_difference(a: dict, b: dict, prefix: str) -> float:
    keys = [k for k in a if k.startswith(prefix)]
    assert keys
    return max(float(np.abs(a[k] - b[k]).max() / np.abs(b[k]).max()) for k in keys)


@needs_mpi
def test_two_ranks_hold_bit_identical_weights(three_steps):
    a, b = three_steps["rank0"], three_steps["rank1"]
    assert set(a) == set(b)
    for k in a:
        assert np.array_equal(a[k], b[k]), k


@needs_mpi
def test_ordered_float64_equals_one_process_in_the_same_slices_bitwise(three_steps):
    a, s = three_steps["rank0"], three_steps["slices"]
    for k in (k for k in a if k.startswith("float64/")):
        assert np.array_equal(a[k], s[k]), k


@needs_mpi
def test_two_ranks_equal_the_whole_batch_to_rounding(three_steps):
    """Measured: 1.7e-16 (float64) and 8.9e-8 (float32) relative to each tensor's largest
    weight: the GEMMs add the batch's 16 terms as 8 + 8 instead of 16 at once."""
    a, w = three_steps["rank0"], three_steps["whole"]
    assert largest_relative_difference(a, w, "float64/") < 1e-13
    assert largest_relative_difference(a, w, "float32/") < 1e-5


@needs_mpi
def test_the_overlap_gives_the_same_weights_as_one_allreduce_bitwise(three_steps):
    """Per-layer allreduces during backward add the same two numbers per weight as the one
    allreduce after it (a + b, in either order, is one float): bitwise equal, 2 ranks."""
    a = three_steps["rank0"]
    overlap = [k for k in a if k.startswith("float32-overlap/")]
    assert overlap
    for k in overlap:
        assert np.array_equal(a[k], a[k.replace("float32-overlap/", "float32/")]), k
        assert np.array_equal(a[k], three_steps["rank1"][k]), k


@needs_mpi
def test_train_with_the_overlap_says_so_and_trains_the_same_weights(tiny_prepared, tmp_path):
    runs = {}
    for flag in ((), ("--overlap",)):
        out = tmp_path / ("overlap" if flag else "plain")
        r = mpiexec(2, *train_cmd(tiny_prepared, out, "--max-steps", "4", *flag))
        assert r.returncode == 0, r.stderr[-3000:]
        runs[bool(flag)] = checkpoint.load(out / "last.npz").params
        said = "allreduced layer by layer during backward" in r.stdout + r.stderr
        assert said == bool(flag)
    for k in runs[False]:
        assert np.array_equal(runs[False][k], runs[True][k]), k


def test_the_overlap_and_the_ordered_reduction_are_refused_together():
    from tinyalex.commands import cli, train

    cfg = {**train.DEFAULTS, "overlap": True, "ordered_reduction": True}
    with pytest.raises(cli.UserError, match="do not combine"):
        train.check_config(cfg)


# --------------------------------------------------------------- 2 ranks, the command

def train_cmd(data: Path, out: Path, *extra) -> list:
    return [sys.executable, "-m", "tinyalex.train", "--data", str(data), "--out", str(out),
            "--arch", "alexnet-mini", "--batch-size", "8", "--log-every", "1",
            "--no-figures", "--epochs", "2", "--seed", "5", *extra]


def one_process(cmd, extra_env=None):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env=env(**(extra_env or {})))


def steps_logged(out: Path) -> list:
    return [json.loads(line)["step"] for line in open(out / "metrics.jsonl")
            if json.loads(line)["kind"] == "train"]


# The convolutions of the resume test by im2col: a rank's half batch gives each image's
# output and dx bit for bit, but its dW partial sums round differently from the whole
# batch's (tests/test_winograd.py checks both), and on this run's fast-falling loss one such
# difference was amplified: with F(3x3, 3x3), whose dW rounds ~3x more than F(2x2, 3x3)'s,
# the straight run's loss at step 11 differed in the 5th digit from the resumed one's and
# the weights by up to 1% at step 16, where im2col's and F(2x2, 3x3)'s stay within 3e-7.
# Which way a run goes is chance; the check here is the data-parallel machinery.
IM2COL = {"TINYALEX_NO_WINOGRAD": "1"}


@needs_mpi
def test_train_with_two_ranks_and_resume_with_another_count(tiny_prepared, tmp_path):
    """One process straight through, against: 2 ranks for 6 steps then 1 process to the
    end, and 1 process for 6 steps then 2 ranks to the end. Same recipe, the weights equal
    to float32 rounding; rank 0 alone writes the run folder (each step logged once)."""
    straight = tmp_path / "straight"
    r = one_process(train_cmd(tiny_prepared, straight), IM2COL)
    assert r.returncode == 0, r.stderr
    reference = checkpoint.load(straight / "last.npz")

    two_then_one = tmp_path / "two-then-one"
    r = mpiexec(2, *train_cmd(tiny_prepared, two_then_one, "--max-steps", "6"),
                extra_env=IM2COL)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "data parallel: 2 MPI ranks" in r.stdout + r.stderr
    assert steps_logged(two_then_one) == [1, 2, 3, 4, 5, 6]
    log = (two_then_one / "train.log").read_text()
    assert log.count("reached --max-steps 6") == 1
    r = one_process(train_cmd(tiny_prepared, two_then_one, "--resume", str(two_then_one),
                              "--max-steps", "16"), IM2COL)
    assert r.returncode == 0, r.stderr

    one_then_two = tmp_path / "one-then-two"
    r = one_process(train_cmd(tiny_prepared, one_then_two, "--max-steps", "6"), IM2COL)
    assert r.returncode == 0, r.stderr
    r = mpiexec(2, *train_cmd(tiny_prepared, one_then_two, "--resume", str(one_then_two),
                             "--max-steps", "16"), extra_env=IM2COL)
    assert r.returncode == 0, r.stderr[-3000:]

    for out in (two_then_one, one_then_two):
        ckpt = checkpoint.load(out / "last.npz")
        assert ckpt.meta["step"] == reference.meta["step"] == 16
        assert steps_logged(out) == list(range(1, 17))
        for name, w in reference.params.items():
            scale = np.abs(w).max()
            assert np.abs(ckpt.params[name] - w).max() <= 1e-4 * scale, (out.name, name)
        val, ref = validations(out), validations(straight)
        assert sorted(ref) == [8, 16] and set(ref) <= set(val)  # (+ the partial at 6)
        for step in ref:   # evaluated by 2 ranks (their rows summed) or by one
            assert abs(val[step] - ref[step]) < 1e-3 * ref[step]


def validations(out: Path) -> dict:
    """{step: validation loss} of a run (the last one is 'partial' when --max-steps ends it)."""
    return {r["step"]: r["val_loss"] for r in map(json.loads, open(out / "metrics.jsonl"))
            if r["kind"] in ("epoch", "partial")}


def parent_pid(pid: int) -> int:
    """The parent of a process (0 when it is gone): field 4 of /proc/PID/stat, read after
    the command name, which may hold spaces and parentheses."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def rank_pid(root_pid: int, rank: int) -> int | None:
    """The pid of a rank of an mpiexec job: a descendant of root_pid whose environment says
    PMI_RANK (only a descendant: another job on the machine, e.g. another checkout's tests,
    has ranks of the same number, and killing one of those left this job running)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if f"PMI_RANK={rank}".encode() in environ and b"tinyalex.train" in cmdline:
            pid = int(entry.name)
            while pid > 1 and pid != root_pid:
                pid = parent_pid(pid)
            if pid == root_pid:
                return int(entry.name)
    return None


@needs_mpi
def test_a_rank_that_dies_ends_the_job_and_leaves_the_checkpoint(tiny_prepared, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([MPIEXEC, "-n", "2", *train_cmd(
        tiny_prepared, out, "--epochs", "50", "--checkpoint-every", "2")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env())
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            if (out / "metrics.jsonl").is_file() and len(steps_logged(out)) >= 3:
                break
            time.sleep(0.1)
        pid = rank_pid(proc.pid, 1)
        assert pid is not None, "rank 1 not found"
        os.kill(pid, signal.SIGKILL)
        output, _ = proc.communicate(timeout=120)   # must not hang
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "KILLED BY SIGNAL: 9" in output or "BAD TERMINATION" in output, output[-2000:]
    ckpt = checkpoint.load(out / "last.npz")    # intact: written atomically by rank 0
    assert ckpt.meta["step"] >= 2
    r = one_process(train_cmd(tiny_prepared, out, "--resume", str(out),
                              "--max-steps", str(ckpt.meta["step"] + 1)))
    assert r.returncode == 0, r.stderr


@needs_mpi
def test_a_user_error_under_mpiexec_ends_every_rank(tiny_prepared, tmp_path):
    r = mpiexec(2, *train_cmd(tiny_prepared, tmp_path / "run", "--lr", "-1"), timeout=120)
    assert r.returncode != 0
    assert "error: --lr must be positive" in r.stderr
    assert "ending all ranks" in r.stderr


# ------------------------------------------------------- 2 ranks on a GPU, or the stand-in

def _gpu():
    from tinyalex.backend import gpu_available

    return gpu_available()


@needs_mpi
@pytest.mark.skipif(not _gpu()[0] and shutil.which("g++") is None,
                    reason="needs a GPU, or g++ for the CuPy stand-in (tests/stand_in)")
@pytest.mark.parametrize("overlap", [False, True])
def test_two_ranks_with_cupy_arrays_train_like_the_cpu(tiny_prepared, tmp_path, overlap):
    """The host-staged path: each rank's CuPy gradients copied to the host, allreduced, and
    copied back (distributed._to_host). Both ranks on the one GPU, or each on the CuPy
    stand-in where there is none (tests/test_gpu.py says what that checks); the weights
    after 4 steps equal the CPU run's to float32 rounding."""
    flag = ["--overlap"] if overlap else []
    runs = {}
    for device in ("cpu", "gpu"):
        out = tmp_path / device
        extra = {"TINYALEX_UNVERIFIED_GPU": "1"}
        if device == "gpu" and not _gpu()[0]:
            extra["PYTHONPATH"] = stand_in.environ({})["PYTHONPATH"]
        r = mpiexec(2, *train_cmd(tiny_prepared, out, "--max-steps", "4", "--device", device,
                                  *flag), extra_env=extra)
        assert r.returncode == 0, r.stderr[-3000:]
        runs[device] = checkpoint.load(out / "last.npz").params
    for k, w in runs["cpu"].items():
        assert np.abs(runs["gpu"][k] - w).max() <= 1e-4 * np.abs(w).max(), k
