"""mAP of our OpenVINO IRs (FP32, INT8 by NNCF) beside the FP32 ONNX, our INT8 CPU form and Ultralytics' OpenVINO exports.

    python -m benchmarks.openvino_accuracy --data fresh/data.yaml [--weights demo.pt] [--imgsz 320,640]

Every model scores the same labelled split (``--split``, default ``val``) with the build's accuracy-report
settings (conf 0.001, IoU 0.7, 300 boxes, COCO mAP); ours through our ``Detector``, the peers through
Ultralytics ``predict``. Each drop is against the FP32 ONNX and the FP32 IR, with a 95 % paired-bootstrap
interval (the same resampled images for both models). Calibration: ``--calib`` (default: the data.yaml's
``train`` split), never the scored split. Prints a table and writes ``<out>/accuracy.json``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROWS = (("onnx", "ours, FP32 ONNX (ONNX Runtime)"), ("ov_fp32", "ours, OpenVINO FP32 IR"),
        ("ov_int8", "ours, OpenVINO INT8 IR (NNCF)"), ("int8_cpu", "ours, INT8 CPU form (ONNX Runtime)"),
        ("peer_fp32", "Ultralytics OpenVINO FP32"), ("peer_int8", "Ultralytics OpenVINO INT8 (NNCF)"))
REFERENCES = ("onnx", "ov_fp32")


def detections(key: str, path: Path, imgsz: int, items: list) -> list:
    """Each image's detections by one model (ours by ``Detector``, ``peer_*`` by Ultralytics)."""
    from engine.eval.evaluate import predict_items
    from exporters.accuracy import EVAL_CONF, EVAL_IOU, EVAL_MAX_DET

    if key.startswith("peer"):
        from benchmarks.candidates import quiet_ultralytics
        from exporters.ultralytics_ref import UltralyticsPredictor

        quiet_ultralytics()
        pred, close = UltralyticsPredictor(path, imgsz, EVAL_CONF, EVAL_IOU, EVAL_MAX_DET), (lambda: None)
    else:
        from engine import Detector

        pred = Detector(path, conf=EVAL_CONF, iou=EVAL_IOU, max_det=EVAL_MAX_DET, device="cpu")
        close = pred.close
    try:
        return list(predict_items(pred, items))
    finally:
        close()


def bootstrap_maps(items: list, dets: dict[str, list], rounds: int, seed: int = 0) -> dict[str, np.ndarray]:
    """mAP50-95 of every model on each of ``rounds`` resamples of the images (the same resamples for all,
    so the differences between two models are paired): the gate's bootstrap (:mod:`exporters.map_bootstrap`),
    which matches each model once and weights the images, instead of scoring every resample anew (score
    ties between images then break in image order, not in draw order)."""
    from exporters.accuracy import EVAL_MAX_DET
    from exporters.map_bootstrap import bootstrap_maps as resampled, match_table

    return {k: resampled(match_table(items, d, EVAL_MAX_DET), rounds, seed) for k, d in dets.items()}


def drop(ref: dict, other: dict, boot: dict[str, np.ndarray], ref_key: str, key: str) -> tuple[float, float, float]:
    """Points of mAP50-95 lost by ``key`` against ``ref_key``, with the 95 % paired-bootstrap interval."""
    d = 100 * (boot[ref_key] - boot[key])
    return 100 * (ref["map50_95"] - other["map50_95"]), float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))


def measure(args: argparse.Namespace) -> dict:
    from benchmarks.openvino_artifacts import build
    from engine.eval.datasets import load_split
    from engine.eval.evaluate import evaluate_detections

    calib = args.calib or args.data  # a data.yaml calibrates on its train split
    items = load_split(args.data, args.split)
    report = {"data": str(args.data), "split": args.split, "images": len(items), "calib": str(calib),
              "calib_images": args.calib_images, "bootstrap": args.bootstrap, "sizes": {}}
    for size in args.imgsz:
        models = build(args.weights, size, calib, args.out, args.calib_images, peers=args.peers, log=print)
        dets, rows = {}, {}
        for key, label in ROWS:
            path = getattr(models, key)
            if path is None:
                continue
            dets[key] = detections(key, path, size, items)
            r = evaluate_detections(items, dets[key])
            rows[key] = {"label": label, "file": str(path), "map50": r.map50, "map50_95": r.map50_95}
            print(f"{size}: {label}: mAP50-95 {r.map50_95:.4f}", flush=True)
        boot = bootstrap_maps(items, dets, args.bootstrap)
        for key in rows:  # INT8 and peers against both references; the FP32 IR against the ONNX
            for ref in (r for r in REFERENCES if r in rows and r != key and (key not in REFERENCES or r == "onnx")):
                rows[key][f"drop_vs_{ref}"] = drop(rows[ref], rows[key], boot, ref, key)
        report["sizes"][str(size)] = rows
    return report


def table(report: dict) -> str:
    lines = [f"{report['images']} images of {report['data']} ({report['split']}); calibration: {report['calib_images']} "
             f"images of {report['calib']}; drops in points of mAP50-95 with 95 % paired-bootstrap intervals "
             f"({report['bootstrap']} resamples)", "",
             "| size | model | mAP50 | mAP50-95 | drop vs FP32 ONNX | drop vs FP32 IR |", "|---|---|---|---|---|---|"]
    fmt = lambda d: f"{d[0]:+.2f} [{d[1]:+.2f}, {d[2]:+.2f}]" if d else "-"  # noqa: E731
    for size, rows in report["sizes"].items():
        for r in rows.values():
            lines.append(f"| {size} | {r['label']} | {r['map50']:.4f} | {r['map50_95']:.4f} | "
                         f"{fmt(r.get('drop_vs_onnx'))} | {fmt(r.get('drop_vs_ov_fp32'))} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.openvino_artifacts import add_arguments, report_cli

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="labelled data.yaml (its --split is scored)")
    ap.add_argument("--split", default="val", help="split scored (default: val)")
    add_arguments(ap, None)
    ap.add_argument("--peers", action=argparse.BooleanOptionalAction, default=True,
                    help="also Ultralytics' OpenVINO FP32 and INT8 exports (default: on)")
    ap.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples (default: 200)")
    return report_cli(ap.parse_args(argv), measure, table, "accuracy.json")


if __name__ == "__main__":
    sys.exit(main())
