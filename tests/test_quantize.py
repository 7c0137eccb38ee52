"""INT8 Q/DQ: the decode tail kept float, the TensorRT form's placement, types and FP16 float layers, the CPU
form and its range rules, the range cache, --exclude, and that TensorRT-RTX's builder accepts the TensorRT form."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from calibration import CalibrationConfig, strategies
from engine.errors import ConfigError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from exporters.onnx_graph import graph_index  # noqa: E402
from exporters.qdq_cpu import attention_nodes, stem_convs, stem_silus  # noqa: E402
from exporters.quantize import (QuantTarget, decode_tail, form_float, load_or_calibrate, match_nodes,  # noqa: E402
                                parse_excludes, quantize_model, quantized_nodes, tensorrt_problems)
from tests.fakes.tiny_onnx import onnx_model  # noqa: E402


def _meta(model):
    from engine.metadata import from_onnx_props

    return from_onnx_props({p.key: p.value for p in model.metadata_props})


@pytest.fixture(scope="module")
def calibrated(demo_onnx, small_data, tmp_path_factory):
    """One calibration pass over the small set, cached: (model, ranges, cache path, log lines)."""
    model = onnx.load(str(demo_onnx))
    cache = tmp_path_factory.mktemp("calib") / "demo.calib.json"
    logs: list[str] = []
    ranges, _ = load_or_calibrate(demo_onnx, model, _meta(model), CalibrationConfig(small_data), cache,
                                  logs.append, show_progress=False)
    return model, ranges, cache, logs


@pytest.fixture(scope="module")
def forms(demo_onnx, calibrated, tmp_path_factory):
    """Both INT8 forms of the demo, from the same ranges."""
    model, ranges, _, _ = calibrated
    out = tmp_path_factory.mktemp("forms")
    tail = decode_tail(model)
    return {t: onnx.load(str(quantize_model(demo_onnx, ranges, t, tail, out / f"demo{t.suffix}")))
            for t in QuantTarget}


def test_decode_tail_is_everything_after_the_last_learned_convs(demo_onnx):
    model = onnx.load(str(demo_onnx))
    tail = set(decode_tail(model))
    nodes = {n.name: n for n in model.graph.node}
    out_producer = next(n.name for n in model.graph.node if model.graph.output[0].name in n.output)
    assert out_producer in tail  # the final concat of boxes and scores
    assert any("/dfl/" in t for t in tail) and any(nodes[t].op_type == "Sigmoid" for t in tail)
    assert not [t for t in tail if nodes[t].op_type == "Conv"]  # every learned conv is quantized
    assert {nodes[t].op_type for t in tail if "/dfl/" in t} >= {"ReduceMax", "Exp", "ReduceSum", "Div"}
    assert len(tail) < 40


def test_decode_tail_counts_ultralytics_dfl_conv_as_fixed(demo_pt, tmp_path):
    """With --keep-dfl-softmax the graph has DFL's arange conv: it is tail, not a learned conv."""
    pytest.importorskip("ultralytics")
    from exporters.config import ExportConfig
    from exporters.onnx_export import export_onnx

    path = export_onnx(ExportConfig(weights=demo_pt, out=tmp_path, rewrite_dfl=False), log=lambda s: None).path
    model = onnx.load(str(path))
    nodes = {n.name: n for n in model.graph.node}
    convs = [t for t in decode_tail(model) if nodes[t].op_type == "Conv"]
    assert len(convs) == 1 and "/dfl/" in convs[0]


def test_cpu_form_takes_uint8_bgr_pixels_and_keeps_the_stem_float(forms, demo_onnx):
    """The CPU form's input is the letterboxed frame as OpenCV holds it; its stem conv and the stem's SiLU stay
    float, and so does attention (MatMuls and Softmax)."""
    model = onnx.load(str(demo_onnx))
    stem = stem_convs(model)
    assert len(stem) == 1 and stem[0].startswith("/model.0/")
    ops = {n.name: n.op_type for n in model.graph.node}
    attn = attention_nodes(model)
    assert sorted(ops[n] for n in attn) == ["MatMul", "MatMul", "Softmax"] and all("/attn/" in n for n in attn)
    g = graph_index(forms[QuantTarget.CPU])
    node = {n.name: n for n in forms[QuantTarget.CPU].graph.node}
    reads_int8 = lambda n: any(getattr(g.producer.get(i), "op_type", "") == "DequantizeLinear"  # noqa: E731
                               for i in node[n].input)
    writes_int8 = lambda n: any(r.op_type == "QuantizeLinear"  # noqa: E731
                                for r in g.consumers.get(node[n].output[0], []))
    assert reads_int8("/model.1/act/Sigmoid")
    silu = stem_silus(model)  # the stem's SiLU runs float beside it, and its output is quantized for model.1
    assert sorted(ops[n] for n in silu) == ["Mul", "Sigmoid"] and all(n.startswith("/model.0/") for n in silu)
    assert not any(reads_int8(n) for n in silu) and writes_int8(next(n for n in silu if ops[n] == "Mul"))
    softmax = next(n for n in attn if ops[n] == "Softmax")
    assert not reads_int8(softmax) and not any(writes_int8(n) for n in attn)
    q = forms[QuantTarget.CPU]
    (inp,) = q.graph.input
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert inp.name == "images" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8 and dims == [1, 320, 320, 3]
    conv = next(n for n in q.graph.node if n.name == stem[0])
    init = {i.name: i for i in q.graph.initializer}
    assert init[conv.input[1]].data_type == onnx.TensorProto.FLOAT  # float weights, not a DequantizeLinear's
    assert stem[0] in quantized_nodes(forms[QuantTarget.TENSORRT])  # TensorRT runs an INT8 stem well
    assert not [n for n in q.graph.node if n.op_type == "Resize"]  # upsamples are NHWC Gathers


