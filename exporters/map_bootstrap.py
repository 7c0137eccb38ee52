"""The uncertainty of an mAP drop: a paired bootstrap over images.

Two models' detections on the same labelled images are matched to the ground truth once, the way COCO's
``evaluateImg`` does (per image and class, detections in score order, each taking the unmatched ground
truth box of highest IoU at or above each threshold 0.50:0.05:0.95). A bootstrap resample draws images
with replacement; drawing an image ``k`` times is the same as giving its detections and ground truth
weight ``k``, so each resample's mAP is COCO's accumulation (101-point interpolated precision, averaged
over thresholds and classes) with weighted cumulative sums, with no new matching. Both models get the
same resamples, so the spread is that of the *difference*, which is much smaller than either mAP's.

Unweighted, :func:`weighted_map` is COCO's mAP50-95 (a test holds it to the evaluator's to 1e-6).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True)
class ClassMatches:
    """One class's detections over all images, in COCO's accumulation order (score descending, stable)."""

    image: np.ndarray  # (D,) int: image index of each detection
    tp: np.ndarray  # (T, D) bool: matched at each IoU threshold
    gt_per_image: np.ndarray  # (N,) int: ground-truth boxes of this class in each image


@dataclass(frozen=True)
class MatchTable:
    """Every class's matches of one model on ``n_images`` images."""

    n_images: int
    classes: tuple[ClassMatches, ...]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xyxy boxes ``a`` (D, 4) and ``b`` (G, 4), COCO's formula (area = w * h)."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda z: np.clip(z[:, 2] - z[:, 0], 0, None) * np.clip(z[:, 3] - z[:, 1], 0, None)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _match_image(ious: np.ndarray) -> np.ndarray:
    """(T, D) matches of score-ordered detections against ground truth, greedy as COCO's evaluateImg."""
    d, g = ious.shape
    tp = np.zeros((len(IOU_THRESHOLDS), d), bool)
    # a detection under the lowest threshold with every box never takes one: skipping it changes nothing
    candidates = np.flatnonzero(ious.max(axis=1) >= IOU_THRESHOLDS[0]) if g else []
    for t, thr in enumerate(IOU_THRESHOLDS):
        taken = np.zeros(g, bool)
        for i in candidates:
            best, m = min(thr, 1 - 1e-10), -1
            for j in range(g):
                if taken[j] or ious[i, j] < best:
                    continue
                best, m = ious[i, j], j
            if m >= 0:
                taken[m] = True
                tp[t, i] = True
    return tp


def match_table(gts: Sequence, dets: Sequence, max_det: int = 300) -> MatchTable:
    """Match ``dets[i]`` (:class:`engine.detections.Detections`) to ``gts[i]`` (labelled images).

    As the evaluator: at most ``max_det`` boxes per image (highest scores), then per class.
    """
    if len(gts) != len(dets):
        raise ValueError(f"{len(gts)} labelled images but {len(dets)} detection results")
    n = len(gts)
    classes = sorted({int(c) for g in gts for c in g.classes} | {int(c) for d in dets for c in d.class_id})
    per_class: dict[int, tuple[list, list, list, np.ndarray]] = {
        c: ([], [], [], np.zeros(n, np.int64)) for c in classes}
    for img, (gt, det) in enumerate(zip(gts, dets)):
        keep = np.argsort(-det.confidence, kind="stable")[:max_det]
        boxes, scores, cls = det.xyxy[keep], det.confidence[keep], det.class_id[keep]
        for c in classes:
            g = gt.boxes[gt.classes == c]
            per_class[c][3][img] = len(g)
            sel = np.flatnonzero(cls == c)
            if not len(sel):
                continue
            order = sel[np.argsort(-scores[sel], kind="stable")][:max_det]
            tp = _match_image(_iou(boxes[order], g)) if len(g) else np.zeros((len(IOU_THRESHOLDS), len(order)), bool)
            per_class[c][0].append(np.full(len(order), img))
            per_class[c][1].append(scores[order])
            per_class[c][2].append(tp)
    out = []
    for c in classes:
        images, scores, tps, gt_count = per_class[c]
        if not images:
            out.append(ClassMatches(np.zeros(0, np.int64), np.zeros((len(IOU_THRESHOLDS), 0), bool), gt_count))
            continue
        s = np.concatenate(scores)
        order = np.argsort(-s, kind="mergesort")
        tp = np.concatenate(tps, axis=1)[:, order]
        # false positives after the last true positive lower no envelope point a recall threshold reads,
        # in any resample (weights change counts, never which detections match): drop them
        hits = np.flatnonzero(tp.any(axis=0))
        end = hits[-1] + 1 if len(hits) else 0
        out.append(ClassMatches(np.concatenate(images)[order][:end], tp[:, :end], gt_count))
    return MatchTable(n, tuple(out))


