"""Non-maximum suppression and decoding of a raw YOLO detect head, in NumPy only.

Semantics follow torchvision's CPU ``nms``/``batched_nms`` (which Ultralytics calls): boxes are
visited by descending score, a box is suppressed when its IoU with a kept box is *strictly* greater
than the threshold, and equal scores keep the lower original index first (a stable sort). The IoU
arithmetic is done in the boxes' own dtype in the same order as torchvision's kernel, so float32
inputs give the same keep list, not just a close one.

Speed: IoUs are computed 128 rows at a time against the boxes still alive, then the greedy pass walks
the block with one NumPy call per kept box. Rows suppressed by an earlier block are never computed,
and the temporaries stay small; both made this faster than one N x N matrix, even at N = 300.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import ConfigError

MAX_NMS = 30000  # Ultralytics' ``max_nms``: candidates kept (by score) before NMS
_BLOCK_ROWS = 128  # rows of IoU per block: rows suppressed by an earlier block are never computed


def _strict_gt_thres(thres: float, dtype: np.dtype) -> np.floating:
    """A threshold in ``dtype`` with ``x > t`` exactly as ``x > thres`` evaluated in float64.

    torchvision compares its float IoU with a double threshold. Rounding the threshold down keeps that
    comparison exact without upcasting the IoU matrix.
    """
    t = dtype.type(thres)
    return np.nextafter(t, dtype.type(-np.inf)) if float(t) > thres else t


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thres: float, class_ids: np.ndarray | None = None,
        agnostic: bool = False, max_det: int = 300) -> np.ndarray:
    """Greedy NMS; returns the kept indices (int64) by descending score.

    Args:
        boxes: ``(N, 4)`` x1, y1, x2, y2. float64 is kept, anything else computed in float32.
        scores: ``(N,)`` scores. Ties keep the lower index first (stable sort), as torchvision does.
        iou_thres: a box is dropped when its IoU with a kept box is ``> iou_thres`` (strictly).
        class_ids: ``(N,)`` non-negative class indices; boxes of different classes never suppress each
            other. ``None`` or ``agnostic=True`` runs one NMS over all boxes.
        max_det: stop once this many boxes are kept.
    """
    boxes = np.asarray(boxes)
    boxes = boxes.reshape(-1, 4).astype(np.float64 if boxes.dtype == np.float64 else np.float32, copy=False)
    scores = np.asarray(scores).reshape(-1)
    n = len(boxes)
    n_ids = n if class_ids is None else np.size(class_ids)
    if len(scores) != n or n_ids != n:
        raise ValueError(f"nms got {n} boxes, {len(scores)} scores and {n_ids} class ids")
    if n == 0 or max_det <= 0:
        return np.zeros(0, np.int64)
    if class_ids is not None and not agnostic:
        # torchvision's coordinate trick: shift each class into its own region by class * (max + 1).
        # That stride only separates classes when no coordinate is below -1 (torchvision merges a
        # class-1 box at [-11, -11, -1, -1] with a class-0 box at [0, 0, 10, 10]), so for negative
        # coordinates, which boxes clipped by nothing can have, the stride becomes max - min + 1.
        # Like torchvision's, the shift costs float32 precision: 80 classes x 640 px is ~0.004 px.
        lo, hi = boxes.min(), boxes.max()
        stride = hi + 1 if lo >= 0 else hi - lo + 1
        boxes = boxes + (np.asarray(class_ids).reshape(-1).astype(boxes.dtype) * stride)[:, None]
    order = np.argsort(-scores, kind="stable")
    b = boxes[order].T.copy()  # (4, N) rows are contiguous: cheap gathers and broadcasts below
    area = (b[2] - b[0]) * (b[3] - b[1])
    thres = _strict_gt_thres(iou_thres, b.dtype)
    alive = np.ones(n, bool)
    keep: list[int] = []
    for start in range(0, n, _BLOCK_ROWS):
        rows = start + np.flatnonzero(alive[start:start + _BLOCK_ROWS])
        if not rows.size:
            continue
        cols = start + np.flatnonzero(alive[start:])  # only boxes not yet suppressed can be suppressed
        sup = _iou_matrix(b, area, rows, cols) > thres
        for r, i in enumerate(rows.tolist()):
            if alive[i]:
                keep.append(i)
                if len(keep) == max_det:
                    return order[keep].astype(np.int64)
                # Row r also covers i itself and earlier columns: IoU is symmetric, so an earlier kept
                # box above the threshold would have removed i already; re-clearing the rest is harmless.
                alive[cols[sup[r]]] = False
    return order[keep].astype(np.int64)


def _iou_matrix(b: np.ndarray, area: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """IoU of boxes ``rows`` vs ``cols`` of ``b`` (4, N), in torchvision's operation order."""
    if len(cols) == b.shape[1]:  # first block of a fresh run: skip the copy of every column
        c, ac = b, area
    else:
        c, ac = b[:, cols], area[cols]
    r, ar = b[:, rows, None], area[rows, None]
    # Three (rows, cols) buffers reused in place: fresh temporaries of this size cost page faults.
    w = np.minimum(r[2], c[2])
    t = np.maximum(r[0], c[0])
    w -= t
    h = np.minimum(r[3], c[3])
    h -= np.maximum(r[1], c[1], out=t)
    inter = np.multiply(np.maximum(w, 0, out=w), np.maximum(h, 0, out=h), out=w)
    union = np.subtract(np.add(ar, ac, out=h), inter, out=h)
    with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 of two empty boxes: NaN, never > thres
        return np.divide(inter, union, out=w)