def test_cpu_form_rewrites_change_no_number(demo_onnx, calibrated, tmp_path, small_data):
    """With its uint8 input and Gather upsamples, the CPU form outputs bit for bit what it did before them."""
    import onnxruntime as ort

    from engine.eval.datasets import load_split, read_image
    from engine.metadata import PixelFormat
    from engine.preprocess import Letterbox
    from exporters import quantize as qz

    model, ranges, _, _ = calibrated
    plain = tmp_path / "plain.onnx"
    qz._cpu_form(demo_onnx, qz.head_ranges(model, ranges)[0], decode_tail(model), plain,
                 replace(qz.CPU_FORM, cpu_rewrites=False))
    rewritten = quantize_model(demo_onnx, ranges, QuantTarget.CPU, decode_tail(model), tmp_path / "cpu.onnx")
    frames = [read_image(i.path) for i in load_split(small_data, "val")[:3]]
    a = ort.InferenceSession(str(plain), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(rewritten), providers=["CPUExecutionProvider"])
    for f in frames:
        x = Letterbox((320, 320))([f])[0]
        u = Letterbox((320, 320), pixels=PixelFormat.NHWC_BGR_UINT8)([f])[0]
        assert np.array_equal(a.run(None, {"images": x})[0], b.run(None, {"images": u})[0])


def _scale_of(q, init, dq):
    return float(onnx.numpy_helper.to_array(init[dq.input[1]]))


def test_tensorrt_form_is_s8s8_with_zero_points_0(forms, demo_onnx):
    q = forms[QuantTarget.TENSORRT]
    assert tensorrt_problems(q) == []
    init = {i.name: i for i in q.graph.initializer}
    qdq = [n for n in q.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qdq) > 100
    for n in qdq:
        zp = init[n.input[2]]
        assert zp.data_type == onnx.TensorProto.INT8 and not np.any(onnx.numpy_helper.to_array(zp))
        if n.op_type == "DequantizeLinear" and n.input[0] in init:  # weights: int8, never int32 (bias)
            assert init[n.input[0]].data_type == onnx.TensorProto.INT8
    tail = set(decode_tail(onnx.load(str(demo_onnx))))
    producer = {o: n for n in q.graph.node for o in n.output}
    assert not tail & set(quantized_nodes(q))
    assert all(producer.get(i) is None or producer[i].op_type != "DequantizeLinear"
               for n in q.graph.node if n.name in tail for i in n.input)


def test_tensorrt_form_places_qdq_as_nvidia_describes(forms):
    """Residual Adds: both inputs quantized. A Quantize right after each SiLU that feeds a Split or
    Concat (not after the Split). One scale for all inputs of a Concat. Attention MatMuls: no Q/DQ."""
    q = forms[QuantTarget.TENSORRT]
    init = {i.name: i for i in q.graph.initializer}
    producer = {o: n for n in q.graph.node for o in n.output}
    consumers: dict = {}
    for n in q.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    from_dq = lambda t: t in producer and producer[t].op_type == "DequantizeLinear"  # noqa: E731
    movers = {"Split", "Slice", "MaxPool", "Resize", "Reshape", "Transpose"}  # TensorRT moves DQ through them

    def source(t):
        while producer[t].op_type in movers:
            t = producer[t].input[0]
        return t

    adds = [n for n in q.graph.node if n.op_type == "Add" and "/model.23/" not in n.name
            and all(i not in init for i in n.input)]
    assert len(adds) >= 10 and all(from_dq(source(i)) for n in adds for i in n.input)
    splits = [n for n in q.graph.node if n.op_type == "Split" and "/model.23/" not in n.name]
    assert splits and all(from_dq(source(n.input[0])) for n in splits)
    assert not any(producer[i].op_type == "QuantizeLinear" for n in splits for o in n.output
                   for c in consumers.get(o, []) for i in c.input if c.op_type == "DequantizeLinear")
    concats = [n for n in q.graph.node if n.op_type == "Concat" and "/model.23/" not in n.name]
    assert len(concats) >= 10
    for c in concats:
        scales = set()
        for t in map(source, c.input):
            assert from_dq(t), (c.name, t)
            scales.add(_scale_of(q, init, producer[t]))
        assert len(scales) == 1, (c.name, scales)
    matmuls = [n for n in q.graph.node if n.op_type == "MatMul"]
    assert matmuls and not any(from_dq(i) for n in matmuls for i in n.input)


