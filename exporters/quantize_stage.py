"""Build stage: the FP32 ONNX → ``<stem>.int8.onnx`` (TensorRT form) and ``<stem>.int8-cpu.onnx`` (CPU form).

Both forms come from one NNCF calibration pass (cached in ``<stem>.calib.json``). INT8 is built for the
bundled demo (calibrated on its data.yaml's train split, gated on its val split) and otherwise when
``--int8`` is given with ``--data``. Each form goes through the accuracy gate (:mod:`exporters.gate`):
its drop against the FP32 ONNX comes with a paired-bootstrap interval over every val image, and past
``--max-map-drop`` (on the interval's upper end) its most sensitive layers (:mod:`exporters.sensitivity`)
are kept float, stepwise. When FP32's own mAP is too low to judge a drop, the forms are judged by
agreement with FP32's detections instead. A form still over the bar is withheld with its figures (an
older file and the engine built from it are removed), and the other form and the later stages go on.
The accuracy report (``<stem>.accuracy.json`` / ``.md``) is written at the end of this stage when
``--data`` is given.
"""
from __future__ import annotations

import itertools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from engine.errors import ArtifactWithheld

from . import evidence
from .records import NOT_ASKED

if TYPE_CHECKING:
    from calibration.readers import CalibrationSource

METHOD = ("NNCF {method} statistics on {n} calibration images ({source}); TensorRT form: NVIDIA's Q/DQ placement, "
          "{float_dtype} elsewhere; CPU form: ONNX Runtime's QDQ with SiLU-aware conv ranges; in both the decode tail "
          "and, where cheap, the detect head's class branch float, with the head's extremes as ranges (where the "
          "calibration kept them), unless the head as NNCF quantizes it scored higher on the gate's images (the "
          "report's notes). Alternatives measured "
          "(NNCF's own graphs, ModelOpt, Ultralytics' OpenVINO INT8): benchmarks/RESULTS.md, 'INT8'")
WITHHELD_FIX = ("judge on more val images (the interval narrows), calibrate on more images like the deployment's "
                "(--calib, --calib-images), try --calib-method minmax or percentile, keep layers float (--exclude), "
                "or allow more loss (--max-map-drop)")
AGREEMENT_FIX = ("FP32 scored too low on these labels to judge by mAP, so the form was judged by agreement with FP32 "
                 "(a fixed bar: --max-map-drop does not apply): check that --data holds the model's own classes and "
                 "enough labelled images, calibrate on images like the deployment's (--calib, --calib-images), or "
                 "keep layers float (--exclude)")


def withheld_fix(judge) -> str:
    """The fix line of a withheld INT8 form: what can move the bar it was judged by."""
    return AGREEMENT_FIX if judge.kind == "agreement" else WITHHELD_FIX


def run(b) -> None:
    from .quantize import QuantTarget

    if not b.cfg.quantize.int8:
        for target in QuantTarget:
            b.skip(target.suffix[1:], f"{NOT_ASKED}: add --int8 --data path/to/data.yaml (the accuracy gate "
                                      "needs a labelled val split)")
    else:
        for target in QuantTarget:
            _form(b, target)
    evidence.write_accuracy_report(b)


def _inputs(b) -> dict:
    from calibration.readers import open_source

    q = b.cfg.quantize
    return {"calib": {k: str(v) for k, v in q.calib.__dict__.items()}, "calib_files": open_source(q.calib).fingerprint(),
            "exclude": list(q.exclude), "max_map_drop": q.max_map_drop, "int8_float": q.int8_float,
            "data": evidence.data_fingerprint(b)}


def _form(b, target) -> None:
    from engine.artifacts import INT8_ENGINE
    from engine.backends.trt_sidecar import sidecar_path

    key = target.suffix[1:]
    out, stem = b.cfg.export.out, b.cfg.export.stem
    # a withheld TensorRT form must not leave the engine an earlier build made from it
    stale = [INT8_ENGINE.path(out, stem), sidecar_path(INT8_ENGINE.path(out, stem))] if key == "int8.onnx" else []
    b.produce(key, lambda final: _make(b, target, final), _inputs(b), stale=stale)


