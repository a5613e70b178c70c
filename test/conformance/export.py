#!/usr/bin/env python3
"""Exports scikit-learn models with skl2onnx, as data scientists do, and
writes the framework's own predictions on held-out rows beside each one.

    export.py OUTDIR

It also writes OUTDIR/zipmap.onnx, a classifier exported with skl2onnx's
default ZipMap output (a sequence of maps), which validation must refuse.

Three CNNs are built as exporters write them, with the onnx helper API
(Conv, BatchNormalization, pools, Gemm, Softmax, PyTorch-style names),
each taking its input in its real shape: onnx_cnn1d float [N, 3, 200]
(NCT: a 3-axis accelerometer, 2 s at 100 Hz), onnx_cnn2d float
[N, 3, 32, 32] (NCHW), and onnx_cnn2d_uint8_nhwc uint8 [N, 32, 32, 3]
(NHWC, as camera pipelines export: Cast, Mul by 1/255, Transpose to NCHW,
then the convs). Their expected scores are onnx.reference's
ReferenceEvaluator, the framework's own evaluator.

For each model NAME it writes OUTDIR/NAME.onnx (unmodified exporter
output, zipmap off) and OUTDIR/NAME.json:

    {"features": F, "rows": N, "input": [N*F floats],
     "scores": "<graph output>", "expected": [N*K floats], "width": K,
     "labels": "<graph output or empty>", "expected_labels": [N labels as strings]}

F is one row's values; a CNN's JSON adds its row's shape (without the
batch), "shape": [dims], its "dtype" (float32 or uint8: uint8 pixels are
written as whole floats), "layout" (NCT, NCHW or NHWC) and, for a
sequence, the "fields" its channels are.

Seeds are fixed, so every run writes the same models. The Go suite in
this folder runs it in the virtualenv deploy/scripts/deps.sh creates.
"""

import json
import os
import sys
import warnings

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
import skl2onnx
import sklearn
from skl2onnx import to_onnx
from sklearn.datasets import make_classification, make_regression
from sklearn.base import is_classifier
from sklearn.ensemble import (GradientBoostingClassifier, GradientBoostingRegressor, RandomForestClassifier,
                              RandomForestRegressor)
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, Normalizer, StandardScaler
from sklearn.svm import LinearSVC

FEATURES = 6
HELD_OUT = 16
# Opset 17 (ai.onnx) and 3 (ai.onnx.ml): inside what ONNX Runtime 1.24
# runs, and what current skl2onnx writes by default for these models.
OPSET = {"": 17, "ai.onnx.ml": 3}


def classification(classes, seed):
    x, y = make_classification(n_samples=200 + HELD_OUT, n_features=FEATURES, n_informative=4,
                               n_redundant=1, n_classes=classes, random_state=seed)
    # Scale and shift the features, so that scalers have work to do.
    x = (x * np.linspace(0.5, 20, FEATURES) + np.linspace(-3, 50, FEATURES)).astype(np.float32)
    return x[:-HELD_OUT], y[:-HELD_OUT], x[-HELD_OUT:]


def regression(seed):
    x, y = make_regression(n_samples=200 + HELD_OUT, n_features=FEATURES, noise=0.5, random_state=seed)
    x = x.astype(np.float32)
    return x[:-HELD_OUT], y[:-HELD_OUT], x[-HELD_OUT:]


def models():
    x2, y2, t2 = classification(2, 1)
    x3, y3, t3 = classification(3, 2)
    xr, yr, tr = regression(3)
    return [
        ("logreg_binary", LogisticRegression(max_iter=500), x2, y2, t2),
        ("logreg_multiclass", LogisticRegression(max_iter=500), x3, y3, t3),
        ("scaler_logreg", make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)), x3, y3, t3),
        # The scaler as standard ops, Sub and Div of a [1, F] row: broadcasting.
        ("scaler_div_logreg", make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)), x3, y3, t3),
        ("mlp", MLPClassifier(hidden_layer_sizes=(12,), max_iter=300, random_state=4), x3, y3, t3),
        ("random_forest", RandomForestClassifier(n_estimators=6, max_depth=4, random_state=5), x3, y3, t3),
        ("gradient_boosting", GradientBoostingClassifier(n_estimators=8, max_depth=3, random_state=6), x3, y3, t3),
        ("gradient_boosting_binary", GradientBoostingClassifier(n_estimators=8, max_depth=3, random_state=7), x2, y2, t2),
        ("ridge", Ridge(alpha=0.5), xr, yr, tr),
        # Beyond the list: the other ai.onnx.ml ops and forms.
        # String class labels: the label output is a string tensor.
        ("logreg_string_labels", LogisticRegression(max_iter=500), x3, np.array(["ok", "worn", "broken"])[y3], t3),
        ("mlp_string_labels", MLPClassifier(hidden_layer_sizes=(8,), max_iter=200, random_state=12), x3,
         np.array(["ok", "worn", "broken"])[y3], t3),
        ("normalizer_logreg", make_pipeline(Normalizer(norm="l2"), LogisticRegression(max_iter=500)), x3, y3, t3),
        ("minmax_linear_svc", make_pipeline(MinMaxScaler(), LinearSVC(random_state=9)), x2, y2, t2),
        ("random_forest_regressor", RandomForestRegressor(n_estimators=5, max_depth=4, random_state=10), xr, yr, tr),
        ("gradient_boosting_regressor", GradientBoostingRegressor(n_estimators=10, max_depth=3, random_state=11), xr, yr, tr),
    ]


