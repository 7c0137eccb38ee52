"""The accuracy report and the INT8 gate, with a sensitivity-guided fallback to float.

Every artifact is scored by the same evaluator (:func:`engine.eval.evaluate.evaluate`, COCO mAP) on the
same labelled split, with Ultralytics' validation settings (conf 0.001, IoU 0.7, 300 boxes); the
``.pt`` through Ultralytics' own predictor, the ONNX files through our runtime on ONNX Runtime's CPU
provider. The TensorRT INT8 form runs there too: an approximation of TensorRT's INT8 numerics (the
same scales and int8 rounding; TensorRT's kernels accumulate and fuse differently), labelled so.

The gate: an INT8 form may lose at most ``max_drop`` points of mAP50-95 (0-100 scale) against the
FP32 ONNX. Past that, :func:`sensitivity` ranks the form's INT8 layers by how much output error each
adds, and :func:`run_gate` keeps the top 1, 2, 4, ... of them in float (re-quantizing from the cached
ranges, no calibration pass) until the form passes or :data:`FALLBACK_STEPS` are spent.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from engine.eval.evaluate import MapResult

EVAL_CONF, EVAL_IOU, EVAL_MAX_DET = 0.001, 0.7, 300
FALLBACK_STEPS = (1, 2, 4, 8, 16, 32)  # layers kept float per trial; the last is the most the gate gives up


def score_onnx(path: Path, items: Sequence, progress: bool = False) -> MapResult:
    """mAP of an ONNX artifact run by our runtime on ONNX Runtime's CPU provider."""
    from engine.detector import Detector
    from engine.eval.evaluate import evaluate

    with Detector(path, conf=EVAL_CONF, iou=EVAL_IOU, max_det=EVAL_MAX_DET, device="cpu") as det:
        return evaluate(det, items, max_det=EVAL_MAX_DET, progress=progress, names=det.names)


def score_pt(pt: Path, imgsz: tuple[int, int], items: Sequence, progress: bool = False) -> MapResult:
    """mAP of the ``.pt`` through Ultralytics' own predictor (the reference every artifact is held to)."""
    from engine.eval.evaluate import evaluate

    from .ultralytics_ref import UltralyticsPredictor

    pred = UltralyticsPredictor(pt, imgsz=imgsz, conf=EVAL_CONF, iou=EVAL_IOU, max_det=EVAL_MAX_DET)
    return evaluate(pred, items, max_det=EVAL_MAX_DET, progress=progress, names=pred.names)


def drop_points(reference: MapResult, result: MapResult) -> float:
    """mAP50-95 lost, in points of the 0-100 scale (negative: a gain)."""
    return (reference.map50_95 - result.map50_95) * 100.0


# ---------------------------------------------------------------- sensitivity


def sensitivity(fp32: Path, qdq: Path, images: Sequence[np.ndarray]) -> list[tuple[str, float]]:
    """Rank the INT8 layers of ``qdq`` by the output error each adds, most harmful first.

    Both graphs run unoptimized (Q/DQ executed as written, so the INT8 graph is the exact fake-quant
    simulation) with every layer's input and output exposed. A layer's score is the noise-to-signal
    ratio of its output against the FP32 graph minus the worst one of its activation inputs: the
    error it adds by rounding its inputs and weights, as amplified by the layer itself.
    """
    import onnx
    import onnxruntime as ort

    from engine.preprocess import bgr_from_planes

    from .quantize import quantized_nodes

    q = onnx.load(str(qdq))
    f = onnx.load(str(fp32))
    f_tensors = {o for n in f.graph.node for o in n.output} | {i.name for i in f.graph.input}
    producer = {o: n for n in q.graph.node for o in n.output}
    by_name = {n.name: n for n in q.graph.node}
    layers: dict[str, tuple[list[str], str]] = {}
    for name in quantized_nodes(q):
        node = by_name[name]
        ins = []
        for i in node.input:  # DQ <- Q <- the float tensor both graphs share
            dq = producer.get(i)
            qn = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            src = qn.input[0] if qn is not None and qn.op_type == "QuantizeLinear" else i
            if src in f_tensors:
                ins.append(src)
        if node.output[0] in f_tensors:
            layers[name] = (ins, node.output[0])
    watch = sorted({t for ins, out in layers.values() for t in (*ins, out)})
    sessions = [_exposing_session(ort, onnx, m, watch) for m in (f, q)]
    inp = sessions[0].get_inputs()[0].name
    q_in = sessions[1].get_inputs()[0]
    as_q_input = bgr_from_planes if q_in.type == "tensor(uint8)" else (lambda x: x)  # the CPU form takes BGR pixels
    names = [t for t in watch if t != inp]  # the input itself carries no error
    err = dict.fromkeys(names, 0.0)
    sig = dict.fromkeys(names, 0.0)
    for x in images:
        ref = sessions[0].run(names, {inp: x})
        got = sessions[1].run(names, {q_in.name: as_q_input(x)})
        for t, a, b in zip(names, ref, got):
            a, b = a.astype(np.float64), b.astype(np.float64)
            err[t] += float(np.sum((a - b) ** 2))
            sig[t] += float(np.sum(a * a))
    nsr = {t: err.get(t, 0.0) / sig[t] if sig.get(t, 0.0) > 0 else 0.0 for t in watch}
    scores = [(name, nsr[out] - max((nsr[i] for i in ins), default=0.0)) for name, (ins, out) in layers.items()]
    return sorted(scores, key=lambda s: -s[1])