def _calibration(b):
    """The calibrated ranges and their source, once per build (both forms use them)."""
    def make():
        from .quantize import load_or_calibrate

        q = b.cfg.quantize
        model = evidence.fp32_model(b)
        ranges, source = load_or_calibrate(b.path("onnx"), model, b.metadata, q.calib, q.cache, b.log,
                                           evidence.show_progress())
        return model, ranges, source

    return evidence.cached(b, "calibration", make)


def gate_judge(b):
    """The gate's judge (labels, or agreement with FP32 when its mAP cannot judge) and the note on few images."""
    def make():
        from .gate import MIN_GATE_IMAGES, make_judge

        items, q = evidence.val_items(b), b.cfg.quantize
        note = ""
        if len(items) < MIN_GATE_IMAGES:
            note = (f"the gate judges INT8 on {len(items)} labelled images, fewer than {MIN_GATE_IMAGES}: its drop "
                    f"interval is wide, so a good form may be withheld (add images to the val split of {q.data})")
            b.log(f"warning: {note}")
        try:
            judge = make_judge(items, evidence.reference_detections(b), evidence.reference(b).map50_95, q.max_map_drop)
        except ValueError as e:
            raise ArtifactWithheld(f"INT8 accuracy gate: {e}", "check that --data's classes are the model's and "
                                   "that the checkpoint is trained") from e
        if judge.kind == "agreement":
            b.log(f"warning: {judge.reason}")
        return judge, note

    return evidence.cached(b, "int8_judge", make)


def _make(b, target, final: Path):
    from engine.metadata import Precision

    from .build import Outcome
    from .gate import LEVEL, n_layers, run_gate
    from .io import temp_prefix
    from .quantize import form_float, match_nodes
    from .records import Check

    q = b.cfg.quantize
    model, ranges, source = _calibration(b)
    base, classes, boxes = _default_float(b, model)
    asked = match_nodes(model, q.exclude)
    keep = base + [n for n in asked if n not in base]
    excluded = len(keep) - len(base)
    b.log(f"INT8 {target.value} form: {len(base) - len(classes.nodes) - len(boxes.nodes)} decode-tail nodes kept "
          f"float; {classes.summary()}" + (f"; {boxes.summary()}" if boxes.nodes else "")
          + (f"; plus {excluded} nodes from --exclude" if excluded else ""))
    judge, note = gate_judge(b)
    detect = GateDetections(b)
    int8_meta = b.metadata.replace(precision=Precision.INT8)
    with tempfile.TemporaryDirectory(prefix=temp_prefix("int8"), dir=final.parent) as tmp:
        builder = lambda nodes, extremes: _builder(b.path("onnx"), ranges, target, nodes, int8_meta,  # noqa: E731
                                                   Path(tmp), final.name, q.int8_float, extremes)
        named = set(asked)
        rule_classes = [n for n in classes.nodes if n not in named]  # --exclude'd nodes stay float either way
        head = head_trial(target.value, keep, rule_classes, bool(ranges.extremes), builder, detect, judge, b.log,
                          q.calib.method.value)
        keep = head.keep
        class_float = bool(classes.nodes) and (head.extremes or not head.class_branch)  # as delivered
        gate, passed = run_gate(target.value, head.build, detect, judge,
                                _ranker(b, source, [*keep, *form_float(model, target)]), log=b.log)
        last = gate.final
        method = METHOD.format(method=q.calib.method.value, n=ranges.n_images, source=source.description,
                               float_dtype=q.int8_float.upper())
        figures = {**gate_figures(b, gate, judge, note, detect.last),
                   "calib_method": q.calib.method.value, "int8_float": q.int8_float, "calibration": method,
                   "class_branch": classes.summary() if class_float or not classes.nodes else
                   "the detect head's class branch quantized: the head trial took the head as NNCF quantizes it",
                   "class_branch_found": classes.found,
                   "class_branch_float": class_float,
                   "class_branch_mac_share": None if classes.share is None else round(classes.share, 4),
                   "box_branch": boxes.summary(), "box_branch_float": bool(boxes.nodes),
                   "box_branch_direct": boxes.direct, "head_trial": head.figures()}
        b.log(f"  {gate.summary()}")
        # short enough for the build table's note column (the Δ column shows the drop and its interval)
        summary = (f"NNCF {q.calib.method.value}, " + ("class branch float, " if class_float else "")
                   + ("head as NNCF quantizes it, " if not head.extremes else "")
                   + ("box branch float, " if boxes.nodes else "")
                   + f"{n_layers(len(last.kept_float), 'more ' if class_float or boxes.nodes else '')} float"
                   + (f", {q.int8_float.upper()} elsewhere" if target.value == "tensorrt" else "") + "; "
                   + ("by agreement with FP32: " if judge.kind == "agreement" else "")
                   + (f"{LEVEL:.0%} upper end {last.high:.2f}" if last.high >= last.drop  # what decided it
                      else f"measured drop {last.drop:.2f} (over its {LEVEL:.0%} upper end {last.high:.2f})")
                   + f" {'<=' if gate.passed else '>'} bar {judge.max_drop:g}")
        check = Check("accuracy gate", gate.passed, summary, {**figures, "gate": gate.to_dict()})
        if passed is None:
            raise ArtifactWithheld(f"INT8 gate: {summary}", withheld_fix(judge), (check,), figures)
        os.replace(passed, final)  # same folder, so atomic: never a half-written INT8 file
    return Outcome(final, (check,), figures)


