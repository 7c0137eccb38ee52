"""Our OpenVINO IRs against Ultralytics' OpenVINO predict, end to end, each candidate in its own process.

    python -m benchmarks.openvino_speed [--imgsz 320,640] [--rounds 3] [--streams 4]

Single frame: one 1280x720 BGR frame per call (demo val images, upscaled; the same frames for every
candidate), ``Detector(ir)(frame)`` against ``YOLO(ir).predict(frame)`` on Ultralytics' own export of the
same ``.pt``, FP32 and INT8 (both NNCF, same calibration images), plus our ONNX Runtime forms for
reference. Each candidate runs in a fresh process (no thread pool or cache left by another), in
``--rounds`` interleaved rounds; the figure is the median over rounds of each round's median call.

Streams (``--streams N``): N cameras' frames per call, frames per second of: one INT8 IR Detector in
OpenVINO's throughput mode (several infer requests in flight), the same in latency mode, two latency
Detectors side by side (``DetectorPool``, threads), our INT8 CPU form's ``DetectorPool`` (what
``engine.stream`` uses on ONNX Runtime), and Ultralytics predict on the N-frame list.

Models are built once into ``--out`` (see :mod:`benchmarks.openvino_artifacts`). The load average is
printed before and after: figures taken on a busy machine are not comparable.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

FRAME_HW = (720, 1280)


def frames(n: int) -> list:
    """``n`` demo val frames of 16:9, upscaled to 1280x720 (deterministic: the same in every process)."""
    import cv2

    from exporters.config import DEMO_DIR

    files = [p for p in sorted((DEMO_DIR / "val" / "images").glob("*.jpg"))]
    wide = [f for f in (cv2.imread(str(p)) for p in files) if f.shape[1] * 9 == f.shape[0] * 16]
    return [cv2.resize(f, FRAME_HW[::-1], interpolation=cv2.INTER_LINEAR) for f in (wide or [])[:n]]


# ---- one candidate, in its own process ---------------------------------------------------------------------

def _runner(spec: dict):
    """``(call(frames) -> None, close)`` for one candidate spec."""
    if spec["who"] == "ultralytics":
        from benchmarks.candidates import quiet_ultralytics

        quiet_ultralytics()
        from ultralytics import YOLO

        model = YOLO(spec["path"], task="detect")
        kw = dict(imgsz=spec["imgsz"], conf=0.25, iou=0.45, device="cpu", verbose=False)
        return (lambda fs: model.predict(fs[0] if len(fs) == 1 else list(fs), **kw)), (lambda: None)
    if spec.get("workers", 1) > 1:
        from engine.pool import DetectorPool

        pool = DetectorPool(spec["path"], workers=spec["workers"], conf=0.25, iou=0.45, **spec.get("options", {}))
        return pool.predict, pool.close
    from engine import Detector

    det = Detector(spec["path"], conf=0.25, iou=0.45, **spec.get("options", {}))
    return det.predict, det.close


def child(spec: dict) -> dict:
    """Time ``spec``: warm up, then ``iters`` calls of ``batch`` frames; milliseconds per call."""
    call, close = _runner(spec)
    fs = frames(max(spec["batch"], 8))
    try:
        ms = []
        for i in range(spec["warmup"] + spec["iters"]):
            chunk = [fs[(i + k) % len(fs)] for k in range(spec["batch"])]
            t = time.perf_counter()
            call(chunk)
            ms.append((time.perf_counter() - t) * 1e3)
    finally:
        close()
    return {"ms": ms[spec["warmup"]:]}


def run_child(spec: dict) -> list[float]:
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-m", "benchmarks.openvino_speed", "--child", json.dumps(spec)],
                       capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1])
    if p.returncode != 0:
        raise RuntimeError(f"candidate {spec['name']} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])["ms"]


# ---- the comparison ------------------------------------------------------------------------------------------

def candidates(models, streams: int) -> tuple[list[dict], list[dict]]:
    """Single-frame and stream candidates of one size."""
    s = [models.imgsz, models.imgsz]
    single = [
        {"name": "ours OpenVINO FP32", "who": "ours", "path": str(models.ov_fp32)},
        {"name": "Ultralytics OpenVINO FP32", "who": "ultralytics", "path": str(models.peer_fp32), "imgsz": s},
        {"name": "ours OpenVINO INT8", "who": "ours", "path": str(models.ov_int8)},
        {"name": "Ultralytics OpenVINO INT8", "who": "ultralytics", "path": str(models.peer_int8), "imgsz": s},
        {"name": "ours ONNX Runtime FP32", "who": "ours", "path": str(models.onnx), "options": {"device": "cpu"}},
        {"name": "ours ONNX Runtime INT8 CPU form", "who": "ours", "path": str(models.int8_cpu),
         "options": {"device": "cpu"}},
    ]
    multi = [
        {"name": "ours OpenVINO INT8, throughput mode", "who": "ours", "path": str(models.ov_int8),
         "options": {"hint": "throughput"}},
        {"name": "ours OpenVINO INT8, latency mode", "who": "ours", "path": str(models.ov_int8)},
        {"name": "ours OpenVINO INT8, DetectorPool x2", "who": "ours", "path": str(models.ov_int8), "workers": 2},
        {"name": "ours INT8 CPU form, DetectorPool x2", "who": "ours", "path": str(models.int8_cpu), "workers": 2},
        {"name": f"Ultralytics OpenVINO INT8, the {streams}-frame list", "who": "ultralytics",
         "path": str(models.peer_int8), "imgsz": s},
    ] if streams > 1 else []
    for c in single:
        c["batch"] = 1
    for c in multi:
        c["batch"] = streams
    return single, multi


def measure(args: argparse.Namespace) -> dict:
    from benchmarks.env import load_average
    from benchmarks.openvino_artifacts import build

    report = {"load_before": load_average(), "rounds": args.rounds, "iters": args.iters, "streams": args.streams,
              "sizes": {}}
    for size in args.imgsz:
        with contextlib.redirect_stdout(sys.stderr):  # build logs (ours, Ultralytics', NNCF's) beside the progress
            models = build(args.weights, size, args.calib, args.out, args.calib_images, log=print)
        single, multi = candidates(models, args.streams)
        results: dict[tuple[int, str], list[float]] = {}  # by (frames per call, name): each candidate its own
        for r in range(args.rounds):
            for c in single + multi:
                spec = {**c, "warmup": args.warmup, "iters": args.iters}
                key = (c["batch"], c["name"])
                results.setdefault(key, []).append(statistics.median(run_child(spec)))
                print(f"{size} round {r + 1}: {c['name']} ({c['batch']} frame(s) per call): {results[key][-1]:.2f} ms "
                      "per call", file=sys.stderr, flush=True)
        report["sizes"][str(size)] = {
            "single": {c["name"]: statistics.median(results[(1, c["name"])]) for c in single},
            "streams": {c["name"]: 1e3 * args.streams / statistics.median(results[(c["batch"], c["name"])])
                        for c in multi}}
    report["load_after"] = load_average()
    return report


def table(report: dict) -> str:
    out = [f"load average before {report['load_before']}, after {report['load_after']}; median of "
           f"{report['rounds']} rounds x {report['iters']} calls, each candidate in its own process", "",
           "| size | candidate | ms per 1280x720 frame, end to end | vs Ultralytics, same precision |", "|---|---|---|---|"]
    for size, r in report["sizes"].items():
        s = r["single"]
        for name, ms in s.items():
            peer = s.get(f"Ultralytics OpenVINO {'INT8' if 'INT8' in name else 'FP32'}")
            ratio = ""
            if name.startswith("ours OpenVINO") and peer:  # the goal: faster than Ultralytics (ratio above 1)
                ratio = f"{peer / ms:.2f}x " + ("faster" if peer > ms else "(slower: **missed**)")
            out.append(f"| {size} | {name} | {ms:.2f} | {ratio} |")
    if any(r["streams"] for r in report["sizes"].values()):
        out += ["", f"| size | {report['streams']} cameras, one frame each per call | frames per second |", "|---|---|---|"]
        for size, r in report["sizes"].items():
            out += [f"| {size} | {name} | {fps:.0f} |" for name, fps in r["streams"].items()]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.openvino_artifacts import add_arguments, report_cli
    from exporters.config import DEMO_DATA

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    add_arguments(ap, DEMO_DATA)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default: 3)")
    ap.add_argument("--iters", type=int, default=50, help="timed calls per candidate and round (default: 50)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed calls first (default: 10)")
    ap.add_argument("--streams", type=int, default=4, help="cameras in the stream comparison (default: 4; 1: skip it)")
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    return report_cli(args, measure, table, "speed.json")


if __name__ == "__main__":
    sys.exit(main())
