"""Weights to and from PyTorch (an oracle for tests and benchmarks, never a dependency).

``to_torch(net)`` builds the matching ``torch.nn.Sequential`` (one module per tinyalex
layer, same names, same weights); ``from_torch(model, arch, num_classes)`` builds the
tinyalex net back from such a model; ``state_dict_from(net)`` / ``load_state_dict(net, sd)``
move weights either way; ``net_from_checkpoint(path)`` reads a training checkpoint,
checked. PyTorch's layouts are tinyalex's (conv W (F, C/G, kh, kw), linear W (out, in)),
so the transfer is a copy under the same names: "conv1.W" <-> "conv1.weight".

Training both in lockstep needs two more pieces: ``set_dropout_masks(net, model, masks)``
gives both the same dropout masks, and ``paper_sgd(params, ...)`` is a torch optimizer with
the paper's update rule (§5). ``torch.optim.SGD`` keeps b <- m*b + g + wd*w, w <- w - lr*b,
the paper v <- m*v - wd*lr*w - lr*g, w <- w + v: the same trajectory (v = -lr*b) while lr is
constant, not after lr changes (the paper's old velocity keeps the old lr, torch's buffer
is rescaled by the new one). ``sgd_state_to_torch`` converts a tinyalex SGD's velocity to
torch's momentum buffers (b = -v/lr).
torch is imported inside these functions only.
"""

from __future__ import annotations

import numpy as np

from ..backend import to_numpy
from ..layers import (
    Conv2D,
    Dropout,
    Flatten,
    Linear,
    LocalResponseNorm,
    MaxPool2D,
    ReLU,
    Tanh,
)
from ..net import AdaptiveAvgPool2D

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
    if isinstance(layer, AdaptiveAvgPool2D):
        return nn.AdaptiveAvgPool2d(layer.out)
    raise TypeError(f"no PyTorch twin for {layer!r}")


def state_dict_from(net) -> dict:
    """tinyalex params -> a PyTorch state_dict (CPU tensors) for ``to_torch(net)``."""
    import torch

    return {_torch_key(name): torch.from_numpy(np.array(to_numpy(v)))
            for name, v in net.params.items()}


def load_state_dict(net, state_dict) -> None:
    """A PyTorch state_dict (or an nn.Module) of the matching nn.Sequential -> the net's
    params, in place, converted to the net's dtype.

    Every key must be "<layer>.weight" or "<layer>.bias" of one of the net's layers and
    every parameter of the net must be there, with the same shape; otherwise a KeyError or
    ValueError names the offending PyTorch keys.
    """
    if hasattr(state_dict, "state_dict"):
        state_dict = state_dict.state_dict()
    own = net.params
    expected = {_torch_key(name): name for name in own}
    unexpected = sorted(k for k in state_dict if k not in expected)
    missing = sorted(k for k in expected if k not in state_dict)
    if unexpected or missing:
        raise KeyError(f"state_dict does not match the net: unexpected keys {unexpected}, "
                       f"missing keys {missing} (expected the keys of to_torch(net)"
                       f".state_dict(): {sorted(expected)})")
    params = {}
    for key, value in state_dict.items():
        name = expected[key]
        shape = tuple(value.shape)
        if shape != tuple(own[name].shape):
            raise ValueError(f"state_dict[{key!r}] has shape {shape}, the net's {name} "
                             f"has {tuple(own[name].shape)}")
        params[name] = value.detach().cpu().numpy()
    net.load_params(params)


def from_torch(model, arch: str, num_classes: int, dtype=None, **kwargs):
    """The tinyalex net ``build(arch, num_classes, **kwargs)`` with the weights of ``model``
    (an nn.Sequential made by ``to_torch`` or with the same names and shapes, or its
    state_dict). dtype defaults to the model's (float32/float64); ``kwargs`` are the
    builder's (input_size, width, lrn_convention, dropout, ...). The builder's init is
    overwritten entirely by the model's weights."""
    from ..net import build

    state = model.state_dict() if hasattr(model, "state_dict") else dict(model)
    if dtype is None:
        first = next(iter(state.values()))
        dtype = np.dtype(str(first.dtype).removeprefix("torch."))
    net = build(arch, num_classes, dtype=dtype, **kwargs)
    load_state_dict(net, state)
    return net


def to_torch(net, dtype=None):
    """An nn.Sequential with the same layers, names and weights as the tinyalex net, in the
    net's dtype (or ``dtype``, a torch dtype); the weights are copied exactly."""
    import torch
    import torch.nn as nn

    model = nn.Sequential()
    for name, layer in net.layers:
        model.add_module(name, torch_module(layer))
    # The modules are made in torch's default dtype (float32): convert them BEFORE
    # copying the weights in, or a float64 net's weights would be rounded to float32.
    model.to(dtype or getattr(torch, np.dtype(net.dtype).name))
    model.load_state_dict(state_dict_from(net))
    return model


def net_from_checkpoint(path, net=None):
    """The tinyalex net of a checkpoint of ``python -m tinyalex.train`` (then ``to_torch``
    gives its twin): built from the checkpoint's meta, or ``net`` with its weights replaced
    once the file is checked to hold exactly that net's names and shapes. Raises
    checkpoint.CheckpointError (a ValueError, one line naming the file) when it is not a
    tinyalex checkpoint, is damaged, or holds another architecture or class count."""
    from .. import checkpoint

    ckpt = checkpoint.check_training(checkpoint.load(path))
    if net is None:
        return checkpoint.build_net(ckpt)
    checkpoint.check_params(ckpt, net)
    net.load_params(ckpt.params)
    return net