@dataclass(frozen=True)
class HeadTrial:
    """Which of two head treatments an INT8 form is built with, and what each scored on the gate's images.

    The project's (``extremes``): the detect head's tensors take the extremes over all calibration images
    and its class branch stays float where cheap. The alternative: the head as NNCF's own quantizer treats
    it, every tensor on the calibration method's estimate (for mean-minmax, the mean of each image's
    extremes) and the class branch INT8. The first keeps the strongest object evidence (the signs model at
    320: 0.20 points lost against 0.79); the second clips the head's rare peaks, which paid on the demo at
    640, twice its training size (benchmarks/RESULTS.md, "The head trial, kept"). The alternative is taken
    only when the gain's whole interval is above zero on the gate's images, so noise does not move a model
    off the project's treatment (the delivered form's figures, judged on the same images, are then a little
    optimistic).
    """

    extremes: bool  # the project's treatment kept
    keep: tuple[str, ...]  # the nodes the chosen treatment keeps float
    build: Callable[[Sequence[str], str], Path]  # the chosen treatment's builder (its first trial cached)
    class_branch: bool = False  # the alternative quantizes a class branch the project keeps float
    method: str = ""  # the calibration method (its estimate is the alternative's head ranges)
    default: Any = None  # Verdict of the project's treatment (None: no alternative scored)
    alternative: Any = None  # Verdict of the alternative
    gain: Any = None  # PairedDrop of the project's treatment against the alternative (negative: the alternative gains)
    skipped: str = ""  # why no alternative was scored

    def figures(self) -> dict:
        """The trial for the report: both drops and the alternative's gain, with intervals."""
        if self.default is None or self.alternative is None:
            return {"tried": False, "chosen": "extremes", "skipped": self.skipped}
        drop = lambda v: {"drop": round(v.drop.drop, 3), "low": round(v.drop.low, 3),  # noqa: E731
                          "high": round(v.drop.high, 3), "map50_95": round(v.map50_95, 4)}
        return {"tried": True, "chosen": "extremes" if self.extremes else "nncf", "extremes": drop(self.default),
                "nncf": drop(self.alternative), "class_branch_int8": self.class_branch, "method": self.method,
                "nncf_gain": round(-self.gain.drop, 3), "nncf_gain_low": round(-self.gain.high, 3),
                "nncf_gain_high": round(-self.gain.low, 3)}