def _init(name, value):
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def cnn(shape, layers, flat, classes, seed, uint8_nhwc=False):
    """A CNN as exporters write it, PyTorch's names and all: the input
    ["batch", *shape[1:]] as the exporter declares it, the layers, each (op,
    Conv's (out channels, kernel), attributes), then Flatten (flat values),
    Gemm and Softmax. With uint8_nhwc the input is uint8 [N, H, W, C] as
    camera pipelines export it: Cast to float, Mul by 1/255 and Transpose to
    NCHW come first (shape is still the NCHW one the convs see). Weights are
    initializers drawn from seed, and so are the held-out rows; the expected
    scores are the reference evaluator's on them."""
    rng = np.random.default_rng(seed)
    inits, nodes, prev = [], [], "input"
    in_shape, in_type = list(shape[1:]), TensorProto.FLOAT
    if uint8_nhwc:
        c, h, w = shape[1:]
        in_shape, in_type = [h, w, c], TensorProto.UINT8
        inits.append(_init("/Constant_output_0", 1 / 255))
        nodes += [helper.make_node("Cast", ["input"], ["/Cast_output_0"], name="/Cast", to=TensorProto.FLOAT),
                  helper.make_node("Mul", ["/Cast_output_0", "/Constant_output_0"], ["/Mul_output_0"], name="/Mul"),
                  helper.make_node("Transpose", ["/Mul_output_0"], ["/Transpose_output_0"], name="/Transpose",
                                   perm=[0, 3, 1, 2])]
        prev = "/Transpose_output_0"
    channels = shape[1]
    for i, (op, conv, attrs) in enumerate(layers):
        node = "/layer%d/%s" % (i, op)
        inputs = [prev]
        if op == "Conv":
            out_ch, kernel = conv
            fan_in = channels // attrs.get("group", 1)
            params = [("weight", rng.normal(0, (fan_in * np.prod(kernel)) ** -0.5, (out_ch, fan_in) + kernel)),
                      ("bias", rng.normal(0, 0.1, out_ch))]
            channels = out_ch
        elif op == "BatchNormalization":
            params = [("weight", rng.uniform(0.5, 1.5, channels)), ("bias", rng.normal(0, 0.1, channels)),
                      ("running_mean", rng.normal(0, 0.2, channels)), ("running_var", rng.uniform(0.5, 1.5, channels))]
        else:
            params = []
        for part, value in params:
            inits.append(_init("layer%d.%s" % (i, part), value))
            inputs.append("layer%d.%s" % (i, part))
        nodes.append(helper.make_node(op, inputs, [node + "_output_0"], name=node, **attrs))
        prev = node + "_output_0"
    inits += [_init("fc.weight", rng.normal(0, flat ** -0.5, (classes, flat))), _init("fc.bias", rng.normal(0, 0.1, classes))]
    nodes += [helper.make_node("Flatten", [prev], ["/Flatten_output_0"], name="/Flatten", axis=1),
              helper.make_node("Gemm", ["/Flatten_output_0", "fc.weight", "fc.bias"], ["/fc/Gemm_output_0"], name="/fc/Gemm",
                               alpha=1.0, beta=1.0, transB=1),
              helper.make_node("Softmax", ["/fc/Gemm_output_0"], ["probabilities"], name="/Softmax", axis=1)]
    graph = helper.make_graph(nodes, "main_graph",
                              [helper.make_tensor_value_info("input", in_type, ["batch"] + in_shape)],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes])], inits)
    # IR 8, opset 17, set here: what ONNX Runtime 1.24 and both engines
    # read, and the same bytes from a newer onnx.
    model = helper.make_model(graph, producer_name="onnx-helper", opset_imports=[helper.make_opsetid("", OPSET[""])])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    if uint8_nhwc:
        held = rng.integers(0, 256, [HELD_OUT] + in_shape).astype(np.uint8)
    else:
        held = rng.normal(0, 1, [HELD_OUT] + in_shape).astype(np.float32)
    (scores,) = ReferenceEvaluator(model).run(None, {"input": held})
    return model, held, scores


# The first 2-D CNN's layers, for float NCHW and uint8 NHWC input alike.
CNN2D = [
    ("Conv", (8, (3, 3)), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]}),
    ("BatchNormalization", None, {"epsilon": 1e-5}),
    ("Relu", None, {}),
    ("AveragePool", None, {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ("Conv", (16, (3, 3)), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "group": 4}),
    ("Relu", None, {}),
    ("MaxPool", None, {"kernel_shape": [2, 2], "strides": [2, 2]}),
]


