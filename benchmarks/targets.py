"""The project's speed goals, each a ratio of two candidates timed in the same group of the same run.

One table (:data:`GOALS`): what is compared, in which groups, the limit, and where the goal was set. A
candidate is picked by role and form (or, for our artifacts, by backend and precision from the artifact
table, so our OpenVINO forms are found whatever their file names). A goal whose candidates are not both in
a group is printed as "not measured", a missed one as missed with by how much: never left out.
"""
from __future__ import annotations

from dataclasses import dataclass

from .stats import Target


@dataclass(frozen=True)
class Pick:
    """Which candidate of a group: ours (by ``form``, or by ``backend`` + ``precision``) or a peer (by its key)."""

    role: str
    form: str | None = None
    backend: str | None = None
    precision: str | None = None
    reference: bool = False

    def matches(self, c: dict) -> bool:
        return (c["role"] == self.role and bool(c.get("reference")) == self.reference
                and (self.form is None or c["form"] == self.form)
                and (self.backend is None or c.get("backend") == self.backend)
                and (self.precision is None or c.get("precision") == self.precision))

    def text(self) -> str:
        what = self.form or f"{self.backend} {self.precision}"
        return f"{'ours' if self.role == 'ours' else 'ultralytics'} {what}" + (" (square reference)" if self.reference else "")


@dataclass(frozen=True)
class Goal:
    """``numerator / denominator <= limit`` on the end-to-end figure, in groups of ``kinds`` at batch 1."""

    name: str
    numerator: Pick
    denominator: Pick
    limit: float
    kinds: tuple[str, ...]
    source: str


_PEER_GROUPS = ("square", "native", "models")
INT8_CPU, FP32 = Pick("ours", "int8-cpu"), Pick("ours", "fp32")
PT, ONNX, OV, OV_INT8 = Pick("peer", "pt"), Pick("peer", "onnx"), Pick("peer", "openvino"), Pick("peer", "openvino-int8")

GOALS: tuple[Goal, ...] = (
    Goal("INT8 CPU form vs Ultralytics .pt", INT8_CPU, PT, 0.35, _PEER_GROUPS, "issue 8"),
    Goal("INT8 CPU form vs Ultralytics ONNX", INT8_CPU, ONNX, 0.50, _PEER_GROUPS, "issue 8"),
    Goal("our FP32 vs Ultralytics ONNX", FP32, ONNX, 0.95, _PEER_GROUPS, "issue 8"),
    # faster than the fastest CPU peer (issues 21, 22)
    Goal("INT8 CPU form vs Ultralytics OpenVINO INT8", INT8_CPU, OV_INT8, 1.00, _PEER_GROUPS, "issue 22"),
    Goal("our FP32 vs Ultralytics OpenVINO FP32", FP32, OV, 1.00, _PEER_GROUPS, "issue 22"),
    Goal("our OpenVINO INT8 vs Ultralytics OpenVINO INT8", Pick("ours", backend="openvino", precision="int8"), OV_INT8,
         1.00, _PEER_GROUPS, "issue 21"),
    Goal("our OpenVINO FP32 vs Ultralytics OpenVINO FP32", Pick("ours", backend="openvino", precision="fp32"), OV,
         1.00, _PEER_GROUPS, "issue 21"),
    # the 16:9 input on 16:9 frames against the square one
    Goal("rect model vs square model on the same frames (FP32)", FP32, Pick("ours", "fp32", reference=True), 0.65,
         ("native",), "issue 8"),
    Goal("rect model vs square model on the same frames (INT8 CPU form)", INT8_CPU,
         Pick("ours", "int8-cpu", reference=True), 0.65, ("native",), "issue 8"),
)


def _figure(c: dict) -> float:
    return c["per_frame_ms"]["end_to_end"]["p50"]


def verdicts(group: dict) -> list[dict]:
    """Every goal that applies to ``group`` (a group of results.json), met, missed or not measured."""
    if group["batch"] != 1:
        return []
    ran = [c for c in group["candidates"] if not c.get("skipped")]
    out = []
    for g in GOALS:
        if group["kind"] not in g.kinds:
            continue
        a = next((c for c in ran if g.numerator.matches(c)), None)
        b = next((c for c in ran if g.denominator.matches(c)), None)
        t = Target(g.name, g.numerator.text(), g.denominator.text(), g.limit)
        v = t.verdict(_figure(a) / _figure(b) if a and b and _figure(b) > 0 else None)
        out.append({"group": group["id"], "source": g.source, **v,
                    "candidates": [a["name"] if a else None, b["name"] if b else None]})
    return out
