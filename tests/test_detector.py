"""Detector and backends on the demo ONNX: results, batching, thresholds, registry and load errors."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine import Detections, Detector
from engine.backends import backend_for
from engine.errors import (
    BackendUnavailableError,
    ConfigError,
    InputImageError,
    ModelLoadError,
    UnsupportedModelError,
)
from tests.conftest import DEMO


@pytest.fixture(scope="module")
def frames():
    return [cv2.imread(str(p)) for p in sorted((DEMO / "val" / "images").glob("*.jpg"))[:6]]


@pytest.fixture(scope="module")
def det(demo_onnx):
    with Detector(demo_onnx) as d:
        yield d


def test_single_frame_gives_detections_in_source_pixels(det, frames):
    r = det(frames[0])
    assert isinstance(r, Detections) and len(r) > 0
    h, w = frames[0].shape[:2]
    assert (r.xyxy[:, [0, 2]] <= w).all() and (r.xyxy[:, [1, 3]] <= h).all() and (r.xyxy >= 0).all()
    assert r.xyxy.dtype == np.float32 and r.class_id.dtype == np.int32
    assert set(r.class_name) <= {"disc", "box", "triangle"}
    assert (r.confidence > 0.25).all() and list(r.confidence) == sorted(r.confidence, reverse=True)
    d = json.loads(json.dumps(r.to_dict()))
    assert len(d["detections"]) == len(r) and set(d["detections"][0]) == {"xyxy", "confidence", "class_id", "class_name"}
    assert set(det.last_timings) == {"preprocess", "inference", "postprocess"}


def test_list_of_frames_equals_frame_by_frame(det, frames):
    batch = det(frames)
    assert isinstance(batch, list) and len(batch) == len(frames)
    for f, r in zip(frames, batch):
        one = det(f)
        np.testing.assert_allclose(one.xyxy, r.xyxy, atol=1e-4)
    assert det([]) == []


def test_classes_filter_and_max_det(demo_onnx, frames):
    with Detector(demo_onnx, classes=[1]) as d:
        assert all(set(r.class_id.tolist()) <= {1} for r in d(frames))
    with Detector(demo_onnx, conf=0.01, max_det=2) as d:
        assert max(len(r) for r in d(frames)) == 2


def test_classes_by_id_or_name_and_unknown_ones_refused(demo_onnx, frames):
    with Detector(demo_onnx, classes=[1]) as ref, Detector(demo_onnx, classes=1) as one, \
            Detector(demo_onnx, classes=["box"]) as by_name:
        want = ref(frames)
        assert any(len(r) for r in want) and one(frames) == want and by_name(frames) == want
    for bad in ([7], "lorry", [True], [-1]):
        with pytest.raises(ConfigError, match="not one of the model's 3 classes"):
            Detector(demo_onnx, classes=bad)


def test_blank_frame_gives_empty_detections(det):
    r = det(np.full((360, 640, 3), 114, np.uint8))
    assert len(r) == 0 and r.xyxy.shape == (0, 4) and list(r) == [] and r.to_dict() == {"detections": []}


def test_gray_frame_gives_what_its_bgr_copy_gives(det, frames):
    gray = cv2.cvtColor(frames[0], cv2.COLOR_BGR2GRAY)
    got = det(gray)
    assert isinstance(got, Detections) and len(got) > 0
    assert got == det(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)) == det(gray[:, :, None])


def test_bad_input_is_a_typed_error(det):
    with pytest.raises(InputImageError):
        det(np.zeros((10, 10, 3), np.uint16))
    with pytest.raises(InputImageError):
        det("frame.jpg")


def test_dynamic_batch_model(demo_pt, export_dir, frames):
    from exporters.config import ExportConfig
    from exporters.onnx_export import export_onnx

    path = export_onnx(ExportConfig(weights=demo_pt, dynamic=True, imgsz=(384, 640), out=export_dir / "dyn_det"),
                       log=lambda s: None).path
    with Detector(path) as d:
        batch = d(frames)
        assert d.backend.max_batch is None and len(batch) == len(frames)
        np.testing.assert_allclose(d(frames[2]).xyxy, batch[2].xyxy, atol=1e-3)


def test_static_batch_model_pads_partial_batches(demo_pt, export_dir, frames):
    from exporters.config import ExportConfig
    from exporters.onnx_export import export_onnx

    path = export_onnx(ExportConfig(weights=demo_pt, batch=4, out=export_dir / "b4_det"), log=lambda s: None).path
    with Detector(path) as d, Detector(export_dir / "static" / "demo.onnx") as ref:
        out = d(frames[:5])  # one full batch of 4, one partial of 1
        assert len(out) == 5
        for f, r in zip(frames[:5], out):
            np.testing.assert_allclose(ref(f).xyxy, r.xyxy, atol=1e-3)


def test_ultralytics_onnx_without_our_metadata_loads(demo_pt, tmp_path, frames):
    import shutil

    ultralytics = pytest.importorskip("ultralytics")
    shutil.copy(demo_pt, tmp_path / "u.pt")
    ultralytics.YOLO(str(tmp_path / "u.pt")).export(format="onnx", imgsz=320, verbose=False)
    with Detector(tmp_path / "u.onnx") as d:
        assert d.names == ("disc", "box", "triangle") and d.imgsz == (320, 320)
        assert len(d(frames[0])) > 0


ULTRALYTICS_PROPS = {"names": "{0: 'disc', 1: 'box', 2: 'triangle'}", "imgsz": "[32, 32]", "stride": "8",
                     "task": "detect", "batch": "1", "end2end": "False", "args": "{'batch': 1, 'nms': False}"}


@pytest.mark.parametrize("props, match", [
    (dict(ULTRALYTICS_PROPS, task="pose"), "'pose' model; Detector runs detect models only"),
    (dict(ULTRALYTICS_PROPS, names="{0: 'a', 1: 'b'}"), r"\[batch, 6, anchors\]"),  # the head has 7 rows
    (dict(ULTRALYTICS_PROPS, args="{'batch': 1, 'nms': True}"), "end-to-end export without recorded thresholds"),
])
def test_a_model_detector_would_misread_is_refused(tmp_path, props, match):
    """A pose or segment model, a head whose rows are not 4 + classes, Ultralytics' nms=True export (which
    writes end2end False): each read as a raw detect head gives boxes made of other numbers."""
    import onnx

    from tests.fakes.tiny_onnx import write_tiny_onnx

    path = write_tiny_onnx(tmp_path / "tiny.onnx")
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    with pytest.raises(UnsupportedModelError, match=match):
        Detector(path)
    del model.metadata_props[:]  # the same graph with its own Ultralytics keys loads
    for k, v in ULTRALYTICS_PROPS.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    with Detector(path) as d:
        assert d.names == ("disc", "box", "triangle")


@pytest.mark.parametrize("kw", [dict(conf=1.5), dict(iou=-0.1), dict(max_det=0)])
def test_bad_thresholds(demo_onnx, kw):
    with pytest.raises(ConfigError):
        Detector(demo_onnx, **kw)


def test_registry_errors(tmp_path):
    with pytest.raises(BackendUnavailableError, match=".onnx"):
        backend_for(tmp_path / "model.tflite")
    with pytest.raises(BackendUnavailableError, match="available"):
        backend_for(tmp_path / "m.onnx", backend="tflite")  # not a registered backend


def test_missing_and_corrupt_models(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        Detector(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="bad.onnx") as e:
        Detector(bad)
    assert "truncated, corrupt" in e.value.fix


@pytest.mark.parametrize("where", [  # ONNX Runtime's C++ source location as its Linux and Windows wheels write it
    "/onnxruntime_src/onnxruntime/core/graph/model.cc:202 onnxruntime::Model::Model(onnx::ModelProto&&, const "
    "onnxruntime::PathString&, const onnxruntime::logging::Logger&) ",
    r"D:\a\_work\1\s\onnxruntime\core\graph\model.cc:181 onnxruntime::Model::Model ",
])
def test_onnx_runtime_load_errors_keep_the_reason_without_the_source_location(where):
    from engine.backends.onnxruntime import load_error

    e = load_error(Path("m.onnx"), RuntimeError(f"[ONNXRuntimeError] : 1 : FAIL : Load model from m.onnx failed:{where}"
                                                "Node (Conv_3) has input size 1 not in range"), "1.30.0")
    assert e.message == ("ONNX Runtime cannot load m.onnx (RuntimeError: [ONNXRuntimeError] : 1 : FAIL : Load model "
                         "from m.onnx failed:Node (Conv_3) has input size 1 not in range)")
    assert "export it again" in e.fix


def test_a_model_newer_than_onnx_runtime_names_both_versions(tmp_path):
    """An IR version this ONNX Runtime does not read is an upgrade to make, not a 'corrupt file' (seen with
    onnx 1.23's default IR 14 on ONNX Runtime 1.30, which reads up to 13)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in "xy")
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 99
    onnx.save(model, tmp_path / "future.onnx")
    with pytest.raises(ModelLoadError, match=r"future\.onnx is ONNX IR version 99; ONNX Runtime \S+ reads up to IR "
                                             r"version \d+") as e:
        Detector(tmp_path / "future.onnx")
    assert "pip install -U onnxruntime" in e.value.fix and "onnxruntime-gpu" in e.value.fix


def test_ort_backend_reuses_output_buffers_per_thread(det, frames):
    import threading

    from engine.preprocess import Letterbox

    x, _ = Letterbox(det.imgsz)([frames[0]])
    a = det.backend.infer(x)[0]
    b = det.backend.infer(x)[0]
    assert a is b  # preallocated through IOBinding, not allocated per call
    other = []
    t = threading.Thread(target=lambda: other.append(det.backend.infer(x)[0]))
    t.start()
    t.join()
    assert other[0] is not a and np.array_equal(other[0], a)  # another thread never writes into this one's


def test_dynamic_batch_is_split_at_the_backends_limit(demo_pt, export_dir, frames, monkeypatch):
    """A dynamic engine's profile caps the batch: Detector splits a long list into calls of at most that."""
    from engine.backends.onnxruntime import OnnxRuntimeBackend
    from exporters.config import ExportConfig
    from exporters.onnx_export import export_onnx

    path = export_onnx(ExportConfig(weights=demo_pt, dynamic=True, out=export_dir / "dyn_cap"), log=lambda s: None).path
    monkeypatch.setattr(OnnxRuntimeBackend, "batch_range", property(lambda self: (1, 2)))
    with Detector(path) as d:
        seen = []
        real = d.backend.infer
        d.backend.infer = lambda x: (seen.append(x.shape[0]), real(x))[1]
        assert len(d(frames[:5])) == 5 and seen == [2, 2, 1]