def test_tensorrt_form_runs_int8_and_fp16_with_fp32_io(forms, demo_onnx, calibrated, tmp_path):
    """Every float initializer and value of the TensorRT form is FP16 but the graph's input and output;
    Q/DQ scales are FP16 at opset 19. --int8-float fp32 keeps the float layers FP32."""
    q = forms[QuantTarget.TENSORRT]
    F32, F16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert next(o.version for o in q.opset_import if o.domain in ("", "ai.onnx")) == 19
    assert q.graph.input[0].type.tensor_type.elem_type == F32 and q.graph.output[0].type.tensor_type.elem_type == F32
    consumers = {i: n for n in q.graph.node for i in n.input}
    f32 = [i.name for i in q.graph.initializer if i.data_type == F32 and consumers[i.name].op_type != "Resize"]
    assert not f32  # (Resize's scales input is float by the operator's definition)
    assert {i.data_type for i in q.graph.initializer if i.name.endswith("_qscale")} == {F16}
    casts = [n for n in q.graph.node if n.op_type == "Cast"]
    assert len(casts) == 2  # one at each end of the graph
    model, ranges, _, _ = calibrated
    fp32 = onnx.load(str(quantize_model(demo_onnx, ranges, QuantTarget.TENSORRT, decode_tail(model),
                                        tmp_path / "int8-fp32.onnx", float_dtype="fp32")))
    assert not [i for i in fp32.graph.initializer if i.data_type == F16] and tensorrt_problems(fp32) == []


def test_cpu_form_is_u8s8_and_rejected_by_the_tensorrt_check(forms):
    q = forms[QuantTarget.CPU]
    init = {i.name: i for i in q.graph.initializer}
    act_zp = {init[n.input[2]].data_type for n in q.graph.node if n.op_type == "QuantizeLinear"}
    assert act_zp == {onnx.TensorProto.UINT8}
    w = [init[n.input[0]] for n in q.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in init
         and init[n.input[0]].dims and len(init[n.input[0]].dims) == 4]
    assert w and {t.data_type for t in w} == {onnx.TensorProto.INT8}
    assert len(set(quantized_nodes(q))) > len(set(quantized_nodes(q)) & {n.name for n in q.graph.node
                                                                         if n.op_type == "Conv"})
    assert any("UINT8" in p for p in tensorrt_problems(q))


def test_both_forms_run_and_stay_close_to_fp32(forms, demo_onnx, small_data, tmp_path):
    import onnxruntime as ort

    from engine.eval.datasets import load_split, read_image
    from engine.preprocess import Letterbox, bgr_from_planes

    items = load_split(small_data, "val")[:2]
    x = Letterbox((320, 320), batch=1)([read_image(items[0].path)])[0].copy()
    ref = ort.InferenceSession(str(demo_onnx), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    for t, q in forms.items():
        feed = bgr_from_planes(x) if t is QuantTarget.CPU else x
        out = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"images": feed})[0]
        assert out.shape == ref.shape
        assert np.abs(out[0, 4:] - ref[0, 4:]).max() < 0.25, t  # scores: INT8 noise, not a collapse


def test_second_build_reuses_the_cache_without_inference(calibrated, demo_onnx, small_data, monkeypatch):
    model, ranges, cache, logs = calibrated
    assert cache.is_file() and any("wrote calibration cache" in s for s in logs)

    def no_inference(*a, **k):
        raise AssertionError("calibration inference ran despite a matching cache")

    monkeypatch.setattr(strategies, "collect_ranges", no_inference)
    again: list[str] = []
    r2, _ = load_or_calibrate(demo_onnx, model, _meta(model), CalibrationConfig(small_data), cache, again.append,
                              show_progress=False)
    assert dict(r2.ranges) == dict(ranges.ranges) and any("reusing" in s for s in again)
    # other images (a smaller subset) or another method: the cache is not applied
    with pytest.raises(AssertionError, match="despite"):
        load_or_calibrate(demo_onnx, model, _meta(model), CalibrationConfig(small_data, max_images=3), cache,
                          again.append, show_progress=False)
    assert any("made for another images" in s for s in again)
    with pytest.raises(AssertionError, match="despite"):
        load_or_calibrate(demo_onnx, model, _meta(model), CalibrationConfig(small_data, method="minmax"), cache,
                          again.append, show_progress=False)
    assert any("made for another method" in s for s in again)
    # the same model and images under another letterbox (here its border value): not applied either
    import engine.preprocess

    monkeypatch.setattr(engine.preprocess, "PAD_VALUE", 0)
    with pytest.raises(AssertionError, match="despite"):
        load_or_calibrate(demo_onnx, model, _meta(model), CalibrationConfig(small_data), cache, again.append,
                          show_progress=False)
    assert any("made for another preprocessing" in s for s in again)


def test_exclude_patterns(demo_onnx):
    model = onnx.load(str(demo_onnx))
    sig = match_nodes(model, ["Sigmoid"])
    assert len(sig) == sum(n.op_type == "Sigmoid" for n in model.graph.node)
    head = match_nodes(model, ["/model.23/cv3*"])
    assert head and all(h.startswith("/model.23/cv3") for h in head)
    assert parse_excludes(["Sigmoid, /a/b", "Conv"]) == ("Sigmoid", "/a/b", "Conv")
    with pytest.raises(ConfigError, match="matches no node") as err:
        match_nodes(model, ["/model.99/typo"])
    assert "--exclude" in err.value.message


