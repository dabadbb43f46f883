"""Stochastic gradient descent exactly as the paper's §5, and its learning-rate schedule.

    v <- momentum * v - weight_decay * lr * w - lr * dL/dw
    w <- w + v

momentum 0.9, weight decay 0.0005, lr 0.01, applied to every parameter (the paper's rule
names no exception for biases). "Weight decay here is not merely a regularizer: it reduces
the model's training error." PyTorch's SGD keeps b = momentum*b + g + wd*w and w -= lr*b,
which is the same trajectory while lr is constant (v = -lr*b) and differs when lr changes.

The schedule: "divide the learning rate by 10 when the validation error rate stopped
improving with the current learning rate ... reduced three times prior to termination."
"""

from __future__ import annotations

from .backend import get_array_module
from .kernels import registry


@registry.SGD_UPDATE.readable
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
            sgd_update(w, self.velocity[name], grads[name], lr, m, wd)

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
