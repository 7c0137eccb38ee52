"""INT8 + FP16: the TensorRT form's layers that are not INT8 run in FP16, its input and output stay FP32.

Strongly typed TensorRT (11.x, TensorRT-RTX) builds each layer in the type its ONNX graph gives it and
has no FP16 builder flag, so an INT8 Q/DQ graph with FP32 everywhere else ran its SiLUs, residual
additions, Concats, pooling, upsampling, attention and decode in FP32. NVIDIA ModelOpt's default
(``high_precision_dtype="fp16"``) converts them to FP16; this does the same with maintained tools:
ONNX's version converter raises the opset to 19, the first where QuantizeLinear / DequantizeLinear take
FP16 scales (so a DequantizeLinear writes FP16 with no Cast after it), and ONNX Runtime's float16
converter turns every other float tensor and initializer to FP16, with one Cast at each end so callers
feed and read FP32. TensorRT 10 (weakly typed) builds the same file with its FP16 and INT8 flags.
"""
from __future__ import annotations

from engine.errors import ExportError

QDQ_FP16_OPSET = 19


def int8_fp16(model):
    """An INT8 + FP16 copy of the Q/DQ ``model`` (an ``onnx.ModelProto``): graph input and output FP32.

    Raises:
        ExportError: the opset conversion or the FP16 conversion failed.
    """
    from onnx import version_converter

    from .fp16 import convert_fp16

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < QDQ_FP16_OPSET:
        try:
            model = version_converter.convert_version(model, QDQ_FP16_OPSET)
        except Exception as e:  # the converter raises its own C++ errors
            raise ExportError(f"raising the INT8 graph from opset {opset} to {QDQ_FP16_OPSET} failed "
                              f"({type(e).__name__}: {e})", "build with --int8-float fp32") from e
    try:
        return convert_fp16(model)
    except ExportError as e:
        raise ExportError(f"the INT8 + FP16 conversion failed: {e.message}", "build with --int8-float fp32") from e
