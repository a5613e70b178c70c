"""Trains a scikit-learn MLPClassifier of the quantization issue's shape
(16 features, hidden layers 64-128-64, 8 classes) and exports it with
skl2onnx, as a data scientist would, for the quantization tests and
BenchmarkFamilies (quant/).

    export_mlp.py OUT_DIR

Writes OUT_DIR/mlp.onnx (skl2onnx's graph unmodified: Cast, MatMul+Add,
Relu, Softmax, and the label's ArgMax/ArrayFeatureExtractor; zipmap off),
OUT_DIR/calib.f32 (256 rows) and OUT_DIR/held.f32 (512 rows) as
little-endian float32, 16 values a row, OUT_DIR/held.labels (their
classes, little-endian int32), and prints scikit-learn's own accuracy on
the held-out rows. None of the held-out rows is trained or calibrated on.
Seeds are fixed, so every run writes the same model.
"""

import os
import sys
import warnings

import numpy as np
from skl2onnx import to_onnx
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

TRAIN, CALIB, HELD = 3000, 256, 512
# As test/conformance/export.py: what ONNX Runtime 1.24 runs.
OPSET = {"": 17, "ai.onnx.ml": 3}


def main(out):
    x, y = make_classification(n_samples=TRAIN + CALIB + HELD, n_features=16, n_informative=12,
                               n_redundant=2, n_classes=8, n_clusters_per_class=1, class_sep=1.0,
                               random_state=16)
    x = x.astype(np.float32)
    train, calib, held = x[:TRAIN], x[TRAIN:TRAIN + CALIB], x[TRAIN + CALIB:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(hidden_layer_sizes=(64, 128, 64), max_iter=200, random_state=4).fit(train, y[:TRAIN])
    onx = to_onnx(clf, train[:1], options={id(clf): {"zipmap": False}}, target_opset=OPSET)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "mlp.onnx"), "wb") as f:
        f.write(onx.SerializeToString())
    calib.astype("<f4").tofile(os.path.join(out, "calib.f32"))
    held.astype("<f4").tofile(os.path.join(out, "held.f32"))
    y[TRAIN + CALIB:].astype("<i4").tofile(os.path.join(out, "held.labels"))
    print("scikit-learn accuracy on held-out rows %.4f" % clf.score(held, y[TRAIN + CALIB:]))


if __name__ == "__main__":
    main(sys.argv[1])
