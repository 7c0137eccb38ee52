"""Build stage: ``<stem>.end2end.onnx``, the raw FP32 graph with a fixed-size detection tail (on by default,
``--no-end2end`` skips it; it is one more artifact of the main job, about a second to build and check).

Runs after the ONNX (and quantize) stages and before the engine stage. See :mod:`exporters.end2end` for
the graph, and ``engine/end2end.py`` for how the runtime reads it. The new graph is checked at once
against host NMS on the raw graph (ONNX Runtime CPU, the parity images): a difference fails the build.
"""
from __future__ import annotations

import argparse
from typing import Any


def add_arguments(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("end-to-end graph (fixed-size outputs num_dets, boxes, scores, classes)")
    g.add_argument("--end2end", action=argparse.BooleanOptionalAction, default=True,
                   help="also write <stem>.end2end.onnx: box decode and score selection inside the graph, "
                        "K detections per image out (--no-end2end skips it)")
    g.add_argument("--e2e-tail", choices=("topk", "nms"), default="topk",
                   help="topk: the graph keeps the best --e2e-candidates boxes above --e2e-conf and the runtime's "
                        "NMS finishes on them (builds with TensorRT-RTX, TensorRT 10/11 and ONNX Runtime); "
                        "nms: NMS inside the graph (ONNX NonMaxSuppression: ONNX Runtime and TensorRT 10/11; "
                        "TensorRT-RTX 1.7 has no NMS layer implementation)")
    g.add_argument("--e2e-conf", type=float, default=0.25,
                   help="confidence threshold baked into the graph; at run time only a stricter one is allowed")
    g.add_argument("--e2e-iou", type=float, default=0.45, help="NMS IoU threshold (baked in by --e2e-tail nms)")
    g.add_argument("--max-det", type=int, default=300, help="detections per image (K of --e2e-tail nms)")
    g.add_argument("--e2e-candidates", type=int, default=1000,
                   help="candidate rows per image of --e2e-tail topk (more than the boxes above --e2e-conf, "
                        "or the lowest-scoring are dropped before NMS)")


def config_from_args(args: argparse.Namespace):
    from .end2end import End2EndConfig, TailKind

    return End2EndConfig(conf=args.e2e_conf, iou=args.e2e_iou, max_det=args.max_det, kind=TailKind(args.e2e_tail),
                         candidates=args.e2e_candidates)


def run(args: argparse.Namespace, ctx: Any) -> None:
    if not getattr(args, "end2end", False):
        return
    from .end2end import export_end2end
    from .parity import parity_inputs

    cfg = config_from_args(args)
    src = ctx.artifacts["onnx"]
    meta = ctx.info.get("metadata")
    images = parity_inputs(meta.imgsz, args.parity_images, args.parity_count) if meta is not None else None
    path, report = export_end2end(src, cfg, src.parent, images, ctx.log)
    ctx.artifacts["end2end.onnx"] = path
    ctx.info["end2end"] = report
