"""The INT8 part of build stage 2: one calibration pass, both forms, each through the gate, the report rows.

Called by :mod:`exporters.quantize_stage` with the FP32 graph, the labelled val images and FP32's
detections on them. Calibration is one NNCF statistics pass (cached); each form is written from those
ranges (:func:`exporters.quantize.quantize_model`), judged by :mod:`exporters.gate` on every val image,
and renamed into place only when it passes; a withheld form's stale file and engine are removed.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

METHOD = ("NNCF {method} statistics on {n} calibration images ({source}); TensorRT form: NVIDIA's Q/DQ placement, "
          "{float_dtype} elsewhere; CPU form: ONNX Runtime's QDQ with SiLU-aware conv ranges. Alternatives measured "
          "(NNCF's own graphs, ModelOpt, Ultralytics' OpenVINO INT8): benchmarks/RESULTS.md, 'INT8'")


def build_int8_forms(model, meta, fp32: Path, opts, items: Sequence, ref_dets: Sequence, report, ref, ctx,
                     show: bool) -> None:
    """Calibrate, build, gate and write both INT8 forms; add their rows and gates to ``report``.

    ``opts`` is :class:`exporters.quantize_stage.QuantizeOptions`; a withheld form is named in
    ``report.gates`` and left for the stage to turn into the build's deferred failure.
    """
    from calibration.readers import CalibrationImages
    from engine.metadata import Precision

    from .accuracy import detect_onnx, score_detections
    from .gate import MIN_GATE_IMAGES, make_judge, run_gate
    from .quantize import QuantTarget, decode_tail, load_or_calibrate, match_nodes
    from .sensitivity import RANK_IMAGES, rank_layers

    cfg = ctx.info["config"]
    ranges, source = load_or_calibrate(fp32, model, meta, opts.calib, opts.cache, ctx.log, show)
    tail = decode_tail(model)
    keep = tail + [n for n in match_nodes(model, opts.exclude) if n not in tail]
    ctx.log(f"INT8: {len(tail)} decode-tail nodes kept float"
            + (f", plus {len(keep) - len(tail)} from --exclude" if len(keep) > len(tail) else ""))
    report.calibration = METHOD.format(method=opts.calib.method.value, n=ranges.n_images, source=source.description,
                                       float_dtype=opts.int8_float.upper())
    ctx.info["calibration"] = {"cache": str(opts.cache), "images": ranges.n_images, "method": opts.calib.method.value}
    report.gate_images = len(items)
    if len(items) < MIN_GATE_IMAGES:
        note = (f"the gate judges INT8 on {len(items)} labelled images, fewer than {MIN_GATE_IMAGES}: its drop "
                f"interval is wide, so a good form may be withheld (add images to the val split of {opts.data})")
        report.notes.append(note)
        ctx.log(f"warning: {note}")
    judge = make_judge(items, ref_dets, ref.map50_95, opts.max_map_drop)
    report.judged_by = judge.reason
    if judge.kind == "agreement":
        ctx.log(f"warning: {judge.reason}")
    sample: list[np.ndarray] = []

    def rank(first: Path):
        if not sample:  # calibration images, never val ones: the gate must not tune on its own test set
            for x in CalibrationImages(source, meta.imgsz, meta.batch, show_progress=False, log=lambda s: None):
                sample.append(x)
                if len(sample) == RANK_IMAGES:
                    break
        return rank_layers(fp32, first, sample)

    seen: dict[Path, list] = {}

    def detect(path: Path) -> list:
        seen[path] = detect_onnx(path, items, show)
        return seen[path]

    int8_meta = meta.replace(precision=Precision.INT8)
    with tempfile.TemporaryDirectory(prefix=".int8-", dir=cfg.out) as tmp:
        for target in (QuantTarget.TENSORRT, QuantTarget.CPU):
            t = time.perf_counter()
            build = _builder(fp32, ranges, target, keep, int8_meta, Path(tmp), opts.int8_float)
            gate, passed = run_gate(target.value, build, detect, judge, rank, log=ctx.log)
            report.gates[target.value] = gate
            final = cfg.out / f"{cfg.stem}{target.suffix}"
            last = list(seen)[-1]  # the final trial's candidate
            kept = len(gate.final.kept_float)
            if passed is not None:
                os.replace(passed, final)  # same folder, so atomic: never a half-written INT8 file
                ctx.artifacts[target.suffix[1:]] = final
                status = f"ok, {kept} layers kept float" if kept else "ok"
                ctx.log(f"wrote {final} ({final.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - t:.1f}s)")
            else:
                status = "withheld: over the bar"
                _remove_stale(cfg.out, cfg.stem, target, ctx)
            if judge.kind == "agreement":
                status += f" (agreement with FP32: -{gate.final.drop:.2f} points, upper end {gate.final.high:.2f})"
            interval = (gate.final.low, gate.final.high) if judge.kind == "map" else None
            report.add(target.suffix[1:-5], target.label, final if passed is not None else "",
                       score_detections(items, seen[last]), status, ref, interval)


def _remove_stale(out: Path, stem: str, target, ctx) -> None:
    """A withheld form's file from an earlier build, and the engine made from it, must not stay as if current."""
    from engine.backends.trt_sidecar import sidecar_path

    from .quantize import QuantTarget

    stale = [out / f"{stem}{target.suffix}"]
    if target is QuantTarget.TENSORRT:
        engine = out / f"{stem}.int8.engine"
        stale += [engine, sidecar_path(engine)]
    for path in stale:
        if path.exists():
            path.unlink()
            ctx.log(f"removed {path} left by an earlier build: this build's {target.value} INT8 form failed the gate")


def _builder(fp32: Path, ranges, target, keep: Sequence[str], int8_meta, tmp: Path, float_dtype: str):
    """``build(extra_float, tag)`` for :func:`exporters.gate.run_gate`: quantize, check, stamp metadata."""
    import onnx

    from engine.errors import ExportError

    from .onnx_export import write_metadata
    from .quantize import QuantTarget, int8_metadata, quantize_model, tensorrt_problems

    def build(extra: Sequence[str], tag: str) -> Path:
        path = tmp / f"{target.value}-{tag}.onnx"
        quantize_model(fp32, ranges, target, [*keep, *extra], path, float_dtype)
        q = onnx.load(str(path))
        if target is QuantTarget.TENSORRT:
            problems = tensorrt_problems(q)
            if problems:
                raise ExportError(f"the TensorRT INT8 form has Q/DQ that TensorRT rejects: {'; '.join(problems[:3])}",
                                  "report this with the model; meanwhile --exclude the nodes named")
        write_metadata(q, int8_metadata(int8_meta, q))
        onnx.save(q, str(path))
        return path

    return build
