"""ONNX export (tinyalex.onnx_export, python -m tinyalex.export): onnxruntime, which nobody
here wrote, runs the exported graph and gives tinyalex's logits (float32, relative 1e-5) for
every architecture, groups, both LRN conventions and Caffe's, paper-mode dropout and the
adaptive pool; the ONNX checker passes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tinyalex.gradcheck import rel_error
from tinyalex.layers import Conv2D, Dropout, Flatten, Linear, LocalResponseNorm, MaxPool2D, ReLU
from tinyalex.net import Sequential, build, init_pytorch

onnx = pytest.importorskip("onnx", reason='the optional extra: pip install "tinyalex[onnx]"')
ort = pytest.importorskip("onnxruntime", reason='pip install "tinyalex[onnx]"')

from tinyalex.onnx_export import OPSET, export, to_onnx  # noqa: E402


def run_onnx(path, x):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": x})[0]


def check(net, tmp_path, n=2):
    path = tmp_path / "net.onnx"
    export(net, path)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == OPSET
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    x = np.random.default_rng(0).standard_normal((n, *net.input_shape)).astype(np.float32)
    ours = net.forward(x, train=False)
    theirs = run_onnx(path, x)
    assert theirs.shape == ours.shape
    assert rel_error(theirs, ours) < 1e-5
    return path


@pytest.mark.parametrize("convention", ["paper", "alpha/n", "caffe"])
def test_mini_every_lrn_convention(convention, tmp_path):
    """Groups 2 and LRN in all three conventions: alpha/size in ONNX's form."""
    net = build("alexnet-mini", 10, input_size=56, lrn_convention=convention, init="pytorch")
    check(net, tmp_path, n=3)


def test_small_and_tanh(tmp_path):
    net = build("alexnet-small", 10, input_size=40, width=0.5, activation="tanh",
                pool=(2, 2), init="pytorch")
    check(net, tmp_path)


@pytest.mark.parametrize("size", [224, 160])
def test_owt(size, tmp_path):
    """torchvision's net: at 160 px the adaptive pool spreads 4x4 over 6x6 (MatMuls)."""
    net = build("alexnet-owt", 10, input_size=size, init="pytorch")
    check(net, tmp_path, n=1)


@pytest.mark.slow
def test_paper_net_caffe_lrn(tmp_path):
    net = build("alexnet", 10, lrn_convention="caffe", init="pytorch")
    check(net, tmp_path, n=1)


def test_paper_mode_dropout_is_scaled():
    """§4.2's test-time halving ("paper" dropout) is a Mul; inverted dropout the identity."""
    layers = [("conv1", Conv2D(3, 4, 3, groups=1)), ("relu1", ReLU()),
              ("lrn1", LocalResponseNorm()), ("pool1", MaxPool2D(2, 2)),
              ("flatten", Flatten()), ("drop", Dropout(0.5, mode="paper")),
              ("fc", Linear(4 * 3 * 3, 5)), ("drop2", Dropout(0.3))]
    net = init_pytorch(Sequential(layers, (3, 8, 8)))
    model = to_onnx(net)
    ops = [node.op_type for node in model.graph.node]
    assert ops == ["Conv", "Relu", "LRN", "MaxPool", "Flatten", "Mul", "Gemm", "Identity"]
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    assert rel_error(session.run(["logits"], {"input": x})[0], net.forward(x, False)) < 1e-5


def test_export_command_writes_the_preprocessing(tmp_path, capsys):
    from tinyalex import pretrained
    from tinyalex.commands import cli
    from tinyalex.commands.export import main

    net = build("alexnet-mini", 10, input_size=56, init="pytorch")
    ckpt = tmp_path / "mini.npz"
    pretrained.save_imported(ckpt, net, "alexnet-mini", "torchvision", {"kind": "test"},
                             kwargs={"input_size": 56})
    out = tmp_path / "mini.onnx"
    assert main([str(ckpt), str(out)]) == 0
    assert "opset 17" in capsys.readouterr().out
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    prep = json.loads(props["preprocessing"])
    assert prep["preprocessing"] == "torchvision" and len(prep["std"]) == 3
    assert cli.run(main, [str(tmp_path / "none.npz"), str(out)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
