"""The end-to-end graph (``--end2end``): fixed-size outputs, same detections as host NMS, TensorRT-RTX builds it.

Most tests run on a synthetic raw head (a graph whose input *is* the head), so every edge case is a
table row and no model is needed; the demo model's val set is requirement (c).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.end2end import RunThresholds, finish_end2end
from engine.errors import ConfigError, ParityError
from engine.metadata import METADATA_KEY, HeadLayout, ModelMetadata
from engine.nms import postprocess_raw
from tests.conftest import DEMO

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from exporters.end2end import (  # noqa: E402
    OUTPUT_NAMES,
    End2EndConfig,
    TailKind,
    add_end2end,
    compare_end2end,
    export_end2end,
)
from tests.fakes.tiny_onnx import onnx_model  # noqa: E402

KINDS = [TailKind.TOPK, TailKind.NMS]


# ------------------------------------------------------------------------------------------- helpers
def head_graph(nc: int, anchors: int, batch: int | str = "batch", opset: int = 17):
    """A model whose input ``pred`` is the raw head itself: the tail is all there is to test."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("pred", TensorProto.FLOAT, [batch, 4 + nc, anchors])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [batch, 4 + nc, anchors])
    g = helper.make_graph([helper.make_node("Identity", ["pred"], ["output0"])], "head", [x], [y])
    return onnx_model(g, opset)


def synthetic_heads(rng, batch: int, nc: int, anchors: int, clusters: int = 6) -> np.ndarray:
    """Raw heads with overlapping clusters of boxes, mixed classes and some exactly tied scores."""
    pred = np.zeros((batch, 4 + nc, anchors), np.float32)
    for b in range(batch):
        centers = rng.uniform(30, 290, (clusters, 2))
        sizes = rng.uniform(20, 90, (clusters, 2))
        k = rng.integers(0, clusters, anchors)
        pred[b, 0:2] = (centers[k] + rng.normal(0, 5, (anchors, 2))).T
        pred[b, 2:4] = (sizes[k] * rng.uniform(0.8, 1.2, (anchors, 2))).T
        pred[b, 4:] = rng.uniform(0, 0.6, (nc, anchors)) ** 2
        pred[b, 4 + k % nc, np.arange(anchors)] = rng.uniform(0.1, 0.95, anchors)
        pred[b, 4, : anchors // 10] = 0.5  # a block of exact ties
    return pred


def tail_session(tmp_path: Path, cfg: End2EndConfig, nc: int, anchors: int, batch: int | str = "batch",
                 opset: int = 17):
    model = add_end2end(head_graph(nc, anchors, batch, opset), cfg, anchors, nc)
    onnx.checker.check_model(model, full_check=True)
    path = tmp_path / f"tail-{cfg.kind.value}.onnx"
    onnx.save(model, str(path))
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), path


def assert_same(got, ref):
    assert len(got[0]) == len(ref[0])
    np.testing.assert_array_equal(got[2], ref[2])
    np.testing.assert_array_equal(got[1], ref[1])
    np.testing.assert_allclose(got[0], ref[0], atol=1e-3, rtol=0)


# ---------------------------------------------------------------------------------- graph semantics
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("conf,iou,opset", [(0.25, 0.45, 17), (0.05, 0.7, 17), (0.5, 0.3, 17), (0.25, 0.45, 18),
                                            (0.25, 0.45, 20)])
def test_tail_matches_host_nms(tmp_path, kind, conf, iou, opset):
    """At every opset the export allows (ReduceMax takes its axes as an input from opset 18, as
    Ultralytics' own ONNX exports now are)."""
    nc, anchors = 3, 2100
    cfg = End2EndConfig(conf=conf, iou=iou, max_det=300, kind=kind, candidates=2100)
    sess, _ = tail_session(tmp_path, cfg, nc, anchors, opset=opset)
    pred = synthetic_heads(np.random.default_rng(0), 3, nc, anchors)
    num, boxes, scores, classes = sess.run(list(OUTPUT_NAMES), {"pred": pred})
    run = RunThresholds(conf, iou, 300)
    for j in range(len(pred)):
        ref = postprocess_raw(pred[j], conf, iou, 300)
        assert len(ref[0]) > 5
        assert_same(finish_end2end(num[j], boxes[j], scores[j], classes[j], kind is TailKind.NMS, run), ref)


