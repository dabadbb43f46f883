"""``python -m tinyalex.bench``: how fast is each layer, and the whole training step?

Times every layer's forward and backward at the training batch size, then a whole SGD
training step (forward, loss, backward, update) in img/s, with its peak memory (RSS of a
fresh process that runs only that step). ``--compare-torch`` measures the same layers and
step in PyTorch CPU in the same run and prints the ratios: on a machine whose CPU model
can change, only a ratio measured in one run means anything.

Run it as a user's machine would: if OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are set for old
OpenBLAS builds, unset them for this command. The BLAS kernel that ran is printed.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

from ..commands import cli
from ..layers import SoftmaxCrossEntropy
from ..loop import forward_backward
from ..net import ARCHITECTURES, build
from ..optim import SGD
from .timing import batch_for, blas_info, cpu_name, layer_times, median_time


def peak_rss_bytes() -> int:
    """This process's peak resident memory. /proc's VmHWM starts afresh at exec, unlike
    getrusage's ru_maxrss, which a child inherits from the parent that forked it."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


# ---------------------------------------------------------------------------- per layer

def textbook_layer_times(net, x, scale: float) -> list[tuple[str, float, float] | None]:
    """(name, forward s, backward s) per layer of the textbook NumPy twins
    (tinyalex/checks/textbook.py), each timed once on x (plain NumPy: nothing to warm up, and
    seconds per layer where tinyalex takes tenths) and multiplied by ``scale`` (batch size
    / len(x); their cost is linear in the batch, but a batch much smaller than the
    training one flatters them: its arrays fit in cache). None for a layer with no twin."""
    from .textbook import textbook_twin

    rows = []
    rng = np.random.default_rng(1)
    for name, layer in net.layers:
        twin = textbook_twin(layer)
        if twin is None:
            rows.append(None)
            x = layer.forward(x, True)
            continue
        start = time.perf_counter()
        out = twin.forward(x, True)
        fwd = time.perf_counter() - start
        dout = rng.standard_normal(out.shape, dtype=np.float32)
        start = time.perf_counter()
        twin.backward(dout)
        bwd = time.perf_counter() - start
        rows.append((name, fwd * scale, bwd * scale))
        del twin
        x = out
    return rows


