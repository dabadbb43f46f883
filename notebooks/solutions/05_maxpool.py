"""Chapter 05, solution: max pooling with any window and stride, overlapping 3/2 (§3.4)."""

import numpy as np

from tinyalex.layers.base import Layer


class MaxPool2D(Layer):
    def __init__(self, window=3, stride=2):
        super().__init__()
        self.z, self.s = window, stride

    def forward(self, x, train=True):
        z, s = self.z, self.s
        N, C, H, W = x.shape
        OH, OW = (H - z) // s + 1, (W - z) // s + 1
        # every window position (i, j) as one slice: (z*z, N, C, OH, OW)
        cand = np.stack([x[:, :, i:i + s * OH:s, j:j + s * OW:s]
                         for i in range(z) for j in range(z)])
        argmax = cand.argmax(axis=0)
        self.cache = (argmax, x.shape)
        return np.take_along_axis(cand, argmax[None], axis=0)[0]

    def backward(self, dout):
        argmax, shape = self.cache
        z, s = self.z, self.s
        OH, OW = dout.shape[2:]
        dx = np.zeros(shape, dout.dtype)
        for i in range(z):
            for j in range(z):   # overlapping windows ADD into the same pixel
                dx[:, :, i:i + s * OH:s, j:j + s * OW:s] += dout * (argmax == i * z + j)
        return dx