@pytest.mark.parametrize("kind", KINDS)
def test_outputs_have_fixed_shapes_and_padding(tmp_path, kind):
    cfg = End2EndConfig(max_det=50, candidates=64, kind=kind)
    sess, path = tail_session(tmp_path, cfg, 2, 300, batch=2)
    pred = np.zeros((2, 6, 300), np.float32)
    pred[0, :4, 0] = [50, 50, 20, 20]
    pred[0, 5, 0] = 0.9  # one box of class 1 in image 0; image 1 is empty
    num, boxes, scores, classes = sess.run(list(OUTPUT_NAMES), {"pred": pred})
    k = cfg.k
    assert (num.shape, num.dtype) == ((2, 1), np.int32)
    assert (boxes.shape, boxes.dtype) == ((2, k, 4), np.float32)
    assert (scores.shape, classes.shape, classes.dtype) == ((2, k), (2, k), np.int32)
    assert num.ravel().tolist() == [1, 0]
    np.testing.assert_array_equal(boxes[0, 0], [40, 40, 60, 60])
    assert classes[0, 0] == 1 and scores[0, 0] == np.float32(0.9)
    assert (classes[0, 1:] == -1).all() and (scores[0, 1:] == 0).all() and (boxes[1] == 0).all()
    outs = {o.name: [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim] for o in onnx.load(str(path)).graph.output}
    assert outs == {"num_dets": [2, 1], "boxes": [2, k, 4], "scores": [2, k], "classes": [2, k]}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("iou,kept", [(0.5, 2), (0.49, 1)])
def test_iou_exactly_at_threshold_is_kept(tmp_path, kind, iou, kept):
    """IoU 100/200 = 0.5 exactly: suppressed only when strictly above the threshold, as on the host."""
    sess, _ = tail_session(tmp_path, End2EndConfig(iou=iou, kind=kind, max_det=10, candidates=10), 1, 21, batch=1)
    pred = np.zeros((1, 5, 21), np.float32)
    pred[0, :, 0] = [5, 5, 10, 10, 0.9]  # [0, 0, 10, 10]
    pred[0, :, 1] = [5, 10, 10, 20, 0.8]  # [0, 0, 10, 20]
    num, boxes, scores, classes = sess.run(list(OUTPUT_NAMES), {"pred": pred})
    got = finish_end2end(num[0], boxes[0], scores[0], classes[0], kind is TailKind.NMS, RunThresholds(0.25, iou, 10))
    assert len(got[0]) == kept == len(postprocess_raw(pred[0], 0.25, iou)[0])


def test_topk_saturation_is_reported_and_fails_the_check(tmp_path):
    """More candidates than rows: the check says so and names the flag to raise."""
    nc, anchors = 1, 300
    model = add_end2end(head_graph(nc, anchors, 1), End2EndConfig(candidates=8), anchors, nc)
    raw, e2e = tmp_path / "raw.onnx", tmp_path / "e2e.onnx"
    onnx.save(head_graph(nc, anchors, 1), str(raw))
    onnx.save(model, str(e2e))
    pred = np.zeros((1, 5, anchors), np.float32)
    pred[0, :4] = np.array([[30.0], [30.0], [10.0], [10.0]]) + np.arange(anchors) * 20.0 * np.array([[1], [0], [0], [0]])
    pred[0, 4] = np.linspace(0.9, 0.3, anchors)  # 300 disjoint boxes above conf
    report = compare_end2end(raw, e2e, pred, End2EndConfig(candidates=8), batch=1)
    assert not report.ok and report.saturated == 1


@pytest.mark.parametrize("kw", [dict(conf=1.0), dict(iou=-0.1), dict(max_det=0), dict(candidates=5000)])
def test_bad_config_is_refused(kw):
    with pytest.raises(ConfigError):
        End2EndConfig(**kw)


