"""Detection agreement: does a candidate graph show a user the same boxes as the FP32 graph?

Both raw-head graphs run on the same letterboxed images; their outputs go through the runtime's own
decode and NMS (:func:`engine.nms.postprocess_raw`) at the deployment thresholds, and the detections
are matched one to one (same class, IoU >= ``match_iou``, highest scores first).

What a user sees is what counts, so two kinds of difference are not disagreements:

* anchors below the confidence threshold, which NMS throws away whatever their values (the raw-output
  check this replaces failed good FP16 models on those);
* a detection whose score lies within ``margin`` (relative) of the threshold on one side and just under
  it on the other: both graphs found the object, one rounded its score across the line.

A candidate agrees when at least ``min_agreement`` of the detections match
(matched / (matched + missing + extra)) and no matched pair differs in score by more than
``max_score_diff``. When the reference finds fewer than ``min_detections`` boxes at the threshold
(random weights, images without the model's objects), the threshold is lowered to the score of its
``min_detections``-th best anchor, so the check still judges the top boxes rather than passing on
nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

Runner = Callable[[np.ndarray], np.ndarray]  # NCHW batch -> raw head (B, 4 + nc, anchors)


@dataclass(frozen=True)
class AgreementConfig:
    """Thresholds of the comparison (see the module docstring for why each is what it is).

    Attributes:
        conf: the deployment confidence threshold (the runtime's default).
        iou: NMS IoU threshold (the runtime's default).
        max_det: most boxes per image.
        margin: relative band under ``conf`` where a detection may appear on one side only.
        match_iou: two boxes are the same detection at this IoU or more.
        min_agreement: fraction of detections that must match.
        max_score_diff: largest score difference of a matched pair.
        min_detections: fewest reference detections the check judges (the threshold is lowered to reach it).
    """

    conf: float = 0.25
    iou: float = 0.45
    max_det: int = 300
    margin: float = 0.2
    match_iou: float = 0.85
    min_agreement: float = 0.98
    max_score_diff: float = 0.05
    min_detections: int = 10


@dataclass(frozen=True)
class Agreement:
    """How the candidate's detections compare with the reference's on ``images`` images."""

    images: int
    conf: float
    reference: int
    candidate: int
    matched: int
    missing: int
    extra: int
    class_flips: int
    max_score_diff: float
    min_iou: float
    cfg: AgreementConfig

    @property
    def agreement(self) -> float:
        total = self.matched + self.missing + self.extra
        return self.matched / total if total else 1.0

    @property
    def ok(self) -> bool:
        return (self.reference > 0 and self.agreement >= self.cfg.min_agreement
                and self.max_score_diff <= self.cfg.max_score_diff)

    def summary(self) -> str:
        at = f"conf {self.conf:.3g}" + ("" if self.conf == self.cfg.conf else f" (lowered from {self.cfg.conf})")
        return (f"detections vs FP32 over {self.images} images at {at}: {self.matched} matched, {self.missing} "
                f"missing, {self.extra} extra ({self.class_flips} class flips), agreement {self.agreement:.1%} "
                f"(bar {self.cfg.min_agreement:.0%}), max score diff {self.max_score_diff:.4f} "
                f"(bar {self.cfg.max_score_diff}), min IoU {self.min_iou:.3f}")

    def figures(self) -> dict[str, float | int]:
        return {"agreement": round(self.agreement, 5), "matched": self.matched, "missing": self.missing,
                "extra": self.extra, "class_flips": self.class_flips, "reference_detections": self.reference,
                "max_score_diff": round(self.max_score_diff, 5), "min_iou": round(self.min_iou, 4),
                "conf": round(self.conf, 5), "images": self.images}


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-9)


def run_batched(runner: Runner, images: np.ndarray, batch: int | None) -> np.ndarray:
    """Raw outputs of ``runner`` on ``images`` in its batch size (a static batch is padded and cut)."""
    b = batch or len(images)
    out = []
    for i in range(0, len(images), b):
        chunk = images[i : i + b]
        n = len(chunk)
        if n < b:
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], b - n, 0)])
        out.append(np.asarray(runner(chunk))[:n])
    return np.concatenate(out).astype(np.float32)


def _effective_conf(raw: np.ndarray, cfg: AgreementConfig) -> float:
    """``cfg.conf``, or lower when the reference has fewer than ``min_detections`` anchors above it."""
    best = raw[:, 4:, :].max(axis=1).reshape(-1)
    if (best >= cfg.conf).sum() >= cfg.min_detections or best.size == 0:
        return cfg.conf
    k = min(cfg.min_detections, best.size)
    return max(float(np.partition(best, -k)[-k]), 1e-4)  # never 0: every empty anchor would count


def compare_raw(ref: np.ndarray, cand: np.ndarray, cfg: AgreementConfig = AgreementConfig()) -> Agreement:
    """Compare two raw head outputs ``(N, 4 + nc, anchors)`` of the same images (see the module docstring)."""
    from engine.nms import postprocess_raw

    conf = _effective_conf(ref, cfg)
    low = conf * (1.0 - cfg.margin)
    matched = missing = extra = flips = 0
    n_ref = n_cand = 0
    worst_score, worst_iou = 0.0, 1.0
    for r_raw, c_raw in zip(ref, cand):
        rb, rs, rc = postprocess_raw(r_raw, low, cfg.iou, cfg.max_det)
        cb, cs, cc = postprocess_raw(c_raw, low, cfg.iou, cfg.max_det)
        n_ref += int((rs >= conf).sum())
        n_cand += int((cs >= conf).sum())
        used = np.zeros(len(cs), bool)
        for i in np.argsort(-rs):
            counted = rs[i] >= conf
            if len(cs):
                ious = _iou(rb[i], cb)
                same = (cc == rc[i]) & ~used & (ious >= cfg.match_iou)
                if same.any():
                    j = int(np.argmax(np.where(same, ious, -1.0)))
                    used[j] = True
                    if counted or cs[j] >= conf:
                        matched += 1
                        worst_score = max(worst_score, abs(float(rs[i]) - float(cs[j])))
                        worst_iou = min(worst_iou, float(ious[j]))
                    continue
                if counted and ((cc != rc[i]) & (ious >= cfg.match_iou)).any():
                    flips += 1
            missing += int(counted)
        extra += int(((cs >= conf) & ~used).sum())
    return Agreement(len(ref), conf, n_ref, n_cand, matched, missing, extra, flips, worst_score, worst_iou, cfg)


def compare_runners(reference: Runner, candidate: Runner, images: np.ndarray, batch: int | None,
                    cfg: AgreementConfig = AgreementConfig()) -> Agreement:
    """Run both graphs on ``images`` (letterboxed NCHW float32) and compare their detections."""
    return compare_raw(run_batched(reference, images, batch), run_batched(candidate, images, batch), cfg)


def onnx_runner(path, threads: int | None = None) -> Runner:
    """A raw-output runner of an ONNX file on ONNX Runtime's CPU provider (float NCHW input)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def agreement_images(frames: Sequence[np.ndarray], imgsz: tuple[int, int]) -> np.ndarray:
    """Letterbox BGR ``frames`` into one float32 NCHW array (the FP32 graph's input)."""
    from engine.preprocess import Letterbox

    buf, _ = Letterbox(imgsz, batch=len(frames))(list(frames))
    return buf.copy()
