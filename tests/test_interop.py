"""Weights to and from PyTorch (tinyalex.interop): the transfer is exact both ways, the
two nets compute the same function, and a state_dict that does not fit fails clearly.

Small batches (2 images) keep the whole file to a few seconds.
"""

from __future__ import annotations

import numpy as np
import pytest

from tinyalex.checks.interop import (
    from_torch,
    load_state_dict,
    paper_sgd,
    set_dropout_masks,
    sgd_state_to_torch,
    state_dict_from,
    to_torch,
    torch_sgd,
)
from tinyalex.gradcheck import rel_error
from tinyalex.layers import SoftmaxCrossEntropy
from tinyalex.loop import forward_backward
from tinyalex.net import alexnet_mini, alexnet_small, build
from tinyalex.optim import SGD

torch = pytest.importorskip("torch", reason="PyTorch (CPU) is the oracle of these tests; "
                                            "pip install torch==2.13.0")


def _params_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_is_exact(dtype):
    """tinyalex -> torch -> tinyalex gives back bit-identical weights, in both dtypes, and
    the torch model carries the net's dtype (the transfer is a copy, never a cast)."""
    net = alexnet_mini(10, input_size=40, init="pytorch", seed=3, dtype=dtype)
    model = to_torch(net)
    assert next(model.parameters()).dtype == getattr(torch, np.dtype(dtype).name)
    back = from_torch(model, "alexnet-mini", 10, input_size=40, seed=99)
    assert back.dtype == dtype
    _params_equal(net.params, back.params)
    # and through a bare state_dict into an existing net (another init)
    other = alexnet_mini(10, input_size=40, init="paper", seed=7, dtype=dtype)
    load_state_dict(other, model.state_dict())
    _params_equal(net.params, other.params)


def test_state_dict_from_matches_to_torch():
    """state_dict_from(net) has exactly the keys, shapes and values of to_torch(net)."""
    net = alexnet_mini(10, input_size=40, seed=1)
    sd, ref = state_dict_from(net), to_torch(net).state_dict()
    assert list(sd) == list(ref)
    for key in sd:
        assert torch.equal(sd[key], ref[key]), key


@pytest.mark.parametrize("make", [alexnet_mini, alexnet_small], ids=["mini", "small"])
@pytest.mark.parametrize("convention", ["paper", "alpha/n"])
def test_forward_matches_torch_float64(make, convention):
    """The torch model in eval mode and the tinyalex net in test mode compute the same
    function (every layer: grouped convs, LRN with either alpha convention, overlapping
    pools, flatten order, dropout at test time) to 1e-10 relative in float64. PyTorch's
    init (fan-in scaled) keeps the logits far from zero so the check is not vacuous."""
    net = make(20, input_size=56, init="pytorch", seed=2, lrn_convention=convention,
               dtype=np.float64)
    model = to_torch(net).eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 56, 56))
    ours = net.forward(x, train=False)
    with torch.no_grad():
        theirs = model(torch.from_numpy(x)).numpy()
    assert np.abs(theirs).max() > 1e-3
    assert rel_error(ours, theirs) < 1e-10


def test_from_torch_of_a_foreign_model_forward():
    """A model trained in torch (here: perturbed weights) comes back into tinyalex and
    computes the same outputs (float32 to 1e-5)."""
    net = alexnet_mini(10, input_size=40, init="pytorch", seed=4)
    model = to_torch(net).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    back = from_torch(model, "alexnet-mini", 10, input_size=40)
    x = np.random.default_rng(1).standard_normal((2, 3, 40, 40)).astype(np.float32)
    with torch.no_grad():
        theirs = model(torch.from_numpy(x)).numpy()
    assert rel_error(back.forward(x, train=False), theirs) < 1e-5


def test_load_state_dict_wrong_key():
    """A key the net does not have (a renamed layer) and a missing key are a KeyError
    naming both in PyTorch's names; the net is left untouched."""
    net = alexnet_mini(10, input_size=40, seed=1)
    before = {k: v.copy() for k, v in net.params.items()}
    sd = state_dict_from(net)
    sd["fc9.weight"] = sd.pop("fc8.weight")
    with pytest.raises(KeyError, match=r"unexpected keys \['fc9.weight'\].*missing keys "
                                       r"\['fc8.weight'\]"):
        load_state_dict(net, sd)
    sd = state_dict_from(net)
    sd["conv1.running_mean"] = torch.zeros(3)
    with pytest.raises(KeyError, match="conv1.running_mean"):
        load_state_dict(net, sd)
    _params_equal(before, net.params)


def test_load_state_dict_wrong_shape():
    """A state_dict of another architecture (10 vs 20 classes) is a ValueError naming the
    key and both shapes, before any weight is overwritten."""
    net = alexnet_mini(10, input_size=40, seed=1)
    before = {k: v.copy() for k, v in net.params.items()}
    other = state_dict_from(alexnet_mini(20, input_size=40, seed=5))
    with pytest.raises(ValueError, match=r"fc8.weight.*\(20, 1024\).*\(10, 1024\)"):
        load_state_dict(net, other)
    _params_equal(before, net.params)
    with pytest.raises(ValueError, match="shape"):  # fc6 sees 256x2x2 for 56 px, 3x3 for 64
        from_torch(to_torch(alexnet_small(10, input_size=64, width=0.25)), "alexnet-mini", 10)


