"""The loop of §5: one SGD step and one pass of evaluation, the same for every tool.

``python -m tinyalex.train``, the ablations (learning/experiments.py) and the PyTorch twin
(checks/twin.py) all step through ``train_step`` and measure through ``evaluate``; they
keep only their own bookkeeping (logs, checkpoints, tables). A step, in this order:

    seed the dropout masks from (seed, step, layer)     a resumed run draws the same masks
    forward, loss, backward                              gradients land in net.grads
    stop if the loss is not finite                       BEFORE the update: the weights
                                                         (and the last checkpoint) stay good
    the step's learning rate                             a function of the step
                                                         (optim's schedules), so resume
                                                         stays exact
    the update                                           optim.SGD, §5's rule

Data parallel (distributed.py): each of K ranks runs the same step on its rows of the
global batch, and between backward and the check the gradients and the loss become the
global batch's (``comm.mean_gradients``), so every rank stops or updates alike.

Evaluation (§2, §4.1) runs the net in test mode (dropout off, §4.2) over batches of centre
crops, or of ten crops whose softmax outputs are averaged, and returns top-1 / top-5 error
and the mean loss (metrics.Scores).
"""

from __future__ import annotations

import math

import numpy as np

from .backend import get_array_module
from .layers import Dropout
from .layers.loss import log_softmax, softmax
from .metrics import Scores


class Diverged(FloatingPointError):
    """The loss of a step was not finite; raised before that step's update."""

    def __init__(self, loss: float, step: int):
        super().__init__(f"the loss became {loss} at step {step + 1}")
        self.loss, self.step = loss, step


def seed_dropout(net, seed: int, step: int, rows=None) -> None:
    """Dropout masks are a function of (seed, step, layer): a resumed run draws the same.
    rows (start, stop, B): the input is those rows of a batch of B (a data-parallel rank's
    share), which get the masks the whole batch would give them."""
    for index, (_, layer) in enumerate(net.layers):
        if isinstance(layer, Dropout):
            layer.rng = np.random.default_rng([seed, step, index])
            layer.rows = rows


def forward_backward(net, loss_fn, x, y, layer_done=None):
    """One forward and backward pass: returns (loss, logits); gradients land in net.grads.

    x (B, 3, H, W), y (B,) labels -> loss (a 0-d array), logits (B, K). The net's first
    layer computes no input gradient (nothing uses it). layer_done: Sequential.backward's
    hook, called after each layer's backward."""
    logits = net.forward(x, train=True)
    loss = loss_fn.forward(logits, y)
    net.backward(loss_fn.backward(), input_grad=False, layer_done=layer_done)
    return loss, logits


def train_step(net, loss_fn, opt, x, y, *, step: int, seed: int, lr: float | None = None,
               comm=None, rows=None):
    """One SGD step of §5 on the batch (x, y); returns (loss as a float, logits (B, K)).

    ``step`` is the 0-based count of steps taken before this one and, with ``seed``, picks
    the dropout masks. ``lr`` (optional) is this step's learning rate, set on ``opt`` before
    the update (a warm-up or schedule; None keeps opt.lr). Raises Diverged, with the weights
    and velocities untouched, when the loss is not finite.

    Data parallel: ``comm`` (distributed.MPI) with ``rows=(start, stop, B)``: (x, y) are
    those rows of a global batch of B, and the returned loss is the global batch's mean
    (logits stay this rank's). ``comm=distributed.Local(slices=K)``: one process computes
    the batch as K slices in turn and adds their gradients in order, which is what K ranks
    with an ordered reduction compute. With ``comm.overlap`` each layer's gradients are
    allreduced as soon as its backward is done, while the layers below still compute
    (distributed.LayerReducer): the same sums, sent earlier."""
    if comm is not None and comm.slices > 1:
        loss, logits = sliced_forward_backward(net, loss_fn, x, y, comm.slices, seed, step)
    elif comm is not None and rows is not None and comm.overlap:
        start, stop, batch = rows
        seed_dropout(net, seed, step, rows)
        with comm.layer_reducer((stop - start) / batch) as reducer:
            loss, logits = forward_backward(net, loss_fn, x, y, layer_done=reducer.send)
            loss = reducer.finish(float(loss))
    else:
        seed_dropout(net, seed, step, rows)
        loss, logits = forward_backward(net, loss_fn, x, y)
        loss = float(loss)
        if comm is not None and rows is not None:
            start, stop, batch = rows
            loss = comm.mean_gradients(net.grads, loss, (stop - start) / batch)
    if not math.isfinite(loss):
        raise Diverged(loss, step)
    if lr is not None:
        opt.lr = lr
    opt.step(net.grads)
    return loss, logits