def test_k_larger_than_anchors_is_refused():
    with pytest.raises(ConfigError, match="anchors"):
        add_end2end(head_graph(2, 21), End2EndConfig(max_det=100, kind=TailKind.NMS), 21, 2)


# ------------------------------------------------------------------------- a tiny model with metadata
def tiny_model(path: Path, batch: int | None = 1) -> Path:
    """A 32x32 'detector' whose head is read off the input pixels: boxes = pixels * 32, scores = pixels."""
    from onnx import TensorProto, helper, numpy_helper

    anchors = 21  # 3 classes; strides 8/16/32 at 32x32
    b = batch if batch is not None else "batch"
    scale = np.array([32, 32, 16, 16, 1, 1, 1], np.float32).reshape(1, 7, 1)
    nodes = [helper.make_node("Flatten", ["images"], ["flat"], axis=1),
             helper.make_node("Slice", ["flat", "s0", "s1", "ax"], ["sl"]),
             helper.make_node("Reshape", ["sl", "shape"], ["r"]),
             helper.make_node("Mul", ["r", "scale"], ["output0"])]
    inits = [numpy_helper.from_array(np.array([0], np.int64), "s0"), numpy_helper.from_array(np.array([147], np.int64), "s1"),
             numpy_helper.from_array(np.array([1], np.int64), "ax"),
             numpy_helper.from_array(np.array([-1, 7, anchors], np.int64), "shape"), numpy_helper.from_array(scale, "scale")]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [b, 3, 32, 32])],
                          [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [b, 7, anchors])], inits)
    model = onnx_model(g)
    meta = ModelMetadata(names=("a", "b", "c"), imgsz=(32, 32), batch=batch, source_name="tiny.pt")
    model.metadata_props.add(key=METADATA_KEY, value=meta.to_json())
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    raw = tiny_model(d / "tiny.onnx")
    frames = [np.random.default_rng(i).integers(0, 256, (24 + 8 * i, 40, 3), np.uint8) for i in range(6)]
    return raw, frames


@pytest.mark.parametrize("kind", KINDS)
def test_export_writes_metadata_and_checks(tiny, tmp_path, kind):
    raw, _ = tiny
    images = np.random.default_rng(1).random((4, 3, 32, 32), np.float32)
    logs: list[str] = []
    path, report = export_end2end(raw, End2EndConfig(kind=kind, max_det=20, candidates=21), tmp_path, images, logs.append)
    assert path.name == "tiny.end2end.onnx" and report.ok and report.detections > 0
    meta = ModelMetadata.from_json({p.key: p.value for p in onnx.load(str(path)).metadata_props}[METADATA_KEY])
    assert meta.head is HeadLayout.END2END and meta.output_names == OUTPUT_NAMES
    assert (meta.thresholds.conf, meta.thresholds.iou, meta.thresholds.nms) == (0.25, 0.45, kind is TailKind.NMS)
    assert meta.thresholds.max_det == (20 if kind is TailKind.NMS else 21)
    assert any("OK" in line for line in logs)


@pytest.mark.parametrize("kind", KINDS)
def test_the_default_k_on_a_model_with_fewer_anchors_keeps_them_all(tiny, tmp_path, kind):
    """K=1000 (or max_det 300) on a model of fewer anchors (525 at --imgsz 160) withheld the graph by default."""
    from engine import Detector

    raw, frames = tiny
    logs: list[str] = []
    path, _ = export_end2end(raw, End2EndConfig(kind=kind), tmp_path, np.zeros((1, 3, 32, 32), np.float32),
                             logs.append)
    meta = ModelMetadata.from_json({p.key: p.value for p in onnx.load(str(path)).metadata_props}[METADATA_KEY])
    assert meta.thresholds.max_det == 21 and any("exceeds the model's 21 anchors" in line for line in logs)
    with Detector(raw) as a, Detector(path) as b:
        assert [len(r) for r in a(frames)] == [len(r) for r in b(frames)]


