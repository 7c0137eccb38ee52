"""``python -m engine.serve``: the command line over :func:`engine.serve.serve`."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..cli import run_cli
from .server import ServeConfig, serve
from .triton_process import SETUP_HINT


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m engine.serve",
        description="Serve a YOLO model through NVIDIA Triton Inference Server (bundled in nvidia-pytriton): "
                    "raw uint8 BGR frames (or encoded images) in, detections out, over HTTP and gRPC.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="model file (.onnx; .engine where TensorRT is installed)")
    ap.add_argument("--name", default="yolo", help="Triton model name (the encoded-image model is <name>_encoded)")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes the server to the network)")
    ap.add_argument("--http-port", type=int, default=8000, help="HTTP port (0 = off)")
    ap.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (0 = off)")
    ap.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port (0 = off)")
    ap.add_argument("--max-batch", type=int, default=8, help="most frames Triton gathers into one inference")
    ap.add_argument("--dynamic-batching", choices=("auto", "on", "off"), default="auto",
                    help="Triton's dynamic batcher; auto: on where the model runs on a GPU, off on a CPU (where it "
                         "does not pay: engine/serve/defaults.py)")
    ap.add_argument("--no-dynamic-batching", action="store_true", help="the same as --dynamic-batching off")
    ap.add_argument("--queue-delay-us", type=int, default=2000,
                    help="how long the dynamic batcher may hold a request waiting for more (microseconds)")
    ap.add_argument("--instances", type=int, default=None,
                    help="model instances (Detectors) side by side; None: 1 on a GPU, 2 on a CPU of 2+ cores")
    ap.add_argument("--conf", type=float, default=None,
                    help="confidence threshold (default 0.25; an end-to-end model: the one baked into it)")
    ap.add_argument("--iou", type=float, default=None, help="NMS IoU threshold (default 0.45, or the model's baked one)")
    ap.add_argument("--max-det", type=int, default=None,
                    help="most detections per frame (default 300, or the model's baked one)")
    ap.add_argument("--threads", type=int, default=None,
                    help="ONNX Runtime intra-op threads per instance (0 = all cores); None: the cores shared out "
                         "between the instances")
    ap.add_argument("--no-front", action="store_true",
                    help="clients reach Triton's own endpoints: one hop less (benchmarks/RESULTS.md, Triton), but a "
                         "malformed request gets Triton's words instead of engine.serve's reason and fix")
    ap.add_argument("--verbose", action="store_true", help="Triton's log at INFO level (model loading, endpoints)")
    ap.add_argument("--debug", action="store_true", help="show full tracebacks")
    return ap


def _batching(args: argparse.Namespace) -> bool | None:
    if args.no_dynamic_batching:
        return False
    return {"auto": None, "on": True, "off": False}[args.dynamic_batching]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")

    def action() -> None:
        serve(ServeConfig(model=args.model, name=args.name, host=args.host, http_port=args.http_port,
                          grpc_port=args.grpc_port, metrics_port=args.metrics_port, max_batch=args.max_batch,
                          dynamic_batching=_batching(args), queue_delay_us=args.queue_delay_us,
                          instances=args.instances, conf=args.conf, iou=args.iou, max_det=args.max_det,
                          threads=args.threads, front=not args.no_front), verbose=args.verbose)

    # a failure of Triton itself is unexpected: its traceback, then where to look first
    return run_cli(action, args.debug, "interrupted: Triton stopped, models unloaded",
                   hint="read Triton's log lines above; if the Python-backend stub failed, serve from a venv made "
                        f"from Debian's /usr/bin/python3 ({SETUP_HINT})")