def sliced_forward_backward(net, loss_fn, x, y, slices: int, seed: int, step: int):
    """The gradient of the batch's mean loss as ``slices`` pieces computed one after the
    other: sum_k (n_k / B) g_k, added in slice order, each piece with its rows' dropout
    masks. Returns (loss as a float, logits (B, K)); the sum lands in net.grads."""
    from .distributed import batch_part

    batch = len(y)
    total, loss_sum, logits = None, 0.0, []
    for k in range(slices):
        start, stop = batch_part(batch, k, slices)
        seed_dropout(net, seed, step, (start, stop, batch))
        loss, piece_logits = forward_backward(net, loss_fn, x[start:stop], y[start:stop])
        logits.append(piece_logits)
        grads = net.grads
        share = next(iter(grads.values())).dtype.type((stop - start) / batch)
        if total is None:
            total = {name: g * share for name, g in grads.items()}
            loss_sum = share * share.dtype.type(float(loss))
        else:
            for name, g in grads.items():
                total[name] += g * share
            loss_sum += share * share.dtype.type(float(loss))
    for name, g in net.grads.items():
        g[...] = total[name]
    return float(loss_sum), get_array_module(logits[0]).concatenate(logits)


def evaluate(net, batches, ten_crop: bool = False, max_images: int | None = None,
             progress=None, comm=None) -> dict:
    """Run ``net`` in test mode over (x, y) batches; return errors, mean loss and the count.

    net: anything with ``forward(x, train=False) -> logits`` (a tinyalex net, or an adapter
    of another framework's). batches: (x, y) with x (B, 3, c, c), or (10, B, 3, c, c) when
    ten_crop (the ten patches' softmax outputs are averaged, §4.1). max_images: stop after
    exactly this many images (the last batch cut). progress: an optional callable(count)
    called after each batch (e.g. tqdm.update). comm: a data-parallel communicator whose
    ranks each evaluated their rows of every batch (loader ``ranks``): the counts are
    summed over the ranks (``max_images`` must then be None; cut the loader instead).
    Returns {"top1_err", "top5_err", "loss", "n"}.
    """
    scores = Scores()
    for x, y in batches:
        if max_images is not None:
            left = max_images - scores.n
            if left <= 0:
                break
            if len(y) > left:
                x, y = (x[:, :left] if ten_crop else x[:left]), y[:left]
        if len(y) == 0:          # a rank's share of a last batch smaller than K
            continue
        if ten_crop:
            probs = sum(softmax(net.forward(crop, train=False)) for crop in x) / len(x)
            xp = get_array_module(probs)
            logp = xp.log(xp.maximum(probs, 1e-30))
        else:
            logp = log_softmax(net.forward(x, train=False))
        scores.add(logp, y)
        if progress is not None:
            progress(len(y))
    if comm is not None and comm.size > 1:
        if max_images is not None:
            raise ValueError("with several ranks, cut the loader (eval_loader max_images)")
        loss_sum, top1, top5, n = comm.sum([scores.loss_sum, scores.top1, scores.top5,
                                            scores.n])
        scores.loss_sum, scores.top1, scores.top5, scores.n = loss_sum, int(top1), int(top5), int(n)
    return scores.result()
