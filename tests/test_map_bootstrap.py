"""The gate's paired bootstrap: its mAP is the evaluator's, a resample's weights are duplicated images, and the
interval of a model against itself is a point."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.detections import Detections
from engine.eval.datasets import LabeledImage
from exporters.map_bootstrap import match_table, paired_drop, weighted_map

pytest.importorskip("faster_coco_eval")


def _scene(rng, n_images=40, n_classes=3):
    """Random labelled images and noisy detections of them (jittered boxes, misses, false positives, ties)."""
    items, dets = [], []
    for i in range(n_images):
        k = int(rng.integers(1, 5))
        xy = rng.uniform(0, 200, (k, 2))
        wh = rng.uniform(10, 80, (k, 2))
        gt = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        cls = rng.integers(0, n_classes, k)
        items.append(LabeledImage(Path(f"{i}.jpg"), (300, 300), gt, cls))
        keep = rng.random(k) > 0.2
        boxes = gt[keep] + rng.normal(0, 4, (int(keep.sum()), 4)).astype(np.float32)
        extra = rng.uniform(0, 250, (int(rng.integers(0, 4)), 2))
        boxes = np.concatenate([boxes, np.concatenate([extra, extra + 30], 1)]).astype(np.float32)
        c = np.concatenate([cls[keep], rng.integers(0, n_classes, len(extra))])
        scores = np.round(rng.uniform(0.001, 1.0, len(boxes)), 2).astype(np.float32)  # rounded: ties happen
        dets.append(Detections(boxes, scores, c.astype(np.int32)))
    return items, dets


def test_unweighted_map_is_the_evaluators():
    from engine.eval.evaluate import evaluate_detections

    items, dets = _scene(np.random.default_rng(0))
    assert weighted_map(match_table(items, dets)) == pytest.approx(evaluate_detections(items, dets).map50_95, abs=1e-9)


def test_weights_are_duplicated_images():
    """A resample's image weights give the mAP of the image list with each image repeated that often."""
    from engine.eval.evaluate import evaluate_detections

    items, dets = _scene(np.random.default_rng(1), n_images=25)
    w = np.random.default_rng(2).integers(0, 4, len(items))
    dup_items = [it for it, k in zip(items, w) for _ in range(k)]
    dup_dets = [d for d, k in zip(dets, w) for _ in range(k)]
    expected = evaluate_detections(dup_items, dup_dets).map50_95
    assert weighted_map(match_table(items, dets), w) == pytest.approx(expected, abs=1e-9)


def test_paired_interval_of_a_model_against_itself_is_zero_and_covers_a_real_drop():
    items, dets = _scene(np.random.default_rng(3))
    ref = match_table(items, dets)
    same = paired_drop(ref, ref, resamples=50)
    assert same.drop == 0 and same.low == 0 and same.high == 0
    rng = np.random.default_rng(4)
    worse = [Detections(d.xyxy + rng.normal(0, 6, d.xyxy.shape).astype(np.float32), d.confidence, d.class_id)
             for d in dets]
    d = paired_drop(ref, match_table(items, worse), resamples=200)
    assert d.drop > 0 and d.low < d.drop < d.high and d.high - d.low < 3 * abs(d.drop) + 5
    with pytest.raises(ValueError):
        paired_drop(ref, match_table(items[:10], dets[:10]))
