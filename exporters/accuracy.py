"""The accuracy report: every artifact scored the same way, and what the INT8 gate decided.

Every artifact is scored by the same evaluator (:func:`engine.eval.evaluate.evaluate`, COCO mAP) on the
same labelled split, with Ultralytics' validation settings (conf 0.001, IoU 0.7, 300 boxes); the
``.pt`` through Ultralytics' own predictor, the ONNX files through our runtime on ONNX Runtime's CPU
provider. The TensorRT INT8 form runs there too: an approximation of TensorRT's INT8 numerics (the
same scales and int8 rounding; TensorRT's kernels accumulate and fuse differently), labelled so.

The gate itself (a drop with its bootstrap interval, the fallback to float) is :mod:`exporters.gate`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence


from engine.eval.evaluate import MapResult

from .gate import LEVEL, GateResult

EVAL_CONF, EVAL_IOU, EVAL_MAX_DET = 0.001, 0.7, 300


def score_onnx(path: Path, items: Sequence, progress: bool = False, **options) -> MapResult:
    """mAP of an ONNX artifact (or an IR) run by our runtime on the CPU; ``options`` go to the backend (an
    IR's ``precision="f32"``: OpenVINO's CPU default is bf16 where the CPU has it)."""
    from engine.detector import Detector
    from engine.eval.evaluate import evaluate

    with Detector(path, conf=EVAL_CONF, iou=EVAL_IOU, max_det=EVAL_MAX_DET, device="cpu", **options) as det:
        return evaluate(det, items, max_det=EVAL_MAX_DET, progress=progress, names=det.names)


def detect_onnx(path: Path, items: Sequence, progress: bool = False) -> list:
    """Per-image detections of an ONNX artifact (runtime, ONNX Runtime CPU, evaluation settings)."""
    from calibration.progress import progress as bar
    from engine.detector import Detector
    from engine.eval.evaluate import predict_items

    with Detector(path, conf=EVAL_CONF, iou=EVAL_IOU, max_det=EVAL_MAX_DET, device="cpu") as det:
        return list(predict_items(det, bar(list(items), len(items), "scoring", progress)))


def score_detections(items: Sequence, dets: Sequence) -> MapResult:
    """COCO mAP of precomputed per-image detections."""
    from engine.eval.evaluate import evaluate_detections

    return evaluate_detections(list(items), list(dets), max_det=EVAL_MAX_DET)


def score_pt(pt: Path, imgsz: tuple[int, int], items: Sequence, progress: bool = False) -> MapResult:
    """mAP of the ``.pt`` through Ultralytics' own predictor (the reference every artifact is held to)."""
    from engine.eval.evaluate import evaluate

    from .ultralytics_ref import UltralyticsPredictor

    pred = UltralyticsPredictor(pt, imgsz=imgsz, conf=EVAL_CONF, iou=EVAL_IOU, max_det=EVAL_MAX_DET)
    return evaluate(pred, items, max_det=EVAL_MAX_DET, progress=progress, names=pred.names)


def drop_points(reference: MapResult, result: MapResult) -> float:
    """mAP50-95 lost, in points of the 0-100 scale (negative: a gain)."""
    return (reference.map50_95 - result.map50_95) * 100.0


# ---------------------------------------------------------------- report


@dataclass(frozen=True)
class Row:
    """One line of the report."""

    key: str  # pt, fp32, fp16, int8, int8-cpu
    label: str
    file: str
    result: MapResult | None
    drop: float | None  # points vs the FP32 ONNX
    status: str
    interval: tuple[float, float] | None = None  # the gate's bootstrap interval of the drop


