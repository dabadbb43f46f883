"""Weights to and from PyTorch (an oracle for tests and benchmarks, never a dependency).

``to_torch(net)`` builds the matching ``torch.nn.Sequential`` (one module per tinyalex
layer, same names, same weights); ``state_dict_from(net)`` / ``load_state_dict(net, sd)``
move weights either way. PyTorch's layouts are tinyalex's (conv W (F, C/G, kh, kw), linear
W (out, in)), so the transfer is a copy under the same names: "conv1.W" <-> "conv1.weight".
torch is imported inside these functions only.
"""

from __future__ import annotations

import numpy as np

from .backend import to_numpy
from .layers import (
    Conv2D,
    Dropout,
    Flatten,
    Linear,
    LocalResponseNorm,
    MaxPool2D,
    ReLU,
    Tanh,
)

_TORCH_NAMES = {"W": "weight", "b": "bias"}


def torch_module(layer):
    """The torch.nn module computing the same function as one tinyalex layer."""
    import torch.nn as nn

    if isinstance(layer, Conv2D):
        return nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                         stride=layer.stride, padding=layer.padding, groups=layer.groups)
    if isinstance(layer, Linear):
        return nn.Linear(layer.in_features, layer.out_features)
    if isinstance(layer, ReLU):
        return nn.ReLU()
    if isinstance(layer, Tanh):
        return nn.Tanh()
    if isinstance(layer, LocalResponseNorm):
        # PyTorch divides alpha by n; the paper does not (§3.3).
        return nn.LocalResponseNorm(layer.size, alpha=layer.coefficient * layer.size,
                                    beta=layer.beta, k=layer.k)
    if isinstance(layer, MaxPool2D):
        return nn.MaxPool2d(layer.window, layer.stride)
    if isinstance(layer, Dropout):
        if layer.mode != "inverted":
            raise ValueError("PyTorch's Dropout is the inverted kind; use mode='inverted'")
        return nn.Dropout(layer.p)
    if isinstance(layer, Flatten):
        return nn.Flatten()
    raise TypeError(f"no PyTorch twin for {layer!r}")


def state_dict_from(net) -> dict:
    """tinyalex params -> a PyTorch state_dict (CPU tensors) for ``to_torch(net)``."""
    import torch

    return {_torch_key(name): torch.from_numpy(np.array(to_numpy(v)))
            for name, v in net.params.items()}


def load_state_dict(net, state_dict) -> None:
    """A PyTorch state_dict of the matching nn.Sequential -> the net's params, in place."""
    params = {}
    for key, value in state_dict.items():
        layer, torch_name = key.rsplit(".", 1)
        ours = {v: k for k, v in _TORCH_NAMES.items()}.get(torch_name)
        if ours is None:
            raise KeyError(f"unexpected PyTorch parameter {key!r}")
        params[f"{layer}.{ours}"] = value.detach().cpu().numpy()
    net.load_params(params)


def to_torch(net, dtype=None):
    """An nn.Sequential with the same layers, names and weights as the tinyalex net."""
    import torch
    import torch.nn as nn

    model = nn.Sequential()
    for name, layer in net.layers:
        model.add_module(name, torch_module(layer))
    model.load_state_dict(state_dict_from(net))
    return model.to(dtype or getattr(torch, np.dtype(net.dtype).name))


def _torch_key(name: str) -> str:
    layer, ours = name.rsplit(".", 1)
    return f"{layer}.{_TORCH_NAMES[ours]}"