def postprocess_raw(pred: np.ndarray, conf: float, iou: float, max_det: int = 300,
                    classes: Sequence[int] | None = None, agnostic: bool = False,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode one image of a raw detect head and run NMS, as Ultralytics' ``non_max_suppression``.

    Args:
        pred: ``(4 + nc, A)`` (or ``(1, 4 + nc, A)``): rows 0-3 are cx, cy, w, h in model-input
            pixels, rows 4: are sigmoid class scores.
        conf: keep anchors whose best class score is ``> conf`` (strictly, as Ultralytics).
        iou: NMS IoU threshold (suppress when ``> iou``).
        max_det: most boxes returned.
        classes: keep only these class ids (applied before NMS).
        agnostic: one NMS over all classes instead of one per class.

    Returns:
        ``xyxy`` float32 ``(K, 4)``, ``scores`` float32 ``(K,)``, ``class_ids`` int32 ``(K,)``, by
        descending score. One label per anchor (its best class), like Ultralytics' predict default.

    Classes are kept apart by :func:`nms`'s stride, not Ultralytics' fixed 7680 px one; the two differ
    only where float32 rounding of the shifted boxes moves an IoU across the threshold.
    """
    for name, v in (("conf", conf), ("iou", iou)):
        if not 0.0 <= v <= 1.0:
            raise ConfigError(f"{name}={v} is outside [0, 1]", fix=f"pass a {name} threshold between 0 and 1")
    pred = np.asarray(pred)
    if pred.ndim == 3 and pred.shape[0] == 1:
        pred = pred[0]
    if pred.ndim != 2 or pred.shape[0] < 5:
        raise ValueError(f"raw head must be (4 + nc, anchors) for one image, got shape {pred.shape}")
    if pred.dtype not in (np.float32, np.float64):
        pred = pred.astype(np.float32)  # fp16 engines: one cast here keeps the rest in one dtype
    cls_scores = pred[4:]
    # Reduce over the class rows first and gather only the survivors' columns: each row holds one
    # channel for every anchor, so transposing the head (as Ultralytics does) would copy all of it.
    best = cls_scores.max(axis=0)
    cand = np.flatnonzero(best > conf)  # in the head's dtype, as torch: float32(0.3) > 0.3 is False
    scores = best[cand]
    ids = cls_scores[:, cand].argmax(axis=0)  # first of equal maxima, like torch.max
    if classes is not None:
        m = np.isin(ids, np.asarray(classes))
        cand, scores, ids = cand[m], scores[m], ids[m]
    if len(cand) > MAX_NMS:  # stable here; Ultralytics' argsort is not, which only matters on ties
        top = np.argsort(-scores, kind="stable")[:MAX_NMS]
        cand, scores, ids = cand[top], scores[top], ids[top]
    xy, half = pred[:2, cand], pred[2:4, cand] / 2  # Ultralytics' xywh2xyxy: center -/+ wh / 2
    xyxy = np.concatenate((xy - half, xy + half)).T
    keep = nms(xyxy, scores, iou, ids, agnostic=agnostic, max_det=max_det)
    return (np.ascontiguousarray(xyxy[keep], dtype=np.float32), scores[keep].astype(np.float32),
            ids[keep].astype(np.int32))
