"""``python -m engine.stream``: the command line over :class:`engine.stream.Stream`.

Errors print one message and a fix, exit code 2 (``--debug`` shows the traceback). Ctrl-C exits 130,
SIGTERM 0, both after closing every file.
"""
from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from ..cli import run_cli


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default only where it has one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS):
            return action.help or ""
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m engine.stream",
        description="Run a YOLO detector over video files, image folders, RTSP/HTTP cameras and webcams, "
                    "with reconnects, metrics and annotated output. Stop with Ctrl-C or SIGTERM.",
        formatter_class=_Help,
    )
    ap.add_argument("--model", required=True, type=Path,
                    help="model file (.onnx; an OpenVINO IR folder or .xml where OpenVINO is installed; "
                         ".engine where TensorRT is installed)")
    ap.add_argument("--source", action="append", required=True, metavar="[NAME=]URI",
                    help="video file, image folder, rtsp://… or http://… URL, or webcam index; repeat for "
                         "several. NAME= names it in outputs and metrics (default s0, s1, …)")
    ap.add_argument("--save", type=Path, metavar="DIR",
                    help="write DIR/<name>.mp4 (annotated) per source and DIR/detections.jsonl")
    ap.add_argument("--no-video", action="store_true", help="with --save, write no annotated MP4s (events, JSON only)")
    ap.add_argument("--jsonl", type=Path, metavar="FILE",
                    help="write detections as JSON lines here (default DIR/detections.jsonl with --save)")
    ap.add_argument("--show", action="store_true", help="show each source in a window (q or Esc stops)")
    ap.add_argument("--metrics-port", type=int, metavar="PORT",
                    help="serve Prometheus metrics on this port (needs the stream extra)")
    ap.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                    help="address of the metrics server; 0.0.0.0 lets another machine scrape it")
    ap.add_argument("--log-interval", type=float, default=10.0, metavar="S",
                    help="seconds between metric log lines (0: off)")
    ap.add_argument("--reconnect-max", type=float, default=8.0, metavar="S",
                    help="cap of the exponential backoff between reconnect attempts")
    ap.add_argument("--read-timeout", type=float, default=10.0, metavar="S",
                    help="a live source that sends no frame (or does not answer a connect) for this long is "
                         "disconnected and reconnected")
    ap.add_argument("--connect-attempts", type=int, default=5, metavar="N",
                    help="tries to reach a live source at start before failing (0: retry forever)")
    ap.add_argument("--realtime", action="store_true",
                    help="read files at their frame rate, keeping only the latest frame (like a camera)")
    ap.add_argument("--loop", action="store_true", help="start files and folders over when they end")
    ap.add_argument("--batch", type=int, metavar="N",
                    help="most frames per model call (default: the model's batch times the workers, or if dynamic "
                         "one per source and at least one per worker)")
    ap.add_argument("--workers", type=int, default=None, metavar="N",
                    help="CPU detectors run side by side (.onnx models), each on cores/N threads: more frames "
                         "per second from a video file or several sources (default: 2 on a CPU of 2+ cores "
                         "when a file, a folder or two live sources keep both busy, else 1)")
    ap.add_argument("--conf", type=float, default=None,
                    help="confidence threshold (default 0.25; an end-to-end model: the one baked into it)")
    ap.add_argument("--iou", type=float, default=None, help="IoU threshold of NMS (default 0.45, or the model's baked one)")
    ap.add_argument("--max-frames", type=int, metavar="N", help="stop after N processed frames in all")
    ap.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    ap.add_argument("--debug", action="store_true", help="show full tracebacks and debug logs")
    from ..events.cli import add_arguments

    add_arguments(ap)
    return ap


def _check(args: argparse.Namespace) -> None:
    from ..errors import ConfigError

    for flag in ("reconnect_max", "read_timeout"):
        if not 0 < getattr(args, flag) < math.inf:  # nan and inf too
            raise ConfigError(f"--{flag.replace('_', '-')} {getattr(args, flag)}", "use a number of seconds above 0")
    if args.connect_attempts < 0:
        raise ConfigError(f"--connect-attempts {args.connect_attempts}", "use 0 (forever) or more")
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        raise ConfigError(f"--metrics-port {args.metrics_port}", "use a TCP port from 1 to 65535 (0: any free port)")


def run(args: argparse.Namespace) -> dict:
    """Build the stream from parsed ``args`` and run it; return the final metrics."""
    from ..events.cli import build
    from .sinks import JsonLinesSink, VideoSink, WindowSink
    from .pipeline import Stream, StreamConfig
    from .sources import CaptureConfig

    _check(args)
    tracker, processors = build(args)  # reads rules.yaml: its errors come before the model loads
    capture = CaptureConfig(reconnect_max=args.reconnect_max, read_timeout=args.read_timeout,
                            connect_attempts=args.connect_attempts, realtime=args.realtime, loop=args.loop)
    config = StreamConfig(capture=capture, batch=args.batch, log_interval=args.log_interval,
                          max_frames=args.max_frames, duration=args.duration, workers=args.workers)
    sinks = []
    if args.save and not args.no_video:
        sinks.append(VideoSink(args.save))
    jsonl = args.jsonl or (args.save / "detections.jsonl" if args.save else None)
    if jsonl:
        sinks.append(JsonLinesSink(jsonl))
    stream = Stream(args.model, args.source, config, sinks, metrics_port=args.metrics_port,
                    metrics_host=args.metrics_host, tracker=tracker, processors=processors, conf=args.conf,
                    iou=args.iou)
    if args.show:
        stream.sinks.append(WindowSink(stream.stop))
    try:
        return stream.run()
    finally:
        for sink in sinks:
            for name, path in getattr(sink, "paths", {}).items():
                logging.getLogger("engine.stream").info("%s: wrote %s", name, path)
        if jsonl and jsonl.is_file():  # nothing processed: no file (see JsonLinesSink)
            logging.getLogger("engine.stream").info("wrote %s", jsonl)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    if not args.debug:  # OpenCV's own warnings on a failed open only repeat our log lines, less clearly
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    return run_cli(lambda: run(args), args.debug, "interrupted: capture threads joined, files closed")

