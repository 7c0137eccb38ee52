"""Runtime stage speed: our letterbox and NMS beside Ultralytics' own preprocess/postprocess, one run.

    python -m benchmarks.runtime_speed [--weights assets/demo/demo.pt] [--imgsz 640] [--iters 200]

What is timed (medians, milliseconds, on a 1920x1080 BGR frame made from a demo val image):
- ours, preprocess: ``engine.preprocess.Letterbox`` into its preallocated float32 NCHW buffer;
- ours, NMS: ``engine.nms.postprocess_raw`` (conf filter + decode + NMS) on the model's real output
  for that frame, and the whole postprocess stage of ``Detector`` (that plus mapping boxes back);
- Ultralytics: ``YOLO(weights).predict`` on the same frame; its ``Results.speed`` gives its own
  preprocess and postprocess milliseconds per call.
Both sides run in this process, interleaved, so the machine's state affects them alike.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from engine.cli import run_cli
from exporters.config import DEMO_DIR, DEMO_WEIGHTS, parse_imgsz


def _median_ms(fn, iters: int) -> float:
    ts = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts) * 1e3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=DEMO_WEIGHTS, help="Ultralytics .pt (default: the demo)")
    ap.add_argument("--imgsz", default="640", help="model input size (default: 640)")
    ap.add_argument("--iters", type=int, default=200, help="timed calls per stage (default: 200)")
    ap.add_argument("--conf", type=float, default=0.25, help="confidence threshold (default: 0.25)")
    ap.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold (default: 0.45)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    return run_cli(lambda: _run(args), False)


def _run(args: argparse.Namespace) -> int:
    """Measure and print; the figures also go to ``--json``."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    imgsz = parse_imgsz(args.imgsz)

    from engine import Detector
    from engine.nms import postprocess_raw
    from engine.preprocess import Letterbox
    from exporters.config import ExportConfig
    from exporters.onnx_export import export_onnx
    from ultralytics import YOLO

    src = sorted((DEMO_DIR / "val" / "images").glob("*.jpg"))[0]
    frame = cv2.resize(cv2.imread(str(src)), (1920, 1080), interpolation=cv2.INTER_LINEAR)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(ExportConfig(weights=args.weights, imgsz=imgsz, out=Path(tmp)), log=lambda s: None).path
        det = Detector(onnx_path, conf=args.conf, iou=args.iou)
        lb = Letterbox(imgsz)
        x, _ = lb([frame])
        raw = det.backend.infer(x)[0][0].copy()
        ul = YOLO(str(args.weights))
        ul.predict(frame, imgsz=list(imgsz), conf=args.conf, iou=args.iou, verbose=False, device="cpu")  # warm-up

        ours_pre, ours_nms, ours_post, ul_pre, ul_post = [], [], [], [], []
        rounds = 10
        for _ in range(rounds):  # interleave the candidates so drift hits both
            ours_pre.append(_median_ms(lambda: lb([frame]), args.iters // rounds))
            ours_nms.append(_median_ms(lambda: postprocess_raw(raw, args.conf, args.iou), args.iters // rounds))
            for _ in range(max(1, args.iters // rounds // 4)):
                det(frame)
                ours_post.append(det.last_timings["postprocess"])
                r = ul.predict(frame, imgsz=list(imgsz), conf=args.conf, iou=args.iou, verbose=False, device="cpu")[0]
                ul_pre.append(r.speed["preprocess"])
                ul_post.append(r.speed["postprocess"])
        det.close()

    n_cand = int((raw[4:].max(0) > args.conf).sum())
    res = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "imgsz": list(imgsz), "frame": [1080, 1920], "candidates_above_conf": n_cand,
        "ours_preprocess_ms": float(np.median(ours_pre)), "ultralytics_preprocess_ms": float(np.median(ul_pre)),
        "ours_nms_ms": float(np.median(ours_nms)), "ours_postprocess_ms": float(np.median(ours_post)),
        "ultralytics_postprocess_ms": float(np.median(ul_post)),
    }
    print(f"1920x1080 frame -> {imgsz[0]}x{imgsz[1]}, {n_cand} candidates above conf {args.conf}")
    print(f"{'stage':<14}{'ours ms':>10}{'Ultralytics ms':>16}{'ratio':>8}")
    print(f"{'preprocess':<14}{res['ours_preprocess_ms']:>10.3f}{res['ultralytics_preprocess_ms']:>16.3f}"
          f"{res['ours_preprocess_ms'] / res['ultralytics_preprocess_ms']:>8.2f}")
    print(f"{'postprocess':<14}{res['ours_postprocess_ms']:>10.3f}{res['ultralytics_postprocess_ms']:>16.3f}"
          f"{res['ours_postprocess_ms'] / res['ultralytics_postprocess_ms']:>8.2f}")
    print(f"{'  of it NMS':<14}{res['ours_nms_ms']:>10.3f}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