def head_trial(target: str, keep: Sequence[str], class_nodes: Sequence[str], has_extremes: bool, builder,
               detect, judge, log: Callable[[str], None] = print, method: str = "mean-minmax") -> HeadTrial:
    """Build the form's first candidate both ways (:class:`HeadTrial`) and keep the project's treatment unless
    the alternative scores higher with its whole paired interval above zero.

    Args:
        keep: the nodes the project's treatment keeps float (the class branch among them).
        class_nodes: the class branch's nodes the rule keeps float (quantized in the alternative; the caller
            leaves out those ``--exclude`` names, which stay float in both).
        has_extremes: the calibration kept each tensor's extremes (a cache without them: no alternative).
        builder: ``builder(keep, head_extremes)`` -> ``build(extra, tag)`` for :func:`exporters.gate.run_gate`.
        detect, judge: the gate's.
        method: the calibration method; with ``minmax`` the extremes are its ranges.
    """
    from .gate import LEVEL
    from .map_bootstrap import match_table, paired_drop

    build = builder(list(keep), True)
    if not has_extremes or (not class_nodes and method == "minmax"):
        why = ("the calibration ranges carry no extremes (a cache written before they were kept)" if not has_extremes
               else "with minmax ranges and no float class branch the alternative is the same form")
        log(f"  {target}: head trial skipped: {why}")
        return HeadTrial(True, tuple(keep), build, method=method, skipped=why)
    def reusing(build, first: Path):  # the gate's first trial (no extra float layers) is the one built here
        return lambda extra, tag: first if not extra else build(extra, tag)

    quantized = set(class_nodes)
    alt_keep = tuple(n for n in keep if n not in quantized)
    alt_build = builder(list(alt_keep), False)
    first = build((), "q0")
    dets = detect(first)
    v = judge(dets)
    try:
        alt_first = alt_build((), "h0")
    except Exception as e:  # noqa: BLE001 - the project's treatment is built and stands; the log says why
        why = f"the alternative did not build ({type(e).__name__}: {str(e).splitlines()[0][:160]})"
        log(f"  {target}: head trial: {why}; the project's treatment stands")
        return HeadTrial(True, tuple(keep), reusing(build, first), bool(class_nodes), method, v, skipped=why)
    alt_dets = detect(alt_first)
    alt_v = judge(alt_dets)
    gain = paired_drop(match_table(judge.labels, dets), match_table(judge.labels, alt_dets), judge.resamples, LEVEL)
    extremes = not gain.high < 0
    ours = "head with the extremes" + (", class branch float" if class_nodes else "")
    theirs = f"as NNCF quantizes it ({method} ranges" + (", class branch INT8)" if class_nodes else ")")
    log(f"  {target}: {ours}: drop {v.drop.text()}; {theirs}: drop {alt_v.drop.text()}; the latter gains "
        f"{-gain.drop:+.2f} ({-gain.high:+.2f} to {-gain.low:+.2f}) -> " + ("kept the extremes" if extremes else "taken"))
    chosen = reusing(build, first) if extremes else reusing(alt_build, alt_first)
    return HeadTrial(extremes, tuple(keep) if extremes else alt_keep, chosen, bool(class_nodes), method, v, alt_v,
                     gain)


def _default_float(b, model):
    """The build's :func:`exporters.quantize.default_float` (once: both forms use it)."""
    from .quantize import default_float

    # the graph's own batch: shapes inferred for batch 1 on a batch-N graph fail, and the class branch's
    # share of the MACs would read as unmeasurable (then quantized)
    shape = (b.metadata.batch or 1, 3, *b.metadata.imgsz)
    return evidence.cached(b, "default_float", lambda: default_float(model, shape))


class GateDetections:
    """The gate's ``detect`` for any INT8 artifact (an ONNX form, an OpenVINO IR): a candidate's per-image
    detections on the val split through the runtime; :attr:`last` holds the final trial's."""

    def __init__(self, b) -> None:
        self.items, self.last = evidence.val_items(b), None
        self._seen: dict[Path, list] = {}  # a candidate judged twice (the head trial's winner) runs once

    def __call__(self, path: Path) -> list:
        from .accuracy import detect_onnx

        if path not in self._seen:
            self._seen[path] = detect_onnx(path, self.items, evidence.show_progress())
        self.last = self._seen[path]
        return self.last