def sgemm_gflops(size: int = 2048, repeats: int = 3) -> float:
    """The best float32 GEMM rate of this machine's BLAS (numpy's), in GFLOP/s: a square
    size^3 product, the shape BLAS runs fastest; no convolution or FC layer beats it."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    out = np.empty((size, size), dtype=np.float32)
    np.matmul(a, b, out=out)
    seconds = min(median_time(lambda: np.matmul(a, b, out=out), repeats) for _ in range(2))
    return 2 * size ** 3 / seconds / 1e9


def layer_gemm_flops(net, batch_size: int) -> list[float]:
    """Per layer, the FLOPs of a training step's products at this batch: forward's count
    times 3 (dW and dx are each as big), times 2 for a first layer that computes no dx;
    0 for a layer with no product (pooling, LRN, ReLU, ...)."""
    rows = []
    for index, (_, layer, shape, _) in enumerate(net.shapes()):
        passes = 3 if index > 0 or not hasattr(layer, "need_input_grad") else 2
        rows.append(passes * layer.flops(shape) * batch_size if layer.params else 0.0)
    return rows


# Per layer without products, the fewest bytes its forward + backward must move, in
# arrays the size of its input (x) and output (y): ReLU reads x, writes y, then reads dout
# and y and writes dx; LRN likewise (its y or s recomputed, not stored); dropout reads x,
# writes y, reads dout, writes dx (the mask's bytes not counted); max pooling reads x, writes
# y, reads dout (y-sized) and writes dx.
MIN_PASSES = {"ReLU": (5, 0), "LocalResponseNorm": (5, 0), "Dropout": (4, 0),
              "MaxPool2D": (2, 2)}


def memory_gbps(megabytes: int = 256, repeats: int = 7) -> float:
    """The machine's best streaming rate in GB/s (bytes read + written), on every core: the
    parallel ReLU kernel over a large positive array into one already written (a fresh
    one would time the page faults), which is a copy."""
    from ..kernels import relu as relu_kernels

    x = np.ones(megabytes * 2**20 // 4, dtype=np.float32)
    y = np.zeros_like(x)
    relu_kernels.relu_forward_into(x, y)
    best = float("inf")
    for _ in range(repeats):  # the best, not the median: it bounds what any code can do
        start = time.perf_counter()
        relu_kernels.relu_forward_into(x, y)
        best = min(best, time.perf_counter() - start)
    return 2 * x.nbytes / best / 1e9


def least_times(net, batch_size: int, sgemm_rate: float,
                memory_rate: float) -> list[float | None]:
    """Per layer, the least time its forward + backward could take on this machine (its
    bound): for conv and FC, the products' FLOPs at the best sgemm rate (a Winograd layer
    does fewer multiplications, at its size: the fast path's algorithm's
    (kernels/winograd/batch.algorithm) Winograd.fewer_multiplications,
    space_to_depth.fewer_multiplications);
    for the others, MIN_PASSES' bytes at the best streaming rate, a bound for arrays past
    the caches (the training batch's are; a small batch's may beat it). None where there
    is no work (flatten)."""
    from ..kernels import space_to_depth
    from ..kernels.winograd import batch as winograd_batch

    least = []
    for (_, layer, in_shape, out_shape), flops in zip(net.shapes(),
                                                      layer_gemm_flops(net, batch_size)):
        kind = type(layer).__name__
        if flops:
            method = conv_method(layer) if kind == "Conv2D" else None
            if method == "winograd":
                flops /= winograd_batch.algorithm(
                    layer.kernel_size, *out_shape[1:]).fewer_multiplications(*out_shape[1:])
            elif method == "space-to-depth":
                flops /= space_to_depth.fewer_multiplications(layer.kernel_size,
                                                              layer.stride, *out_shape[1:])
            least.append(flops / (sgemm_rate * 1e9))
        elif kind in MIN_PASSES:
            of_x, of_y = MIN_PASSES[kind]
            elements = of_x * int(np.prod(in_shape)) + of_y * int(np.prod(out_shape))
            least.append(4 * batch_size * elements / (memory_rate * 1e9))  # float32
        else:
            least.append(None)
    return least


def textbook_bounds(textbook, least) -> list[float | None]:
    """Per layer, the largest speed-up over its textbook twin that any code could reach on
    this machine: the twin's time / the least time the work can take (least_times). None
    where there is no twin or no work."""
    return [None if row is None or bound is None else (row[1] + row[2]) / bound
            for row, bound in zip(textbook, least)]


# Why a layer may stay past 2x its bound, by what computes it: printed under the table for
# each layer that does (python -m tinyalex.bench; docs/speed.md has the measurements).
FAR_FROM_BOUND = {
    "im2col": "im2col copies each input pixel about (kernel/stride)^2 times and col2im adds "
              "them back, and the GEMM's inner dimension (C*k*k: 363 for the paper's conv1) "
              "is short for BLAS",
    "few-taps": "im2col copies each input pixel about (kernel/stride)^2 times, and the "
                "products' inner dimension (C*k*k: 75 for the small net's conv1) is short",
    "readable": "the readable im2col body: whole-batch products on every thread, no "
                "batch-parallel variant (TINYALEX_NO_BATCH_PARALLEL_CONV, or a BLAS whose "
                "threads cannot be set)",
    "winograd": "the transforms read and write (K, C, tiles) planes, 2.8x (3x3 on 6x6: "
                "F(3x3,3x3)), 2x (3x3 on 13x13: F(5x5,3x3)) or 5.4x (5x5: F(3x3,5x5)) the layer's "
                "output, and its K GEMMs per pass are small (inner dimension "
                "C/groups: 48 for conv2, 192 for conv4-5, 256 for conv3) and run below the "
                "2048^3 rate",
    "space-to-depth": "Winograd's transforms read and write (16, C*s*s, tiles) planes, 4x "
                      "the layer's output, and its 16 GEMMs per pass have a short inner "
                      "dimension (C*s*s = 48 for the paper's conv1) and run below the 2048^3 "
                      "rate",
    "MaxPool2D": "each output compares its whole window (9 values, the windows overlap) and "
                 "forward writes the argmax that backward reads; the bound counts one pass "
                 "over x and y each way",
    "Dropout": "a random number is drawn for each element (numpy's generator), work the "
               "byte count leaves out",
    "LocalResponseNorm": "each element needs a window sum over 5 channels and a power "
                         "(two square roots), computation the byte count leaves out",
    "Linear": "its product (batch x inputs x outputs) is far smaller than 2048^3 and runs "
              "below BLAS's best rate",
}
SHORT = 0.5e-3  # a layer whose least time is below this is mostly its call's fixed cost
SHORT_REASON = ("a pass this short (its least < 0.5 ms) is mostly the call's fixed cost "
                "(Python, numba's dispatch, a thread start)")


def conv_method(layer) -> str:
    """What computes this Conv2D here in float32 (kernels/dispatch.conv_algorithm):
    "winograd", "space-to-depth", "few-taps", "im2col" or "readable"."""
    from ..kernels import dispatch

    W_shape = layer.params["W"].shape
    return dispatch.conv_algorithm((1, layer.in_channels, 1, 1), W_shape, layer.stride,
                                   layer.padding, layer.groups, np.float32)


def far_from_bound_reason(layer) -> str:
    """The FAR_FROM_BOUND sentence for this layer ('' if none is written)."""
    kind = type(layer).__name__
    return FAR_FROM_BOUND.get(conv_method(layer) if kind == "Conv2D" else kind, "")


def step_gflop_per_image(net) -> float:
    """A training step's GFLOP per image: forward FLOPs (tinyalex.commands.summary's count) times 3
    (backward: the products for dW and for dx are each as big as the forward's)."""
    return 3 * sum(layer.flops(shape) for _, layer, shape, _ in net.shapes()) / 1e9


# ----------------------------------------------------------- the whole step, in a child

SPLIT = ("gemm", "transform", "copy", "elementwise", "conv rest", "python and rest")
SPLIT_NAMES = {
    "gemm": "GEMM (conv products, FC layers)",
    "transform": "transforms (im2col/col2im, Winograd's)",
    "copy": "copies (GEMM results to NCHW and back, bias)",
    "elementwise": "elementwise (ReLU, LRN, pool, dropout, loss, SGD, db)",
    "conv rest": "conv, the rest (a worker's wait, filter transforms, partial sums)",
    "python and rest": "Python, allocation, the rest of the step",
}


def step_split(net, loss_fn, opt, x, y, repeats: int = 3) -> dict:
    """Where a training step's time goes, in seconds by SPLIT kind (the step of median
    length of ``repeats``). The convolutions' tasks tally their GEMMs, transforms, copies
    and elementwise passes (kernels/threads.timed) summed over the worker threads, divided
    here by the workers' count; the rest of a conv layer's own time is "conv rest". FC
    layers count as GEMM, the other layers, the loss and the SGD update as elementwise;
    the step's time beyond its layers' is "python and rest"."""
    import numba

    from ..kernels import threads

    layer_seconds = {}

    def timing(name, method):
        def timed_method(*args):
            start = time.perf_counter()
            out = method(*args)
            layer_seconds[name] = layer_seconds.get(name, 0.0) + time.perf_counter() - start
            return out
        return timed_method

    kinds = {name: type(layer).__name__ for name, layer in net.layers}
    for name, layer in net.layers:
        layer.forward, layer.backward = timing(name, layer.forward), timing(name, layer.backward)
    loss_fn.forward, loss_fn.backward = (timing("loss", loss_fn.forward),
                                         timing("loss", loss_fn.backward))
    opt.step = timing("sgd", opt.step)
    workers = numba.get_num_threads()
    steps = []
    try:
        for _ in range(repeats):
            layer_seconds.clear()
            tally = threads.start_tally()
            start = time.perf_counter()
            forward_backward(net, loss_fn, x, y)
            opt.step(net.grads)
            total = time.perf_counter() - start
            threads.stop_tally()
            split = dict.fromkeys(SPLIT, 0.0)
            for kind in ("gemm", "transform", "copy", "elementwise"):
                split[kind] = tally[kind] / workers
            conv = sum(t for n, t in layer_seconds.items() if kinds.get(n) == "Conv2D")
            split["conv rest"] = conv - sum(split.values())
            for name, seconds in layer_seconds.items():
                if kinds.get(name) != "Conv2D":
                    split["gemm" if kinds.get(name) == "Linear" else "elementwise"] += seconds
            split["python and rest"] = total - sum(layer_seconds.values())
            steps.append((total, split))
    finally:
        threads.stop_tally()
        for _, layer in net.layers:  # the instance attributes shadowed the methods
            del layer.forward, layer.backward
        del loss_fn.forward, loss_fn.backward, opt.step
    steps.sort(key=lambda pair: pair[0])
    return steps[len(steps) // 2][1]


def format_split(split: dict) -> str:
    """The time split as lines: ms per step and share, by SPLIT kind."""
    total = sum(split.values())
    return "\n".join(f"    {SPLIT_NAMES[kind]:<67} {split[kind] * 1e3:>7.1f} ms "
                     f"{split[kind] / total:>4.0%}" for kind in SPLIT)


# Steps run before the timed ones: the first compiles (or loads) the kernels, and the next
# few still grow malloc's arenas. Measured (alexnet-small, batch 128, 2-core AVX-512 EPYC,
# ms per step in a fresh process): 1092-3166, then 749-906, 753-803, then 600-650 on; a
# median of 5 after one warm-up step took two ramp steps in and read 15% slow in an A/B.
WARMUP_STEPS = 3


def step_child(framework: str, arch: str, batch_size: int, num_classes: int,
               steps: int) -> dict:
    """Time `steps` training steps after WARMUP_STEPS; report img/s and peak RSS."""
    net = build(arch, num_classes)
    x, y = batch_for(net, batch_size, num_classes)
    if framework == "tinyalex":
        loss_fn = SoftmaxCrossEntropy()
        opt = SGD(net.params)

        def step():
            forward_backward(net, loss_fn, x, y)
            opt.step(net.grads)
    else:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        step = torch_step_fn(net, x, y)
        del net
    for _ in range(WARMUP_STEPS):
        step()
    seconds = median_time(step, steps)
    rss = peak_rss_bytes()
    result = {"framework": framework, "seconds": seconds, "img_per_s": batch_size / seconds,
              "peak_rss_bytes": rss}
    if framework == "tinyalex":  # right after the steps, while the machine is as loaded
        result["sgemm_gflops"] = sgemm_gflops()
        result["split"] = step_split(net, loss_fn, opt, x, y, steps)
    return result


def run_step_in_child(framework: str, args, tuned: bool = True) -> dict:
    """One framework's step in a fresh process. tuned=False runs it with
    TINYALEX_NO_TUNING=1: the malloc, OpenBLAS and OpenMP settings tinyalex makes on
    import are left alone, as for a plain PyTorch user. PyTorch's tuned run takes the
    malloc and OpenBLAS ones but keeps OpenMP's default spin (GOMP_SPINCOUNT=300000,
    libgomp's own when OMP_WAIT_POLICY is unset; it overrides the policy's): with
    OMP_WAIT_POLICY=PASSIVE its step ran 4-9% slower (small net, 3 rounds alternating),
    where tinyalex's ran 1.16-1.18x faster."""
    cmd = [sys.executable, "-m", "tinyalex.bench", "_step", "--framework", framework,
           "--arch", args.arch, "--batch-size", str(args.batch_size),
           "--num-classes", str(args.num_classes), "--steps", str(args.steps)]
    env = dict(os.environ)
    if framework == "torch":
        env.pop("OMP_WAIT_POLICY", None)
        if tuned:
            env["GOMP_SPINCOUNT"] = "300000"
    if not tuned:
        env["TINYALEX_NO_TUNING"] = "1"
        env.pop("OPENBLAS_THREAD_TIMEOUT", None)
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{framework} step benchmark failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def torch_step_fn(net, x, y, device: str = "cpu"):
    """A PyTorch training step of ``net``'s twin (tinyalex.checks.interop.to_torch, its weights) on
    the batch (x, y), on ``device``, with the paper's SGD; on CUDA the step ends synchronised."""
    import torch

    from .interop import to_torch

    model = to_torch(net).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    xt = torch.from_numpy(x).to(device)
    yt = torch.from_numpy(y.astype(np.int64)).to(device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(xt), yt).backward()
        opt.step()
        if device != "cpu":
            torch.cuda.synchronize()

    return step


# ------------------------------------------------------------------- the step on a GPU

def gpu_step_report(args) -> int:
    """The paper's step on the GPU: tinyalex on CuPy against PyTorch CUDA (same weights,
    same batch), both timed in this process with the device synchronised around each step."""
    from ..backend import gpu_available, gpu_module

    ok, why = gpu_available()
    if not ok:
        raise cli.UserError(f"--device gpu: {why}")
    cp = gpu_module()
    net = build(args.arch, args.num_classes)
    x, y = batch_for(net, args.batch_size, args.num_classes)
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    print(f"GPU: {props['name'].decode()}; CuPy {cp.__version__}")
    print(f"net: {args.arch}, {args.num_classes} classes, batch {args.batch_size}, float32")
    rows = []
    if args.compare_torch:
        import torch

        if not torch.cuda.is_available():
            raise cli.UserError("--compare-torch on the GPU needs a CUDA build of PyTorch")
        torch_step = torch_step_fn(net, x, y, "cuda")
    net.to(cp)
    opt = SGD(net.params)
    xg, yg = cp.asarray(x), cp.asarray(y)
    loss = SoftmaxCrossEntropy()

    def step():
        forward_backward(net, loss, xg, yg)
        opt.step(net.grads)
        cp.cuda.Device().synchronize()

    step()
    rows.append(("tinyalex (CuPy)", median_time(step, args.steps)))
    if args.compare_torch:
        torch_step()
        rows.append(("torch (CUDA)", median_time(torch_step, args.steps)))
    print(f"\ntraining step (forward, loss, backward, SGD update; median of {args.steps}):")
    for name, seconds in rows:
        print(f"  {name:<20} {args.batch_size / seconds:>9.1f} img/s ({seconds * 1e3:.1f} ms/step)")
    if len(rows) == 2:
        print(f"  tinyalex / torch: {rows[1][1] / rows[0][1]:.2f}x the img/s "
              f"(the target: within 2x of torch's time, i.e. >= 0.50x)")
    return 0


# ------------------------------------------------------------------------------ loader

def loader_report(args) -> int:
    """The background loader (random crop, flip, PCA colour, mean, batching) must deliver
    at least 3x the images per second the training step eats, or training waits on it.
    Random uint8 images stand in for a dataset: the work does not depend on the pixels."""
    import tempfile

    from ..data.cache import open_prepared, write_prepared
    from ..data.loader import measure_throughput, train_loader

    rng = np.random.default_rng(0)
    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores)")
    print(f"{'images':<8} {'arch':<14} {'loader img/s':>13} {'step img/s':>11} {'ratio':>7}")
    for size, arch, count in ((64, "alexnet-small", 4096), (256, "alexnet", 768)):
        with tempfile.TemporaryDirectory() as tmp:
            images = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
            labels = rng.integers(0, 100, count).astype(np.int32)
            path = write_prepared(f"{tmp}/set", images, labels, images[:8], labels[:8],
                                  {"classes": [f"c{i}" for i in range(100)], "kind": "bench"})
            loader = train_loader(open_prepared(path), batch_size=args.batch_size)
            loader_rate = measure_throughput(loader, n_batches=len(loader) - 1)
            del loader
        child = argparse_namespace(args, arch=arch)
        step_rate = run_step_in_child("tinyalex", child)["img_per_s"]
        print(f"{size:>4} px  {arch:<14} {loader_rate:>13.0f} {step_rate:>11.1f} "
              f"{loader_rate / step_rate:>6.1f}x")
    print("the loader keeps up when the ratio is at least 3x (it shares the cores with "
          "the step)")
    return 0


def argparse_namespace(args, **changes):
    import argparse

    values = dict(vars(args))
    values.update(changes)
    return argparse.Namespace(**values)


# ------------------------------------------------------------------------------ report

def format_layers(ours, theirs=None, textbook=None, bounds=None, least=None) -> str:
    """The per-layer table: tinyalex's times, then PyTorch's and the textbook twins' (each
    optional) with tinyalex's speed-up over them (their fwd+bwd time / tinyalex's), with
    ``bounds`` (textbook_bounds) the most any code could beat the textbook by, and with
    ``least`` (least_times) the least time the layer's work can take and how far
    tinyalex's fwd+bwd is from it."""
    head = f"{'layer':<9} {'fwd ms':>9} {'bwd ms':>9}"
    if theirs:
        head += f" {'torch fwd':>10} {'torch bwd':>10} {'vs torch':>9}"
    if textbook:
        head += f" {'textbook f+b':>13} {'vs textbook':>12}"
        if bounds:
            head += f" {'bound':>8}"
    if least:
        head += f" {'least ms':>9} {'x least':>8}"
    lines = [head, "-" * len(head)]
    for i, (name, f, b) in enumerate(ours):
        line = f"{name:<9} {f * 1e3:>9.1f} {b * 1e3:>9.1f}"
        if theirs:
            _, tf, tb = theirs[i]
            line += f" {tf * 1e3:>10.1f} {tb * 1e3:>10.1f} {(tf + tb) / max(f + b, 1e-9):>8.2f}x"
        if textbook:
            if textbook[i] is None:
                line += f" {'-':>13} {'-':>12}"
            else:
                _, tf, tb = textbook[i]
                line += f" {(tf + tb) * 1e3:>13.1f} {(tf + tb) / max(f + b, 1e-9):>11.1f}x"
            if bounds:
                line += f" {'-':>8}" if bounds[i] is None else f" {bounds[i]:>7.1f}x"
        if least:
            line += (f" {'-':>9} {'-':>8}" if least[i] is None else
                     f" {least[i] * 1e3:>9.1f} {(f + b) / least[i]:>7.1f}x")
        lines.append(line)
    total = sum(f + b for _, f, b in ours)
    line = f"{'sum':<9} {sum(f for _, f, _ in ours) * 1e3:>9.1f} {sum(b for *_, b in ours) * 1e3:>9.1f}"
    if theirs:
        ttotal = sum(f + b for _, f, b in theirs)
        line += (f" {sum(f for _, f, _ in theirs) * 1e3:>10.1f} "
                 f"{sum(b for *_, b in theirs) * 1e3:>10.1f} {ttotal / total:>8.2f}x")
    if textbook:
        ttotal = sum(f + b for row in textbook if row for _, f, b in [row])
        line += f" {ttotal * 1e3:>13.1f} {ttotal / total:>11.1f}x"
        if bounds:
            line += f" {'':>8}"
    if least:
        bound = sum(t for t in least if t is not None)
        line += f" {bound * 1e3:>9.1f} {total / bound:>7.1f}x"
    lines.append(line)
    return "\n".join(lines)


def far_from_bound_lines(net, ours, least, limit: float = 2.0) -> list[str]:
    """One line per layer whose fwd+bwd is more than ``limit`` x its least time: by how much,
    and why (FAR_FROM_BOUND)."""
    lines = []
    for (name, layer), (_, f, b), bound in zip(net.layers, ours, least):
        if bound is not None and (f + b) / bound > limit:
            reason = (SHORT_REASON if bound < SHORT else far_from_bound_reason(layer)
                      or "no reason written down yet")
            lines.append(f"  {name} at {(f + b) / bound:.1f}x its least: {reason}")
    return lines


# ------------------------------------------------------------------------- command line

#: The subcommands: name -> its line in --help. ``step`` is the default (``python -m
#: tinyalex.bench --compare-torch`` is ``... bench step --compare-torch``); ``_step`` is the
#: child that run_step_in_child starts, left out of --help (None).
SUBCOMMANDS = {
    "step": "time each layer's forward and backward, then the whole training step (the "
            "default)",
    "loader": "the data loader's img/s against the training step's",
    "twin": "train tinyalex and its PyTorch twin on the same batches, compare val error "
            "and time per epoch (tinyalex/checks/twin.py)",
    "scaling": "1 process against 2 MPI ranks, and the step modelled on 1-64 machines "
               "(tinyalex/checks/scaling.py)",
    "_step": None,
}


def add_batch_arguments(p) -> None:
    """The options of a timed training step (step, loader, _step)."""
    p.add_argument("--batch-size", type=int, default=128, help="images per step (§5: 128)")
    p.add_argument("--num-classes", type=int, default=100, help="outputs of fc8")
    p.add_argument("--steps", type=int, default=3,
                   help=f"timed training steps (median), after {WARMUP_STEPS} untimed ones")


def add_arch_argument(p) -> None:
    p.add_argument("--arch", default="alexnet", choices=sorted(ARCHITECTURES),
                   help="the net whose layers and step are timed")


def add_step_arguments(p) -> None:
    add_arch_argument(p)
    add_batch_arguments(p)
    p.add_argument("--repeats", type=int, default=3, help="timings per layer (median)")
    p.add_argument("--compare-torch", action="store_true",
                   help="also time PyTorch CPU on the same layers and step")
    p.add_argument("--no-layers", action="store_true", help="skip the per-layer table")
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"],
                   help="gpu: time the training step on CuPy (with --compare-torch, against "
                        "PyTorch CUDA in the same run); needs CuPy and an NVIDIA GPU")
    p.add_argument("--textbook-batch", type=int, default=None,
                   help="batch on which the textbook NumPy layers (tinyalex/checks/textbook.py) are "
                        "timed, scaled to --batch-size (default: --batch-size; a smaller one "
                        "is quicker but fits in cache); 0 skips them")


