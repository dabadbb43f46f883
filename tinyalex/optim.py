"""Stochastic gradient descent exactly as the paper's §5, and its learning-rate schedule.

    v <- momentum * v - weight_decay * lr * w - lr * dL/dw
    w <- w + v

momentum 0.9, weight decay 0.0005, lr 0.01, applied to every parameter (the paper's rule
names no exception for biases). "Weight decay here is not merely a regularizer: it reduces
the model's training error." PyTorch's SGD keeps b = momentum*b + g + wd*w and w -= lr*b,
which is the same trajectory while lr is constant (v = -lr*b) and differs when lr changes.

The schedules. The paper's (``PlateauSchedule``, ``--schedule paper``): "divide the learning
rate by 10 when the validation error rate stopped improving with the current learning rate
... reduced three times prior to termination." And one for a run of known length
(``BudgetSchedule``, ``--schedule cosine`` or ``linear``): a short warm-up, then a decay to
zero at the last planned step. Both give the lr of a step as a function of the step (and,
for the paper's, of the validation errors seen so far), so a resumed run takes the same
steps.
"""

from __future__ import annotations

import math

from .backend import get_array_module
from .kernels import dispatch


def sgd_update(w, v, g, lr, momentum, weight_decay):
    """One parameter's update, in place: v <- momentum*v - weight_decay*lr*w - lr*g;
    w <- w + v (the module docstring's rule, as four passes)."""
    v *= momentum
    v -= (weight_decay * lr) * w
    v -= lr * g
    w += v


class SGD:
    """Momentum SGD with weight decay over a flat dict of named parameters (updated in place).

    state: velocity, a dict with the same names and shapes (zeros at the start).
    """

    def __init__(self, params: dict, lr: float = 0.01, momentum: float = 0.9,
                 weight_decay: float = 5e-4):
        self.params = params
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.velocity = {name: get_array_module(w).zeros_like(w) for name, w in params.items()}

    def step(self, grads: dict) -> None:
        lr, m, wd = self.lr, self.momentum, self.weight_decay
        for name, w in self.params.items():
            v = self.velocity[name]
            update = dispatch.sgd_update(w, v) or sgd_update  # one fused pass, or the above
            update(w, v, grads[name], lr, m, wd)

    def state_dict(self) -> dict:
        state = {f"velocity/{k}": v for k, v in self.velocity.items()}
        state["lr"] = self.lr
        return state

    def load_state_dict(self, state: dict) -> None:
        for name, v in self.velocity.items():
            v[...] = get_array_module(v).asarray(state[f"velocity/{name}"], dtype=v.dtype)
        self.lr = float(state["lr"])


class PlateauSchedule:
    """Divide lr by ``factor`` when the validation error stops improving, at most
    ``max_reductions`` times (§5: by 10, three times).

    ``step(val_error)`` after each epoch returns the learning rate to use next. Improvement
    means val_error < best - threshold; ``patience`` epochs without one trigger a cut
    (patience 1 = the first epoch that does not improve).
    """

    def __init__(self, lr: float = 0.01, factor: float = 0.1, max_reductions: int = 3,
                 patience: int = 1, threshold: float = 1e-4):
        self.lr, self.factor, self.max_reductions = lr, factor, max_reductions
        self.patience, self.threshold = patience, threshold
        self.best = float("inf")
        self.bad_epochs = 0
        self.reductions = 0

    def step(self, val_error: float) -> float:
        if val_error < self.best - self.threshold:
            self.best, self.bad_epochs = val_error, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.patience and self.reductions < self.max_reductions:
                self.lr *= self.factor
                self.reductions += 1
                self.bad_epochs = 0
        return self.lr

    @property
    def exhausted(self) -> bool:
        """True once all reductions are used (the paper stopped training soon after)."""
        return self.reductions >= self.max_reductions

    _STATE = ("lr", "factor", "max_reductions", "patience", "threshold", "best",
              "bad_epochs", "reductions")

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in self._STATE}

    def load_state_dict(self, state: dict) -> None:
        for k in self._STATE:
            value = state[k]
            setattr(self, k, type(getattr(self, k))(value))


def warmup_lr(lr: float, step: int, warmup_steps: int) -> float:
    """The lr of 0-based ``step`` under a linear warm-up: lr*(step+1)/N for the first N
    steps, then lr. A function of the step, so a resumed run takes the same steps."""
    if warmup_steps and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    return lr


class BudgetSchedule:
    """Warm up, then decay to zero by the last planned step: for a run of known length.

        lr(t) = lr * (t + 1) / W                          t < W     (the warm-up)
        lr(t) = lr * (1 - p)                 linear       p = (t - W) / (T - W)
        lr(t) = lr * (1 + cos(pi * p)) / 2   cosine

    t is the 0-based step, T the planned steps (``total_steps``, from --epochs or --hours),
    W the warm-up steps. Why: with a fixed budget of steps, a rate that is large early and
    reaches zero exactly at the end beats a constant rate cut on plateaus (Li, Yumer and
    Ramanan, "Budgeted Training: Rethinking Deep Neural Network Training Under Resource
    Constraints", ICLR 2020; Smith's one-cycle; Loshchilov and Hutter's cosine). Not in the
    paper, which trained until the third plateau. Measured on Tiny-100 (alexnet-small, 10
    epochs, docs/results.md): linear from 0.02 after a one-epoch warm-up 39.9% and 40.6%
    top-1 (two runs), cosine 38.9%, the paper's rule 33.4% (in 10 epochs it never cut):
    linear is the default. A function of the step alone: its state is its settings.
    """

    SHAPES = ("cosine", "linear")

    def __init__(self, lr: float, total_steps: int, warmup_steps: int = 0,
                 shape: str = "cosine"):
        if shape not in self.SHAPES:
            raise ValueError(f"shape must be one of {', '.join(self.SHAPES)}, not {shape!r}")
        if total_steps < 1 or warmup_steps < 0:
            raise ValueError(f"need total_steps >= 1 and warmup_steps >= 0 (got "
                             f"{total_steps}, {warmup_steps})")
        self.lr, self.total_steps, self.warmup_steps, self.shape = \
            lr, total_steps, warmup_steps, shape

    def lr_at(self, step: int) -> float:
        W, T = self.warmup_steps, self.total_steps
        if step < W:
            return warmup_lr(self.lr, step, W)
        p = min(1.0, (step - W) / max(1, T - W))
        if self.shape == "linear":
            return self.lr * (1.0 - p)
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * p))

    def step(self, val_error: float) -> float:
        """After an epoch: nothing changes (the decay is planned); the peak lr."""
        return self.lr

    _STATE = ("lr", "total_steps", "warmup_steps", "shape")

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in self._STATE}

    def load_state_dict(self, state: dict) -> None:
        for k in self._STATE:
            setattr(self, k, type(getattr(self, k))(state[k]))
