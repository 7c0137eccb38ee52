"""The FP16 graph: FP32 input/output, FP16 inside, within the stated tolerance of FP32, built by TensorRT-RTX."""
from __future__ import annotations

import pytest

from engine.errors import ParityError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from exporters import fp16 as fp16_mod  # noqa: E402
from exporters.fp16 import check_fp16, convert_fp16  # noqa: E402
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


def test_fp16_within_tolerance_on_real_images(demo_onnx, fp16_path):
    images = parity_inputs((320, 320), None, 4)
    check = check_fp16(demo_onnx, fp16_path, images, (320, 320), 1)
    assert check.ok and check.n_images == 4
    assert check.max_abs_box <= 0.005 * 320 and check.max_abs_score <= 0.01
    assert "OK" in check.summary()


def test_fp16_over_tolerance_is_a_parity_error(demo_onnx, fp16_path, monkeypatch):
    monkeypatch.setattr(fp16_mod, "SCORE_TOL", 0.0)
    with pytest.raises(ParityError, match="fp16 vs fp32") as err:
        check_fp16(demo_onnx, fp16_path, parity_inputs((320, 320), None, 2), (320, 320), 1)
    assert "--no-fp16" in err.value.fix


def test_tensorrt_rtx_builds_the_fp16_graph(fp16_path):
    pytest.importorskip("tensorrt_rtx")
    from engine.metadata import Precision
    from exporters.tensorrt import EngineConfig, build_engine

    plan = build_engine(fp16_path, EngineConfig(precision=Precision.FP16, tensorrt="rtx", targets=("sm86",)))
    assert len(plan) > 1_000_000