def test_set_dropout_masks_both_sides():
    """set_dropout_masks gives tinyalex and torch the same train-mode dropout (x*mask/(1-p))
    and leaves eval mode the identity; None restores random dropout."""
    net = alexnet_mini(10, input_size=40, init="pytorch", seed=1, dtype=np.float64)
    model = to_torch(net).train()
    rng = np.random.default_rng(0)
    masks = {name: rng.random((2, 1024)) >= 0.5 for name in ("drop6", "drop7")}
    set_dropout_masks(net, model, masks)
    x = rng.standard_normal((2, 3, 40, 40))
    ours = net.forward(x, train=True)
    theirs = model(torch.from_numpy(x)).detach().numpy()
    assert rel_error(ours, theirs) < 1e-10
    model.eval()
    with torch.no_grad():
        assert rel_error(net.forward(x, train=False), model(torch.from_numpy(x)).numpy()) < 1e-10
    set_dropout_masks(net, model, {"drop6": None, "drop7": None})
    assert net["drop6"].fixed_mask is None and isinstance(model.drop6, torch.nn.Dropout)


def test_sgd_state_to_torch_continues_a_run():
    """A tinyalex run handed to torch.optim.SGD mid-way (weights + momentum buffers
    b = -v/lr) continues on the same trajectory as tinyalex's own SGD; paper_sgd with the
    same velocities too. Dropout masks fixed; float64 to 1e-10."""
    net = alexnet_mini(5, input_size=40, init="pytorch", seed=2, dtype=np.float64)
    rng = np.random.default_rng(3)
    batches = [(rng.standard_normal((2, 3, 40, 40)), rng.integers(0, 5, 2)) for _ in range(2)]
    masks = [{n: rng.random((2, 1024)) >= 0.5 for n in ("drop6", "drop7")} for _ in range(2)]
    loss_fn, opt = SoftmaxCrossEntropy(), SGD(net.params)
    model = to_torch(net)
    set_dropout_masks(net, model, masks[0])
    forward_backward(net, loss_fn, *batches[0])
    opt.step(net.grads)
    model.load_state_dict(state_dict_from(net))
    tsgd = torch_sgd(model, opt)
    assert set(sgd_state_to_torch(opt)) == set(model.state_dict())
    model2 = to_torch(net)
    psgd = paper_sgd(model2.parameters())
    for p, (name, v) in zip(model2.parameters(), opt.velocity.items(), strict=True):
        psgd.state[p]["velocity"] = torch.from_numpy(v.copy())
        assert p.shape == v.shape, name
    set_dropout_masks(net, model, masks[1])
    set_dropout_masks(net, model2, masks[1])
    x, y = batches[1]
    for m, o in ((model, tsgd), (model2, psgd)):
        o.zero_grad()
        torch.nn.functional.cross_entropy(m(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        o.step()
    forward_backward(net, loss_fn, x, y)
    opt.step(net.grads)
    for m in (model, model2):
        sd = m.state_dict()
        for name, w in net.params.items():
            key = name.replace(".W", ".weight").replace(".b", ".bias")
            assert rel_error(w, sd[key].numpy()) < 1e-10, key


def test_build_names_match():
    """to_torch keeps tinyalex's layer names, so keys read "conv1.weight" ... "fc8.bias"."""
    model = to_torch(build("alexnet-mini", 10, input_size=40))
    keys = list(model.state_dict())
    assert keys[0] == "conv1.weight" and keys[-1] == "fc8.bias" and len(keys) == 16


def test_to_torch_of_alexnet_owt_with_its_adaptive_pool():
    """alexnet-owt at 160 px (pool5 4x4, spread over 6x6 by the adaptive pool) has a twin
    whose logits are tinyalex's in float64."""
    net = build("alexnet-owt", 10, input_size=160, init="pytorch", dtype=np.float64)
    model = to_torch(net).eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 160, 160))
    ref = model(torch.from_numpy(x)).detach().numpy()
    assert rel_error(net.forward(x, train=False), ref) < 1e-10


def test_a_checkpoint_is_checked_before_it_crosses(tmp_path):
    """net_from_checkpoint: a training checkpoint gives its net (and to_torch its twin);
    a file cut short, a text file and another class count are one-line CheckpointErrors."""
    from tinyalex import checkpoint
    from tinyalex.checks.interop import net_from_checkpoint

    net = alexnet_mini(num_classes=4, input_size=56, seed=1)
    meta = {"net": {"arch": "alexnet-mini", "num_classes": 4, "kwargs": {"input_size": 56}},
            "classes": ["a", "b", "c", "d"]}
    data = {"mean": np.zeros((64, 64, 3), np.float32), "pca_eigvals": np.ones(3, np.float32),
            "pca_eigvecs": np.eye(3, dtype=np.float32)}
    path = checkpoint.save(tmp_path / "c.npz", net.params, meta, data=data)
    _params_equal(net_from_checkpoint(path).params, net.params)
    assert to_torch(net_from_checkpoint(path)).state_dict()["fc8.weight"].shape == (4, 1024)
    cut, text = tmp_path / "cut.npz", tmp_path / "text.npz"
    cut.write_bytes(path.read_bytes()[:20_000])
    text.write_text("not weights\n")
    for bad, words in ((cut, "is damaged"), (text, "is not a tinyalex checkpoint")):
        with pytest.raises(checkpoint.CheckpointError, match=words):
            net_from_checkpoint(bad)
    other = alexnet_mini(num_classes=10, input_size=56)
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"holds alexnet-mini weights for 4 classes, not those of the net: "
                             r"fc8.W \(4, 1024\) where the net has \(10, 1024\)"):
        net_from_checkpoint(path, other)
