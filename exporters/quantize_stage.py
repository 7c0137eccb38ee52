"""Build stage 2: the FP32 ONNX → ``<stem>.fp16.onnx``, ``<stem>.int8.onnx``, ``<stem>.int8-cpu.onnx``.

The FP16 graph is always built (``--no-fp16`` skips it). INT8 is built for the bundled demo (calibrated
on its data.yaml's train split, gated on its val split) and otherwise when ``--int8`` is given with
``--data``. With ``--data``, every artifact is scored and the accuracy report is written beside them
(``<stem>.accuracy.json`` / ``.md``). An INT8 form over ``--max-map-drop`` after the fallback is not
written (a stale one from an earlier build is removed), the later stages still run on the other
artifacts, and the build exits non-zero at the end, naming the form.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibration.config import DEFAULT_MAX_IMAGES, DEFAULT_VIDEO_EVERY, CalibrationConfig, CalibrationMethod
from engine.errors import AccuracyGateError, ConfigError

from .config import DEMO_DATA, ExportConfig


def add_arguments(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("FP16 and INT8 (INT8 is accuracy-gated; see README, 'INT8')")
    g.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=True,
                   help="write <stem>.fp16.onnx: an FP16 graph with FP32 input/output (what strongly typed "
                        "TensorRT builds FP16 from)")
    g.add_argument("--int8", action=argparse.BooleanOptionalAction, default=None,
                   help="write <stem>.int8.onnx (TensorRT, S8S8) and <stem>.int8-cpu.onnx (ONNX Runtime CPU, U8S8), "
                        "each only if it passes the accuracy gate; needs --data. None: on for the bundled demo only")
    g.add_argument("--data", type=Path, default=None, metavar="YAML",
                   help="YOLO data.yaml: its val split scores every artifact (accuracy report), its train split "
                        "calibrates unless --calib is given. None: the demo's data.yaml when building the demo")
    g.add_argument("--calib", type=Path, default=None, metavar="PATH",
                   help="calibration images: a folder, a .txt image list, a video (every --calib-every frame) "
                        "or a data.yaml (its train split). None: the train split of --data")
    g.add_argument("--calib-method", default=CalibrationMethod.MEAN_MINMAX.value,
                   choices=[m.value for m in CalibrationMethod],
                   help="how activation ranges are estimated (NNCF's estimators; see README, 'INT8')")
    g.add_argument("--int8-float", default="fp16", choices=("fp16", "fp32"),
                   help="the TensorRT INT8 form's layers that are not INT8: fp16 (as ModelOpt; strongly typed "
                        "TensorRT runs each layer in its graph type) or fp32")
    g.add_argument("--calib-images", type=int, default=DEFAULT_MAX_IMAGES, metavar="N",
                   help="at most this many calibration images (a seeded random subset when there are more)")
    g.add_argument("--calib-seed", type=int, default=0, metavar="SEED", help="seed of that subset")
    g.add_argument("--calib-every", type=int, default=DEFAULT_VIDEO_EVERY, metavar="N",
                   help="from a video, every Nth frame")
    g.add_argument("--calib-cache", type=Path, default=None, metavar="FILE",
                   help="tensor-range cache, reused when the model, size, method and images match. "
                        "None: <out>/<stem>.calib.json")
    g.add_argument("--exclude", action="append", default=None, metavar="NODES",
                   help="keep more nodes in float: comma list of op types (Sigmoid), node names or globs "
                        "('/model.23/cv3*'); repeatable. The decode tail is always kept float")
    g.add_argument("--max-map-drop", type=float, default=1.0, metavar="POINTS",
                   help="largest mAP50-95 loss of an INT8 form vs the FP32 ONNX, in points (0-100 scale)")


@dataclass(frozen=True)
class QuantizeOptions:
    """What this stage builds, resolved from the flags (see :func:`options_from_args`)."""

    fp16: bool
    int8: bool
    data: Path | None
    calib: CalibrationConfig | None
    cache: Path
    exclude: tuple[str, ...]
    max_map_drop: float
    int8_float: str = "fp16"  # the TensorRT form's non-INT8 layers


def options_from_args(args: argparse.Namespace, cfg: ExportConfig) -> QuantizeOptions:
    """Resolve the demo defaults and check the flags against each other."""
    from .quantize import parse_excludes

    demo = cfg.weights is None and cfg.onnx is None
    int8 = demo if args.int8 is None else bool(args.int8)
    data = args.data or (DEMO_DATA if demo else None)
    if args.max_map_drop < 0:
        raise ConfigError(f"--max-map-drop {args.max_map_drop} is negative", "use points of mAP50-95, e.g. 1.0")
    if int8 and data is None:
        raise ConfigError("--int8 needs --data data.yaml: INT8 is only written after its accuracy is checked on "
                          "a labelled val split", "add --data path/to/data.yaml (and --calib PATH for other "
                          "calibration images than its train split)")
    calib = None
    if int8:
        calib = CalibrationConfig(source=args.calib or data, max_images=args.calib_images, seed=args.calib_seed,
                                  video_every=args.calib_every, method=CalibrationMethod(args.calib_method))
    cache = args.calib_cache or cfg.out / f"{cfg.stem}.calib.json"
    return QuantizeOptions(bool(args.fp16), int8, data, calib, cache, parse_excludes(args.exclude), args.max_map_drop,
                           getattr(args, "int8_float", "fp16"))


def run(args: argparse.Namespace, ctx) -> None:
    import onnx

    from engine.metadata import file_sha256

    from .accuracy import AccuracyReport, detect_onnx, score_detections, score_onnx, score_pt

    cfg: ExportConfig = ctx.info["config"]
    opts = options_from_args(args, cfg)
    fp32: Path = ctx.artifacts["onnx"]
    meta = ctx.info["metadata"].replace(source_sha256=file_sha256(fp32), source_name=fp32.name)
    model = onnx.load(str(fp32))
    show = sys.stderr.isatty()

    items, report, ref, ref_dets = None, None, None, None
    if opts.data is not None:
        from engine.eval.datasets import load_split

        items = load_split(opts.data, "val")
        report = AccuracyReport(str(opts.data), "val", opts.max_map_drop, "-")
        if cfg.source.suffix.lower() == ".pt":
            res = score_pt(cfg.source, meta.imgsz, items, show)
            report.add("pt", "PyTorch .pt (Ultralytics)", cfg.source, res, "reference")
            ctx.log(f"mAP50-95 of {cfg.source.name} (Ultralytics): {res.map50_95:.4f}")
        ref_dets = detect_onnx(fp32, items, show)  # kept: the INT8 gate compares each form with them
        ref = score_detections(items, ref_dets)
        report.add("fp32", "FP32 ONNX", fp32, ref, "gate reference")
        ctx.log(f"mAP50-95 of {fp32.name}: {ref.map50_95:.4f}")

    if opts.fp16:
        path = _build_fp16(model, meta, fp32, items, ctx)
        if report is not None:
            report.add("fp16", "FP16 ONNX", path, score_onnx(path, items, show), "ok", ref)

    if opts.int8:
        from .int8_forms import build_int8_forms

        build_int8_forms(model, meta, fp32, opts, items, ref_dets, report, ref, ctx, show)
    else:
        ctx.log("INT8 skipped: add --int8 --data path/to/data.yaml to build the accuracy-gated INT8 forms "
                f"({cfg.stem}.int8.onnx for TensorRT, {cfg.stem}.int8-cpu.onnx for CPUs)")

    if report is not None:
        _finish_report(report, cfg, ctx)


def _finish_report(report, cfg: ExportConfig, ctx) -> None:
    from .quantize import QuantTarget

    _, md = report.write(cfg.out, cfg.stem)
    ctx.info["accuracy"] = report
    ctx.log(f"accuracy report ({md}):\n" + report.table())
    failed = [g for g in report.gates.values() if not g.passed]
    if failed:
        files = ", ".join(f"{cfg.stem}{QuantTarget(g.target).suffix}" for g in failed)
        ctx.withheld.update(QuantTarget(g.target).suffix[1:] for g in failed)
        ctx.failures.append(AccuracyGateError(
            f"INT8 accuracy gate: {'; '.join(g.summary() for g in failed)}. Not written: {files} (report: {md})",
            "judge on more val images (the interval narrows), calibrate on more images like the deployment's "
            "(--calib, --calib-images), try --calib-method minmax or percentile, keep layers float (--exclude), "
            "or allow more loss (--max-map-drop)"))
        ctx.log("the build goes on without the withheld INT8 form(s) and will exit non-zero")


def _letterboxed(items, imgsz: tuple[int, int], n: int) -> np.ndarray:
    from engine.eval.datasets import read_image
    from engine.preprocess import Letterbox

    frames = [read_image(i.path) for i in items[:n]]
    return Letterbox(imgsz, batch=len(frames))(frames)[0].copy()


def _build_fp16(model, meta, fp32: Path, items, ctx) -> Path:
    import onnx

    from engine.metadata import Precision

    from .fp16 import check_fp16, convert_fp16
    from .io import atomic_path
    from .onnx_export import write_metadata
    from .parity import parity_inputs

    cfg: ExportConfig = ctx.info["config"]
    t = time.perf_counter()
    m16 = convert_fp16(model)
    write_metadata(m16, meta.replace(precision=Precision.FP16))
    images = (_letterboxed(items, meta.imgsz, 8) if items else parity_inputs(meta.imgsz, cfg.parity_images, 8))
    final = cfg.out / f"{cfg.stem}.fp16.onnx"
    with atomic_path(final) as tmp:
        onnx.save(m16, str(tmp))
        check = check_fp16(fp32, tmp, images, meta.imgsz, meta.batch)
    ctx.log(check.summary())
    ctx.log(f"wrote {final} ({final.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - t:.1f}s)")
    ctx.artifacts["fp16.onnx"] = final
    ctx.info["fp16_check"] = check
    return final
