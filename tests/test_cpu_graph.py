"""The INT8 CPU form's graph rewrites (exporters.cpu_graph) and the uint8 BGR input the runtime feeds it."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from engine.metadata import ModelMetadata, PixelFormat  # noqa: E402
from engine.preprocess import PAD_VALUE, Letterbox, bgr_from_planes  # noqa: E402
from exporters.cpu_graph import bgr_uint8_input, rewrite_cpu_form, upsample_as_gather, widen_narrow_convs  # noqa: E402
from tests.fakes.tiny_onnx import onnx_model  # noqa: E402


def _run(model, feed):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feed)[0]


def _qdq_upsample(scales=(1, 1, 2, 2), out_scale=0.05, mode="nearest", ctm="asymmetric"):
    """uint8 x -> DQ -> Resize -> Q -> DQ -> Conv (a quantized neighbourhood like the CPU form's)."""
    w = np.random.default_rng(0).integers(-127, 127, (8, 8, 1, 1)).astype(np.int8)
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "s"), numpy_helper.from_array(np.array(128, np.uint8), "z"),
             numpy_helper.from_array(np.array(out_scale, np.float32), "s_out"),
             numpy_helper.from_array(np.array(scales, np.float32), "scales"), numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(np.full(8, 0.01, np.float32), "ws"), numpy_helper.from_array(np.zeros(8, np.int8), "wz")]
    nodes = [helper.make_node("DequantizeLinear", ["x", "s", "z"], ["xf"]),
             helper.make_node("Resize", ["xf", "", "scales"], ["rf"], name="up", mode=mode,
                              coordinate_transformation_mode=ctm, nearest_mode="floor"),
             helper.make_node("QuantizeLinear", ["rf", "s_out", "z"], ["r"]),
             helper.make_node("DequantizeLinear", ["r", "s_out", "z"], ["rd"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wf"], axis=0),
             helper.make_node("Conv", ["rd", "wf"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 8, 5, 7])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return onnx_model(g)


def test_nearest_upsample_becomes_nhwc_gathers_with_identical_outputs():
    model = _qdq_upsample()
    x = np.random.default_rng(1).integers(0, 256, (1, 8, 5, 7), dtype=np.uint8)
    ref = _run(model, {"x": x})
    assert upsample_as_gather(model) == 1
    ops = [n.op_type for n in model.graph.node]
    assert "Resize" not in ops and ops.count("Gather") == 2
    assert np.array_equal(_run(model, {"x": x}), ref)


@pytest.mark.parametrize("kw", [dict(scales=(1, 1, 1.5, 1.5)), dict(out_scale=0.1), dict(mode="linear"),
                                dict(ctm="half_pixel")])
def test_upsamples_that_a_gather_cannot_copy_are_left_alone(kw):
    model = _qdq_upsample(**kw)
    assert upsample_as_gather(model) == 0
    assert [n.op_type for n in model.graph.node].count("Resize") == 1


def _float_stem(batch=1):
    rng = np.random.default_rng(2)
    w = rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.1, 8).astype(np.float32)
    nodes = [helper.make_node("Conv", ["images", "w", "b"], ["c"], name="stem", pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0)]  # a second reader of the image
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, 20, 20])],
                          [helper.make_tensor_value_info("c", TensorProto.FLOAT, None),
                           helper.make_tensor_value_info("m", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return onnx_model(g)


@pytest.mark.parametrize("src", [(20, 20), (13, 31), (40, 12)])
def test_bgr_input_gives_the_float_input_results_bit_for_bit(src):
    """uint8 BGR pixels in, the same tensors out as from the float letterbox (border included)."""
    model = _float_stem()
    frame = np.random.default_rng(sum(src)).integers(0, 256, (*src, 3), dtype=np.uint8)
    ref = [_run_all(model, {"images": Letterbox((20, 20))([frame])[0].copy()})]
    assert bgr_uint8_input(model)
    (inp,) = model.graph.input
    assert inp.name == "images" and inp.type.tensor_type.elem_type == TensorProto.UINT8
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == [1, 20, 20, 3]
    pixels = Letterbox((20, 20), pixels=PixelFormat.NHWC_BGR_UINT8)([frame])[0]
    got = _run_all(model, {"images": pixels})
    assert all(np.array_equal(a, b) for a, b in zip(ref[0], got))


def _run_all(model, feed):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feed)


def test_bgr_input_keeps_a_dynamic_batch():
    model = _float_stem(batch=None)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    assert bgr_uint8_input(model)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert _run(model, {"images": np.zeros((3, 20, 20, 3), np.uint8)}).shape[0] == 3


def test_bgr_input_leaves_other_inputs_alone():
    model = _float_stem()
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 1  # a grayscale model
    before = model.SerializeToString()
    assert not bgr_uint8_input(model)
    assert model.SerializeToString() == before
    done = rewrite_cpu_form(_qdq_upsample())  # a uint8-input graph: only its upsample is rewritten
    assert (done.upsamples, done.uint8_input) == (1, False)


@pytest.mark.parametrize("src", [(480, 640), (320, 320), (100, 301), (640, 200)])
def test_bgr_letterbox_holds_the_float_letterbox_pixels(src):
    frame = np.random.default_rng(sum(src)).integers(0, 256, (*src, 3), dtype=np.uint8)
    planes = Letterbox((320, 320))([frame])[0]
    lb = Letterbox((320, 320), pixels=PixelFormat.NHWC_BGR_UINT8)
    pixels, (g,) = lb([frame])
    assert pixels.shape == (1, 320, 320, 3) and pixels.dtype == np.uint8
    assert np.array_equal(bgr_from_planes(planes), pixels)
    assert np.array_equal(planes, np.float32(1 / 255) * pixels[:, :, :, ::-1].transpose(0, 3, 1, 2).astype(np.float32))
    if g.top:
        assert np.all(pixels[0, : g.top] == PAD_VALUE)
    # a second frame of another size redraws the border
    small = np.full((10, 10, 3), 7, np.uint8)
    again, _ = lb([small])
    assert np.array_equal(again, bgr_from_planes(Letterbox((320, 320))([small])[0]))
    assert lb.resized(3).buffer.shape == (3, 320, 320, 3)


def test_pixel_format_of_inputs_and_metadata_round_trip():
    assert PixelFormat.of_input((1, 320, 320, 3), np.uint8) is PixelFormat.NHWC_BGR_UINT8
    assert PixelFormat.of_input((1, 3, 320, 320), np.float16) is PixelFormat.NCHW_RGB_FLOAT
    assert PixelFormat.NHWC_BGR_UINT8.shape(2, (384, 640)) == (2, 384, 640, 3)
    meta = ModelMetadata(names=("a",), imgsz=(320, 320), pixels=PixelFormat.NHWC_BGR_UINT8)
    assert ModelMetadata.from_json(meta.to_json()).pixels is PixelFormat.NHWC_BGR_UINT8
    old = meta.to_dict()
    del old["pixels"]
    old["schema_version"] = 1
    assert ModelMetadata.from_dict(old).pixels is PixelFormat.NCHW_RGB_FLOAT  # version-1 files are float planes


def _narrow_bottleneck(extra_reader=None, reader_zero_point=0, reader_input="md"):
    """uint8 x -> int8 Conv (16 -> 8) -> quantized SiLU -> int8 Conv (8 -> 16): YOLO11's first bottleneck."""
    rng = np.random.default_rng(3)
    t = lambda a, n: numpy_helper.from_array(a, n)  # noqa: E731
    inits = [t(np.array(0.02, np.float32), "xs"), t(np.array(3, np.uint8), "xz"),
             t(rng.integers(-127, 128, (8, 16, 3, 3)).astype(np.int8), "w1"),
             t(rng.uniform(0.002, 0.01, 8).astype(np.float32), "w1s"), t(np.zeros(8, np.int8), "w1z"),
             t(rng.integers(-500, 500, 8).astype(np.int32), "b1"), t(np.zeros(8, np.int32), "b1z"),
             t(np.array(0.04, np.float32), "cs"), t(np.array(120, np.uint8), "cz"),
             t(np.array(1 / 255, np.float32), "ss"), t(np.array(0, np.uint8), "sz"),
             t(np.array(0.03, np.float32), "ms"), t(np.array(10, np.uint8), "mz"),
             t(rng.integers(-127, 128, (16, 8, 3, 3)).astype(np.int8), "w2"),
             t(rng.uniform(0.002, 0.01, 16).astype(np.float32), "w2s"),
             t(np.full(16, reader_zero_point, np.int8), "w2z")]
    inits.append(t(np.float32(0.02) * numpy_helper.to_array(inits[3]), "b1s"))
    nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xf"]),
             helper.make_node("DequantizeLinear", ["w1", "w1s", "w1z"], ["w1f"], axis=0),
             helper.make_node("DequantizeLinear", ["b1", "b1s", "b1z"], ["b1f"], axis=0),
             helper.make_node("Conv", ["xf", "w1f", "b1f"], ["c"], name="cv1", pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["c", "cs", "cz"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "cs", "cz"], ["cd"]),
             helper.make_node("Sigmoid", ["cd"], ["s"]),
             helper.make_node("QuantizeLinear", ["s", "ss", "sz"], ["sq"]),
             helper.make_node("DequantizeLinear", ["sq", "ss", "sz"], ["sd"]),
             helper.make_node("Mul", ["cd", "sd"], ["m"]),
             helper.make_node("QuantizeLinear", ["m", "ms", "mz"], ["mq"]),
             helper.make_node("DequantizeLinear", ["mq", "ms", "mz"], ["md"]),
             helper.make_node("DequantizeLinear", ["w2", "w2s", "w2z"], ["w2f"], axis=0),
             helper.make_node("Conv", [reader_input, "w2f"], ["y"], name="cv2", pads=[1, 1, 1, 1])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 12, 12])]
    if extra_reader == "concat":  # the SiLU's output also joins a Concat: its channels are counted there
        nodes.append(helper.make_node("Concat", ["md", "xf"], ["cat"], axis=1))
        outputs.append(helper.make_tensor_value_info("cat", TensorProto.FLOAT, None))
    elif extra_reader == "output":
        outputs.append(helper.make_tensor_value_info("md", TensorProto.FLOAT, None))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 16, 12, 12])],
                          outputs, inits)
    return onnx_model(g)


