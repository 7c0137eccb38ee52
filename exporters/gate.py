"""The INT8 accuracy gate: a drop with its uncertainty, judged on its upper bound, with a fallback to float.

A candidate INT8 form and the FP32 ONNX run on the same labelled images (at least
:data:`MIN_GATE_IMAGES` when the data has them). The drop of mAP50-95 comes with a paired bootstrap
interval over the images (:mod:`exporters.map_bootstrap`); a form passes only when the interval's upper
end (and the measured drop, should a skewed bootstrap leave it above) is within the bar: "probably within the
bar" is not enough, since a 100-image val set moves an INT8 drop by half a point either way
(benchmarks/RESULTS.md).

When the FP32 model's own mAP is below :data:`REFERENCE_FLOOR` (random weights, or data whose classes are
not the model's) a drop says nothing: every form "loses 0.00". Then the forms are judged by agreement
with FP32 instead: FP32's confident detections (score >= :data:`PSEUDO_CONF`) become the labels, and a
form's mAP50-95 against them may fall at most :data:`AGREEMENT_MAX_DROP` points below FP32's own (which is
1.0 by construction). Healthy INT8 forms lost 2-4 points of this agreement on the demo (RESULTS.md).

Past the bar, the form's INT8 layers are ranked by :mod:`exporters.sensitivity` and the top 1, 2, 4, ...
are kept float, one trial each, until the form passes or :data:`FALLBACK_STEPS` are spent; the report
lists what each step's layers bought.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .map_bootstrap import MatchTable, PairedDrop, bootstrap_maps, match_table, paired_drop, weighted_map
from .sensitivity import Stability

FALLBACK_STEPS = (1, 2, 4, 8, 16, 32)  # layers kept float per trial; the last is the most the gate gives up
MIN_GATE_IMAGES = 300
REFERENCE_FLOOR = 0.05  # FP32 mAP50-95 below this cannot judge a drop
PSEUDO_CONF = 0.25  # FP32 detections at or above this are the agreement labels
MIN_PSEUDO_BOXES = 20  # fewer confident ones: the threshold drops to FP32's best boxes
AGREEMENT_MAX_DROP = 8.0  # points of agreement mAP50-95 a form may lose against FP32's detections
RESAMPLES = 1000
LEVEL = 0.9  # the interval's coverage: the upper end is exceeded with 5 % chance


def n_layers(n: int, kind: str = "") -> str:
    """``"1 layer"``, ``"2 extra layers"``: a count of layers for the gate's messages."""
    return f"{n} {kind}layer{'' if n == 1 else 's'}"


@dataclass(frozen=True)
class Verdict:
    """One candidate's score and its drop against FP32 (points, with the bootstrap interval)."""

    map50: float
    map50_95: float
    drop: PairedDrop


@dataclass(frozen=True)
class Judge:
    """How candidates are held to FP32 on one image set: by the labels, or by agreement with FP32.

    Build it with :func:`make_judge`; call it with a candidate's per-image detections.
    """

    kind: str  # "map" (labels) or "agreement" (FP32's detections as labels)
    labels: tuple  # the labelled images candidates are matched against
    reference: MatchTable
    max_drop: float
    reason: str  # why this kind (shown in the report)
    resamples: int = RESAMPLES
    reference_maps: np.ndarray | None = field(default=None, compare=False, repr=False)  # resampled once

    def __post_init__(self) -> None:
        if self.reference_maps is None:  # every trial's candidate is paired with the same resamples of FP32
            object.__setattr__(self, "reference_maps", bootstrap_maps(self.reference, self.resamples))

    def __call__(self, dets: Sequence) -> Verdict:
        from engine.eval.evaluate import evaluate_detections

        table = match_table(self.labels, dets)
        drop = paired_drop(self.reference, table, self.resamples, LEVEL, reference_maps=self.reference_maps)
        if self.kind == "map":
            res = evaluate_detections(self.labels, dets, max_det=300)
            return Verdict(res.map50, res.map50_95, drop)
        return Verdict(float("nan"), weighted_map(table), drop)

    def passes(self, v: Verdict) -> bool:
        # the interval's upper end within the bar (exactly at it passes), and the measured drop too: a
        # percentile bootstrap of a skewed statistic can put the measured drop above its own interval
        return max(v.drop.high, v.drop.drop) <= self.max_drop + 1e-9