def add_child_arguments(p) -> None:
    add_arch_argument(p)
    add_batch_arguments(p)
    p.add_argument("--framework", default="tinyalex", choices=["tinyalex", "torch"],
                   help=argparse_hidden())


def build_parser():
    from . import scaling, twin

    p = cli.parser("python -m tinyalex.bench",
                   "Time each layer and the whole training step (step, the default), the "
                   "data loader (loader), the PyTorch twin's training (twin) or data "
                   "parallelism (scaling). Each has its own --help: python -m tinyalex.bench "
                   "twin --help.")
    sub = p.add_subparsers(dest="what", metavar="COMMAND")
    routes = {"step": (add_step_arguments, run_step),
              "loader": (add_batch_arguments, run_loader),
              "twin": (twin.add_arguments, twin.run),
              "scaling": (scaling.add_arguments, scaling.run),
              "_step": (add_child_arguments, run_step_child)}
    descriptions = {"twin": twin.DESCRIPTION, "scaling": scaling.DESCRIPTION}
    for name, help_ in SUBCOMMANDS.items():
        add_arguments, run = routes[name]
        listed = {} if help_ is None else {"help": help_}  # without help=, not in --help
        q = sub.add_parser(name, description=descriptions.get(name, help_),
                           formatter_class=cli.HelpFormatter, **listed)
        add_arguments(q)
        q.set_defaults(run=run)
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["step", *argv]  # no subcommand: the step, as python -m tinyalex.bench always did
    args = build_parser().parse_args(argv)
    return args.run(args)