def test_export_refuses_a_graph_without_metadata(tmp_path):
    from engine.errors import ModelLoadError

    p = tmp_path / "bare.onnx"
    onnx.save(head_graph(2, 21), str(p))
    with pytest.raises(ModelLoadError, match="metadata"):
        export_end2end(p, End2EndConfig(), tmp_path)


@pytest.mark.parametrize("kind", KINDS)
def test_detector_runs_end2end_like_raw(tiny, tmp_path, kind):
    from engine import Detector

    raw, frames = tiny
    e2e, _ = export_end2end(raw, End2EndConfig(kind=kind, max_det=21, candidates=21), tmp_path, log=lambda s: None)
    for conf in (None, 0.6):
        with Detector(raw, conf=conf or 0.25) as a, Detector(e2e, conf=conf) as b:
            assert b.conf == (conf or 0.25)
            ra, rb = a(frames), b(frames)
        assert sum(len(r) for r in ra) > 0
        for x, y in zip(ra, rb):
            np.testing.assert_array_equal(x.class_id, y.class_id)
            np.testing.assert_allclose(x.xyxy, y.xyxy, atol=1e-3)


@pytest.mark.parametrize("kind,kw,match", [
    (TailKind.TOPK, dict(conf=0.1), "--e2e-conf 0.1"),
    (TailKind.NMS, dict(conf=0.1), "--e2e-tail nms --e2e-conf 0.1"),
    (TailKind.NMS, dict(iou=0.6), "--e2e-iou 0.6"),
    (TailKind.NMS, dict(max_det=50), "--max-det 50"),
    (TailKind.NMS, dict(agnostic=True), "without --e2e-tail nms"),
])
def test_detector_refuses_looser_thresholds_with_the_reexport_command(tiny, tmp_path, kind, kw, match):
    from engine import Detector

    e2e, _ = export_end2end(tiny[0], End2EndConfig(kind=kind, max_det=21, candidates=21), tmp_path, log=lambda s: None)
    with pytest.raises(ConfigError, match=match) as e:
        Detector(e2e, **kw)
    if match.startswith("--"):  # the re-export command names the model's source
        assert "--weights tiny.pt --end2end" in str(e.value)


def test_detector_topk_takes_any_iou_agnostic_and_classes(tiny, tmp_path):
    from engine import Detector

    e2e, _ = export_end2end(tiny[0], End2EndConfig(candidates=21), tmp_path, log=lambda s: None)
    kw = dict(iou=0.3, agnostic=True, classes=[1, 2])
    with Detector(tiny[0], **kw) as a, Detector(e2e, **kw) as b:
        ra, rb = a(tiny[1]), b(tiny[1])
    assert sum(len(y) for y in rb) > 0
    for x, y in zip(ra, rb):
        assert set(y.class_id.tolist()) <= {1, 2}
        np.testing.assert_array_equal(x.class_id, y.class_id)
        np.testing.assert_allclose(x.xyxy, y.xyxy, atol=1e-3)


# ---------------------------------------------------------------------------------- TensorRT-RTX (a)
def _rtx_build(path: Path):
    pytest.importorskip("tensorrt_rtx")
    try:
        from exporters.tensorrt import EngineConfig, build
    except ImportError:  # the TensorRT exporter not there: the same parser and builder, directly
        import tensorrt_rtx as trt

        logger = trt.Logger(trt.Logger.ERROR)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        assert parser.parse_from_file(str(path)), [parser.get_error(i).desc() for i in range(parser.num_errors)]
        plan = builder.build_serialized_network(network, builder.create_builder_config())
        if plan is None:
            raise RuntimeError("TensorRT-RTX build failed (see its log above)")
        return bytes(plan)
    return build(path, EngineConfig(targets=("sm86",)), log=lambda s: None).plan


def test_topk_tail_builds_with_tensorrt_rtx(tmp_path):
    _, path = tail_session(tmp_path, End2EndConfig(), 80, 8400, batch=1)  # COCO-sized head at 640
    assert len(_rtx_build(path)) > 0


