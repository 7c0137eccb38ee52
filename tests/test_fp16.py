"""The FP16 graph: FP32 input/output, FP16 inside, a valid ONNX, judged by its detections, built by TensorRT-RTX."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from exporters.agreement import (  # noqa: E402
    AgreementConfig,
    compare_raw,
    compare_runners,
    onnx_runner,
    run_batched,
)
from exporters.fp16 import convert_fp16, topological_sort  # noqa: E402
from exporters.parity import parity_inputs  # noqa: E402


@pytest.fixture(scope="module")
def fp16_path(demo_onnx, tmp_path_factory):
    path = tmp_path_factory.mktemp("fp16") / "demo.fp16.onnx"
    onnx.save(convert_fp16(onnx.load(str(demo_onnx))), str(path))
    return path


def test_fp16_graph_keeps_fp32_io(fp16_path, demo_onnx):
    m = onnx.load(str(fp16_path))
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert m.graph.input[0].type.tensor_type.elem_type == f32
    assert m.graph.output[0].type.tensor_type.elem_type == f32
    weights = [i for i in m.graph.initializer if len(i.dims) == 4]
    assert weights and all(w.data_type == f16 for w in weights)
    assert fp16_path.stat().st_size < 0.6 * demo_onnx.stat().st_size


def test_fp16_graph_passes_the_full_onnx_check(fp16_path):
    onnx.checker.check_model(onnx.load(str(fp16_path)), full_check=True)  # raises if nodes are out of order


def test_topological_sort_puts_producers_first():
    from onnx import TensorProto, helper

    a = helper.make_node("Relu", ["x"], ["a"], name="a")
    b = helper.make_node("Neg", ["a"], ["b"], name="b")
    c = helper.make_node("Add", ["a", "b"], ["y"], name="c")
    g = helper.make_graph([c, b, a], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    topological_sort(g)
    assert [n.name for n in g.node] == ["a", "b", "c"]


def test_fp16_detections_agree_with_fp32_on_real_images(demo_onnx, fp16_path):
    agree = compare_runners(onnx_runner(demo_onnx), onnx_runner(fp16_path), parity_inputs((320, 320), None, 8), 1)
    assert agree.ok and agree.reference >= 8 and agree.missing == agree.extra == 0
    assert agree.max_score_diff < 0.01 and agree.min_iou > 0.95


def _raw(n: int = 1, boxes=((100, 100, 40, 40, 0.9, 0.0),)) -> np.ndarray:
    """A raw head output (n, 4 + 2 classes, 50 anchors): the given boxes (cx, cy, w, h, s0, s1) then zeros."""
    out = np.zeros((n, 6, 50), np.float32)
    for i, b in enumerate(boxes):
        out[:, :, i] = b
    return out


def test_agreement_ignores_low_score_anchors_and_borderline_scores():
    ref = _raw(boxes=[(100, 100, 40, 40, 0.9, 0), (300, 300, 40, 40, 0.26, 0), (200, 50, 30, 30, 0.01, 0)])
    cand = ref.copy()
    cand[0, :4, 2] += 50.0  # a huge difference on an anchor NMS throws away: not what a user sees
    cand[0, 4, 1] = 0.24  # a score rounded across the 0.25 threshold: both found the object
    a = compare_raw(ref, cand, AgreementConfig(min_detections=1))
    assert a.ok and a.missing == a.extra == 0 and a.matched == 2


@pytest.mark.parametrize("change,field", [
    (lambda c: c.__setitem__((0, 0, 0), 160.0), "missing"),     # the box moved: IoU < 0.85
    (lambda c: c.__setitem__((0, 4, 0), 0.0), "missing"),       # the detection vanished
    (lambda c: c.__setitem__((0, slice(4, 6), 0), (0, 0.9)), "class_flips"),  # another class
])
def test_agreement_fails_detections_that_really_differ(change, field):
    ref = _raw()
    cand = ref.copy()
    change(cand)
    a = compare_raw(ref, cand, AgreementConfig(min_detections=1))
    assert not a.ok and getattr(a, field) == 1


def test_agreement_lowers_the_threshold_when_the_reference_finds_nothing():
    ref = _raw(boxes=[(100 + 30 * i, 100, 20, 20, 0.01 + 0.001 * i, 0) for i in range(12)])
    a = compare_raw(ref, ref.copy())
    assert a.conf < 0.25 and a.reference >= 10 and a.ok
    cand = ref.copy()
    cand[:, :4] *= 1.5  # every box off: a real fault must not pass on "no detections"
    assert not compare_raw(ref, cand).ok


def test_run_batched_pads_a_static_batch():
    calls = []
    out = run_batched(lambda x: (calls.append(len(x)), x[:, :1, :1, :1].reshape(len(x), 1, 1))[1],
                      np.arange(5 * 3 * 2 * 2, dtype=np.float32).reshape(5, 3, 2, 2), 2)
    assert calls == [2, 2, 2] and out.shape == (5, 1, 1)


def test_tensorrt_rtx_builds_the_fp16_graph(fp16_path):
    pytest.importorskip("tensorrt_rtx")
    from engine.metadata import Precision
    from exporters.tensorrt import EngineConfig, build_engine

    plan = build_engine(fp16_path, EngineConfig(precision=Precision.FP16, tensorrt="rtx", targets=("sm86",)))
    assert len(plan) > 1_000_000