def weighted_map(table: MatchTable, weights: np.ndarray | None = None) -> float:
    """COCO mAP50-95 with image ``i`` counted ``weights[i]`` times (``None``: once each)."""
    w_img = np.ones(table.n_images) if weights is None else np.asarray(weights, np.float64)
    aps = []
    for cm in table.classes:
        npig = float(np.dot(cm.gt_per_image, w_img))
        if npig <= 0:
            continue  # COCO: a class without ground truth (in this resample) does not count
        w = w_img[cm.image]
        if not len(w):
            aps.extend([0.0] * len(IOU_THRESHOLDS))
            continue
        tp = np.cumsum(cm.tp * w, axis=1)
        fp = np.cumsum(~cm.tp * w, axis=1)
        for t in range(len(IOU_THRESHOLDS)):
            rc = tp[t] / npig
            pr = tp[t] / (tp[t] + fp[t] + np.spacing(1))
            pr = np.maximum.accumulate(pr[::-1])[::-1]  # the precision envelope
            idx = np.searchsorted(rc, RECALL_POINTS, side="left")
            q = np.where(idx < len(pr), pr[np.minimum(idx, len(pr) - 1)], 0.0)
            aps.append(float(q.mean()))
    return float(np.mean(aps)) if aps else 0.0


@dataclass(frozen=True)
class PairedDrop:
    """A drop in points of mAP50-95 (reference minus candidate, 0-100 scale) with its bootstrap interval.

    Attributes:
        drop: on all images.
        low, high: the central ``level`` interval of the bootstrap drops.
        level: e.g. 0.9 (a 90 % interval: the drop is above ``high`` with 5 % chance).
        resamples: bootstrap resamples drawn.
        n_images: images per resample.
    """

    drop: float
    low: float
    high: float
    level: float
    resamples: int
    n_images: int

    def text(self) -> str:
        return f"{self.drop:.2f} points ({self.level:.0%} interval {self.low:.2f} to {self.high:.2f})"

    def to_dict(self) -> dict:
        return {"drop_points": round(self.drop, 3), "low": round(self.low, 3), "high": round(self.high, 3),
                "level": self.level, "resamples": self.resamples, "n_images": self.n_images}


def bootstrap_maps(table: MatchTable, resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """mAP50-95 (0..1) of ``table`` on each of ``resamples`` resamples of its images. The resamples depend
    only on the image count and ``seed``, so two tables of the same images get the same ones (paired)."""
    n = table.n_images
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    for b in range(resamples):
        out[b] = weighted_map(table, np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64))
    return out


def paired_drop(reference: MatchTable, candidate: MatchTable, resamples: int = 1000, level: float = 0.9,
                seed: int = 0, reference_maps: np.ndarray | None = None) -> PairedDrop:
    """Drop of ``candidate`` against ``reference`` on the same images, with a paired bootstrap interval.

    ``reference_maps``: the reference's :func:`bootstrap_maps` (same ``resamples`` and ``seed``) when the
    caller holds them, so that several candidates against one reference resample it once."""
    if reference.n_images != candidate.n_images:
        raise ValueError("the two tables were made on different image sets")
    n = reference.n_images
    ref = bootstrap_maps(reference, resamples, seed) if reference_maps is None else reference_maps
    drops = (ref - bootstrap_maps(candidate, resamples, seed)) * 100.0
    lo, hi = np.percentile(drops, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    full = (weighted_map(reference) - weighted_map(candidate)) * 100.0
    return PairedDrop(full, float(lo), float(hi), level, resamples, n)