def _torch_key(name: str) -> str:
    layer, ours = name.rsplit(".", 1)
    return f"{layer}.{_TORCH_NAMES[ours]}"


# ------------------------------------------------------------- training in lockstep


def _fixed_mask_dropout_class():
    import torch.nn as nn

    global _FixedMaskDropout
    if _FixedMaskDropout is None:
        class FixedMaskDropout(nn.Module):
            """Inverted dropout with a given 0/1 keep mask: train x * mask / (1 - p),
            eval x (tinyalex's Dropout with ``fixed_mask`` set)."""

            def __init__(self, p: float, mask=None):
                super().__init__()
                self.p, self.mask = p, mask

            def forward(self, x):
                if not self.training:
                    return x
                if self.mask is None:
                    raise RuntimeError("FixedMaskDropout: no mask set")
                if tuple(self.mask.shape) != tuple(x.shape):
                    raise ValueError(f"mask shape {tuple(self.mask.shape)} != input shape "
                                     f"{tuple(x.shape)}")
                return x * (self.mask.to(x.dtype) / (1 - self.p))

            def extra_repr(self):
                return f"p={self.p}"

        _FixedMaskDropout = FixedMaskDropout
    return _FixedMaskDropout


_FixedMaskDropout = None


def set_dropout_masks(net, model, masks: dict) -> None:
    """The same dropout in both: for each {layer name: 0/1 keep mask (the layer input's
    shape)}, set tinyalex's ``Dropout.fixed_mask`` and, in the nn.Sequential ``model``,
    replace that nn.Dropout by a module multiplying by mask / (1 - p) (or update it).
    A mask of None clears tinyalex's fixed mask (random again) and restores nn.Dropout."""
    import torch.nn as nn

    cls = _fixed_mask_dropout_class()
    for name, mask in masks.items():
        layer = net[name]
        if not isinstance(layer, Dropout):
            raise TypeError(f"{name} is not a Dropout layer: {layer!r}")
        if layer.mode != "inverted":
            raise ValueError("PyTorch's Dropout is the inverted kind; use mode='inverted'")
        module = getattr(model, name)
        if mask is None:
            layer.fixed_mask = None
            if isinstance(module, cls):
                setattr(model, name, nn.Dropout(layer.p).train(module.training))
            continue
        keep = np.asarray(to_numpy(mask))
        if not np.isin(keep, (0, 1)).all():
            raise ValueError(f"{name}: a keep mask holds only 0 and 1")
        layer.fixed_mask = keep.astype(bool)
        set_torch_dropout_mask(model, name, keep, layer.p)


def set_torch_dropout_mask(model, name: str, keep, p: float) -> None:
    """Torch's side only: model.<name> (an nn.Dropout(p), replaced on first use by a module
    multiplying by keep / (1 - p)) applies the 0/1 mask ``keep`` from now on."""
    import torch
    import torch.nn as nn

    cls = _fixed_mask_dropout_class()
    module = getattr(model, name)
    if not isinstance(module, cls):
        if not isinstance(module, nn.Dropout) or module.p != p:
            raise TypeError(f"model.{name} is {module!r}, not nn.Dropout(p={p})")
        fixed = cls(p)
        fixed.train(module.training)
        setattr(model, name, fixed)
        module = fixed
    module.mask = torch.from_numpy(np.asarray(keep).astype(np.float64))


def paper_sgd(params, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4):
    """A torch optimizer with the paper's rule (§5), as tinyalex.optim.SGD:

        v <- momentum*v - weight_decay*lr*w - lr*grad;  w <- w + v   (v starts at 0)

    Changing ``param_groups[i]["lr"]`` affects only the new terms, not the stored v
    (unlike torch.optim.SGD, whose buffer is multiplied by the current lr)."""
    import torch

    class PaperSGD(torch.optim.Optimizer):
        @torch.no_grad()
        def step(self, closure=None):
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            for group in self.param_groups:
                lr, m, wd = group["lr"], group["momentum"], group["weight_decay"]
                for w in group["params"]:
                    if w.grad is None:
                        continue
                    state = self.state[w]
                    if "velocity" not in state:
                        state["velocity"] = torch.zeros_like(w)
                    v = state["velocity"]
                    v.mul_(m).sub_(w, alpha=wd * lr).sub_(w.grad, alpha=lr)
                    w.add_(v)
            return loss

    return PaperSGD(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))


def torch_sgd(model, opt) -> object:
    """A torch.optim.SGD over ``model`` (made by to_torch) continuing a tinyalex SGD ``opt``:
    same lr, momentum, weight decay, and momentum buffers b = -v/lr (exact while lr stays
    the one the velocity was built with)."""
    import torch

    sgd = torch.optim.SGD(model.parameters(), lr=opt.lr, momentum=opt.momentum,
                          weight_decay=opt.weight_decay)
    for key, tensor in sgd_state_to_torch(opt).items():
        param = model.get_parameter(key)
        sgd.state[param]["momentum_buffer"] = tensor.to(param.dtype)
    return sgd


def sgd_state_to_torch(opt) -> dict:
    """tinyalex SGD velocities -> torch.optim.SGD momentum buffers by PyTorch key
    ("conv1.weight": -v / lr)."""
    import torch

    return {_torch_key(name): torch.from_numpy(np.array(-to_numpy(v) / opt.lr))
            for name, v in opt.velocity.items()}
