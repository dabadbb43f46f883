"""Local response normalization across channels (paper §3.3), after ReLU of conv1 and conv2.

    s[n, i, h, w] = k + a * sum_{j = i - n//2}^{i + (n-1)//2} x[n, j, h, w]^2   (j in [0, C))
    y[n, i, h, w] = x[n, i, h, w] * s[n, i, h, w]^(-beta)

The paper's formula uses a = alpha (k=2, n=5, alpha=1e-4, beta=0.75). The trap: Caffe and
torch.nn.LocalResponseNorm use a = alpha / n. ``convention="paper"`` (the default) is the
paper's formula; ``convention="alpha/n"`` is Caffe's/PyTorch's, so paper mode with alpha
equals PyTorch with alpha * n. For odd n the window is the paper's i-n/2 .. i+n/2; for even
n it follows PyTorch (n//2 before, (n-1)//2 after).

Backward (y_i depends on x_j for every j in i's window):

    dx_j = dout_j * s_j^(-beta) - 2 a beta x_j * sum_{i : j in window(i)} dout_i y_i / s_i

The forward's s is cached and reused; the transposed window is i = j - (n-1)//2 .. j + n//2.
"""

from __future__ import annotations

from ..backend import get_array_module
from ..kernels import dispatch
from .base import Layer


def channel_window_sum(v, before: int, after: int):
    """t[:, i] = sum_{j=i-before}^{i+after} v[:, j] over valid channels j. v: (N, C, H, W)."""
    xp = get_array_module(v)
    C = v.shape[1]
    padded = xp.zeros((v.shape[0], C + before + after) + v.shape[2:], dtype=v.dtype)
    padded[:, before:before + C] = v
    total = xp.zeros_like(v)
    for d in range(before + after + 1):
        total += padded[:, d:d + C]
    return total


def lrn_forward(x, size: int, a: float, beta: float, k: float):
    """x (N, C, H, W) -> (y, s), both (N, C, H, W); a is the coefficient on the sum."""
    s = k + a * channel_window_sum(x * x, size // 2, (size - 1) // 2)
    return x * s ** (-beta), s


def lrn_backward(dout, x, y, s, size: int, a: float, beta: float):
    """dout, x, y, s: (N, C, H, W) -> dx (N, C, H, W), reusing the forward's s."""
    back = channel_window_sum(dout * y / s, (size - 1) // 2, size // 2)
    return dout * s ** (-beta) - (2 * a * beta) * x * back


class LocalResponseNorm(Layer):
    """LRN across channels, §3.3.

    Shapes: x (N, C, H, W) -> y (N, C, H, W); cache: x, y, s (the denominators' base).
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0,
                 convention: str = "paper"):
        super().__init__()
        if convention not in ("paper", "alpha/n"):
            raise ValueError("convention must be 'paper' or 'alpha/n'")
        self.size, self.alpha, self.beta, self.k, self.convention = \
            size, alpha, beta, k, convention

    @property
    def coefficient(self) -> float:
        """The a that multiplies the window sum: alpha (paper) or alpha/n (Caffe, PyTorch)."""
        return self.alpha if self.convention == "paper" else self.alpha / self.size

    def forward(self, x, train=True):
        forward = dispatch.lrn_forward(x) or lrn_forward  # Numba, CuPy, or the above
        y, s = forward(x, self.size, self.coefficient, self.beta, self.k)
        self.cache = (x, y, s)
        return y

    def backward(self, dout):
        x, y, s = self.cache
        backward = dispatch.lrn_backward(dout) or lrn_backward
        return backward(dout, x, y, s, self.size, self.coefficient, self.beta)

    def flops(self, input_shape):
        n = 1
        for d in input_shape:
            n *= d
        return n * (self.size + 5)  # square, window sum, scale and shift, power, product

    def __repr__(self):
        return (f"LocalResponseNorm({self.size}, alpha={self.alpha:g}, beta={self.beta:g}, "
                f"k={self.k:g}, {self.convention})")