def pseudo_labels(items: Sequence, dets: Sequence, conf: float = PSEUDO_CONF, least: int = MIN_PSEUDO_BOXES) -> list:
    """``items`` with FP32's detections at or above ``conf`` as their boxes (lowered to FP32's ``least``
    best boxes when fewer pass)."""
    from engine.eval.datasets import LabeledImage

    scores = np.concatenate([d.confidence for d in dets]) if dets else np.zeros(0)
    if (scores >= conf).sum() < least and len(scores):
        conf = float(np.sort(scores)[::-1][min(least, len(scores)) - 1])
    return [LabeledImage(i.path, i.hw, d.xyxy[d.confidence >= conf].astype(np.float32),
                         d.class_id[d.confidence >= conf]) for i, d in zip(items, dets)]


def make_judge(items: Sequence, ref_dets: Sequence, ref_map50_95: float, max_drop: float,
               agreement_max_drop: float = AGREEMENT_MAX_DROP, resamples: int = RESAMPLES) -> Judge:
    """The judge for this image set, given FP32's detections and mAP50-95 on it.

    Raises:
        ValueError: FP32 detected nothing at all (nothing to agree with).
    """
    if ref_map50_95 >= REFERENCE_FLOOR:
        return Judge("map", tuple(items), match_table(items, ref_dets), max_drop,
                     f"FP32 mAP50-95 {ref_map50_95:.3f} on {len(items)} labelled images", resamples)
    if not any(len(d) for d in ref_dets):
        raise ValueError("FP32 detects nothing on these images: there is nothing an INT8 form could agree with")
    labels = pseudo_labels(items, ref_dets)
    n = sum(len(label.boxes) for label in labels)
    return Judge("agreement", tuple(labels), match_table(labels, ref_dets), agreement_max_drop,
                 f"FP32 mAP50-95 {ref_map50_95:.3f} is below {REFERENCE_FLOOR} (random weights, or data whose "
                 f"classes are not the model's): a drop would say nothing, so each form is judged by agreement "
                 f"with FP32's {n} confident detections instead", resamples)


