"""The OpenVINO comparison scripts' own logic: frames, candidates, the paired drop, the tables (no timing here)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks import openvino_accuracy, openvino_speed
from benchmarks.openvino_artifacts import OvModels


def test_frames_are_the_same_1280x720_frames_each_time():
    a, b = openvino_speed.frames(3), openvino_speed.frames(3)
    assert len(a) == 3 and all(f.shape == (720, 1280, 3) for f in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_candidates_pair_ours_with_ultralytics_at_each_precision():
    m = OvModels(320, Path("m.onnx"), Path("m_openvino"), Path("m.int8_openvino"), Path("m.int8-cpu.onnx"),
                 Path("u_openvino_model"), Path("u_int8_openvino_model"))
    single, multi = openvino_speed.candidates(m, 4)
    names = [c["name"] for c in single]
    assert names[:4] == ["ours OpenVINO FP32", "Ultralytics OpenVINO FP32", "ours OpenVINO INT8", "Ultralytics OpenVINO INT8"]
    assert all(c["batch"] == 1 for c in single) and all(c["batch"] == 4 for c in multi)
    assert {"hint": "throughput"} in [c.get("options") for c in multi] and any(c.get("workers") == 2 for c in multi)
    assert openvino_speed.candidates(m, 1)[1] == []


def test_single_frame_and_stream_figures_of_one_peer_stay_apart(monkeypatch, tmp_path):
    """Ultralytics' INT8 IR is timed on one frame and on the N-frame list: two candidates, two figures (they
    once shared a name, and each figure was the median of both lists)."""
    import argparse

    from benchmarks import openvino_artifacts

    m = OvModels(320, Path("m.onnx"), Path("m_openvino"), Path("m.int8_openvino"), Path("m.int8-cpu.onnx"),
                 Path("u_openvino_model"), Path("u_int8_openvino_model"))
    monkeypatch.setattr(openvino_artifacts, "build", lambda *a, **k: m)
    ms = {1: 3.0, 4: 15.0}  # a call of one frame, of four
    monkeypatch.setattr(openvino_speed, "run_child", lambda spec: [ms[spec["batch"]]] * 3)
    args = argparse.Namespace(imgsz=[320], weights=None, calib=None, out=tmp_path, calib_images=8, rounds=3,
                              iters=3, warmup=0, streams=4)
    r = openvino_speed.measure(args)["sizes"]["320"]
    assert r["single"]["Ultralytics OpenVINO INT8"] == 3.0
    peer_streams = [fps for name, fps in r["streams"].items() if name.startswith("Ultralytics")]
    assert peer_streams == [1e3 * 4 / 15.0]
    names = [c["name"] for c in sum(openvino_speed.candidates(m, 4), [])]
    assert len(names) == len(set(names))


def test_speed_table_gives_ratios_against_the_same_precision():
    report = {"load_before": [0.1, 0.1, 0.1], "load_after": [0.2, 0.1, 0.1], "rounds": 3, "iters": 50, "streams": 2,
              "sizes": {"320": {"single": {"ours OpenVINO FP32": 4.0, "Ultralytics OpenVINO FP32": 5.0,
                                           "ours OpenVINO INT8": 3.0, "Ultralytics OpenVINO INT8": 4.5},
                                "streams": {"ours OpenVINO INT8, throughput mode": 500.0}},
                        "640": {"single": {"ours OpenVINO FP32": 4.0, "Ultralytics OpenVINO FP32": 3.9},
                                "streams": {"ours OpenVINO INT8, throughput mode": 500.0}}}}
    text = openvino_speed.table(report)
    assert "| 320 | ours OpenVINO FP32 | 4.00 | 1.25x faster |" in text
    assert "| 320 | ours OpenVINO INT8 | 3.00 | 1.50x faster |" in text
    assert "| 640 | ours OpenVINO FP32 | 4.00 | 0.97x (slower: **missed**) |" in text  # a miss says so
    assert "| 320 | ours OpenVINO INT8, throughput mode | 500 |" in text and "before [0.1, 0.1, 0.1]" in text


def test_drop_is_paired_over_the_same_resamples():
    boot = {"ref": np.array([0.80, 0.82, 0.84]), "q": np.array([0.79, 0.81, 0.83])}
    d = openvino_accuracy.drop({"map50_95": 0.82}, {"map50_95": 0.8175}, boot, "ref", "q")
    assert np.isclose(d[0], 0.25) and np.isclose(d[1], 1.0) and np.isclose(d[2], 1.0)  # every resample loses 1 point


def test_bootstrap_is_the_evaluator_on_the_same_resampled_images():
    """openvino_accuracy's bootstrap weights each image by how often a resample draws it: the mAP of the
    resampled image list, by the evaluator, for the same draws as drawing the indices themselves (listed in
    image order: COCO breaks score ties between images by their order, and this scene has ties)."""
    pytest.importorskip("faster_coco_eval")
    from engine.eval.evaluate import evaluate_detections
    from tests.test_map_bootstrap import _scene

    items, dets = _scene(np.random.default_rng(5), n_images=12)
    got = openvino_accuracy.bootstrap_maps(items, {"m": dets}, rounds=4, seed=3)["m"]
    rng = np.random.default_rng(3)
    picks = [rng.integers(0, len(items), len(items)) for _ in range(4)]
    want = [evaluate_detections([items[i] for i in np.sort(idx)], [dets[i] for i in np.sort(idx)]).map50_95
            for idx in picks]
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_build_makes_our_four_models_and_reuses_them(tmp_path):
    """What benchmarks.openvino_speed and openvino_accuracy time and score: the FP32 ONNX, both IRs and the
    INT8 CPU form, built once (the peers are Ultralytics exports, left out here)."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from benchmarks.openvino_artifacts import build
    from engine import Detector
    from exporters.config import DEMO_DATA, DEMO_WEIGHTS

    lines: list[str] = []
    models = build(DEMO_WEIGHTS, 160, DEMO_DATA, tmp_path, calib_images=8, peers=False, log=lines.append)
    made = len(lines)
    assert models.peer_fp32 is None and models.peer_int8 is None
    for path in (models.onnx, models.ov_fp32, models.ov_int8, models.int8_cpu):
        with Detector(path, device="cpu") as d:
            assert d.imgsz == (160, 160)
    import onnx

    q = onnx.load(str(models.int8_cpu))  # as the build makes it: the class branch's weights stay float
    dq = {o for n in q.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert {n.name for n in q.graph.node if n.op_type == "Conv" and "/cv3." in n.name and n.input[1] in dq} == set()
    again = build(DEMO_WEIGHTS, 160, DEMO_DATA, tmp_path, calib_images=8, peers=False, log=lines.append)
    assert again == models and len(lines) == made  # reused: nothing rebuilt, nothing logged
