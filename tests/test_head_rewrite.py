"""The DFL rewrite (exporters.head_rewrite): same outputs as Ultralytics' Softmax + Conv, for every opset."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from exporters.head_rewrite import find_dfl, rewrite_dfl  # noqa: E402

A = 84  # anchors


def _dfl_graph(opset: int, weights: np.ndarray | None = None, batch: int | str = 1):
    """Ultralytics' DFL export: (B, 64, A) -> Reshape (B, 4, 16, A) -> Transpose -> Softmax(1) -> Conv -> (B, 4, A)."""
    w = np.arange(16, dtype=np.float32).reshape(1, 16, 1, 1) if weights is None else weights
    inits = [numpy_helper.from_array(np.array([0 if batch != 1 else 1, 4, 16, A], np.int64), "s4"),
             numpy_helper.from_array(np.array([0 if batch != 1 else 1, 4, A], np.int64), "s3"),
             numpy_helper.from_array(w, "dfl.conv.weight")]
    nodes = [helper.make_node("Reshape", ["x", "s4"], ["r"], name="/model.23/dfl/Reshape"),
             helper.make_node("Transpose", ["r"], ["t"], name="/model.23/dfl/Transpose", perm=[0, 2, 1, 3]),
             helper.make_node("Softmax", ["t"], ["sm"], name="/model.23/dfl/Softmax", axis=1),
             helper.make_node("Conv", ["sm", "dfl.conv.weight"], ["c"], name="/model.23/dfl/conv/Conv"),
             helper.make_node("Reshape", ["c", "s3"], ["y"], name="/model.23/dfl/Reshape_1")]
    g = helper.make_graph(nodes, "dfl", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 64, A])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4, A])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _run(model, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


@pytest.mark.parametrize("opset", [13, 17, 18, 21])
def test_rewrite_matches_softmax_conv(opset):
    x = (np.random.default_rng(opset).standard_normal((1, 64, A)) * 8).astype(np.float32)
    x[0, :16, 0] = 200.0  # logits this large overflow a naive exp; the max subtraction must handle them
    x[0, 16:32, 1] = -300.0
    model = _dfl_graph(opset)
    want = _run(model, x)
    assert rewrite_dfl(model) == 1
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert "Softmax" not in ops and "Transpose" not in ops and "Conv" not in ops
    assert all(n.name.startswith("/model.23/dfl/") for n in model.graph.node)
    assert "dfl.conv.weight" not in {i.name for i in model.graph.initializer}
    got = _run(model, x)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-5)


def test_rewrite_keeps_a_dynamic_batch():
    model = _dfl_graph(17, batch="batch")
    x = np.random.default_rng(0).standard_normal((3, 64, A)).astype(np.float32)
    want = _run(model, x)
    rewrite_dfl(model)
    np.testing.assert_allclose(_run(model, x), want, atol=1e-4)


def test_opset_below_13_is_left_alone():
    """There Softmax(axis=1) spans all trailing axes: the pattern is not DFL's softmax over the bins."""
    model = _dfl_graph(12)
    assert find_dfl(model) == [] and rewrite_dfl(model) == 0


def test_other_softmax_conv_pairs_are_left_alone():
    learned = np.random.default_rng(0).standard_normal((1, 16, 1, 1)).astype(np.float32)
    model = _dfl_graph(17, weights=learned)
    assert find_dfl(model) == [] and rewrite_dfl(model) == 0
    assert [n.op_type for n in model.graph.node].count("Softmax") == 1


def test_demo_export_has_the_rewritten_dfl(demo_onnx):
    model = onnx.load(str(demo_onnx))
    assert find_dfl(model) == []  # already rewritten by the exporter
    dfl = {n.op_type for n in model.graph.node if "/dfl/" in n.name}
    assert {"ReduceMax", "Exp", "ReduceSum", "Div"} <= dfl and "Softmax" not in dfl


def test_yolov8_export_is_rewritten_with_parity(tmp_path):
    """YOLOv8's head has the same DFL: the exporter rewrites it and the parity check vs PyTorch still holds."""
    pytest.importorskip("ultralytics")
    from benchmarks.artifacts import random_checkpoint
    from exporters.config import ExportConfig
    from exporters.onnx_export import export_onnx

    pt = random_checkpoint("yolov8n", tmp_path)
    logs: list[str] = []
    art = export_onnx(ExportConfig(weights=pt, imgsz=(256, 256), out=tmp_path / "out"),
                      log=logs.append)
    model = onnx.load(str(art.path))
    assert find_dfl(model) == [] and any("rewritten as reductions" in s for s in logs)
    assert not [n for n in model.graph.node if n.op_type == "Softmax"]  # YOLOv8n has no attention softmax
    assert art.parity.max_abs < 1e-2