def test_tensorrt_rtx_builds_the_int8_fp16_form_for_every_target_with_no_fp32_compute(forms, tmp_path):
    """TensorRT-RTX parses the TensorRT form into a network whose compute layers are INT8 or FP16 (only
    constants and the two I/O casts write FP32) and builds it for Turing too, which an FP32 MatMul forbids."""
    pytest.importorskip("tensorrt_rtx")
    from engine.backends.trt_flavor import capturing_logger, import_tensorrt
    from engine.metadata import Precision
    from exporters.tensorrt import RTX_TARGETS, TURING, EngineConfig, build, float32_layers

    path = tmp_path / "demo.int8.onnx"
    onnx.save(forms[QuantTarget.TENSORRT], str(path))
    trt, _ = import_tensorrt("rtx")
    logger = capturing_logger(trt)
    network = trt.Builder(logger).create_network(0)
    assert trt.OnnxParser(network, logger).parse_from_file(str(path))
    kinds = {network.get_layer(i).type.name for i in range(network.num_layers)}
    assert {"CONVOLUTION", "QUANTIZE", "DEQUANTIZE", "MATRIX_MULTIPLY"} <= kinds
    assert float32_layers(network) == []
    built = build(path, EngineConfig(precision=Precision.INT8, tensorrt="rtx", targets=(TURING, *RTX_TARGETS)),
                  log=lambda s: None)
    assert len(built.plan) > 1_000_000 and built.targets == (TURING, *RTX_TARGETS) and not built.notes
    assert built.settings["weights_bytes"] > 1_000_000


def test_share_concat_ranges_unifies_inputs_through_scale_preserving_ops():
    """Concat(Split(a), b) -> a, both Split outputs, b and the Concat output get one (union) range."""
    from onnx import TensorProto, helper

    from calibration.cache import TensorRanges
    from calibration.config import CalibrationMethod
    from exporters.qdq_cpu import share_concat_ranges

    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("Split", ["a"], ["s0", "s1"], name="split", axis=1, num_outputs=2),
             helper.make_node("Sigmoid", ["x"], ["b"], name="sig"),
             helper.make_node("Concat", ["s0", "s1", "b"], ["c"], name="cat", axis=1),
             helper.make_node("Concat", ["c", "x"], ["d"], name="tail_cat", axis=1)]
    vi = helper.make_tensor_value_info
    g = helper.make_graph(nodes, "g", [vi("x", TensorProto.FLOAT, [1, 2])], [vi("d", TensorProto.FLOAT, None)])
    model = onnx_model(g, 18)
    r = TensorRanges(CalibrationMethod.MINMAX, {"x": (-3.0, 3.0), "a": (0.0, 3.0), "s0": (0.0, 2.0),
                                                "s1": (0.0, 3.0), "b": (0.1, 0.9), "c": (0.0, 3.0),
                                                "d": (-3.0, 3.0)})
    new, n = share_concat_ranges(model, r, keep_float=["tail_cat"])
    assert n == 1
    assert all(new.ranges[t] == (0.0, 3.0) for t in ("a", "s0", "s1", "b", "c"))
    assert new.ranges["x"] == (-3.0, 3.0) and new.ranges["d"] == (-3.0, 3.0)  # the float Concat is left alone
    assert r.ranges["b"] == (0.1, 0.9)  # the input ranges are not modified in place