@pytest.mark.parametrize("reader", ["md", "sd"])  # after the SiLU, or after its Sigmoid alone (0.5, not 0)
def test_a_narrow_int8_conv_is_widened_to_16_channels_with_identical_outputs(reader):
    """Exact whatever the new channels hold where the reader meets them: it weights them by zero."""
    model = _narrow_bottleneck(reader_input=reader)
    ref = _run(model, {"x": (x := np.random.default_rng(4).integers(0, 256, (1, 16, 12, 12), dtype=np.uint8))})
    assert widen_narrow_convs(model) == 1
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert init["w1"].shape == (16, 16, 3, 3) and not init["w1"][8:].any() and init["b1"].shape == (16,)
    assert init["w1s"].shape == init["b1s"].shape == (16,) and init["w2"].shape == (16, 16, 3, 3)
    assert not init["w2"][:, 8:].any()
    onnx.checker.check_model(model, full_check=True)
    assert np.array_equal(_run(model, {"x": x}), ref)
    assert widen_narrow_convs(model) == 0  # already 16 wide


@pytest.mark.parametrize("extra", ["concat", "output", "zero point"])
def test_a_narrow_conv_whose_channels_are_seen_elsewhere_is_left_alone(extra):
    """Left alone: its channels also reach a Concat or a graph output, or its reader's int8 0 is not 0.0."""
    model = (_narrow_bottleneck(reader_zero_point=5, reader_input="sd") if extra == "zero point"
             else _narrow_bottleneck(extra))
    before = model.SerializeToString()
    assert widen_narrow_convs(model) == 0
    assert model.SerializeToString() == before
