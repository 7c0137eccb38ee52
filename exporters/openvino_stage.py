"""Build stage: OpenVINO IRs beside the other artifacts (on where openvino is installed; ``--no-openvino`` skips them).

``<stem>_openvino/`` is the FP32 ONNX converted by OpenVINO's own converter (``--openvino-fp16`` stores
its weights as FP16). It is delivered when its detections agree with the ONNX's (:mod:`exporters.agreement`,
both run in f32 on the CPU: the conversion is judged) and, with ``--data``, its mAP holds (the FP16
graph's bar, :data:`exporters.fp16.MAX_MAP_DROP`).

When this build makes INT8 (the demo, or ``--int8 --data``), ``<stem>.int8_openvino/`` is quantized by
NNCF from the same calibration images as the ONNX INT8 forms and goes through the same accuracy gate
(``--max-map-drop``, ``--exclude``, the fallback that keeps the most sensitive layers float); over the
bar it is withheld with its figures. This stage runs before the ONNX INT8 stage, whose accuracy report
(``<stem>.accuracy.json`` / ``.md``) then lists both IRs too.

Skipped with the reason in the report: not asked for, the ``openvino`` package (or, for INT8, ``nncf``)
not installed, or the FP32 ONNX withheld.
"""
from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

from engine.errors import ArtifactWithheld

from . import evidence
from .records import NOT_ASKED

INSTALL = "pip install -e .[openvino] (openvino and nncf)"


def run(b) -> None:
    from engine.artifacts import FP32_IR, INT8_IR

    opts = b.cfg.openvino
    keys = (FP32_IR.key, INT8_IR.key)
    if opts.wanted is False:
        for key in keys:
            b.skip(key, f"{NOT_ASKED} (--no-openvino)")
        return
    if not opts.installed():
        for key in keys:
            b.skip(key, "the openvino package is not installed", INSTALL)
        return
    b.produce(FP32_IR.key, lambda final: _make_fp32(b, final), _fp32_inputs(b))
    if not b.cfg.quantize.int8:
        b.skip(INT8_IR.key, f"{NOT_ASKED}: it is built with the other INT8 forms (--int8 --data data.yaml)")
    elif importlib.util.find_spec("nncf") is None:
        b.skip(INT8_IR.key, "the nncf package is not installed", INSTALL)
    else:
        b.produce(INT8_IR.key, lambda final: _make_int8(b, final), _int8_inputs(b))


def _fp32_inputs(b) -> dict:
    from .agreement import AgreementConfig
    from .fp16 import MAX_MAP_DROP

    return {"fp16_weights": b.cfg.openvino.fp16_weights, "agreement": AgreementConfig().__dict__,
            "max_map_drop": MAX_MAP_DROP, "data": evidence.data_fingerprint(b),
            "parity_images": str(b.cfg.export.parity_images)}


def _int8_inputs(b) -> dict:
    from calibration.readers import open_source

    q = b.cfg.quantize
    return {"calib": {k: str(v) for k, v in q.calib.__dict__.items()}, "calib_files": open_source(q.calib).fingerprint(),
            "exclude": list(q.exclude), "max_map_drop": q.max_map_drop, "data": evidence.data_fingerprint(b)}


def _meta(b):
    """The FP32 ONNX's metadata, naming it as the IRs' source."""
    from engine.metadata import file_sha256

    fp32 = b.path("onnx")
    return b.metadata.replace(source_sha256=file_sha256(fp32), source_name=fp32.name)


def _make_fp32(b, final: Path):
    from .agreement import onnx_runner
    from .build import Outcome
    from .fp16 import MAX_MAP_DROP
    from .io import staged
    from .openvino import convert, ir_runner, write_ir

    fp32 = b.path("onnx")
    with staged(final) as tmp:
        tmp.mkdir()
        write_ir(convert(fp32), tmp, b.cfg.export.stem, _meta(b), b.cfg.openvino.fp16_weights)
        checks, figures = evidence.detection_checks(
            b, onnx_runner(fp32), ir_runner(tmp), tmp, "OpenVINO IR", MAX_MAP_DROP,
            "report it with the model; the ONNX artifacts are unaffected (--no-openvino skips the IRs)",
            options={"precision": "f32"})  # the conversion judged, not the CPU's bf16 default
    return Outcome(final, checks, figures)


def _make_int8(b, final: Path):
    import onnx

    from calibration.readers import CalibrationImages, open_source
    from engine.metadata import Precision

    from .build import Outcome
    from .gate import run_gate
    from .io import staged, temp_prefix
    from .openvino import int8_model, sensitivity, write_ir
    from .quantize import match_nodes
    from .quantize_stage import GateDetections, gate_figures, gate_judge, rank_images, withheld_fix
    from .records import Check

    q, fp32, meta = b.cfg.quantize, b.path("onnx"), _meta(b)
    source = open_source(q.calib)
    images = CalibrationImages(source, meta.imgsz, meta.batch, show_progress=False, log=lambda s: None)
    exclude = match_nodes(onnx.load(str(fp32), load_external_data=False), q.exclude)
    b.log(f"OpenVINO INT8: NNCF on {source.description}")
    judge, note = gate_judge(b)  # the ONNX INT8 forms' judge: same images, same bar, same fallback
    detect = GateDetections(b)

    with tempfile.TemporaryDirectory(prefix=temp_prefix("ov-int8"), dir=final.parent) as tmp:
        def build(extra, tag: str) -> Path:
            folder = Path(tmp) / tag / final.name  # the artifact's own name, so the runtime loads it as this kind
            folder.mkdir(parents=True)
            return write_ir(int8_model(fp32, images, [*exclude, *extra]), folder, b.cfg.export.stem,
                            meta.replace(precision=Precision.INT8))

        gate, passed = run_gate("openvino", build, detect, judge,
                                lambda first: sensitivity(fp32, first, rank_images(b, source)), log=b.log)
        figures = {**gate_figures(b, gate, judge, note, detect.last),
                   "calibration": f"NNCF on {source.description}"}
        b.log(f"  {gate.summary()}")
        check = Check("accuracy gate", gate.passed, gate.summary(), {**figures, "gate": gate.to_dict()})
        if passed is None:
            raise ArtifactWithheld(f"OpenVINO INT8 gate: {gate.summary()}", withheld_fix(judge), (check,), figures)
        with staged(final) as target:
            os.replace(passed, target)  # the passing candidate, complete, moved into place
    return Outcome(final, (check,), figures)
