#!/usr/bin/env python3
"""Writes the third-party test models in models/testdata/thirdparty.

They are built by a path independent of Outpost's Go builders: the onnx
Python package's helper API, with weights from numpy, and expected outputs
computed by a plain numpy reference (not by any ONNX runtime). Outputs are
committed; rerun only to change them:

    python3 -m venv /tmp/v && /tmp/v/bin/pip install onnx==1.19.1 numpy
    /tmp/v/bin/python deploy/scripts/gen-testdata-models.py
"""
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "models", "testdata", "thirdparty")
rng = np.random.default_rng(20261126)


def init(name, arr):
    return numpy_helper.from_array(arr.astype(np.float32), name)


def save(model, name, inputs, expected):
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(OUT, name + ".onnx"))
    with open(os.path.join(OUT, name + ".expected.json"), "w") as f:
        json.dump({"inputs": inputs.tolist(), "outputs": expected.tolist()}, f, indent=1)
        f.write("\n")


def cnn1d():
    """[N,16] -> Reshape [N,1,16] -> Conv1d(4 filters, k=3, pad 1) -> Relu -> Reshape [N,64] -> Gemm -> Sigmoid."""
    w1 = rng.normal(0, 0.5, (4, 1, 3))
    b1 = rng.normal(0, 0.1, (4,))
    w2 = rng.normal(0, 0.3, (1, 64))
    b2 = rng.normal(0, 0.1, (1,))
    nodes = [
        helper.make_node("Reshape", ["x", "shape_in"], ["x3"]),
        helper.make_node("Conv", ["x3", "w1", "b1"], ["c"], kernel_shape=[3], pads=[1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Reshape", ["r", "shape_flat"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w2", "b2"], ["logit"], transB=1),
        helper.make_node("Sigmoid", ["logit"], ["prob"]),
    ]
    graph = helper.make_graph(
        nodes, "vibration_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["batch", 1])],
        [init("w1", w1), init("b1", b1), init("w2", w2), init("b2", b2),
         numpy_helper.from_array(np.array([-1, 1, 16], dtype=np.int64), "shape_in"),
         numpy_helper.from_array(np.array([-1, 64], dtype=np.int64), "shape_flat")],
    )
    model = helper.make_model(graph, producer_name="onnx-helper", opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = rng.normal(0, 1, (5, 16))
    xp = np.pad(x, ((0, 0), (1, 1)))
    conv = np.stack([np.stack([xp[:, t:t + 3] @ w1[c, 0] for t in range(16)], axis=1) + b1[c] for c in range(4)], axis=1)
    flat = np.maximum(conv, 0).reshape(5, 64)
    y = 1 / (1 + np.exp(-(flat @ w2.T + b2)))
    save(model, "cnn1d", x, y)


def mlp_matmul():
    """An exporter-style MLP: Flatten, MatMul+Add, Tanh, MatMul+Add, Softmax, other names, opset 15."""
    w1 = rng.normal(0, 0.4, (6, 10))
    b1 = rng.normal(0, 0.1, (10,))
    w2 = rng.normal(0, 0.4, (10, 3))
    b2 = rng.normal(0, 0.1, (3,))
    nodes = [
        helper.make_node("Flatten", ["float_input"], ["f"], axis=1),
        helper.make_node("MatMul", ["f", "coef_0"], ["m0"]),
        helper.make_node("Add", ["m0", "intercept_0"], ["a0"]),
        helper.make_node("Tanh", ["a0"], ["h0"]),
        helper.make_node("MatMul", ["h0", "coef_1"], ["m1"]),
        helper.make_node("Add", ["m1", "intercept_1"], ["a1"]),
        helper.make_node("Softmax", ["a1"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "exported_mlp",
        [helper.make_tensor_value_info("float_input", TensorProto.FLOAT, [None, 6])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 3])],
        [init("coef_0", w1), init("intercept_0", b1), init("coef_1", w2), init("intercept_1", b2)],
    )
    model = helper.make_model(graph, producer_name="onnx-helper", opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    x = rng.normal(0, 1, (4, 6))
    z = np.tanh(x @ w1 + b1) @ w2 + b2
    e = np.exp(z - z.max(axis=1, keepdims=True))
    save(model, "mlp_matmul", x, e / e.sum(axis=1, keepdims=True))


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    cnn1d()
    mlp_matmul()
    print("wrote", sorted(os.listdir(OUT)))