def gate_figures(b, gate, judge, note: str, final_dets) -> dict:
    """The figures every INT8 artifact's record carries (the ONNX forms and the OpenVINO IR): its mAP on
    the labels (``final_dets``: the final trial's per-image detections), the drop with its interval, how
    it was judged, and the layers kept float."""
    from .accuracy import score_detections
    from .gate import LEVEL

    items, ref, last = evidence.val_items(b), evidence.reference(b), gate.final
    res = score_detections(items, final_dets)
    figures = {"map50": round(res.map50, 5), "map50_95": round(res.map50_95, 5),
               "drop_points": round((ref.map50_95 - res.map50_95) * 100.0, 3),
               "drop_low": round(last.low, 3), "drop_high": round(last.high, 3), "interval_level": LEVEL,
               "judged_by": judge.kind, "judge_reason": judge.reason, "gate_images": len(items),
               "gate_note": note, "fp32_map50_95": round(ref.map50_95, 5), "val_images": res.n_images,
               "layers_kept_float": len(last.kept_float), "layers_float": ", ".join(last.kept_float)}
    if judge.kind == "agreement":
        figures["agreement_drop_points"] = round(last.drop, 3)
    return figures


def rank_images(b, source) -> Iterable[np.ndarray]:
    """The calibration images the gate's sensitivity ranking runs on (never val ones: the gate must not
    tune on its own test set): up to :data:`exporters.sensitivity.RANK_IMAGES` of them (in the model's
    batches), decoded again at each pass rather than held (128 model inputs at 640 would hold 630 MB)."""
    return _RankImages(source, b.metadata.imgsz, b.metadata.batch)


@dataclass(frozen=True)
class _RankImages:
    """:func:`rank_images`: an iterable that reads the source's first images each time it is iterated."""

    source: CalibrationSource
    imgsz: tuple[int, int]
    batch: int | None

    def __iter__(self) -> Iterator[np.ndarray]:
        from calibration.readers import CalibrationImages

        from .sensitivity import RANK_IMAGES

        reader = CalibrationImages(self.source, self.imgsz, self.batch, show_progress=False, log=lambda s: None)
        return itertools.islice(iter(reader), -(-RANK_IMAGES // reader.batch))  # batches of reader.batch images


def _ranker(b, source, skip: Sequence[str]):
    """``rank(first_candidate)`` for the gate's fallback, on :func:`rank_images`; ``skip``: nodes the form
    already keeps float (never worth a fallback step)."""
    from .sensitivity import rank_layers

    return lambda first: rank_layers(b.path("onnx"), first, rank_images(b, source), skip)


def _builder(fp32: Path, ranges, target, keep: Sequence[str], int8_meta, tmp: Path, name: str, float_dtype: str,
             head_extremes: bool = True):
    """``build(extra_float, tag)`` for :func:`exporters.gate.run_gate`: quantize, check, stamp metadata."""
    import onnx

    from engine.errors import ExportError

    from .onnx_export import write_metadata
    from .quantize import QuantTarget, int8_metadata, quantize_model, tensorrt_problems

    def build(extra: Sequence[str], tag: str) -> Path:
        path = tmp / tag / name  # the artifact's own name, so the runtime loads it as this kind
        path.parent.mkdir()
        quantize_model(fp32, ranges, target, [*keep, *extra], path, float_dtype, head_extremes)
        q = onnx.load(str(path))
        if target is QuantTarget.TENSORRT:
            problems = tensorrt_problems(q)
            if problems:
                raise ExportError(f"the TensorRT INT8 form has Q/DQ that TensorRT rejects: {'; '.join(problems[:3])}",
                                  "report this with the model; meanwhile --exclude the nodes named")
        write_metadata(q, int8_metadata(int8_meta, q))
        onnx.checker.check_model(q, full_check=True)
        onnx.save(q, str(path))
        return path

    return build
