"""Parity with Ultralytics on the demo val set (the runtime issue's acceptance bar).

1. mAP50-95 of our ONNX Runtime Detector is within 0.5 point of Ultralytics `predict` on the .pt,
   both at conf 0.001 and IoU 0.7, scored by the same evaluator.
2. At conf 0.25, at least 98% of the boxes of Ultralytics `predict` on the same ONNX file (same square
   input) have a match in ours at IoU >= 0.9 with the same class.
"""
from __future__ import annotations

import numpy as np
import pytest

from engine import Detector
from engine.datasets import load_split, read_image
from engine.evaluate import evaluate_detections

pytest.importorskip("ultralytics")
from exporters.ultralytics_ref import UltralyticsPredictor  # noqa: E402


@pytest.fixture(scope="module")
def val(demo_data):
    return load_split(demo_data, "val")


@pytest.fixture(scope="module")
def images(val):
    return [read_image(item.path) for item in val]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


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
    matched = total = 0
    with Detector(demo_onnx, conf=0.25, iou=0.45) as det:
        for im in images:
            theirs, ours = ref(im), det(im)
            total += len(theirs)
            if len(theirs) and len(ours):
                iou = _iou(theirs.xyxy, ours.xyxy)
                same = theirs.class_id[:, None] == ours.class_id[None, :]
                matched += int(((iou >= 0.9) & same).any(axis=1).sum())
    print(f"matched {matched}/{total} Ultralytics boxes")
    assert total > 200 and matched / total >= 0.98
