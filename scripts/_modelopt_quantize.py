"""Run inside a separate venv that has ``nvidia-modelopt[onnx]`` (see scripts/modelopt_compare.py).

    python _modelopt_quantize.py MODEL.onnx CALIB.npy OUT.onnx [fp16|fp32]

Quantizes with the settings Ultralytics 8.4 uses for TensorRT 11 (``ultralytics/utils/export/engine.py``,
``modelopt_quantize_onnx``): INT8, ``max`` calibration on the CPU, the detect head's output
convolutions (``.2/Conv``) and DFL kept float; ModelOpt's default FP16 for the non-quantized layers
unless ``fp32`` is given. Imports nothing from this project.
"""
import sys

import numpy as np


def main() -> None:
    model, calib, out = sys.argv[1:4]
    high = sys.argv[4] if len(sys.argv) > 4 else "fp16"
    import onnx
    from modelopt.onnx.quantization import quantize

    name = onnx.load(model, load_external_data=False).graph.input[0].name
    quantize(model, quantize_mode="int8", calibration_data={name: np.load(calib)}, calibration_method="max",
             calibration_eps=["cpu"], nodes_to_exclude=[r".*\.2/Conv$", r".*/dfl/"], output_path=out,
             high_precision_dtype=high)


if __name__ == "__main__":
    main()
