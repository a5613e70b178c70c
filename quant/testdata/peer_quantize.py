"""Quantizes a float ONNX model with onnxruntime.quantization, the peer
that BenchmarkFamilies (quant/) measures ours against.

    peer_quantize.py MODEL.onnx CALIB.f32 OUT_DIR

CALIB.f32 holds calibration rows as little-endian float32, the model's
input shape without its batch dimension per row. Writes OUT_DIR/static.onnx
(quantize_static, QDQ, with a CalibrationDataReader over the rows) and
OUT_DIR/dynamic.onnx (quantize_dynamic), both with the library's defaults,
as a user would run them, and prints the onnxruntime version.
"""

import os
import sys

import numpy as np
import onnx
import onnxruntime
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    quantize_dynamic,
    quantize_static,
)


class Rows(CalibrationDataReader):
    """Feeds the calibration rows one at a time, as a device would see them."""

    def __init__(self, name, rows):
        self.name, self.rows, self.i = name, rows, 0

    def get_next(self):
        if self.i >= len(self.rows):
            return None
        row = self.rows[self.i : self.i + 1]
        self.i += 1
        return {self.name: row}

    def rewind(self):
        self.i = 0


def main():
    model_path, calib_path, out = sys.argv[1:4]
    model = onnx.load(model_path)
    inp = model.graph.input[0]
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim[1:]]
    rows = np.fromfile(calib_path, dtype="<f4").reshape([-1] + dims)
    os.makedirs(out, exist_ok=True)
    quantize_static(model_path, os.path.join(out, "static.onnx"), Rows(inp.name, rows), quant_format=QuantFormat.QDQ)
    quantize_dynamic(model_path, os.path.join(out, "dynamic.onnx"))
    print("onnxruntime", onnxruntime.__version__)


if __name__ == "__main__":
    main()
