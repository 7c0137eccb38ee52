"""Parity with Ultralytics on the demo val set (the runtime issue's acceptance bar).

1. mAP50-95 of our ONNX Runtime Detector is within 0.5 point of Ultralytics `predict` on the .pt,
   both at conf 0.001 and IoU 0.7, scored by the same evaluator.
2. At conf 0.25, at least 98% of the boxes of Ultralytics `predict` on the same ONNX file (same square
   input) have a match in ours at IoU >= 0.9 with the same class.
"""
from __future__ import annotations

import pytest

from benchmarks.verify_report import match_detections
from engine import Detector
from engine.eval.datasets import load_split, read_image
from engine.eval.evaluate import evaluate_detections

pytest.importorskip("ultralytics")
from exporters.ultralytics_ref import UltralyticsPredictor  # noqa: E402


@pytest.fixture(scope="module")
def val(demo_data):
    return load_split(demo_data, "val")


@pytest.fixture(scope="module")
def images(val):
    return [read_image(item.path) for item in val]


def test_map_within_half_a_point_of_ultralytics_pt(demo_pt, demo_onnx, val, images):
    ref = UltralyticsPredictor(demo_pt, imgsz=320, conf=0.001, iou=0.7)
    theirs = evaluate_detections(val, [ref(im) for im in images])
    with Detector(demo_onnx, conf=0.001, iou=0.7) as det:
        ours = evaluate_detections(val, [det(im) for im in images])
    print(f"mAP50-95 ours {ours.map50_95:.4f} vs Ultralytics .pt {theirs.map50_95:.4f}")
    assert ours.map50_95 > 0.5
    assert abs(ours.map50_95 - theirs.map50_95) <= 0.005


def test_boxes_match_ultralytics_on_the_same_onnx(demo_onnx, images):
    ref = UltralyticsPredictor(demo_onnx, imgsz=320, conf=0.25, iou=0.45)
    with Detector(demo_onnx, conf=0.25, iou=0.45) as det:
        theirs, ours = [ref(im) for im in images], [det(im) for im in images]
    # one-to-one greedy matching, same class, IoU >= 0.9 (the self-check's matcher)
    m = match_detections(theirs, ours, iou=0.9)
    print(f"matched {m['matched']}/{m['reference_boxes']} Ultralytics boxes")
    assert m["reference_boxes"] > 200 and m["match_fraction"] >= 0.98
