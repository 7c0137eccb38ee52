"""What several stages judge artifacts on, computed once per build: the val split, the FP32 reference
score, the accuracy report, and the images the agreement checks run on.

Each is computed the first time a stage asks for it and kept in ``Build.shared``, so a rerun that
reuses every artifact scores nothing.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

AGREEMENT_IMAGES = 32  # images the detection-agreement checks run on (val images, else the parity images)


def cached(b, key: str, make) -> Any:
    if key not in b.shared:
        b.shared[key] = make()
    return b.shared[key]


def show_progress() -> bool:
    return sys.stderr.isatty()


def val_items(b) -> list | None:
    """The labelled val split of ``--data`` (``None`` without data)."""
    data = b.cfg.quantize.data

    def load():
        if data is None:
            return None
        from engine.eval.datasets import load_split

        return load_split(data, "val")

    return cached(b, "val_items", load)


def fp32_model(b):
    """This build's FP32 ONNX (``onnx.ModelProto``), loaded once: the ``--exclude`` check right after the
    export and the INT8 calibration read the same graph."""
    def load():
        import onnx

        return onnx.load(str(b.path("onnx")))

    return cached(b, "fp32_model", load)


def data_fingerprint(b) -> str | None:
    """A fingerprint of the val split's files (names, sizes, times), for reuse keys."""
    from .reuse import files_digest

    items = val_items(b)
    if items is None:
        return None
    from engine.eval.datasets import label_path_for

    return cached(b, "val_fp", lambda: files_digest([p for i in items for p in (i.path, label_path_for(i.path))]))


# the artifacts the accuracy report lists (the OpenVINO stage runs before the report is written)
REPORT_KEYS = ("onnx", "fp16.onnx", "int8.onnx", "int8-cpu.onnx", "openvino", "int8_openvino")


def write_accuracy_report(b) -> None:
    """``<stem>.accuracy.json`` / ``.md``: the ``.pt``'s mAP beside every scored artifact's (ONNX, OpenVINO IRs).

    Written when ``--data`` was given and some scored artifact was built in this run (a rerun that
    reused them all leaves the last report, which has the same figures).
    """
    from engine.eval.evaluate import MapResult

    from .accuracy import AccuracyReport, score_pt
    from .gate import n_layers

    recs = [b.records[k] for k in REPORT_KEYS if k in b.records and "map50_95" in b.records[k].figures]
    if val_items(b) is None or not recs or all(r.reused for r in recs):
        if b.fp32_changed():  # the last report scored another model: it goes
            b.remove_leftovers(*(b.cfg.export.out / f"{b.cfg.export.stem}.accuracy.{ext}" for ext in ("md", "json")))
        return
    cfg = b.cfg
    calib = next((r.figures["calibration"] for r in recs if "calibration" in r.figures), "-")
    report = AccuracyReport(str(cfg.quantize.data), "val", cfg.quantize.max_map_drop, str(calib))
    src = cfg.export.source
    if src.suffix.lower() == ".pt":
        res = score_pt(src, b.metadata.imgsz, val_items(b), show_progress())
        report.add("pt", "PyTorch .pt (Ultralytics)", src, res, "reference")
        b.log(f"mAP50-95 of {src.name} (Ultralytics): {res.map50_95:.4f}")
    n = len(val_items(b))
    as_map = lambda r: MapResult(r.figures["map50"], r.figures["map50_95"], r.figures.get("val_images", n), 0)  # noqa: E731
    fp32 = next((as_map(r) for r in recs if r.key == "onnx"), None)
    from .gate import GateResult

    for r in recs:
        f = r.figures
        status = "gate reference" if r.key == "onnx" else r.status.value
        if r.delivered and f.get("layers_kept_float"):
            status += f", {n_layers(f['layers_kept_float'])} kept float"
        if f.get("judged_by") == "agreement":
            status += (f" (agreement with FP32: -{f['agreement_drop_points']:.2f} points, "
                       f"upper end {f['drop_high']:.2f})")
        interval = (f["drop_low"], f["drop_high"]) if f.get("judged_by") == "map" and "drop_low" in f else None
        report.add("fp32" if r.key == "onnx" else r.key.removesuffix(".onnx"), r.label, r.path or "", as_map(r), status,
                   None if r.key == "onnx" else fp32, interval)
        report.judged_by = f.get("judge_reason", report.judged_by)
        report.gate_images = f.get("gate_images", report.gate_images)
        for note in (f.get("gate_note"), _class_branch_note(f), _head_trial_note(r.label, f.get("head_trial"))):
            if note and note not in report.notes:
                report.notes.append(note)
        for c in r.checks:
            if "gate" in c.figures:
                gate = GateResult.from_dict(c.figures["gate"])
                report.gates[gate.target] = gate
    _, md = report.write(cfg.export.out, cfg.export.stem)
    b.log(f"accuracy report ({md}):\n" + report.table())


def _class_branch_note(figures: dict) -> str | None:
    """The accuracy report's note on the INT8 forms' class- and box-branch choices (``None`` for other artifacts)."""
    if not figures.get("class_branch"):
        return None
    took_nncf = (figures.get("head_trial") or {}).get("chosen") == "nncf"
    bought = ("; what it buys, measured on two models at 320 and 640 on 600 images each: benchmarks/RESULTS.md, "
              "'The detect head's class branch float'") if figures.get("class_branch_float") else ""
    boxes = (f"; {figures['box_branch']} (benchmarks/RESULTS.md, 'YOLO26')" if figures.get("box_branch_float")
             else "")
    whose = "a form whose head trial took NNCF's treatment" if took_nncf else "the ONNX INT8 forms"
    return f"{whose}: {figures['class_branch']}{bought}{boxes}"


