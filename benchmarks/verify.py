"""Self-check for your own GPU machine: is the TensorRT engine right, and how fast is it here?

    python -m benchmarks.verify                      # the bundled demo: build what is missing, check it
    python -m benchmarks.verify --weights best.pt --images path/to/images
    python -m benchmarks.verify --engine deploy/best.fp16.engine

Steps: record the machine (GPU, driver, CUDA, TensorRT); build the ONNX and engine if missing (with
``--weights``); run ONNX Runtime (CPU) on the images as the reference; run the engine on the same
images; compare the detections (matched by class and IoU) and the raw head outputs; time the engine.
Writes ``verify-report.md`` and ``verify-report.json`` to ``--out``, short enough to paste in an issue.

Exit codes: 0 verified; 1 parity below the bar; 2 an error (message and fix printed); 3 incomplete:
this machine could not do every step (no GPU, no TensorRT...), and the report says exactly which.
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.verify_report import MIN_MATCH, Report, match_detections

REPO = Path(__file__).resolve().parents[1]
DEMO_WEIGHTS = REPO / "assets" / "demo" / "demo.pt"
DEMO_IMAGES = REPO / "assets" / "demo" / "val" / "images"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.verify", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--weights", type=Path, help="Ultralytics .pt: build its ONNX and engine if missing (default: the demo)")
    src.add_argument("--engine", type=Path, help="an engine built by python -m exporters.build --engine ...")
    ap.add_argument("--onnx", type=Path, help="the ONNX to compare with (default: the engine's source, from its sidecar)")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"), help="engine to build/check with --weights")
    ap.add_argument("--build-args", default="", help="extra flags for python -m exporters.build, e.g. \"--int8 --data d.yaml\"")
    ap.add_argument("--images", type=Path, help="folder of images (default: the demo val images)")
    ap.add_argument("--count", type=int, default=20, help="images compared (default 20)")
    ap.add_argument("--runs", type=int, default=200, help="timed engine runs (default 200, after 20 warm-up)")
    ap.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    ap.add_argument("--out", type=Path, default=Path("verify"), help="folder for the report and built files (default verify/)")
    return ap


def environment() -> dict[str, Any]:
    """What this machine has; every probe reports its failure instead of raising."""
    env: dict[str, Any] = {"python": platform.python_version(), "os": f"{platform.system()} {platform.release()}",
                           "numpy": np.__version__}
    try:
        import onnxruntime

        env["onnxruntime"] = onnxruntime.__version__
    except ImportError as e:
        env["onnxruntime"] = f"not installed ({e})"
    from engine.backends.trt_flavor import import_tensorrt
    from engine.errors import DeployError

    try:
        env["tensorrt"] = import_tensorrt("auto")[1].label
    except DeployError as e:
        env["tensorrt"] = f"none ({e.message}; {e.fix})"
    try:
        from engine.cuda import device_info, versions

        env["cuda_driver"], env["cuda_runtime"] = versions()
        info = device_info(0)
        env["gpu"] = f"{info.name} ({info.sm_tag}, {info.total_memory / 2**30:.1f} GiB)"
    except DeployError as e:
        env["gpu"] = f"none usable ({e.message})"
    return env


def _images(args) -> list[Path]:
    folder = args.images or DEMO_IMAGES
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    return files[: args.count]


def _build(args, report: Report) -> tuple[Path | None, Path | None]:
    """ONNX and engine for ``--weights`` (or the demo), built only when missing or stale."""
    weights = args.weights or DEMO_WEIGHTS
    stem = weights.stem
    onnx, engine = args.out / f"{stem}.onnx", args.out / f"{stem}.{args.precision}.engine"
    if engine.is_file() and _sidecar_fits(engine):
        report.step("build", "ok", f"reused {engine}")
        return _source_onnx(engine, args) or onnx, engine
    # only the graphs this engine needs (INT8 calibration and its accuracy report take minutes)
    only = {"fp32": ["--no-fp16", "--no-int8"], "fp16": ["--no-int8"], "int8": ["--no-fp16", "--int8"]}
    argv = ["--weights", str(weights), "--out", str(args.out), "--engine", args.precision, "--require-engine",
            *only[args.precision], *shlex.split(args.build_args)]
    report.step("build", "running", "python -m exporters.build " + shlex.join(argv))
    from exporters.build import build_argv

    t0 = time.perf_counter()
    from engine.errors import DeployError

    rec = build_argv(argv, log=lambda s: print(f"  build: {s}")).record(f"{args.precision}.engine")
    if rec is None or not rec.delivered:
        raise DeployError(f"the {args.precision} engine was not delivered: {rec.reason if rec else 'not built'}",
                          rec.fix if rec and rec.fix else "see the build's table above")
    report.step("build", "ok", f"built {engine.name} in {time.perf_counter() - t0:.1f}s")
    return _source_onnx(engine, args) or onnx, engine


def _sidecar_fits(engine: Path) -> bool:
    from engine.backends.trt_flavor import import_tensorrt
    from engine.backends.trt_sidecar import read_sidecar
    from engine.errors import DeployError

    try:
        sc, running = read_sidecar(engine), import_tensorrt("auto")[1]
    except DeployError:
        return False
    return (sc.tensorrt, sc.tensorrt_version) == (running.module, running.version)


def _source_onnx(engine: Path, args) -> Path | None:
    if args.onnx:
        return args.onnx
    from engine.backends.trt_sidecar import read_sidecar

    src = engine.parent / read_sidecar(engine).source_onnx
    return src if src.is_file() else None


def _time_ms(fn, runs: int, warmup: int = 20) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    ts = np.empty(runs)
    for i in range(runs):
        t = time.perf_counter()
        fn()
        ts[i] = time.perf_counter() - t
    return {"p50": float(np.percentile(ts, 50) * 1e3), "p95": float(np.percentile(ts, 95) * 1e3),
            "p99": float(np.percentile(ts, 99) * 1e3)}


def _reference(onnx: Path, frames: list[np.ndarray], report: Report):
    from engine import Detector

    det = Detector(onnx, backend="onnxruntime", device="cpu")
    ref = [det(f) for f in frames]
    ms = _time_ms(lambda: det(frames[0]), runs=10, warmup=2)
    report.timing["onnxruntime_cpu_detector_ms"] = ms
    report.step("reference", "ok", f"ONNX Runtime CPU on {len(frames)} images: {sum(map(len, ref))} boxes, "
                f"{ms['p50']:.1f} ms/frame")
    return det, ref


def _check_engine(engine: Path, ref_det, ref, frames, args, report: Report) -> None:
    from engine import Detector
    from engine.preprocess import Letterbox

    det = Detector(engine, device=args.device)
    report.environment["engine_sidecar"] = det.backend.sidecar.to_dict()["tensorrt_version"]
    got = [det(f) for f in frames]
    stats = match_detections(ref, got)
    meta = det.metadata
    x, _ = Letterbox(meta.imgsz, batch=1)(frames[:1])
    a, b = ref_det.backend.infer(x)[0].copy(), det.backend.infer(x)[0].copy()
    stats["raw_max_abs_box_px"] = float(np.abs(a[:, :4] - b[:, :4]).max())
    stats["raw_max_abs_score"] = float(np.abs(a[:, 4:] - b[:, 4:]).max())
    stats["precision"] = meta.precision.value
    stats["min_match"] = MIN_MATCH[meta.precision.value]
    report.parity = stats
    report.step("parity", "ok" if stats["match_fraction"] >= stats["min_match"] else "failed",
                f"{stats['matched']}/{stats['reference_boxes']} reference boxes matched "
                f"({stats['match_fraction']:.1%}, bar {stats['min_match']:.0%})")
    report.timing["engine_infer_ms"] = _time_ms(lambda: det.backend.infer(x), args.runs)
    report.timing["engine_detector_ms"] = _time_ms(lambda: det(frames[0]), max(args.runs // 4, 10))
    report.step("timing", "ok", f"engine H2D+execute+D2H {report.timing['engine_infer_ms']['p50']:.2f} ms, "
                f"whole Detector {report.timing['engine_detector_ms']['p50']:.2f} ms per frame (p50)")
    det.close()


def h2d_bandwidth(nbytes: int = 64 << 20, repeats: int = 10) -> dict[str, float]:
    """Host → device GB/s from pinned and from pageable memory (CUDA events around the copies)."""
    from engine.cuda import DeviceBuffer, Event, PinnedBuffer, Stream

    out = {}
    with Stream() as s, DeviceBuffer(nbytes) as dev, PinnedBuffer(nbytes) as pinned, Event() as a, Event() as b:
        pageable = np.ones(nbytes, np.uint8)
        pinned.array((nbytes,), np.uint8)[:] = 1
        for name, src in (("pinned", pinned), ("pageable", pageable)):
            dev.copy_from_host(src, s)  # warm-up
            a.record(s)
            for _ in range(repeats):
                dev.copy_from_host(src, s)
            b.record(s)
            b.synchronize()
            out[f"{name}_gb_s"] = nbytes * repeats / (a.elapsed_ms(b) * 1e-3) / 1e9
    return out


def _bandwidth_step(report: Report) -> None:
    from engine.cuda import unavailable_reason
    from engine.errors import DeployError

    reason = unavailable_reason()
    if reason:
        report.cannot("measure pinned vs pageable H2D bandwidth", reason)
        return
    try:
        bw = report.bandwidth = h2d_bandwidth()
    except DeployError as e:
        report.cannot("measure pinned vs pageable H2D bandwidth", e.message)
        return
    report.step("bandwidth", "ok", f"H2D {bw['pinned_gb_s']:.1f} GB/s pinned, {bw['pageable_gb_s']:.1f} GB/s pageable")


def verify(args: argparse.Namespace) -> Report:
    """Run every step this machine allows; what it cannot do goes into ``report.could_not``."""
    import cv2

    from engine.errors import DeployError

    report = Report(environment=environment())
    _bandwidth_step(report)
    engine = args.engine
    onnx = args.onnx
    try:
        if engine is None:
            onnx, engine = _build(args, report)
        else:
            onnx = _source_onnx(engine, args)
    except DeployError as e:
        report.step("build", "failed", e.message)
        report.cannot("build the engine", f"{e.message} (fix: {e.fix})")
        return report
    except ImportError as e:
        report.cannot("build the ONNX/engine", f"the export extra is missing ({e}); pip install -e .[export]")
        return report
    report.artifacts = {"engine": str(engine), "onnx": str(onnx) if onnx else None}
    ref_det = ref = None
    frames = [f for f in (cv2.imread(str(p)) for p in _images(args)) if f is not None]
    if not frames:
        report.cannot("compare detections", f"no readable images in {args.images or DEMO_IMAGES}; pass --images DIR")
    if onnx is None or not Path(onnx).is_file():
        report.cannot("compute the ONNX Runtime reference", "the engine's source ONNX is not beside it; pass --onnx")
    elif frames:
        ref_det, ref = _reference(Path(onnx), frames, report)
    try:
        if ref is None:
            from engine import Detector

            Detector(engine, device=args.device).close()  # at least prove it loads
            report.step("load", "ok", f"{engine} loads on this GPU")
        else:
            _check_engine(Path(engine), ref_det, ref, frames, args, report)
    except DeployError as e:
        report.step("run engine", "failed", e.message)
        report.cannot("load and run the engine", f"{e.message} (fix: {e.fix})")
        report.cannot("compare the engine's detections with ONNX Runtime's", "needs the engine to run")
        report.cannot("time the engine", "needs the engine to run")
    return report


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from engine.cli import run_cli

    return run_cli(lambda: _report(args), False, "interrupted: no report written")


def _report(args: argparse.Namespace) -> int:
    """Run every step, write the report; the exit code says the verdict."""
    from engine.artifacts import kind_of
    from engine.errors import ConfigError

    if args.engine is not None and not (kind_of(args.engine) is not None and kind_of(args.engine).is_engine):
        raise ConfigError(f"--engine {args.engine} is not a TensorRT engine", "pass a .engine file built by "
                          "python -m exporters.build (or leave --engine out to build one here)")
    args.out.mkdir(parents=True, exist_ok=True)
    report = verify(args)
    md, js = args.out / "verify-report.md", args.out / "verify-report.json"
    md.write_text(report.to_markdown(), encoding="utf-8")
    js.write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    print(report.to_markdown())
    print(f"report: {md} and {js}")
    return {"verified": 0, "parity failed": 1, "incomplete": 3}[report.verdict]


if __name__ == "__main__":
    sys.exit(main())