def test_silu_bypass_for_the_breakdown_benchmark_removes_every_quantized_silu(forms, tmp_path):
    """benchmarks.int8_breakdown times the CPU form without its SiLUs: the copy must lose all of them and run."""
    import onnxruntime as ort

    from benchmarks.int8_breakdown import bypass_silu

    m = onnx.ModelProto()
    m.CopyFrom(forms[QuantTarget.CPU])
    quantized = [n.name for n in m.graph.node if n.op_type == "Sigmoid"
                 and any(p.op_type == "DequantizeLinear" and p.output[0] == n.input[0] for p in m.graph.node)]
    assert quantized, "the CPU form should quantize its SiLUs"
    assert bypass_silu(m) == len(quantized)
    left = {n.name for n in m.graph.node}
    assert not left & set(quantized)
    assert any(n.op_type == "Sigmoid" for n in m.graph.node)  # the decode tail's float class sigmoid stays
    path = tmp_path / "no-silu.onnx"
    onnx.save(m, str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    out = sess.run(None, {inp.name: np.zeros(inp.shape, np.uint8)})[0]
    assert out.shape[0] == 1


def test_rank_stability_benchmark_ranks_both_forms_by_both_statistics(forms, demo_onnx, small_data, tmp_path,
                                                                     capsys):
    """benchmarks.rank_stability: both forms of a deploy folder, each statistic, each draw size, one line each."""
    import shutil

    from benchmarks.rank_stability import main

    shutil.copy(demo_onnx, tmp_path / "demo.onnx")
    for target, q in forms.items():
        onnx.save(q, str(tmp_path / f"demo{target.suffix}"))
    assert main(["--deploy", str(tmp_path), "--data", str(small_data), "--images", "8", "--sizes", "2,4",
                 "--pairs", "2"]) == 0
    lines = [s for s in capsys.readouterr().out.splitlines() if "carries" in s]
    assert len(lines) == 4 and sum("typical" in s for s in lines) == 2 and sum("ratio-of-sums" in s for s in lines) == 2
    assert all(s.count("carries") == 2 and s.count("the same layers") == 2 for s in lines)
    assert {s.split()[0] for s in lines} == {"tensorrt", "cpu"}


def test_detector_feeds_the_cpu_form_uint8_bgr_frames(forms, demo_onnx, small_data, tmp_path):
    """Detector reads the pixel format from the graph: uint8 BGR frames in, the FP32 model's detections out."""
    from engine import Detector
    from engine.eval.datasets import load_split, read_image
    from engine.metadata import PixelFormat
    from exporters.onnx_export import write_metadata
    from exporters.quantize import int8_metadata

    q = onnx.ModelProto()
    q.CopyFrom(forms[QuantTarget.CPU])
    meta = int8_metadata(_meta(onnx.load(str(demo_onnx))), q)
    assert meta.pixels is PixelFormat.NHWC_BGR_UINT8
    write_metadata(q, meta)
    path = tmp_path / "demo.int8-cpu.onnx"
    onnx.save(q, str(path))
    frame = read_image(load_split(small_data, "val")[0].path)
    with Detector(demo_onnx, device="cpu") as ref, Detector(path, device="cpu") as det:
        assert det.backend.inputs[0].dtype == np.uint8 and det._letterboxes[0].buffer.shape == (1, 320, 320, 3)
        a, b = ref(frame), det(frame)
        assert len(a) and abs(len(a) - len(b)) <= 1
        best = b.xyxy[int(np.argmax(b.confidence))]
        assert np.abs(a.xyxy - best).max(axis=1).min() < 4.0  # the INT8 top box is one of FP32's, within 4 px
        two = det([frame, frame])  # a list of frames runs too
        assert len(two) == 2 and len(two[0]) == len(b)
    with pytest.raises(ConfigError, match="preprocess='gpu'"):
        Detector(path, device="cpu", preprocess="gpu")


def test_sensitivity_ranks_int8_layers_of_both_forms_and_checks_its_stability(forms, demo_onnx, small_data, tmp_path):
    """The fallback's ranking names INT8 layers (convolutions included, for the TensorRT form's producer
    placement too) and says how much two halves of its images agree on the top layers."""
    from engine.eval.datasets import load_split, read_image
    from engine.preprocess import Letterbox
    from exporters.sensitivity import TOP, rank_layers

    images = [Letterbox((320, 320))([read_image(i.path)])[0].copy() for i in load_split(small_data, "val")[:4]]
    for target, q in forms.items():
        path = tmp_path / f"{target.value}.onnx"
        onnx.save(q, str(path))
        ranking, stable = rank_layers(demo_onnx, path, iter(images))  # read once: a reader will do
        convs = {n.name for n in q.graph.node if n.op_type == "Conv"}
        assert len(ranking) > 50 and set(n for n, _ in ranking) & convs, target
        assert ranking == sorted(ranking, key=lambda s: -s[1])
        assert stable is not None and stable.images == 4 and 0 <= stable.capture <= 1
        assert 0 <= stable.overlap <= 1 and stable.overlap * TOP == round(stable.overlap * TOP)
        assert (stable.overlap == 1) <= (stable.capture == 1)  # the same picks carry the same error
        assert rank_layers(demo_onnx, path, images[:2])[1] is None  # too few images to split
        # nodes the form keeps float by itself read dequantized tensors in the CPU form, but keeping them
        # float would change nothing: the gate's ranking skips them
        own = form_float(onnx.load(str(demo_onnx)), target)
        assert bool(own) is (target is QuantTarget.CPU)
        skipped = rank_layers(demo_onnx, path, images, skip=own)[0]
        assert not {n for n, _ in skipped} & set(own) and len(skipped) == len(ranking) - len(
            set(own) & {n for n, _ in ranking})
        if target is QuantTarget.CPU:
            assert "/model.10/m/m.0/attn/MatMul" in {n for n, _ in ranking}  # what the skip is for


def test_rank_images_are_read_again_at_each_pass_up_to_the_limit(small_data, monkeypatch):
    """The ranking's images are calibration images, decoded at each pass (not held: 128 inputs at 640 are
    630 MB), the same each time, and no more than RANK_IMAGES."""
    from types import SimpleNamespace

    from calibration.readers import open_source
    from exporters import sensitivity
    from exporters.quantize_stage import rank_images

    source = open_source(CalibrationConfig(small_data))  # its train split: 8 images
    b = SimpleNamespace(metadata=SimpleNamespace(imgsz=(96, 128), batch=1))
    images = rank_images(b, source)
    first, again = list(images), list(images)
    assert len(first) == 8 and all(x.shape == (1, 3, 96, 128) for x in first)
    assert all(np.array_equal(x, y) and x is not y for x, y in zip(first, again))
    monkeypatch.setattr(sensitivity, "RANK_IMAGES", 5)
    assert len(list(images)) == 5


def test_a_layers_score_is_its_error_on_a_typical_image_not_one_images():
    """Layer b adds a large error on one image of ten and little on the others; layer a adds a moderate
    error on every image. A ratio of sums would put b first on that one image; the ranking puts a first."""
    from exporters.sensitivity import _rank, typical_nsr

    err = np.array([[0.1, 0.05]] * 9 + [[0.1, 5.0]])  # images x tensors (a's output, b's output)
    sig = np.ones_like(err)
    assert err[:, 1].sum() > err[:, 0].sum()
    assert typical_nsr(err, sig) == pytest.approx([0.1, 0.05])  # the top and bottom image of ten cut
    assert [n for n, _ in _rank({"a": ([], "ta"), "b": ([], "tb")}, ["ta", "tb"], err, sig)] == ["a", "b"]


def test_ranking_stability_says_what_one_halfs_picks_carry_on_the_other(monkeypatch):
    """Two layers whose scores swap between the halves of the images: the halves name different top layers
    (overlap 0) but each half's pick carries 90 % of the error the other half's own pick carries there; a
    layer that only one half finds harmful carries nothing on the other (capture 0)."""
    from exporters import sensitivity
    from exporters.sensitivity import rank_runs

    monkeypatch.setattr(sensitivity, "TOP", 1)
    layers = {"a": ([], "ta"), "b": ([], "tb")}
    ones = np.ones(4)

    def runs(errors):  # per image, each layer's squared output error (its FP32 output: four ones)
        it, cur = iter(errors), {}

        def ref(x):
            cur.update(zip(("ta", "tb"), next(it)))
            return {"ta": ones, "tb": ones}
        return ref, lambda x: {t: ones + np.sqrt(cur[t] / 4) for t in ("ta", "tb")}

    ref, q = runs([(0.5, 0.45)] * 2 + [(0.45, 0.5)] * 2)
    ranking, stable = rank_runs(layers, ref, q, [np.zeros((1, 3))] * 4)
    assert {n for n, _ in ranking} == {"a", "b"} and ranking[0][1] == pytest.approx(ranking[1][1])
    assert stable.images == 4 and stable.overlap == 0 and stable.capture == pytest.approx(0.9)
    ref, q = runs([(0.8, 0.0)] * 2 + [(0.0, 0.1)] * 2)
    ranking, stable = rank_runs(layers, ref, q, [np.zeros((1, 3))] * 4)
    assert ranking[0][0] == "a" and stable.overlap == 0 and stable.capture == pytest.approx(0.0)
    ref, q = runs([(0.8, 0.1)] * 4)
    assert rank_runs(layers, ref, q, [np.zeros((1, 3))] * 4)[1] == sensitivity.Stability(4, 1.0, 1.0, top=1)
    ref, q = runs([(0.8, 0.1)] * 4)  # a static batch of 2: 4 inputs are 8 images
    assert rank_runs(layers, ref, q, [np.zeros((2, 3))] * 4)[1].images == 8
    assert sensitivity.Stability(64, 2 / 3, 0.9, top=3).text().endswith("top 3 carry there (2 of 3 the same layers)")
    ref, q = runs([(0.8, 0.1)] * 3)
    assert rank_runs(layers, ref, q, [np.zeros((1, 3))] * 3)[1] is None  # too few images to split


def test_cpu_form_head_convs_write_float_for_the_decode_tail(forms, demo_onnx):
    """The head's last convolutions (box distributions, class logits) feed the float tail unquantized;
    every other convolution's output is quantized (the fused QLinearConv pattern)."""
    q = forms[QuantTarget.CPU]
    tail = set(decode_tail(onnx.load(str(demo_onnx))))
    consumers: dict = {}
    for n in q.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    convs = [n for n in q.graph.node if n.op_type == "Conv"]
    head = [n for n in convs if all(c.name in tail for c in consumers.get(n.output[0], []))]
    assert len(head) == 6  # three scales x (box, class)
    assert not any(c.op_type == "QuantizeLinear" for n in head for c in consumers[n.output[0]])
    inner = [n for n in convs if n not in head and not n.name.startswith("/model.0/")]
    assert inner and all(any(c.op_type == "QuantizeLinear" for c in consumers[n.output[0]]) for n in inner)


def test_silu_input_ranges_start_where_silu_turns_flat():
    from onnx import TensorProto, helper

    from calibration.cache import TensorRanges
    from calibration.config import CalibrationMethod
    from exporters.qdq_cpu import LEVELS, SILU_MIN_X, silu_flat_below, silu_input_ranges

    silu = lambda x: x / (1 + np.exp(-x))  # noqa: E731
    for step in (0.01, 0.04, 0.2):
        cut = silu_flat_below(step)
        assert abs(silu(cut)) <= step / 2 + 1e-12 < abs(silu(cut + 1e-3)) and cut < SILU_MIN_X
    assert silu_flat_below(1.0) == SILU_MIN_X  # a coarse output grid: nothing below the minimum matters
    w = onnx.numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Sigmoid", ["c"], ["s"], name="sig"), helper.make_node("Mul", ["c", "s"], ["y"], name="mul"),
             helper.make_node("Conv", ["y", "w"], ["c2"], name="conv2"), helper.make_node("Relu", ["c2"], ["r"], name="relu")]
    vi = helper.make_tensor_value_info
    g = helper.make_graph(nodes, "g", [vi("x", TensorProto.FLOAT, [1, 2, 4, 4])], [vi("r", TensorProto.FLOAT, None)], [w])
    model = onnx_model(g)
    r = TensorRanges(CalibrationMethod.MEAN_MINMAX, {"c": (-20.0, 10.0), "y": (-0.28, 10.0), "c2": (-20.0, 5.0)})
    new, n = silu_input_ranges(model, r)
    assert n == 1 and new.ranges["c2"] == (-20.0, 5.0)  # not a SiLU's input: untouched
    lo, hi = new.ranges["c"]
    assert hi == 10.0 and lo == pytest.approx(silu_flat_below((10.0 + 0.28) / LEVELS)) and -8 < lo < -5
    assert r.ranges["c"] == (-20.0, 10.0)  # not modified in place


