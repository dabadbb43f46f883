"""Chapter 02, solution: Conv2D by im2col, with stride, padding and groups (§3.2, §3.5)."""

import numpy as np

from tinyalex.layers.base import Layer
from tinyalex.layers.conv import col2im, conv_output_size, im2col


class Conv2D(Layer):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, groups=1,
                 weight_std=0.01, bias=0.0, rng=None, dtype=np.float32):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.k, self.stride, self.padding, self.groups = kernel_size, stride, padding, groups
        rng = np.random.default_rng(rng)
        shape = (out_channels, in_channels // groups, kernel_size, kernel_size)
        self.params["W"] = weight_std * rng.standard_normal(shape).astype(dtype)
        self.params["b"] = np.full(out_channels, bias, dtype=dtype)

    def forward(self, x, train=True):
        N, C, H, W = x.shape
        k, s, p, G = self.k, self.stride, self.padding, self.groups
        F = self.out_channels
        OH, OW = conv_output_size(H, k, s, p), conv_output_size(W, k, s, p)
        cols = im2col(x, k, k, s, p)                        # (C*k*k, N*OH*OW)
        Kg, Fg = C // G * k * k, F // G
        Wg = self.params["W"].reshape(G, Fg, Kg)
        out = np.concatenate([Wg[g] @ cols[g * Kg:(g + 1) * Kg] for g in range(G)])
        out = out + self.params["b"][:, None]               # (F, N*OH*OW)
        self.cache = (x, cols)
        return out.reshape(F, N, OH, OW).transpose(1, 0, 2, 3)

    def backward(self, dout):
        x, cols = self.cache
        N, F, OH, OW = dout.shape
        C, k, G = x.shape[1], self.k, self.groups
        Kg, Fg = C // G * k * k, F // G
        d = dout.transpose(1, 0, 2, 3).reshape(F, -1)       # (F, N*OH*OW)
        Wg = self.params["W"].reshape(G, Fg, Kg)
        dW = [d[g * Fg:(g + 1) * Fg] @ cols[g * Kg:(g + 1) * Kg].T for g in range(G)]
        dcols = np.concatenate([Wg[g].T @ d[g * Fg:(g + 1) * Fg] for g in range(G)])
        self.grads["W"] = np.stack(dW).reshape(self.params["W"].shape)
        self.grads["b"] = d.sum(axis=1)
        return col2im(dcols, x.shape, k, k, self.stride, self.padding)
