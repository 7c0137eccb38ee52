"""The self-check's report (Markdown + JSON) and its detection matching."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

# Smallest share of the ONNX Runtime boxes the engine must reproduce (same class, IoU >= MATCH_IOU).
MIN_MATCH = {"fp32": 0.98, "fp16": 0.95, "int8": 0.85}
MATCH_IOU = 0.5


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def match_detections(ref: Sequence[Any], got: Sequence[Any], iou: float = MATCH_IOU) -> dict[str, Any]:
    """Greedy one-to-one matching per image: same class, IoU >= ``iou``, best scores first."""
    matched = total = extra = produced = 0
    box_diff, score_diff = 0.0, 0.0
    for r, g in zip(ref, got):
        total += len(r)
        produced += len(g)
        used = np.zeros(len(g), bool)
        ious = _iou(r.xyxy, g.xyxy) if len(r) and len(g) else np.zeros((len(r), len(g)))
        for i in np.argsort(-r.confidence):
            cand = np.where((g.class_id == r.class_id[i]) & ~used & (ious[i] >= iou))[0]
            if len(cand):
                j = cand[np.argmax(ious[i, cand])]
                used[j] = True
                matched += 1
                box_diff = max(box_diff, float(np.abs(r.xyxy[i] - g.xyxy[j]).max()))
                score_diff = max(score_diff, float(abs(r.confidence[i] - g.confidence[j])))
        extra += int((~used).sum())
    return {"images": len(ref), "reference_boxes": total, "engine_boxes": produced,
            "matched": matched, "unmatched_engine_boxes": extra,
            "match_fraction": matched / total if total else 1.0,
            "max_box_diff_px": box_diff, "max_score_diff": score_diff}


@dataclass
class Report:
    """What was checked, what passed, and what this machine could not do."""

    environment: dict[str, Any]
    steps: list[dict[str, str]] = field(default_factory=list)
    artifacts: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] | None = None
    timing: dict[str, Any] = field(default_factory=dict)
    bandwidth: dict[str, float] = field(default_factory=dict)
    could_not: list[dict[str, str]] = field(default_factory=list)

    def step(self, name: str, status: str, detail: str) -> None:
        print(f"[{status}] {name}: {detail}")
        self.steps = [s for s in self.steps if not (s["step"] == name and s["status"] == "running")]
        self.steps.append({"step": name, "status": status, "detail": detail})

    def cannot(self, what: str, why: str) -> None:
        self.could_not.append({"what": what, "why": why})

    @property
    def verdict(self) -> str:
        if self.could_not:
            return "incomplete"
        if any(s["status"] == "failed" for s in self.steps):
            return "parity failed"
        return "verified"

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "environment": self.environment, "artifacts": self.artifacts,
                "steps": self.steps, "parity": self.parity, "timing_ms": self.timing,
                "h2d_bandwidth": self.bandwidth, "could_not": self.could_not}

    def to_markdown(self) -> str:
        lines = [f"# TensorRT self-check: {self.verdict}", "", "| | |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in self.environment.items()]
        lines += [f"| {k} | {v} |" for k, v in self.artifacts.items()]
        lines += ["", "## Steps", ""] + [f"- **{s['step']}** ({s['status']}): {s['detail']}" for s in self.steps]
        if self.parity:
            p = self.parity
            lines += ["", "## Parity with ONNX Runtime", "",
                      f"{p['matched']}/{p['reference_boxes']} boxes matched over {p['images']} images "
                      f"({p['match_fraction']:.1%}, bar {p['min_match']:.0%}); largest box difference "
                      f"{p['max_box_diff_px']:.2f} px, score {p['max_score_diff']:.4f}; raw head max |diff| "
                      f"{p['raw_max_abs_box_px']:.3f} px / {p['raw_max_abs_score']:.4f}"]
        if self.timing:
            lines += ["", "## Time per frame (ms)", "", "| what | p50 | p95 | p99 |", "|---|---|---|---|"]
            lines += [f"| {k} | {v['p50']:.2f} | {v['p95']:.2f} | {v['p99']:.2f} |" for k, v in self.timing.items()]
        if self.bandwidth:
            lines += ["", f"H2D copy of 64 MiB: {self.bandwidth['pinned_gb_s']:.1f} GB/s from pinned memory, "
                      f"{self.bandwidth['pageable_gb_s']:.1f} GB/s from pageable memory"]
        if self.could_not:
            lines += ["", "## Not done on this machine", ""]
            lines += [f"- could not {c['what']}: {c['why']}" for c in self.could_not]
        return "\n".join(lines) + "\n"