def test_class_branch_is_found_from_the_graph_and_kept_float_where_cheap(demo_onnx, monkeypatch):
    """YOLO11's class branches (depthwise and 1x1 convolutions, ~3 % of the MACs) stay float; a class branch
    over CLASS_BRANCH_MAX_SHARE is quantized with the rest, and the choice says which and why."""
    from exporters import quantize
    from exporters.quantize import class_branch, class_branch_choice, conv_macs, detect_head

    model = onnx.load(str(demo_onnx))
    tail = decode_tail(model)
    cls = set(class_branch(model, tail))
    assert cls == {n for n in detect_head(model, tail) if n.startswith("/model.23/cv3.")} and len(cls) == 39
    macs = conv_macs(model, (1, 3, 320, 320))
    stem = next(n for n in model.graph.node if n.op_type == "Conv")
    assert macs[stem.name] == 16 * 160 * 160 * 3 * 3 * 3  # 3->16 channels, 3x3, stride 2 at 320
    choice = class_branch_choice(model, (1, 3, 320, 320), tail)
    assert set(choice.nodes) == cls and 0.02 < choice.share < 0.04 and "kept float (39 nodes" in choice.summary()
    monkeypatch.setattr(quantize, "CLASS_BRANCH_MAX_SHARE", 0.01)
    dear = class_branch_choice(model, (1, 3, 320, 320), tail)
    assert dear.nodes == () and dear.share == choice.share and "quantized: 3.0%" in dear.summary()