@dataclass(frozen=True)
class Trial:
    """One candidate INT8 model: which extra layers it kept float, its score, its drop and the verdict."""

    kept_float: tuple[str, ...]
    map50: float
    map50_95: float
    drop: float
    low: float
    high: float
    passed: bool


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict on one INT8 form, with every trial it made."""

    target: str
    max_drop: float
    kind: str
    trials: tuple[Trial, ...]
    ranking: tuple[tuple[str, float], ...] = ()
    stability: Stability | None = None  # the ranking's two halves compared (exporters.sensitivity)

    @property
    def passed(self) -> bool:
        return bool(self.trials) and self.trials[-1].passed

    @property
    def final(self) -> Trial:
        return self.trials[-1]

    def bought(self) -> list[tuple[tuple[str, ...], float]]:
        """Each fallback step's newly float layers and how many points of drop they took away."""
        out = []
        for a, b in zip(self.trials, self.trials[1:]):
            out.append((b.kept_float[len(a.kept_float):], a.drop - b.drop))
        return out

    def summary(self) -> str:
        t = self.final
        what = "agreement mAP50-95 vs FP32's detections" if self.kind == "agreement" else "mAP50-95"
        drop = f"loses {t.drop:.2f} points of {what} ({LEVEL:.0%} interval {t.low:.2f} to {t.high:.2f}; bar {self.max_drop:g})"
        if self.passed and not t.kept_float:
            return f"{self.target}: {drop} -> OK"
        if self.passed:
            return (f"{self.target}: {drop} after keeping {n_layers(len(t.kept_float), 'sensitive ')} float "
                    f"({', '.join(t.kept_float[:4])}{', ...' if len(t.kept_float) > 4 else ''}) -> OK")
        n = len(t.kept_float)
        worst = "the most sensitive layer" if n == 1 else f"the {n} most sensitive layers"
        return f"{self.target}: {drop} even with {worst} float -> withheld"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GateResult":
        """The inverse of :meth:`to_dict` (the ranking keeps only its top 10)."""
        trials = tuple(Trial(tuple(t["kept_float"]), float("nan") if t["map50"] is None else t["map50"],
                             t["map50_95"], t["drop_points"], t.get("drop_low", t["drop_points"]),
                             t.get("drop_high", t["drop_points"]), t["passed"]) for t in d["trials"])
        return cls(d["target"], d["max_drop"], d.get("judged_by", "map"), trials,
                   tuple((n, s) for n, s in d.get("sensitivity_top", ())),  # records before the capture: none
                   Stability(d["ranking_images"], d["ranking_overlap"], d["ranking_capture"], d["ranking_top"])
                   if d.get("ranking_capture") is not None else None)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "max_drop": self.max_drop, "judged_by": self.kind, "passed": self.passed,
                "interval_level": LEVEL,
                "trials": [{"kept_float": list(t.kept_float), "map50": None if np.isnan(t.map50) else round(t.map50, 5),
                            "map50_95": round(t.map50_95, 5), "drop_points": round(t.drop, 3),
                            "drop_low": round(t.low, 3), "drop_high": round(t.high, 3), "passed": t.passed}
                           for t in self.trials],
                "bought": [{"layers": list(layers), "points": round(p, 3)} for layers, p in self.bought()],
                "sensitivity_top": [[n, round(s, 6)] for n, s in self.ranking[:10]],
                "ranking_overlap": None if self.stability is None else self.stability.overlap,
                "ranking_capture": None if self.stability is None else round(self.stability.capture, 4),
                "ranking_images": None if self.stability is None else self.stability.images,
                "ranking_top": None if self.stability is None else self.stability.top}


Ranking = tuple[list[tuple[str, float]], Stability | None]


def run_gate(target: str, build: Callable[[Sequence[str], str], Path], detect: Callable[[Path], Sequence],
             judge: Judge, rank: Callable[[Path], Ranking], steps: Sequence[int] | None = None,
             log: Callable[[str], None] = print) -> tuple[GateResult, Path | None]:
    """Build and judge an INT8 form; past the bar, keep its most sensitive layers float, stepwise.

    Args:
        target: the form's name, for the log.
        build: ``build(extra_float_nodes, tag)`` writes a candidate model and returns its path.
        detect: per-image detections of a candidate on the judge's images.
        judge: from :func:`make_judge`.
        rank: ``rank(first_candidate)`` → (layers by sensitivity, most harmful first; the ranking's
            :class:`~exporters.sensitivity.Stability`, or ``None``).
        steps: how many of the ranked layers each fallback trial keeps float (default :data:`FALLBACK_STEPS`).

    Returns:
        The verdict and the passing candidate's path (``None`` when the form is withheld).
    """
    trials: list[Trial] = []

    def attempt(extra: Sequence[str], tag: str) -> Path:
        path = build(extra, tag)
        v = judge(detect(path))
        ok = judge.passes(v)
        trials.append(Trial(tuple(extra), v.map50, v.map50_95, v.drop.drop, v.drop.low, v.drop.high, ok))
        log(f"  {target} ({n_layers(len(extra), 'extra ')} float): drop {v.drop.text()} "
            f"(bar {judge.max_drop:g} on the upper end and the drop) -> {'pass' if ok else 'over'}")
        return path

    result = lambda ranking=(), stability=None: GateResult(target, judge.max_drop, judge.kind,  # noqa: E731
                                                           tuple(trials), tuple(ranking), stability)
    first = attempt((), "q0")
    if trials[-1].passed:
        return result(), first
    log(f"  {target}: over the bar; ranking its INT8 layers by sensitivity")
    ranking, stability = rank(first)
    for k in FALLBACK_STEPS if steps is None else steps:
        if k > len(ranking):
            break
        path = attempt([n for n, _ in ranking[:k]], f"q{k}")
        if trials[-1].passed:
            return result(ranking, stability), path
    return result(ranking, stability), None
