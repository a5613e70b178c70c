#!/usr/bin/env python3
"""Exports scikit-learn models with skl2onnx, as data scientists do, and
writes the framework's own predictions on held-out rows beside each one.

    export.py OUTDIR

It also writes OUTDIR/zipmap.onnx, a classifier exported with skl2onnx's
default ZipMap output (a sequence of maps), which validation must refuse.

For each model NAME it writes OUTDIR/NAME.onnx (unmodified exporter
output, zipmap off) and OUTDIR/NAME.json:

    {"features": F, "rows": N, "input": [N*F floats],
     "scores": "<graph output>", "expected": [N*K floats], "width": K,
     "labels": "<graph output or empty>", "expected_labels": [N labels as strings]}

Seeds are fixed, so every run writes the same models. The Go suite in
this folder runs it in the virtualenv deploy/scripts/deps.sh creates.
"""

import json
import os
import sys
import warnings

import numpy as np
import onnx
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
    x, y, _ = classification(2, 8)
    zipped = to_onnx(LogisticRegression(max_iter=500).fit(x, y), x[:1], target_opset=OPSET)
    stable(zipped)
    with open(os.path.join(out, "zipmap.onnx"), "wb") as f:
        f.write(zipped.SerializeToString())


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: export.py OUTDIR")
    main(sys.argv[1])