def test_box_branch_is_kept_float_only_where_the_head_regresses_the_box_directly(demo_onnx, tmp_path):
    """YOLO11 (DFL: 64 outputs per scale) keeps its box branch INT8; YOLO26 (no DFL: 4 outputs) keeps it float."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    from exporters.config import ExportConfig
    from exporters.onnx_export import export_onnx
    from exporters.quantize import box_branch_choice, class_branch, default_float, detect_head

    yolo11 = box_branch_choice(onnx.load(str(demo_onnx)))
    assert yolo11.nodes == () and not yolo11.direct and yolo11.summary() == ""
    torch.manual_seed(0)
    pt = tmp_path / "y26.pt"
    torch.save({"model": DetectionModel("yolo26n.yaml", nc=3, verbose=False)}, pt)
    model = onnx.load(str(export_onnx(ExportConfig(weights=pt, out=tmp_path / "o", imgsz=(320, 320)),
                                      log=lambda s: None).path))
    tail = decode_tail(model)
    boxes = box_branch_choice(model, tail)
    head = set(detect_head(model, tail))
    assert boxes.direct and set(boxes.nodes) == head - set(class_branch(model, tail))
    assert {n for n in boxes.nodes if "Conv" in n} == {n for n in head if n.startswith("/model.23/cv2.") and "Conv" in n}
    assert len(boxes.nodes) == 21 and "no DFL" in boxes.summary()
    keep, _, _ = default_float(model, (1, 3, 320, 320))
    assert set(boxes.nodes) <= set(keep)


def _head_graph(merged: bool):
    """A neck conv, a box conv and a class conv, and a tail that either sigmoids the class tensor on its own
    (Ultralytics 8.4's export) or concatenates both and splits them again (where the two cannot be told apart)."""
    from onnx import TensorProto, helper

    w = onnx.numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["n"], name="neck"),
             helper.make_node("Conv", ["n", "w"], ["box"], name="box_conv"),
             helper.make_node("Conv", ["n", "w"], ["cls"], name="cls_conv")]
    if merged:
        nodes += [helper.make_node("Concat", ["box", "cls"], ["bc"], name="cat", axis=1),
                  helper.make_node("Split", ["bc"], ["b2", "c2"], name="split", axis=1, num_outputs=2),
                  helper.make_node("Sigmoid", ["c2"], ["s"], name="sig"),
                  helper.make_node("Concat", ["b2", "s"], ["y"], name="out", axis=1)]
    else:
        nodes += [helper.make_node("Reshape", ["cls", "shape"], ["c2"], name="reshape"),
                  helper.make_node("Sigmoid", ["c2"], ["s"], name="sig"),
                  helper.make_node("Exp", ["box"], ["b2"], name="decode"),
                  helper.make_node("Concat", ["b2", "s"], ["y"], name="out", axis=1)]
    shape = onnx.numpy_helper.from_array(np.array([1, 2, 4, 4], np.int64), "shape")
    vi = helper.make_tensor_value_info
    g = helper.make_graph(nodes, "g", [vi("x", TensorProto.FLOAT, [1, 2, 4, 4])], [vi("y", TensorProto.FLOAT, None)],
                          [w, shape])
    return onnx_model(g, opset=18)


def test_class_branch_is_the_one_that_reaches_the_sigmoid_and_none_when_ambiguous():
    from exporters.quantize import class_branch, class_branch_choice

    assert class_branch(_head_graph(merged=False)) == ["cls_conv"]
    assert class_branch(_head_graph(merged=True)) == []  # behind the Split, which part is which is not known
    choice = class_branch_choice(_head_graph(merged=True), (1, 2, 4, 4))
    assert choice.nodes == () and not choice.found and "not told apart" in choice.summary()
    over_cap = class_branch_choice(_head_graph(merged=False), (1, 2, 4, 4))
    assert over_cap.found and over_cap.share == pytest.approx(1 / 3) and over_cap.nodes == ()  # a third of the MACs