def cnns():
    """Each (name, (model, held rows, scores), how the input is laid out,
    the fields a sequence's channels are)."""
    return [
        # [N, 3, 200], NCT: 3-axis accelerometer, 2 s at 100 Hz. Conv,
        # BatchNormalization, Relu, MaxPool, Conv, Relu, GlobalAveragePool,
        # Flatten, Gemm, Softmax.
        ("onnx_cnn1d", cnn((-1, 3, 200), [
            ("Conv", (8, (5,)), {"kernel_shape": [5], "pads": [2, 2]}),
            ("BatchNormalization", None, {"epsilon": 1e-5}),
            ("Relu", None, {}),
            ("MaxPool", None, {"kernel_shape": [2], "strides": [2]}),
            ("Conv", (16, (3,)), {"kernel_shape": [3], "pads": [1, 1]}),
            ("Relu", None, {}),
            ("GlobalAveragePool", None, {}),
        ], 16, 4, 20), "NCT", ["ax", "ay", "az"]),
        # [N, 3, 32, 32] float, NCHW: Conv (pads, stride 2),
        # BatchNormalization, Relu, AveragePool, Conv (4 groups), Relu,
        # MaxPool, Flatten, Gemm, Softmax.
        ("onnx_cnn2d", cnn((-1, 3, 32, 32), CNN2D, 16 * 4 * 4, 5, 21), "NCHW", []),
        # [N, 32, 32, 3] uint8, NHWC, as camera pipelines export: Cast,
        # Mul by 1/255, Transpose to NCHW, then the same layers.
        ("onnx_cnn2d_uint8_nhwc", cnn((-1, 3, 32, 32), CNN2D, 16 * 4 * 4, 5, 22, uint8_nhwc=True), "NHWC", []),
    ]


def stable(onx):
    """Sorts the opset imports, which skl2onnx lists in set order, so that
    a rerun writes the same bytes."""
    imports = sorted((o.domain, o.version) for o in onx.opset_import)
    del onx.opset_import[:]
    for domain, version in imports:
        onx.opset_import.add(domain=domain, version=version)


def main(out):
    os.makedirs(out, exist_ok=True)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    for name, model, x, y, held in models():
        model.fit(x, y)
        classifier = is_classifier(model)
        final = model.steps[-1][1] if hasattr(model, "steps") else model
        options = {id(model): {"zipmap": False}} if classifier else None
        if classifier and not hasattr(final, "predict_proba"):
            # Margin classifiers (LinearSVC) write no ZipMap and refuse the
            # option; an empty one keeps skl2onnx's pipeline from adding it.
            options = {type(final): {}}
        if name == "scaler_div_logreg":
            options = {StandardScaler: {"div": "div"}, LogisticRegression: {"zipmap": False}}
        onx = to_onnx(model, x[:1], options=options, target_opset=OPSET)
        stable(onx)
        with open(os.path.join(out, name + ".onnx"), "wb") as f:
            f.write(onx.SerializeToString())
        outputs = [o.name for o in onx.graph.output]
        if classifier and not hasattr(final, "predict_proba"):
            # A margin classifier: its decision function (binary: one column).
            scores = model.decision_function(held).reshape(len(held), -1)
            labels, expected_labels = outputs[0], [str(v) for v in model.predict(held)]
            scores_name = outputs[1]
        elif classifier:
            scores = model.predict_proba(held)
            labels, expected_labels = outputs[0], [str(v) for v in model.predict(held)]
            scores_name = outputs[1]
        else:
            scores = model.predict(held).reshape(len(held), -1)
            labels, expected_labels, scores_name = "", [], outputs[0]
        doc = {"features": FEATURES, "rows": len(held), "input": [float(v) for v in held.ravel()],
               "scores": scores_name, "width": scores.shape[1], "expected": [float(v) for v in scores.ravel()],
               "labels": labels, "expected_labels": expected_labels,
               "framework": "scikit-learn %s, skl2onnx %s, onnx %s" % (sklearn.__version__, skl2onnx.__version__, onnx.__version__)}
        with open(os.path.join(out, name + ".json"), "w") as f:
            json.dump(doc, f)
    for name, (onx, held, scores), layout, fields in cnns():
        with open(os.path.join(out, name + ".onnx"), "wb") as f:
            f.write(onx.SerializeToString())
        doc = {"features": int(np.prod(held.shape[1:])), "shape": list(held.shape[1:]), "dtype": str(held.dtype),
               "layout": layout, "fields": fields, "rows": len(held), "input": [float(v) for v in held.ravel()],
               "scores": onx.graph.output[0].name, "width": scores.shape[1],
               "expected": [float(v) for v in scores.ravel()], "labels": "", "expected_labels": [],
               "framework": "onnx %s (helper, reference.ReferenceEvaluator), numpy %s" % (onnx.__version__, np.__version__)}
        with open(os.path.join(out, name + ".json"), "w") as f:
            json.dump(doc, f)
    x, y, _ = classification(2, 8)
    zipped = to_onnx(LogisticRegression(max_iter=500).fit(x, y), x[:1], target_opset=OPSET)
    stable(zipped)
    with open(os.path.join(out, "zipmap.onnx"), "wb") as f:
        f.write(zipped.SerializeToString())


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: export.py OUTDIR")
    main(sys.argv[1])
