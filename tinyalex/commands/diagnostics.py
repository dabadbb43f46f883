"""Training diagnostics a learner can read: how big the signal and the gradients are, layer
by layer, and how many ReLUs are dead. They show why §5's init N(0, 0.01²) sits at chance
on these nets while a fan-in init learns (README, "Diagnostics").

``diagnostics(net, logits, opt)`` is called by the trainer AFTER a training step is
complete: forward and backward done AND the SGD update applied. It only reads what the
step left behind (each layer's ``cache``, ``grads``, ``params`` and the optimizer's
velocity): no RNG, no state that training uses is touched, so a run with diagnostics gives
bit-identical weights to one without. It returns a flat dict of floats; for each learnable
layer L (Conv2D, Linear), named as in the net ("conv1", ..., "fc8"):

* ``L.act_rms``: RMS over the batch of L's output activation as the next layer sees it:
  the output of the ReLU right after L (``relu1.cache`` for conv1), or the logits for the
  last layer (given as ``logits``; left out when not).
* ``L.act_signal``: the part of that activation that depends on the input, the RMS over
  units of the standard deviation over the batch's examples, sqrt(mean_u var_n(y[n, u])).
  When it is tiny against ``act_rms`` every image gives (nearly) the same activation: the
  constant biases carry the signal, not the picture. This is §5's init on these nets.
* ``L.weight_rms``, ``L.grad_rms``: RMS of the weights W (after the update) and of dL/dW
  of this batch (the loss's gradient, before weight decay and momentum).
* ``L.update_ratio``: RMS(update of W) / RMS(W), where the update is the velocity the
  optimizer just added (w <- w + v); only when ``opt`` is given. ~1e-3 is the usual
  healthy rule of thumb; far below, the layer hardly moves.

and for each ReLU R ("relu1", ...), over the batch:

* ``R.dead``: the fraction of R's units that are dead on this batch: output exactly 0 for
  every example. A unit is a channel for conv feature maps (N, C, H, W): channel c is dead
  when y[:, c, :, :] is all zero (no example, no position); for FC outputs (N, D) it is one
  of the D features.
* ``R.zero``: the fraction of all of R's output values (N*C*H*W or N*D) that are 0.

RMS(x) = sqrt(mean(x²)) over all elements. Cost: one pass or two over each activation and
weight array, a few % of a training step (see README); run it every N steps.
"""

from __future__ import annotations

import math

from ..backend import get_array_module
from ..layers import Conv2D, Linear, ReLU

LEARNABLE = (Conv2D, Linear)


def rms(x) -> float:
    """sqrt(mean(x²)) over all elements, without a temporary of x's size (a BLAS dot)."""
    flat = x.reshape(-1)
    if flat.size == 0:
        return float("nan")
    xp = get_array_module(x)
    return math.sqrt(max(float(xp.dot(flat, flat)), 0.0) / flat.size)


def signal_rms(y) -> float:
    """sqrt(mean over units of the variance over the batch axis 0) of y (N, ...)."""
    if y.shape[0] < 2:
        return float("nan")
    return rms(y - y.mean(axis=0, keepdims=True))


def relu_stats(y) -> tuple[float, float]:
    """(dead fraction, zero fraction) of a ReLU output y (N, C, H, W) or (N, D); see module doc."""
    xp = get_array_module(y)
    n, units = y.shape[0], y.shape[1]
    peak = y.reshape(n, units, -1).max(axis=2).max(axis=0)  # ReLU outputs are >= 0
    dead = float(xp.count_nonzero(peak <= 0)) / units
    zero = 1.0 - float(xp.count_nonzero(y)) / y.size
    return dead, zero


def diagnostics(net, logits=None, opt=None) -> dict[str, float]:
    """The per-layer numbers of the module doc for the step just taken (call after
    forward, backward and the optimizer's update)."""
    out: dict[str, float] = {}
    layers = net.layers
    for i, (name, layer) in enumerate(layers):
        if isinstance(layer, LEARNABLE):
            act = None
            if i + 1 < len(layers) and isinstance(layers[i + 1][1], ReLU):
                act = layers[i + 1][1].cache
            elif i + 1 == len(layers):
                act = logits
            if act is not None:
                out[f"{name}.act_rms"] = rms(act)
                out[f"{name}.act_signal"] = signal_rms(act)
            W = layer.params["W"]
            out[f"{name}.weight_rms"] = w_rms = rms(W)
            if "W" in layer.grads:
                out[f"{name}.grad_rms"] = rms(layer.grads["W"])
            if opt is not None and f"{name}.W" in opt.velocity:
                out[f"{name}.update_ratio"] = rms(opt.velocity[f"{name}.W"]) / max(w_rms, 1e-30)
        elif isinstance(layer, ReLU) and layer.cache is not None:
            out[f"{name}.dead"], out[f"{name}.zero"] = relu_stats(layer.cache)
    return out


# ------------------------------------------------------------------------------ printing

def _num(x: float) -> str:
    """4-5 characters: 0.41, 12.3, 3e-05 -> '3e-5'."""
    if not isinstance(x, (int, float)) or not math.isfinite(x):
        return "  nan"
    if x == 0:
        return "    0"
    if 0.01 <= abs(x) < 100:
        return f"{x:5.2f}" if abs(x) < 10 else f"{x:5.1f}"
    mant, exp = f"{x:.0e}".split("e")
    return f"{mant}e{int(exp)}".rjust(5)


def _names(diag: dict, suffix: str) -> list[str]:
    return [k[: -len(suffix)] for k in diag if k.endswith(suffix)]


def format_header(diag: dict) -> str:
    """Column names for ``format_row``: act RMS and grad RMS per layer, dead % per ReLU."""
    act = " ".join(n.rjust(5) for n in _names(diag, ".act_rms"))
    grad = " ".join(n.rjust(5) for n in _names(diag, ".grad_rms"))
    dead = " ".join(n.replace("relu", "r").rjust(4) for n in _names(diag, ".dead"))
    return f"diag   step | act rms {act} | grad rms {grad} | dead % {dead}"


def format_row(diag: dict, step: int) -> str:
    """One line per check, aligned under ``format_header``."""
    act = " ".join(_num(diag[n + ".act_rms"]) for n in _names(diag, ".act_rms"))
    grad = " ".join(_num(diag[n + ".grad_rms"]) for n in _names(diag, ".grad_rms"))
    dead = " ".join(f"{100 * diag[n + '.dead']:4.0f}" for n in _names(diag, ".dead"))
    return f"diag {step:6d} |         {act} |          {grad} |        {dead}"


__all__ = ["diagnostics", "format_header", "format_row", "relu_stats", "rms", "signal_rms"]
