"""Build stage: the FP32 ONNX → ``<stem>.int8.onnx`` (TensorRT form) and ``<stem>.int8-cpu.onnx`` (CPU form).

Both forms come from one calibration pass (cached in ``<stem>.calib.json``). INT8 is built for the
bundled demo (calibrated on its data.yaml's train split, gated on its val split) and otherwise when
``--int8`` is given with ``--data``. Each form goes through the accuracy gate (:mod:`exporters.accuracy`):
past ``--max-map-drop`` its most sensitive layers are kept float, stepwise; a form still over the bar is
withheld with its figures (an older file and the engine built from it are removed), and the other form
and the later stages go on. The accuracy report (``<stem>.accuracy.json`` / ``.md``) is written at the
end of this stage when ``--data`` is given.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.errors import ArtifactWithheld

from . import evidence
from .records import NOT_ASKED


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
            "exclude": list(q.exclude), "max_map_drop": q.max_map_drop, "data": evidence.data_fingerprint(b)}


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
        import onnx

        from .quantize import load_or_calibrate

        q = b.cfg.quantize
        model = onnx.load(str(b.path("onnx")))
        ranges, source = load_or_calibrate(b.path("onnx"), model, b.metadata, q.calib, q.cache, b.log,
                                           evidence.show_progress())
        return model, ranges, source

    return evidence.cached(b, "calibration", make)


def _make(b, target, final: Path):
    from engine.metadata import Precision

    from .accuracy import run_gate, score_onnx, sensitivity
    from .build import Outcome
    from .io import temp_prefix
    from .quantize import decode_tail, match_nodes
    from .records import Check

    q = b.cfg.quantize
    fp32 = b.path("onnx")
    model, ranges, source = _calibration(b)
    tail = decode_tail(model)
    keep = tail + [n for n in match_nodes(model, q.exclude) if n not in tail]
    b.log(f"INT8 {target.value} form: {len(tail)} decode-tail nodes kept float"
          + (f", plus {len(keep) - len(tail)} from --exclude" if len(keep) > len(tail) else ""))
    sample: list[np.ndarray] = []

    def rank(first: Path) -> list[tuple[str, float]]:
        if not sample:  # a few calibration images (not val ones: the gate must not tune on its own test set)
            from calibration.readers import CalibrationImages

            meta = b.metadata
            for x in CalibrationImages(source, meta.imgsz, meta.batch, show_progress=False, log=lambda s: None):
                sample.append(x)
                if len(sample) == 8:
                    break
        return sensitivity(fp32, first, sample)

    items, ref = evidence.val_items(b), evidence.reference(b)
    int8_meta = b.metadata.replace(precision=Precision.INT8)
    with tempfile.TemporaryDirectory(prefix=temp_prefix("int8"), dir=final.parent) as tmp:
        build = _builder(fp32, ranges, target, keep, int8_meta, Path(tmp), final.name)
        gate, passed = run_gate(target.value, build, lambda p: score_onnx(p, items, evidence.show_progress()), ref,
                                q.max_map_drop, rank, log=b.log)
        last = gate.final
        figures = {"map50": round(last.map50, 5), "map50_95": round(last.map50_95, 5),
                   "drop_points": round(last.drop, 3), "fp32_map50_95": round(ref.map50_95, 5),
                   "val_images": ref.n_images, "layers_kept_float": len(last.kept_float),
                   "calibration": f"{q.calib.method.value} on {ranges.n_images} images ({source.description})"}
        check = Check("accuracy gate", gate.passed, gate.summary(), {**figures, "gate": gate.to_dict()})
        if passed is None:
            raise ArtifactWithheld(
                f"INT8 accuracy gate: {gate.summary()}",
                "calibrate on more images like the deployment's (--calib, --calib-images), try --calib-method "
                "entropy or percentile, keep more layers float (--exclude '/model.23/*'), or allow more loss "
                "(--max-map-drop)", (check,), figures)
        os.replace(passed, final)  # same folder, so atomic: never a half-written INT8 file
    return Outcome(final, (check,), figures)


def _builder(fp32: Path, ranges, target, keep: Sequence[str], int8_meta, tmp: Path, name: str):
    """``build(extra_float, tag)`` for :func:`exporters.accuracy.run_gate`: quantize, check, stamp metadata."""
    import onnx

    from engine.errors import ExportError

    from .onnx_export import write_metadata
    from .quantize import QuantTarget, int8_metadata, quantize_model, tensorrt_problems

    def build(extra: Sequence[str], tag: str) -> Path:
        path = tmp / tag / name  # the artifact's own name, so the runtime loads it as this kind
        path.parent.mkdir()
        quantize_model(fp32, ranges, target, [*keep, *extra], path)
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