def _exposing_session(ort, onnx, model, tensors: Sequence[str]):
    """An unoptimized CPU session of ``model`` that also outputs ``tensors``."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output} | {i.name for i in m.graph.input}
    for t in tensors:
        if t not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------- gate


@dataclass(frozen=True)
class Trial:
    """One candidate INT8 model: which extra layers it kept float, and its score."""

    kept_float: tuple[str, ...]
    map50: float
    map50_95: float
    drop: float
    passed: bool


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict on one INT8 form, with every trial it made."""

    target: str
    max_drop: float
    trials: tuple[Trial, ...]
    ranking: tuple[tuple[str, float], ...] = ()

    @property
    def passed(self) -> bool:
        return bool(self.trials) and self.trials[-1].passed

    @property
    def final(self) -> Trial:
        return self.trials[-1]

    def summary(self) -> str:
        t = self.final
        if self.passed and not t.kept_float:
            return f"{self.target}: loses {t.drop:.2f} points of mAP50-95 (bar {self.max_drop:g}) -> OK"
        if self.passed:
            return (f"{self.target}: loses {t.drop:.2f} points after keeping {len(t.kept_float)} sensitive layers in float "
                    f"({', '.join(t.kept_float[:4])}{', ...' if len(t.kept_float) > 4 else ''}) -> OK")
        return (f"{self.target}: loses {t.drop:.2f} points of mAP50-95 (bar {self.max_drop:g}) even with the "
                f"{len(t.kept_float)} most sensitive layers in float -> withheld")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GateResult":
        """The inverse of :meth:`to_dict` (the ranking keeps only its top 10)."""
        trials = tuple(Trial(tuple(t["kept_float"]), t["map50"], t["map50_95"], t["drop_points"], t["passed"])
                       for t in d["trials"])
        return cls(d["target"], d["max_drop"], trials, tuple((n, s) for n, s in d.get("sensitivity_top", ())))

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "max_drop": self.max_drop, "passed": self.passed,
                "trials": [{"kept_float": list(t.kept_float), "map50": round(t.map50, 5),
                            "map50_95": round(t.map50_95, 5), "drop_points": round(t.drop, 3), "passed": t.passed}
                           for t in self.trials],
                "sensitivity_top": [[n, round(s, 6)] for n, s in self.ranking[:10]]}


