"""Box mAP of a detector over a labelled split, computed by the COCO evaluation code.

The numbers come from ``faster-coco-eval`` (``pip install faster-coco-eval``; a C++ port of the
COCO API with wheels for Linux, macOS and Windows) or, when that is missing, from ``pycocotools``.
Neither is needed to import this module.

COCO's mAP and the one Ultralytics' ``val`` prints are not the same computation:

* on the same predictions they differ only by AP interpolation: COCO reads the precision envelope
  at 101 recall points as steps, Ultralytics interpolates it linearly and integrates with the
  trapezoid rule (both match detections to ground truth greedily in score order, and only COCO's
  "all" area range is used here; no box is a crowd). Expect a few thousandths;
* ``val`` also predicts differently from ``predict`` (and from our runtime): its NMS is
  multi-label (a box may be kept once per class) and its loader resizes the long side first and
  pads the letterbox by an extra half stride. So "our runtime + this evaluator" vs ``val`` can
  differ by a few hundredths on a weak model, and less on a well-trained one.

``max_det`` is applied per image (the highest-scoring ``max_det`` boxes over all classes, as a
predictor's ``max_det`` does), and COCO's own per-image limit is raised to ``max_det``: its default
of 100 silently truncates the low-confidence tail that a ``conf=0.001`` evaluation relies on.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from .datasets import LabeledImage, label_path_for, load_split, read_data_yaml, read_image
from ..detections import Detections
from ..errors import BackendUnavailableError, DatasetError


@dataclass(frozen=True)
class MapResult:
    """Box mAP over a set of images.

    Attributes:
        map50: COCO AP at IoU 0.5 (COCO's ``stats[1]``).
        map50_95: COCO AP averaged over IoU 0.50:0.05:0.95 (COCO's ``stats[0]``).
        n_images: images evaluated.
        n_instances: ground-truth objects.
        per_class: class name → AP50-95, for every class with at least one ground-truth object.
    """

    map50: float
    map50_95: float
    n_images: int
    n_instances: int
    per_class: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (floats rounded to 5 decimals)."""
        return {"map50": round(self.map50, 5), "map50_95": round(self.map50_95, 5), "n_images": self.n_images,
                "n_instances": self.n_instances, "per_class": {k: round(v, 5) for k, v in self.per_class.items()}}


def evaluate(predict: Callable[[np.ndarray], Detections], data: Sequence[LabeledImage] | str | Path, *,
             split: str = "val", max_det: int = 300, progress: bool = True,
             names: Sequence[str] | None = None) -> MapResult:
    """Run ``predict`` on every image of ``data`` and score it.

    Args:
        predict: takes a BGR uint8 image (as ``cv2.imread`` returns) and returns its
            :class:`Detections` in source pixels. Use a low confidence threshold (0.001) for mAP.
        data: labelled images (:func:`engine.eval.datasets.load_split`), or a data.yaml / image folder.
        split: the data.yaml split to use when ``data`` is a yaml.
        max_det: boxes kept per image, highest score first.
        progress: show a progress bar (tqdm when installed, else a line every 10%).
        names: class names for ``per_class``; default: the data.yaml's, else the detections'.
    """
    if isinstance(data, (str, Path)):
        src = Path(data)
        if names is None and src.suffix.lower() in (".yaml", ".yml"):
            names = read_data_yaml(src).names
        data = load_split(src, split)
    items = list(data)
    dets = list(predict_items(predict, _progress(items, progress)))
    return evaluate_detections(items, dets, max_det=max_det, names=names)


def predict_items(predict: Callable[[np.ndarray], Detections], items: Iterable[LabeledImage]) -> Iterator[Detections]:
    """``predict`` on each item's image, its detections in the pixels the item's labels were read at (the size
    from the image's header), ready for :func:`evaluate_detections`. The decoded image differs from that size
    only for EXIF quirks; the boxes are then scaled per axis, which leaves every IoU as it was."""
    for item in items:
        frame = read_image(item.path)
        out = predict(frame)
        if not isinstance(out, Detections):
            raise TypeError(f"predict must return engine.detections.Detections, got {type(out).__name__}")
        yield _in_label_frame(out, frame.shape[:2], item.hw)


def evaluate_detections(gts: Sequence[LabeledImage], dets: Sequence[Detections], *, max_det: int = 300,
                        names: Sequence[str] | None = None) -> MapResult:
    """Score precomputed detections (``dets[i]`` belongs to ``gts[i]``), in source pixels.

    Raises:
        ValueError: ``gts`` and ``dets`` differ in length, or ``max_det`` < 1.
        DatasetError: there is no ground-truth object at all (mAP is undefined; usually the labels
            were not found).
        BackendUnavailableError: neither faster-coco-eval nor pycocotools is installed.
    """
    if len(gts) != len(dets):
        raise ValueError(f"{len(gts)} labelled images but {len(dets)} detection results")
    if max_det < 1:
        raise ValueError(f"max_det must be >= 1, got {max_det}")
    n_instances = sum(len(g) for g in gts)
    if n_instances == 0:
        where = f" (labels looked up as e.g. {_label_hint(gts[0])})" if gts else ""
        raise DatasetError(f"no ground-truth objects in the {len(gts)} images evaluated{where}",
                           "put YOLO label files in the 'labels' folder beside 'images', one .txt per image")
    if names is None:
        names = next((d.names for d in dets if d.names), ())
    gt_json, dt_json = _coco_dicts(gts, dets, max_det)
    map50_95, map50, per_class_raw = _run_cocoeval(gt_json, dt_json, max_det)
    per_class = {(names[c] if 0 <= c < len(names) else str(c)): ap for c, ap in per_class_raw.items()}
    return MapResult(map50=map50, map50_95=map50_95, n_images=len(gts),
                     n_instances=n_instances, per_class=per_class)


def _coco_dicts(gts: Sequence[LabeledImage], dets: Sequence[Detections], max_det: int) -> tuple[dict, dict]:
    # Ids start at 1: pycocotools stores the matched ground-truth id in its match arrays and treats
    # 0 as "unmatched", so an annotation with id 0 could never count as a true positive.
    images, gt_anns, dt_anns, cats = [], [], [], set()
    for img_id, (gt, det) in enumerate(zip(gts, dets), 1):
        images.append({"id": img_id, "height": int(gt.hw[0]), "width": int(gt.hw[1])})
        for box, cls in zip(gt.boxes.tolist(), gt.classes.tolist()):
            gt_anns.append(_ann(len(gt_anns) + 1, img_id, cls, box) | {"iscrowd": 0})
            cats.add(cls)
        keep = np.argsort(-det.confidence, kind="stable")[:max_det]
        for box, cls, score in zip(det.xyxy[keep].tolist(), det.class_id[keep].tolist(), det.confidence[keep].tolist()):
            dt_anns.append(_ann(len(dt_anns) + 1, img_id, cls, box) | {"score": float(score), "iscrowd": 0})
            cats.add(cls)
    categories = [{"id": int(c), "name": str(c)} for c in sorted(cats)]
    return ({"images": images, "annotations": gt_anns, "categories": categories},
            {"images": images, "annotations": dt_anns, "categories": categories})


def _ann(ann_id: int, img_id: int, cls: int, xyxy: list[float]) -> dict:
    x1, y1, x2, y2 = xyxy
    w, h = max(x2 - x1, 0.0), max(y2 - y1, 0.0)
    return {"id": ann_id, "image_id": img_id, "category_id": int(cls), "bbox": [x1, y1, w, h], "area": w * h}


def _run_cocoeval(gt_json: dict, dt_json: dict, max_det: int) -> tuple[float, float, dict[int, float]]:
    """(mAP50-95, mAP50, {class id: AP50-95}) from COCO's accumulated precision table."""
    coco_cls, eval_cls = _coco_api()
    with contextlib.redirect_stdout(io.StringIO()):  # both libraries print progress
        gt, dt = coco_cls(), coco_cls()
        gt.dataset, dt.dataset = gt_json, dt_json
        gt.createIndex()
        dt.createIndex()
        ev = eval_cls(gt, dt, "bbox")
        ev.params.maxDets = sorted([1, min(10, max_det), max_det])
        ev.evaluate()
        ev.accumulate()
    # These are COCO's stats[0] and stats[1], read from the table directly: pycocotools' summarize()
    # hard-codes maxDets=100 for them and returns -1 when 100 is not among params.maxDets.
    precision = np.asarray(ev.eval["precision"])  # [IoU thr, recall thr, class, area range, max dets]
    all_area = precision[..., 0, -1]  # area range "all", the largest max_det
    at50 = int(np.argmin(np.abs(np.asarray(ev.params.iouThrs) - 0.5)))
    per_class = {}
    for k, cat_id in enumerate(ev.params.catIds):
        ap = _mean_valid(all_area[:, :, k])
        if ap is not None:  # None: the class has no ground truth
            per_class[int(cat_id)] = ap
    return _mean_valid(all_area) or 0.0, _mean_valid(all_area[at50]) or 0.0, per_class


def _mean_valid(p: np.ndarray) -> float | None:
    p = p[p > -1]  # -1 marks "no ground truth for this class"
    return float(p.mean()) if p.size else None


def _coco_api() -> tuple[type, Callable]:
    try:
        from faster_coco_eval import COCO, COCOeval_faster

        def make(gt, dt, iou_type):
            return COCOeval_faster(gt, dt, iou_type, print_function=lambda *a, **k: None)

        return COCO, make
    except ImportError:
        pass
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    except ImportError:
        raise BackendUnavailableError("mAP evaluation needs faster-coco-eval or pycocotools; neither is installed",
                                        "pip install faster-coco-eval") from None


def _in_label_frame(det: Detections, decoded_hw: tuple[int, int], label_hw: tuple[int, int]) -> Detections:
    """``det`` (pixels of the decoded image) in the pixels of ``label_hw``; unchanged when the two agree."""
    if tuple(decoded_hw) == tuple(label_hw):
        return det
    sy, sx = label_hw[0] / decoded_hw[0], label_hw[1] / decoded_hw[1]
    return dataclasses.replace(det, xyxy=det.xyxy * np.array([sx, sy, sx, sy], np.float32))


def _label_hint(item: LabeledImage) -> str:
    return str(label_path_for(item.path))


def _progress(items: list, enabled: bool) -> Iterable:
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return _plain_progress(items)
    return tqdm(items, desc="evaluating", unit="img")


def _plain_progress(items: list) -> Iterable:
    n = len(items)
    step = max(n // 10, 1)
    for i, item in enumerate(items, 1):
        yield item
        if i % step == 0 or i == n:
            print(f"evaluating: {i}/{n} images", flush=True)
