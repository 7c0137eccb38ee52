"""Build stage: OpenVINO IRs beside the other artifacts (``--openvino``, on by default where openvino is installed).

``<stem>_openvino/`` is the FP32 ONNX converted by OpenVINO (``--openvino-fp16`` stores its weights as
FP16), checked against the ONNX on a few images. When this build makes INT8 (the demo, or ``--int8
--data``), ``<stem>.int8_openvino/`` is quantized by NNCF from the same calibration images and goes
through the same accuracy gate as the ONNX INT8 forms (``--max-map-drop``, ``--exclude``, the fallback
that keeps the most sensitive layers float); its rows join the accuracy report. A withheld INT8 IR is not
written (an older one is deleted), the later stages still run, and the build exits non-zero at the end.
"""
from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

from engine.errors import AccuracyGateError, ConfigError


def add_arguments(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("OpenVINO IRs (x86 CPUs, Intel iGPUs and NPUs)")
    g.add_argument("--openvino", action=argparse.BooleanOptionalAction, default=None,
                   help="write <stem>_openvino/ (FP32 IR) and, when INT8 is built, <stem>.int8_openvino/ (INT8 by "
                        "NNCF, accuracy-gated). None: on when the openvino package is installed")
    g.add_argument("--openvino-fp16", action="store_true",
                   help="store the FP32 IR's weights as FP16 (half the size; OpenVINO computes in the device's precision)")


def enabled(args: argparse.Namespace) -> bool:
    """Whether this build writes IRs; ``--openvino`` without the package is an error."""
    installed = importlib.util.find_spec("openvino") is not None
    if args.openvino and not installed:
        raise ConfigError("--openvino needs the openvino package", "pip install -e .[openvino], or leave out --openvino")
    return installed if args.openvino is None else bool(args.openvino)


def run(args: argparse.Namespace, ctx) -> None:
    from engine.artifacts import FP32_IR
    from engine.metadata import file_sha256

    from .openvino import check_ir, export_openvino
    from .parity import parity_inputs
    from .quantize_stage import options_from_args

    if not enabled(args):
        ctx.log("OpenVINO IRs skipped: pip install -e .[openvino] to write them (or --openvino)")
        return
    cfg = ctx.info["config"]
    fp32: Path = ctx.artifacts["onnx"]
    meta = ctx.info["metadata"].replace(source_sha256=file_sha256(fp32), source_name=fp32.name)
    t = time.perf_counter()
    ir = export_openvino(fp32, cfg.out, meta, args.openvino_fp16)
    ctx.log(check_ir(fp32, ir, parity_inputs(meta.imgsz, cfg.parity_images, 4), meta.imgsz))
    ctx.log(f"wrote {ir}/ ({_size_mb(ir):.1f} MB, {time.perf_counter() - t:.1f}s)")
    ctx.artifacts[FP32_IR.key] = ir
    opts = options_from_args(args, cfg)
    report = ctx.info.get("accuracy")
    items = ref = None
    if report is not None:
        from engine.eval.datasets import load_split

        from .accuracy import score_onnx

        items = load_split(opts.data, "val")
        ref = next(r.result for r in report.rows if r.key == "fp32")
        report.add(FP32_IR.key, FP32_IR.label, ir, score_onnx(ir, items), "ok", ref)
    if not opts.int8:
        ctx.log("OpenVINO INT8 skipped: it is built with the other INT8 forms (--int8 --data data.yaml)")
    elif importlib.util.find_spec("nncf") is None:
        ctx.log("OpenVINO INT8 skipped: it needs nncf (pip install -e .[openvino])")
    else:
        _build_int8(fp32, meta, opts, items, report, ref, ctx)
    if report is not None:
        _, md = report.write(cfg.out, cfg.stem)
        ctx.log(f"accuracy report with the OpenVINO rows: {md}")


def _size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.iterdir()) / 1e6


def _build_int8(fp32: Path, meta, opts, items, report, ref, ctx) -> None:
    import os
    import shutil

    import onnx

    from calibration.readers import CalibrationImages, open_source
    from engine.artifacts import INT8_IR

    from .accuracy import run_gate, score_onnx
    from .openvino import quantize_openvino, sensitivity
    from .quantize import match_nodes

    cfg = ctx.info["config"]
    source = open_source(opts.calib)
    images = CalibrationImages(source, meta.imgsz, meta.batch, show_progress=False, log=lambda s: None)
    exclude = match_nodes(onnx.load(str(fp32), load_external_data=False), opts.exclude)
    ctx.log(f"OpenVINO INT8: NNCF on {source.description}")
    sample: list = []

    def rank(first: Path) -> list[tuple[str, float]]:
        for x in images:  # a few calibration images, never the gate's own val images
            if len(sample) == 8:
                break
            sample.append(x)
        return sensitivity(fp32, first, sample)

    final = INT8_IR.path(cfg.out, cfg.stem)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".ov-int8-", dir=cfg.out) as tmp:
        build = lambda extra, tag: quantize_openvino(fp32, images, cfg.out, meta, [*exclude, *extra],  # noqa: E731
                                                     final=INT8_IR.path(tmp, tag))
        gate, passed = run_gate("openvino", build, lambda p: score_onnx(p, items), ref, opts.max_map_drop, rank,
                                log=ctx.log)
        report.gates["openvino"] = gate
        if passed is not None:
            if final.exists():
                shutil.rmtree(final)
            os.replace(passed, final)  # the candidate folder, complete, renamed into place
            ctx.artifacts[INT8_IR.key] = final
            ctx.log(f"wrote {final}/ ({_size_mb(final):.1f} MB, {time.perf_counter() - t:.1f}s)")
        elif final.exists():
            shutil.rmtree(final)
            ctx.log(f"removed {final} left by an earlier build: this build's OpenVINO INT8 IR failed the gate")
    kept = len(gate.final.kept_float)
    status = (f"ok, {kept} layers kept float" if kept else "ok") if passed is not None else "withheld: over the bar"
    from .quantize_stage import _as_map

    report.add(INT8_IR.key, INT8_IR.label, final if passed is not None else "", _as_map(gate.final, ref), status, ref)
    if passed is None:
        ctx.withheld.add(INT8_IR.key)
        ctx.failures.append(AccuracyGateError(
            f"OpenVINO INT8 accuracy gate: {gate.summary()}. Not written: {final.name}/",
            "calibrate on more images like the deployment's (--calib, --calib-images), keep layers float "
            "(--exclude), or allow more loss (--max-map-drop)"))