def test_conv_macs_counts_groups_and_a_class_branch_of_unknown_cost_is_quantized():
    from onnx import helper

    from exporters.quantize import class_branch_choice, conv_macs

    model = _head_graph(merged=False)
    dw = onnx.numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "dw")
    model.graph.initializer.append(dw)
    model.graph.node.insert(1, helper.make_node("Conv", ["n", "dw"], ["n2"], name="depthwise", group=2, pads=[1] * 4))
    model.graph.node[2].input[0] = "n2"  # box_conv now reads the depthwise output
    macs = conv_macs(model)  # the graph input's own shape, 1x2x4x4
    assert macs == {"neck": 2 * 16 * 2, "depthwise": 2 * 16 * 9, "box_conv": 2 * 16 * 2, "cls_conv": 2 * 16 * 2}
    # a weight that is no initializer leaves a Conv uncounted: no share to judge by, so the branch is quantized
    w = next(i for i in model.graph.initializer if i.name == "w")
    model.graph.node.insert(0, helper.make_node("Constant", [], ["w"], value=w))
    model.graph.initializer.remove(w)
    choice = class_branch_choice(model)
    assert choice.found and choice.share is None and choice.nodes == () and "could not be measured" in choice.summary()


def test_detect_head_takes_the_extremes_and_the_rest_the_estimate(demo_onnx, calibrated):
    """The head's branches (one scale's box or class convolutions) are found from the graph; their tensors
    get the extremes over all images, every other tensor keeps the mean-minmax estimate."""
    from exporters.quantize import detect_head, head_ranges

    model, ranges, _, _ = calibrated
    head = detect_head(model)
    tail = set(decode_tail(model))
    assert len(head) == 60 and all(n.startswith("/model.23/cv") for n in head) and not tail & set(head)
    assert {n.name for n in model.graph.node if n.name.startswith("/model.23/cv")} == set(head)  # all of it
    new, changed = head_ranges(model, ranges)
    nodes = {n.name: n for n in model.graph.node}
    head_tensors = {o for n in head for o in nodes[n].output}
    assert changed > 0
    for t, r in new.ranges.items():
        assert r == (ranges.extremes[t] if t in head_tensors else ranges.ranges[t]), t
    assert any(ranges.ranges[t] != ranges.extremes[t] for t in head_tensors)  # (the rule changes something)


def test_head_extremes_off_leaves_the_head_on_the_methods_estimate(demo_onnx, calibrated, tmp_path):
    """``quantize_model(head_extremes=False)`` (the head trial's alternative): the head's Quantize scales come
    from the method's estimate, every other scale is the same as with the extremes."""
    from exporters.quantize import detect_head

    model, ranges, _, _ = calibrated
    tail = decode_tail(model)
    nodes = {n.name: n for n in model.graph.node}
    head_tensors = {o for n in detect_head(model) for o in nodes[n].output}

    def scales(extremes: bool) -> dict:
        q = onnx.load(str(quantize_model(demo_onnx, ranges, QuantTarget.TENSORRT, tail,
                                         tmp_path / f"{extremes}.onnx", head_extremes=extremes)))
        init = {i.name: i for i in q.graph.initializer}
        return {n.input[0]: float(onnx.numpy_helper.to_array(init[n.input[1]])) for n in q.graph.node
                if n.op_type == "QuantizeLinear" and n.input[1] in init and init[n.input[1]].dims == []}

    ext, est = scales(True), scales(False)
    assert ext.keys() == est.keys()
    moved = {t for t in ext if ext[t] != est[t]}
    assert moved and moved <= head_tensors  # only the head's ranges move, and some do
    assert all(est[t] < ext[t] for t in moved)  # the estimate clips: smaller steps


def test_attention_nodes_are_matmuls_of_two_activations_and_softmax():
    """A MatMul with a weight (initializer or Constant) is a layer to quantize, not attention."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    nodes = [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.ones((4, 4), np.float32))),
             helper.make_node("MatMul", ["x", "w"], ["a"], name="by_weight"),
             helper.make_node("MatMul", ["a", "c"], ["b"], name="by_constant"),
             helper.make_node("MatMul", ["a", "b"], ["s"], name="scores"),
             helper.make_node("Softmax", ["s"], ["y"], name="softmax")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])], [w])
    assert attention_nodes(onnx_model(graph)) == ["scores", "softmax"]
    out = helper.make_tensor_value_info("b", TensorProto.FLOAT, [4, 4])
    graph = helper.make_graph(nodes[:3], "g", graph.input, [out], [w])
    assert attention_nodes(onnx_model(graph)) == []


def test_an_onnx_runtime_without_cached_ranges_names_the_version_that_has_them(demo_onnx, calibrated, tmp_path,
                                                                               monkeypatch):
    """The fix asked for 1.32, which onnxruntime-gpu (1.31.1, the newest) does not have; 1.27 is the first
    whose quantize_static takes calibration_cache_path."""
    import onnxruntime.quantization as q

    from engine.errors import ExportError
    from exporters.quantize import QuantTarget, quantize_model

    monkeypatch.setattr(q, "quantize_static", lambda model_input, model_output, calibration_data_reader: None)
    with pytest.raises(ExportError, match="cannot quantize from cached ranges") as e:
        quantize_model(demo_onnx, calibrated[1], QuantTarget.CPU, [], tmp_path / "m.int8-cpu.onnx")
    assert "onnxruntime>=1.27" in e.value.fix and "onnxruntime-gpu>=1.27" in e.value.fix