def run_gate(target: str, build: Callable[[Sequence[str], str], Path], score: Callable[[Path], MapResult],
             reference: MapResult, max_drop: float, rank: Callable[[Path], list[tuple[str, float]]],
             steps: Sequence[int] | None = None, log: Callable[[str], None] = print) -> tuple[GateResult, Path | None]:
    """Build and score an INT8 form; past ``max_drop``, keep its most sensitive layers float, stepwise.

    Args:
        target: the form's name, for the log.
        build: ``build(extra_float_nodes, tag)`` writes a candidate model and returns its path.
        score: mAP of a candidate.
        reference: the FP32 model's mAP.
        max_drop: largest allowed loss, points of mAP50-95.
        rank: ``rank(first_candidate)`` → layers by sensitivity, most harmful first.
        steps: how many of the ranked layers each fallback trial keeps float (default :data:`FALLBACK_STEPS`).

    Returns:
        The verdict and the passing candidate's path (``None`` when the form is withheld).
    """
    trials: list[Trial] = []

    def attempt(extra: Sequence[str], tag: str) -> Path:
        path = build(extra, tag)
        res = score(path)
        d = drop_points(reference, res)
        ok = d <= max_drop + 1e-9  # a drop of exactly the bar passes, whatever the float rounding
        trials.append(Trial(tuple(extra), res.map50, res.map50_95, d, ok))
        log(f"  {target} ({len(extra)} extra layers float): mAP50-95 {res.map50_95:.4f}, "
            f"drop {d:.2f} points (bar {max_drop:g}) -> {'pass' if ok else 'over'}")
        return path

    first = attempt((), "q0")
    if trials[-1].passed:
        return GateResult(target, max_drop, tuple(trials)), first
    log(f"  {target}: over the bar; ranking its INT8 layers by sensitivity")
    ranking = rank(first)
    for k in FALLBACK_STEPS if steps is None else steps:
        if k > len(ranking):
            break
        path = attempt([n for n, _ in ranking[:k]], f"q{k}")
        if trials[-1].passed:
            return GateResult(target, max_drop, tuple(trials), tuple(ranking)), path
    return GateResult(target, max_drop, tuple(trials), tuple(ranking)), None


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


@dataclass
class AccuracyReport:
    """mAP of every artifact beside the ``.pt``'s, on one labelled split."""

    data: str
    split: str
    max_map_drop: float
    calibration: str
    rows: list[Row] = field(default_factory=list)
    gates: dict[str, GateResult] = field(default_factory=dict)

    def add(self, key: str, label: str, file: str | Path, result: MapResult | None, status: str,
            reference: MapResult | None = None) -> None:
        drop = drop_points(reference, result) if reference is not None and result is not None else None
        self.rows.append(Row(key, label, str(file), result, drop, status))

    @property
    def n_images(self) -> int:
        return next((r.result.n_images for r in self.rows if r.result), 0)

    def _cells(self) -> list[list[str]]:
        out = []
        for r in self.rows:
            m50 = f"{r.result.map50:.4f}" if r.result else "-"
            m = f"{r.result.map50_95:.4f}" if r.result else "-"
            d = f"{-r.drop:+.2f}" if r.drop is not None else ""
            out.append([r.label, Path(r.file).name if r.file else "-", m50, m, d, r.status])
        return out

    HEADER = ["artifact", "file", "mAP50", "mAP50-95", "Δ pts vs FP32", "status"]

    def table(self) -> str:
        """The report as an aligned text table (printed by the build)."""
        rows = [self.HEADER, *self._cells()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.HEADER))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def to_markdown(self) -> str:
        head = (f"# Accuracy report\n\nData: `{self.data}` (split `{self.split}`, {self.n_images} images). "
                f"Calibration: {self.calibration}. Gate: an INT8 form may lose at most {self.max_map_drop:.2f} "
                f"points of mAP50-95 against the FP32 ONNX. Settings: conf {EVAL_CONF}, IoU {EVAL_IOU}, "
                f"{EVAL_MAX_DET} boxes; COCO mAP. The TensorRT INT8 form is run on ONNX Runtime's CPU provider, "
                "an approximation of TensorRT's INT8 numerics.\n\n")
        body = "| " + " | ".join(self.HEADER) + " |\n|" + "---|" * len(self.HEADER) + "\n"
        body += "".join("| " + " | ".join(c.replace("|", "/") for c in r) + " |\n" for r in self._cells())
        gates = "".join(f"- {g.summary()}\n" for g in self.gates.values())
        return head + body + ("\n## Gate\n\n" + gates if gates else "")

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.data, "split": self.split, "max_map_drop": self.max_map_drop,
                "calibration": self.calibration,
                "eval": {"conf": EVAL_CONF, "iou": EVAL_IOU, "max_det": EVAL_MAX_DET},
                "rows": [{"key": r.key, "label": r.label, "file": r.file, "status": r.status,
                          "drop_points": None if r.drop is None else round(r.drop, 3),
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