def check_step_numbers(args) -> None:
    repeats, textbook_batch = getattr(args, "repeats", 1), getattr(args, "textbook_batch", 0)
    if args.batch_size < 1 or args.steps < 1 or repeats < 1 or textbook_batch < 0:
        raise cli.UserError("--batch-size, --steps and --repeats must be at least 1, "
                            "--textbook-batch at least 0")


def run_step_child(args) -> int:
    """``bench _step``: one framework's step (step_child), its result as one JSON line."""
    check_step_numbers(args)
    print(json.dumps(step_child(args.framework, args.arch, args.batch_size,
                                args.num_classes, args.steps)))
    return 0


def run_loader(args) -> int:
    check_step_numbers(args)
    return loader_report(args)


def run_step(args) -> int:
    """``bench step``: the per-layer table and the training step (or, with --device gpu,
    the step on CuPy)."""
    if args.textbook_batch is None:
        args.textbook_batch = args.batch_size
    check_step_numbers(args)

    if args.device == "gpu":
        return gpu_step_report(args)

    if args.compare_torch:
        try:
            import torch
        except ImportError:
            raise cli.UserError("--compare-torch needs PyTorch: pip install torch==2.13.0 "
                                "(the CPU build; torch is never a runtime dependency)") from None
        torch.set_num_threads(os.cpu_count() or 1)

    import numba
    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores); numba threads {numba.get_num_threads()}")
    print(f"BLAS: {blas_info()}; OPENBLAS_THREAD_TIMEOUT="
          f"{os.environ.get('OPENBLAS_THREAD_TIMEOUT', 'unset')}")
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if os.environ.get(var):
            print(f"note: {var}={os.environ[var]} is set; a user's machine would not set it")
    from ..kernels import dispatch
    settings = dispatch.SETTINGS
    if not settings.fast or dispatch.conv_algorithm(
            (1, 1, 1, 1), (1, 1, 1, 1), 1, 0, 1, np.float32) == "readable":
        print("convolutions: the readable im2col body (no batch-parallel conv on this BLAS, "
              "or TINYALEX_NO_NUMBA / TINYALEX_NO_BATCH_PARALLEL_CONV is set)")
    elif settings.winograd:
        print("convolutions: 3x3 and 5x5 stride-1 by Winograd F(3x3,3x3) or F(5x5,3x3) (fewer "
              "multiplications on 13x13) and F(3x3,5x5), "
              "strided ones of 3 phases and 48+ channels (the paper's conv1) by F(2x2,3x3) on "
              "their space-to-depth maps, the others by im2col (its products by Numba's "
              f"register-blocked kernels where a group has <= {dispatch.FEW_TAPS_MAX} taps, the small "
              "nets' conv1; else OpenBLAS)")
    else:
        print("convolutions: all by im2col (TINYALEX_NO_WINOGRAD is set)")
    print(f"net: {args.arch}, {args.num_classes} classes, batch {args.batch_size}, float32")

    if not args.no_layers:
        net = build(args.arch, args.num_classes)
        x, _ = batch_for(net, args.batch_size, args.num_classes)
        ours, theirs = layer_times(net, x, args.repeats, args.compare_torch)
        textbook = bounds = None
        rate, stream = sgemm_gflops(), memory_gbps()
        least = least_times(net, args.batch_size, rate, stream)
        if args.textbook_batch > 0:
            small = x[:min(args.textbook_batch, args.batch_size)]
            textbook = textbook_layer_times(net, small, args.batch_size / len(small))
            bounds = textbook_bounds(textbook, least)
        print(f"\nper layer (median of {args.repeats}; vs X = X's fwd+bwd time / tinyalex's)"
              + ("; each PyTorch layer timed right after tinyalex's" if theirs else "")
              + ("; textbook NumPy timed once" + (
                  f" at batch {len(small)}, scaled to {args.batch_size}"
                  if len(small) < args.batch_size else "") if textbook else "") + ":")
        print(format_layers(ours, theirs, textbook, bounds, least))
        print(f"least: the least time the layer's work can take, its bound: conv and FC "
              f"products at the best sgemm rate ({rate:.0f} GFLOP/s, measured now; a "
              f"Winograd layer's fewer multiplications at its size: 3x3 3.24x on 6x6, 3.45x "
              f"on 13x13; 5x5 3.45x on 13x13, 4.59x on 27x27; the paper's conv1 by "
              f"space-to-depth 1.82x), the others' fewest bytes at the "
              f"best streaming rate ({stream:.1f} GB/s); x least: tinyalex's fwd+bwd / it")
        if bounds:
            print("bound: the most any code could beat the textbook by here, its time / least")
        far = far_from_bound_lines(net, ours, least)
        if far:
            print("past 2x of their least time, and why:")
            print("\n".join(far))
        del net, x

    print(f"\ntraining step (forward, loss, backward, SGD update; median of {args.steps}, "
          "each framework in a fresh process for its peak RSS):")
    gflop = step_gflop_per_image(build(args.arch, args.num_classes))
    rows = [("tinyalex", run_step_in_child("tinyalex", args))]
    if args.compare_torch:
        rows.append(("torch", run_step_in_child("torch", args, tuned=False)))
        rows.append(("torch + tinyalex's malloc/OpenBLAS settings",
                     run_step_in_child("torch", args, tuned=True)))
    for label, r in rows:
        print(f"  {label:<45} {r['img_per_s']:>6.1f} img/s ({r['seconds']:.2f} s/step)  "
              f"peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB")
    if args.compare_torch:
        ours, theirs, tuned = (r for _, r in rows)
        print(f"  tinyalex / torch: {ours['img_per_s'] / theirs['img_per_s']:.2f}x the img/s "
              f"({ours['img_per_s'] / tuned['img_per_s']:.2f}x against the tuned torch), "
              f"{ours['peak_rss_bytes'] / theirs['peak_rss_bytes']:.2f}x the peak RSS")
    ours = rows[0][1]
    ceiling = ours["sgemm_gflops"] / gflop
    print(f"  GEMM ceiling: best sgemm {ours['sgemm_gflops']:.0f} GFLOP/s (2048^3, measured right "
          f"after tinyalex's steps) / {gflop:.2f} GFLOP per image per step = {ceiling:.1f} img/s; "
          f"tinyalex reaches {ours['img_per_s'] / ceiling:.0%} of it")
    split = ours["split"]
    print(f"  tinyalex's step, split ({sum(split.values()):.2f} s, the median of {args.steps} "
          f"more steps timed piece by piece):")
    print(format_split(split))
    return 0


def argparse_hidden():
    import argparse
    return argparse.SUPPRESS


run_command = cli.command(main)  # python -m, and the script's entry (tinyalex/bench.py tunes)


if __name__ == "__main__":
    raise SystemExit(run_command())