def _head_trial_note(label: str, trial: dict | None) -> str | None:
    """The accuracy report's note on an INT8 form's head trial (``quantize_stage.HeadTrial``): both scores."""
    if not trial:
        return None
    if not trial.get("tried"):
        return f"{label}: head trial skipped: {trial['skipped']}" if trial.get("skipped") else None
    ext, nncf = trial["extremes"], trial["nncf"]
    cls = trial.get("class_branch_int8")
    ours = "the head's extremes" + (" and the class branch float" if cls else "")
    theirs = f"the head as NNCF quantizes it ({trial.get('method', 'the method')} ranges" + (
        ", the class branch INT8)" if cls else ")")
    chosen = f"kept {ours}" if trial["chosen"] == "extremes" else f"took {theirs}"
    return (f"{label}: first candidate with {ours} lost {ext['drop']:.2f} points ({ext['low']:.2f} to "
            f"{ext['high']:.2f}); with {theirs} {nncf['drop']:.2f} ({nncf['low']:.2f} to {nncf['high']:.2f}): "
            f"the latter gains {trial['nncf_gain']:+.2f} ({trial['nncf_gain_low']:+.2f} to "
            f"{trial['nncf_gain_high']:+.2f}), so the build {chosen} (the alternative only when that whole interval "
            "is above zero, judged on these images; benchmarks/RESULTS.md, 'The head trial, kept')")


def reference_detections(b) -> list | None:
    """The FP32 ONNX's per-image detections on the val split (``None`` without data): the INT8 gate pairs
    each form's detections with them image by image."""
    if val_items(b) is None:
        return None

    def make():
        from .accuracy import detect_onnx

        return detect_onnx(b.path("onnx"), val_items(b), show_progress())

    return cached(b, "reference_dets", make)


def reference(b):
    """mAP of the FP32 ONNX on the val split (``None`` without data)."""
    if val_items(b) is None:
        return None

    def make():
        from dataclasses import replace

        from .accuracy import score_detections

        res = score_detections(val_items(b), reference_detections(b))
        b.log(f"mAP50-95 of {b.path('onnx').name}: {res.map50_95:.4f}")
        rec = b.records["onnx"]  # the reference's own figures join its record
        b.records["onnx"] = replace(rec, figures={**rec.figures, "map50": round(res.map50, 5),
                                                  "map50_95": round(res.map50_95, 5), "val_images": res.n_images})
        return res

    return cached(b, "reference", make)


def check_images(b, n: int = AGREEMENT_IMAGES) -> np.ndarray:
    """``n`` letterboxed float NCHW images for agreement checks: the val split's, else the parity images."""
    def make():
        from .agreement import agreement_images
        from .parity import parity_inputs

        items = val_items(b)
        if items:
            from engine.eval.datasets import read_image

            return agreement_images([read_image(i.path) for i in items[:n]], b.metadata.imgsz)
        return parity_inputs(b.metadata.imgsz, b.cfg.export.parity_images, n)

    return cached(b, f"check_images_{n}", make)


def map_check(b, path: Path, name: str, max_drop: float, **options):
    """Score ``path`` on the val split against the FP32 reference: ``(Check, figures, MapResult)``;
    ``options`` go to its backend."""
    from .accuracy import drop_points, score_onnx
    from .records import Check

    ref = reference(b)
    res = score_onnx(path, val_items(b), show_progress(), **options)
    drop = drop_points(ref, res)
    ok = drop <= max_drop + 1e-9
    figures = {"map50": round(res.map50, 5), "map50_95": round(res.map50_95, 5), "drop_points": round(drop, 3),
               "fp32_map50_95": round(ref.map50_95, 5), "val_images": res.n_images}
    summary = (f"mAP50-95 {res.map50_95:.4f} vs FP32 {ref.map50_95:.4f} on {res.n_images} val images: "
               f"{'loses' if drop >= 0 else 'gains'} {abs(drop):.2f} points (bar {max_drop:g})")
    return Check(name, ok, summary, figures), figures, res


def detection_checks(b, reference, candidate, path: Path, what: str, max_drop: float, fix: str,
                     options: dict | None = None):
    """Does a graph show what the FP32 ONNX shows? Its detections after NMS (``candidate``, a raw-output
    runner) against ``reference``'s on the check images (:mod:`exporters.agreement`), and with ``--data``
    the mAP of ``path`` against FP32's (at most ``max_drop`` points). Returns ``(checks, figures)``.

    Raises:
        ArtifactWithheld: a check failed (``what`` names the graph in the message, ``fix`` is its fix).

    ``options`` go to the backend that scores ``path`` (an IR in f32: the conversion is judged, not bf16).
    """
    from engine.errors import ArtifactWithheld

    from .agreement import compare_runners
    from .records import Check

    agree = compare_runners(reference, candidate, check_images(b), b.metadata.batch)
    checks = [Check("detections vs FP32", agree.ok, agree.summary(), agree.figures())]
    figures = {"agreement": round(agree.agreement, 5)}
    b.log(f"{what}: {agree.summary()} -> {'OK' if agree.ok else 'FAIL'}")
    if agree.ok and val_items(b) is not None:
        check, figs, _ = map_check(b, path, "mAP vs FP32", max_drop, **(options or {}))
        checks.append(check)
        figures.update(figs)
        b.log(f"{what}: {check.summary} -> {'OK' if check.passed else 'FAIL'}")
    failed = [c for c in checks if not c.passed]
    if failed:
        raise ArtifactWithheld(f"the {what}'s output differs from FP32's: {failed[0].summary}", fix, checks, figures)
    return tuple(checks), figures
