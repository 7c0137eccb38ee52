"""A FAKE detector graph (one convolution shaped like a raw YOLO head) for fast builder tests.

``(B, 3, 32, 32)`` image → ``(B, 4 + 3, 16)`` "boxes and scores". It has no accuracy to speak of; it
only has the shapes, dtypes and metadata our builder and runtime handle, and builds in well under a
second with the real TensorRT-RTX builder.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.metadata import METADATA_KEY, ModelMetadata

NAMES = ("disc", "box", "triangle")
IMGSZ = (32, 32)


def onnx_model(graph, opset: int = 17):
    """``helper.make_model`` stamped with the oldest IR version its opset allows (IR 8 for opset 17).

    ``onnx`` stamps its own newest IR version by default (14 with onnx 1.23), which an older ONNX Runtime
    refuses ("max supported IR version: 13" in 1.30): test models must load wherever the tests run.
    """
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    return model


def tiny_metadata(dynamic: bool = False) -> ModelMetadata:
    return ModelMetadata(names=NAMES, imgsz=IMGSZ, stride=8, batch=None if dynamic else 1, source_name="tiny.pt")


def write_tiny_onnx(path: Path, dynamic: bool = False, fp16: bool = False, bad_nodes: int = 0) -> Path:
    """Write the tiny graph; ``fp16``: FP16 inside with FP32 input/output; ``bad_nodes``: that many
    nodes of an unknown custom operator (each fails TensorRT's parser)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    wdt = np.float16 if fp16 else np.float32
    w = numpy_helper.from_array((rng.standard_normal((7, 3, 8, 8)) * 0.05).astype(wdt), "w")
    b = numpy_helper.from_array(np.zeros(7, wdt), "b")
    shape = numpy_helper.from_array(np.array([0, 7, -1], np.int64), "shape")
    batch = "batch" if dynamic else 1
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, *IMGSZ])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [batch, 7, 16])
    nodes, src = [], "images"
    if fp16:
        nodes.append(helper.make_node("Cast", ["images"], ["x16"], to=TensorProto.FLOAT16, name="cast_in"))
        src = "x16"
    nodes.append(helper.make_node("Conv", [src, "w", "b"], ["conv"], strides=[8, 8], name="head_conv"))
    for i in range(bad_nodes):
        nodes.append(helper.make_node(f"NotARealOp{i}", ["conv"], [f"bad{i}"], domain="yolo.fake", name=f"bad_node_{i}"))
    nodes.append(helper.make_node("Reshape", ["conv", "shape"], ["r"], name="reshape"))
    if fp16:
        nodes.append(helper.make_node("Cast", ["r"], ["output0"], to=TensorProto.FLOAT, name="cast_out"))
    else:
        nodes[-1].output[0] = "output0"
    outputs = [y] + [helper.make_tensor_value_info(f"bad{i}", TensorProto.FLOAT, None) for i in range(bad_nodes)]
    graph = helper.make_graph(nodes, "tiny", [x], outputs, initializer=[w, b, shape])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("yolo.fake", 1)] if bad_nodes else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    model.metadata_props.add(key=METADATA_KEY, value=tiny_metadata(dynamic).to_json())
    onnx.save(model, str(path))
    return Path(path)


def write_int8_qdq(src: Path, dst: Path, images: int = 2) -> Path:
    """A Q/DQ INT8 form the way TensorRT wants it (symmetric int8, zero points 0, float bias, Conv inputs
    only), calibrated by ONNX Runtime's quantize_static on random images: a stand-in for the INT8
    stage's real artifact, good for builder tests, useless for accuracy."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    inp = onnx.load(str(src), load_external_data=False).graph.input[0]
    shape = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = images

        def get_next(self):
            if not self.left:
                return None
            self.left -= 1
            return {inp.name: np.random.default_rng(self.left).random(shape, dtype=np.float32)}

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["Conv"],
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False})
    return Path(dst)