@dataclass
class AccuracyReport:
    """mAP of every artifact beside the ``.pt``'s, on one labelled split."""

    data: str
    split: str
    max_map_drop: float
    calibration: str
    rows: list[Row] = field(default_factory=list)
    gates: dict[str, GateResult] = field(default_factory=dict)
    gate_images: int = 0
    judged_by: str = ""  # the judge's reason (labels, or agreement with FP32)
    notes: list[str] = field(default_factory=list)

    def add(self, key: str, label: str, file: str | Path, result: MapResult | None, status: str,
            reference: MapResult | None = None, interval: tuple[float, float] | None = None) -> None:
        drop = drop_points(reference, result) if reference is not None and result is not None else None
        self.rows.append(Row(key, label, str(file), result, drop, status, interval))

    @property
    def n_images(self) -> int:
        return next((r.result.n_images for r in self.rows if r.result), 0)

    def _cells(self) -> list[list[str]]:
        out = []
        for r in self.rows:
            m50 = f"{r.result.map50:.4f}" if r.result else "-"
            m = f"{r.result.map50_95:.4f}" if r.result else "-"
            d = f"{-r.drop:+.2f}" if r.drop is not None else ""
            if r.interval is not None:
                d += f" ({-r.interval[1]:+.2f} to {-r.interval[0]:+.2f})"
            out.append([r.label, Path(r.file).name if r.file else "-", m50, m, d, r.status])
        return out

    HEADER = ["artifact", "file", "mAP50", "mAP50-95", f"Δ pts vs FP32 ({LEVEL:.0%} interval)", "status"]

    def table(self) -> str:
        """The report as an aligned text table (printed by the build)."""
        rows = [self.HEADER, *self._cells()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.HEADER))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def to_markdown(self) -> str:
        head = (f"# Accuracy report\n\nData: `{self.data}` (split `{self.split}`, {self.n_images} images). "
                f"Calibration: {self.calibration}. Gate: an INT8 form is written only when the upper end of the "
                f"{LEVEL:.0%} paired-bootstrap interval of its drop against the FP32 ONNX is at most "
                f"{self.max_map_drop:.2f} points of mAP50-95 ({self.judged_by or 'labels'}). Settings: conf "
                f"{EVAL_CONF}, IoU {EVAL_IOU}, {EVAL_MAX_DET} boxes; COCO mAP. The TensorRT INT8 form is run on "
                "ONNX Runtime's CPU provider, an approximation of TensorRT's INT8 numerics.\n\n"
                + "".join(f"Note: {n}\n\n" for n in self.notes))
        body = "| " + " | ".join(self.HEADER) + " |\n|" + "---|" * len(self.HEADER) + "\n"
        body += "".join("| " + " | ".join(c.replace("|", "/") for c in r) + " |\n" for r in self._cells())
        gates = "".join(f"- {g.summary()}\n" + "".join(
            f"  - kept float {', '.join(layers)}: {points:+.2f} points of drop\n" for layers, points in g.bought())
            + (f"  - sensitivity ranking {g.stability.text()}\n" if g.stability is not None else "")
            for g in self.gates.values())
        return head + body + ("\n## Gate\n\n" + gates if gates else "")

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.data, "split": self.split, "max_map_drop": self.max_map_drop,
                "calibration": self.calibration, "gate_images": self.gate_images, "judged_by": self.judged_by,
                "notes": list(self.notes),
                "eval": {"conf": EVAL_CONF, "iou": EVAL_IOU, "max_det": EVAL_MAX_DET},
                "rows": [{"key": r.key, "label": r.label, "file": r.file, "status": r.status,
                          "drop_points": None if r.drop is None else round(r.drop, 3),
                          "drop_interval": None if r.interval is None else [round(v, 3) for v in r.interval],
                          **({"map50": round(r.result.map50, 5), "map50_95": round(r.result.map50_95, 5),
                              "n_images": r.result.n_images, "n_instances": r.result.n_instances}
                             if r.result else {})} for r in self.rows],
                "gates": {k: g.to_dict() for k, g in self.gates.items()}}

    def write(self, out: Path, stem: str) -> tuple[Path, Path]:
        """``<out>/<stem>.accuracy.json`` and ``.md``, written atomically."""
        from .io import write_bytes_atomic

        j = write_bytes_atomic(out / f"{stem}.accuracy.json", json.dumps(self.to_dict(), indent=1).encode())
        m = write_bytes_atomic(out / f"{stem}.accuracy.md", self.to_markdown().encode("utf-8"))
        return j, m
