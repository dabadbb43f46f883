"""A tinyalex net as an ONNX graph: its inference (test-mode) forward pass, layer by layer.

The graph takes ``input``, the preprocessed batch (N, 3, S, S) float32 (N free), and gives
``logits`` (N, K). One ONNX node per tinyalex layer, named as the layer, weights as
initializers under their tinyalex names ("conv1.W", ...):

    Conv2D             Conv (pads p on all sides, strides, group = groups)
    ReLU / Tanh        Relu / Tanh
    LocalResponseNorm  LRN: ONNX's form is y = x / (bias + alpha / size * sum x^2)^beta,
                       so alpha = a * n for tinyalex's coefficient a (§3.3: a = alpha in
                       the paper's convention, alpha / n in Caffe's/PyTorch's), bias = k
    MaxPool2D          MaxPool (kernel, strides; no padding, floor)
    AdaptiveAvgPool2D  Identity when the map is already out x out; else Ph @ x @ Pw^T with
                       the averaging matrices of its bins (MatMul, exact up to rounding)
    Dropout            Identity ("inverted"), or Mul by 1 - p ("paper": §4.2's test-time
                       halving)
    Flatten            Flatten (axis 1: C, H, W order)
    Linear             Gemm (transB = 1: W is (out, in))

``OPSET`` is the ONNX operator set the graph declares. onnx is imported inside the
functions only; it is an optional extra (pip install "tinyalex[onnx]").
"""

from __future__ import annotations

import json

import numpy as np

from .backend import to_numpy
from .layers import Conv2D, Dropout, Flatten, Linear, LocalResponseNorm, MaxPool2D, ReLU, Tanh
from .net import AdaptiveAvgPool2D, adaptive_bins

#: The ONNX operator set of the exported graphs (every op used is unchanged since opset 13).
OPSET = 17


def averaging_matrix(size: int, out: int) -> np.ndarray:
    """(out, size): row i averages the rows of bin i (``adaptive_bins``)."""
    m = np.zeros((out, size), np.float32)
    for i, (a, b) in enumerate(adaptive_bins(size, out)):
        m[i, a:b] = 1.0 / (b - a)
    return m


def to_onnx(net, preprocessing: dict | None = None, name: str = "tinyalex"):
    """The ONNX ModelProto of ``net`` in test mode (float32). ``preprocessing`` (the
    checkpoint's description of what ``input`` must be) goes into the model's metadata."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    x = "input"

    def weight(key, value):
        inits.append(numpy_helper.from_array(np.asarray(to_numpy(value), np.float32), key))
        return key

    for (lname, layer), (_, _, shape_in, _) in zip(net.layers, net.shapes(), strict=True):
        y = "logits" if lname == net.layers[-1][0] else lname
        if isinstance(layer, Conv2D):
            p = layer.padding
            nodes.append(helper.make_node(
                "Conv", [x, weight(f"{lname}.W", layer.params["W"]),
                         weight(f"{lname}.b", layer.params["b"])], [y], name=lname,
                kernel_shape=[layer.kernel_size] * 2, strides=[layer.stride] * 2,
                pads=[p] * 4, group=layer.groups))
        elif isinstance(layer, (ReLU, Tanh)):
            nodes.append(helper.make_node("Relu" if isinstance(layer, ReLU) else "Tanh",
                                          [x], [y], name=lname))
        elif isinstance(layer, LocalResponseNorm):
            if layer.size % 2 == 0:  # ONNX puts the extra channel after, tinyalex before
                raise ValueError(f"{lname}: ONNX's LRN window differs for even sizes "
                                 f"({layer.size})")
            nodes.append(helper.make_node(
                "LRN", [x], [y], name=lname, size=layer.size,
                alpha=float(layer.coefficient * layer.size), beta=float(layer.beta),
                bias=float(layer.k)))
        elif isinstance(layer, MaxPool2D):
            nodes.append(helper.make_node("MaxPool", [x], [y], name=lname,
                                          kernel_shape=[layer.window] * 2,
                                          strides=[layer.stride] * 2))
        elif isinstance(layer, AdaptiveAvgPool2D):
            _, h, w = shape_in
            if (h, w) == (layer.out, layer.out):
                nodes.append(helper.make_node("Identity", [x], [y], name=lname))
            else:
                pw = weight(f"{lname}.Pw_T", averaging_matrix(w, layer.out).T)
                ph = weight(f"{lname}.Ph", averaging_matrix(h, layer.out))
                nodes.append(helper.make_node("MatMul", [x, pw], [f"{lname}.rows"],
                                              name=f"{lname}.w"))
                nodes.append(helper.make_node("MatMul", [ph, f"{lname}.rows"], [y],
                                              name=lname))
        elif isinstance(layer, Dropout):
            if layer.mode == "paper":
                scale = weight(f"{lname}.scale", np.float32(1 - layer.p))
                nodes.append(helper.make_node("Mul", [x, scale], [y], name=lname))
            else:
                nodes.append(helper.make_node("Identity", [x], [y], name=lname))
        elif isinstance(layer, Flatten):
            nodes.append(helper.make_node("Flatten", [x], [y], name=lname, axis=1))
        elif isinstance(layer, Linear):
            nodes.append(helper.make_node(
                "Gemm", [x, weight(f"{lname}.W", layer.params["W"]),
                         weight(f"{lname}.b", layer.params["b"])], [y], name=lname, transB=1))
        else:
            raise TypeError(f"no ONNX node for {lname}: {layer!r}")
        x = y

    k = net.shapes()[-1][3][0]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *net.input_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", k])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="tinyalex")
    model.doc_string = ("input: the preprocessed batch (N, 3, S, S) float32, RGB; "
                        "output: logits (N, K)")
    if preprocessing:
        helper.set_model_props(model, {"preprocessing": json.dumps(preprocessing)})
    onnx.checker.check_model(model)
    return model


def export(net, path, preprocessing: dict | None = None) -> int:
    """Write ``to_onnx(net)`` to path; returns the file's size in bytes."""
    import onnx

    model = to_onnx(net, preprocessing)
    onnx.save(model, str(path))
    return len(model.SerializeToString())