def test_nms_tail_is_refused_by_tensorrt_rtx(tmp_path):
    """TensorRT-RTX 1.7 parses ONNX NonMaxSuppression but has no implementation of its NMS layer, as the
    README's --e2e-tail line says. A TensorRT-RTX that builds it fails this test: then that line must change."""
    from engine.errors import EngineBuildError

    _, path = tail_session(tmp_path, End2EndConfig(kind=TailKind.NMS), 3, 2100, batch=1)
    with pytest.raises(EngineBuildError, match=r"nms\w* has no runners that implement it"):
        _rtx_build(path)


# ---------------------------------------------------------------------------------- demo model (c)
@pytest.fixture(scope="module")
def demo_val_images(demo_onnx):
    import cv2

    from engine.preprocess import Letterbox

    meta = ModelMetadata.from_json({p.key: p.value for p in onnx.load(str(demo_onnx)).metadata_props}[METADATA_KEY])
    files = sorted((DEMO / "val" / "images").glob("*.jpg"))
    if not files:
        pytest.skip("demo val images missing")
    lb = Letterbox(meta.imgsz, batch=len(files))
    x, _ = lb([cv2.imread(str(f)) for f in files])
    return x.copy()


@pytest.mark.parametrize("kind", KINDS)
def test_demo_val_set_same_detections_as_host_nms(demo_onnx, demo_val_images, tmp_path, kind):
    path, report = export_end2end(demo_onnx, End2EndConfig(kind=kind), tmp_path, demo_val_images, log=lambda s: None)
    assert report.images == len(demo_val_images) and report.detections > 0
    assert report.ok, report.summary()
    assert report.max_box_diff <= 1e-3


def test_demo_end2end_builds_with_tensorrt_rtx(demo_onnx, tmp_path):
    path, _ = export_end2end(demo_onnx, End2EndConfig(), tmp_path, log=lambda s: None)
    assert len(_rtx_build(path)) > 0


def test_build_cli_writes_end2end_by_default(demo_onnx, tmp_path):
    from exporters.build import main

    common = ["--onnx", str(demo_onnx), "--engine", "none", "--parity-count", "2"]
    assert main([*common, "--out", str(tmp_path / "on")]) == 0
    assert (tmp_path / "on" / f"{demo_onnx.stem}.end2end.onnx").is_file()
    assert main([*common, "--out", str(tmp_path / "off"), "--no-end2end"]) == 0
    assert not (tmp_path / "off" / f"{demo_onnx.stem}.end2end.onnx").exists()


def test_check_failure_is_a_parity_error(tiny, tmp_path, monkeypatch):
    import exporters.end2end as e2e_mod

    def broken(*a, **k):
        return e2e_mod.End2EndReport(1, 1, 1, 9.0, 0)

    monkeypatch.setattr(e2e_mod, "compare_end2end", broken)
    with pytest.raises(ParityError):
        export_end2end(tiny[0], End2EndConfig(candidates=21), tmp_path, np.zeros((1, 3, 32, 32), np.float32),
                       log=lambda s: None)
    assert not (tmp_path / "tiny.end2end.onnx").exists()


def test_dynamic_batch_end2end(tmp_path):
    """A dynamic-batch raw graph keeps its dynamic batch; the check runs it in batches of 2."""
    from engine import Detector

    raw = tiny_model(tmp_path / "dyn.onnx", batch=None)
    images = np.random.default_rng(5).random((5, 3, 32, 32), np.float32)
    path, report = export_end2end(raw, End2EndConfig(candidates=21), tmp_path, images, log=lambda s: None)
    assert report.ok and report.images == 5
    dims = [d.dim_param or d.dim_value for d in onnx.load(str(path)).graph.output[1].type.tensor_type.shape.dim]
    assert dims == ["batch", 21, 4]
    frames = [np.random.default_rng(i).integers(0, 256, (32, 32, 3), np.uint8) for i in range(3)]
    with Detector(raw) as a, Detector(path) as b:
        for x, y in zip(a(frames), b(frames)):
            np.testing.assert_array_equal(x.class_id, y.class_id)
