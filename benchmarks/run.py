"""``python -m benchmarks.run``: ms per frame per stage (and mAP) of our artifacts beside Ultralytics, in one run.

With no arguments it benchmarks the bundled demo at 640x640: every artifact ``python -m exporters.build``
delivers, and Ultralytics ``predict`` on the .pt and on its own ONNX and OpenVINO (FP32, INT8) exports,
everyone at 640x640 (the square group); the same on 16:9 frames with everyone at the 384x640 input
Ultralytics' .pt predictor picks for them (the native group); YOLO11n and YOLO11m built from their yaml
files (random weights: timing only); and N synthetic 720p cameras through ``engine.stream`` against
Ultralytics' ``predict(stream=True)``.

Each candidate runs in its own spawned worker process, in rounds with a shuffled order
(:mod:`benchmarks.harness`). Output in ``--out``: ``results.json``, ``raw.json`` (every timed call),
``results.md``, ``chart.png`` and the tables on stdout. Built artifacts are cached in ``--out/artifacts``.

Errors are one message and a fix, exit code 2 (``--debug`` shows the traceback).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shlex
import sys
from pathlib import Path

from engine.cli import run_cli
from engine.errors import ConfigError
from exporters.config import parse_imgsz

from . import report
from .candidates import PEERS
from .env import environment, load_average
from .harness import Timing, run_group
from .results import SCHEMA, busy_warnings, group_result, raw_calls
from .worker import FrameSet, WorkerError

DEFAULT_ARCH = ("yolo11n", "yolo11m")


def _csv_paths(text: str) -> list[Path]:
    return [Path(p.strip()) for p in text.split(",") if p.strip()]


def _sizes(flag: str, lowest: int = 1):
    def parse(text: str) -> list[int]:
        try:
            sizes = sorted({int(p) for p in text.split(",") if p.strip()})
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} {text!r}: use a comma list of numbers, e.g. 1,4") from None
        if not sizes or sizes[0] < lowest:
            raise argparse.ArgumentTypeError(f"{flag} {text!r}: numbers must be >= {lowest}")
        return sizes

    return parse


def _streams(text: str) -> list[int]:
    return [] if text.strip().lower() == "none" else _sizes("--streams")(text)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.run", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Milliseconds per frame per stage (and mAP) of our artifacts beside Ultralytics predict, each "
                    "candidate in its own process, in rounds of shuffled order. With no arguments: the bundled demo "
                    "at 640 (square group) and on 16:9 frames at 384x640 (native group), YOLO11n/YOLO11m with random "
                    "weights (timing only), and 1, 2, 4 synthetic 720p cameras through engine.stream.")
    m = ap.add_argument_group("models (default: the bundled demo, plus --arch)")
    m.add_argument("--demo", action=argparse.BooleanOptionalAction, default=None,
                   help="benchmark the bundled demo (assets/demo/demo.pt). None: on when neither --weights nor "
                        "--models is given")
    m.add_argument("--weights", type=_csv_paths, default=None, metavar="W.pt[,W2.pt]",
                   help="Ultralytics detect checkpoints: each is built into our artifacts and compared with "
                        "Ultralytics on it. With --models: the .pt those files came from (the peers run it)")
    m.add_argument("--models", type=_csv_paths, default=None, metavar="A.onnx,B.int8-cpu.onnx,C.engine",
                   help="artifacts to time as they are (nothing is built): anything Detector loads; .engine files "
                        "are skipped with a note where TensorRT or a GPU is missing")
    m.add_argument("--arch", default="auto", metavar="yolo11n,yolo11m|none",
                   help="Ultralytics model yamls built with random weights (timing only). auto: "
                        f"{','.join(DEFAULT_ARCH)} when neither --weights nor --models is given, else none")
    m.add_argument("--data", type=Path, default=None, metavar="YAML",
                   help="labelled data.yaml of --weights: its train split calibrates INT8 (ours and Ultralytics' "
                        "OpenVINO INT8), its val split gives the frames and --accuracy. None: the demo's for the demo")
    f = ap.add_argument_group("frames (decoded once, before timing)")
    src = f.add_mutually_exclusive_group()
    src.add_argument("--images", type=Path, default=None, metavar="DIR",
                     help="image folder; None: the val split of --data, else the demo val images")
    src.add_argument("--video", type=Path, default=None, metavar="FILE", help="video file (its first frames)")
    f.add_argument("--max-frames", type=int, default=100, metavar="N", help="frames loaded and cycled through")
    s = ap.add_argument_group("shapes")
    s.add_argument("--imgsz", default="640", help="model input of the square group: 640 or height,width")
    s.add_argument("--native", default="auto", metavar="auto|none|H,W",
                   help="also run the native group: 16:9 frames (or the frames of --video), everyone at the "
                        "size Ultralytics' .pt predictor picks for them (auto: 384,640 for 1280x720 at 640)")
    s.add_argument("--batch", type=_sizes("--batch"), default="1", metavar="1,4",
                   help="frames per call; sizes above 1 use dynamic-batch exports and report per-frame figures")
    t = ap.add_argument_group("timing (each candidate in its own process)")
    t.add_argument("--rounds", type=int, default=5, metavar="N",
                   help="rounds; each runs every candidate once, in a new random order")
    t.add_argument("--iters", type=int, default=20, metavar="N", help="timed calls per candidate per round")
    t.add_argument("--warmup", type=int, default=10, metavar="N", help="untimed calls when a worker has loaded")
    t.add_argument("--settle", type=int, default=2, metavar="N", help="untimed calls at the start of each turn")
    t.add_argument("--pause", type=float, default=0.2, metavar="S",
                   help="seconds between turns (the previous worker's thread pools stop spinning)")
    t.add_argument("--seed", type=int, default=None, help="seed of the round orders (None: a random one, recorded)")
    t.add_argument("--peers", default=",".join(p.key for p in PEERS), metavar="KEY[,KEY]|none",
                   help="Ultralytics peers: predict on the .pt, and on its own ONNX, OpenVINO and OpenVINO INT8 "
                        "exports (the OpenVINO ones need openvino and nncf: the bench extra)")
    t.add_argument("--conf", type=float, default=0.25, help="confidence threshold, the same for every candidate")
    t.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold, the same for every candidate")
    t.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where ONNX Runtime and PyTorch run (engines always run on the GPU)")
    st = ap.add_argument_group("multi-stream group (engine.stream)")
    st.add_argument("--streams", type=_streams, default="1,2,4", metavar="1,2,4|none",
                    help="numbers of synthetic 720p cameras, each run at its frame rate and at max rate")
    st.add_argument("--stream-seconds", type=float, default=10.0, metavar="S", help="length of each camera's clip")
    st.add_argument("--stream-fps", type=float, default=30.0, metavar="FPS", help="the clip's frame rate")
    ap.add_argument("--accuracy", action="store_true",
                    help="add mAP50 and mAP50-95 (engine.eval.evaluate, conf 0.001, IoU 0.7) on the labelled val split")
    ap.add_argument("--out", type=Path, default=Path("runs/benchmarks"), help="results folder (artifacts cached in it)")
    ap.add_argument("--cache", type=Path, default=None, metavar="DIR",
                    help="where built artifacts are cached and reused (None: OUT/artifacts)")
    ap.add_argument("--rebuild", action="store_true", help="build every artifact again instead of reusing the cache")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("--debug", action="store_true", help="show full tracebacks")
    return ap


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Check the flags against each other and fill in the defaults that depend on others."""
    args.imgsz = parse_imgsz(args.imgsz)
    args.weights, args.models = args.weights or [], args.models or []
    if args.demo is None:
        args.demo = not (args.weights or args.models)
    if min(args.warmup, args.settle, args.iters - 1, args.rounds - 1, args.max_frames - 1, args.pause) < 0:
        raise ConfigError("--warmup, --settle and --pause must be >= 0, --iters, --rounds and --max-frames >= 1",
                          "use the defaults")
    if not (0 <= args.conf < 1 and 0 <= args.iou <= 1):  # every candidate would fail to load, and exit 0
        raise ConfigError(f"--conf {args.conf}, --iou {args.iou} out of range", "use 0 <= conf < 1 and 0 <= iou <= 1")
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out} is a file", "pass a folder for the results")
    if args.stream_seconds <= 0 or args.stream_fps <= 0:
        raise ConfigError("--stream-seconds and --stream-fps must be > 0", "use the defaults (10 s at 30 fps)")
    arch = args.arch.strip().lower()
    if arch == "auto":
        args.arch = list(DEFAULT_ARCH) if not (args.weights or args.models) else []
    else:
        args.arch = [] if arch == "none" else [a.strip() for a in arch.split(",") if a.strip()]
    peers = {p.strip().lower() for p in args.peers.split(",") if p.strip()} - {"none"}
    known = {p.key for p in PEERS}
    if peers - known:
        raise ConfigError(f"--peers {args.peers!r}", f"use some of {', '.join(sorted(known))}, or none")
    args.peers = peers
    native = args.native.strip().lower()
    args.native = None if native == "none" or args.models else ("auto" if native == "auto" else parse_imgsz(native))
    if args.models and len(args.weights) > 1:
        raise ConfigError("--models takes one --weights (the .pt they came from)", "pass a single --weights")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**31)
    args.cache = args.cache or args.out / "artifacts"
    return args


def _log_to(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = path.open("a", encoding="utf-8")

    def log(msg: str) -> None:
        fh.write(msg + "\n")
        fh.flush()
        print(msg, file=sys.stderr, flush=True)

    return log


def _bar(total: int, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None:
        return tqdm(total=total, unit="call", disable=not enabled, file=sys.stderr)

    class _Plain:  # one line per 10 %
        def __init__(self):
            self.n, self.step = 0, max(total // 10, 1)

        def update(self, k):
            before, self.n = self.n, self.n + k
            if enabled and before // self.step != self.n // self.step:
                print(f"timing: {self.n}/{total} calls", file=sys.stderr, flush=True)

        def set_description(self, d):
            pass

        def close(self):
            pass

    return _Plain()


def _scorer(args, log):
    """``score(worker, candidate)`` for run_group: mAP in the candidate's worker, cached across groups."""
    cache: dict = {}

    def score(worker, c, data):
        if c.form == "end2end":  # its graph dropped every box under the conf baked in at export
            return f"{c.name}: no mAP (its graph keeps only boxes above the conf baked in at export; mAP needs 0.001)"
        key = (str(c.path), c.imgsz, c.role, c.rect)
        if key not in cache:
            log(f"mAP of {c.name} ({c.path.name}) on {data}")
            try:
                cache[key] = worker.score(data)
            except WorkerError as e:
                cache[key] = f"{c.name}: no mAP ({e.message})"
        return cache[key]

    return score


def run(args: argparse.Namespace, argv: list[str]) -> dict:
    """Plan, build, time and report; returns the results dict (also written to ``args.out``)."""
    from .plan import load_frames, plan
    from .streams import run_streams

    os.environ.setdefault("YOLO_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    log = _log_to(args.out / "benchmark.log")
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    env = environment()
    frames = load_frames(args)
    groups = plan(args, frames, log)
    timing = Timing(args.rounds, args.iters, args.warmup, args.settle, args.pause, args.seed)
    opts = {"conf": args.conf, "iou": args.iou, "device": args.device}
    bar = _bar(timing.calls() * sum(len(g.running()) for g in groups), not args.no_progress)
    score = _scorer(args, log) if args.accuracy else None
    out_groups, raw = [], {}
    try:
        for k, g in enumerate(groups):
            bar.set_description(g.id)
            fs = FrameSet.write(g.frames, args.out / "frames" / f"group{k}.npy", g.frames_desc)
            scoring = score if score and g.batch == 1 and not g.random and g.data else None
            if args.accuracy and scoring is None and not g.random:
                g.notes.append("no mAP: no labelled data (pass --data data.yaml)" if g.batch == 1 else
                               "no mAP at batch above 1 (the batch-1 group has it)")
            try:
                run = run_group(g, fs, timing, opts, log, bar.update, scoring)
            finally:
                fs.path.unlink(missing_ok=True)
            out_groups.append(group_result(g, run))
            raw[g.id] = raw_calls(g, run)
    finally:
        bar.close()
    streams = run_streams(args, frames, log) if args.streams else []
    env["load_avg_end"] = load_average()
    res = {
        "schema": SCHEMA, "command": "python -m benchmarks.run" + (" " + shlex.join(argv) if argv else ""),
        "started": started, "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "env": env,
        "settings": {"imgsz": list(args.imgsz), "native": args.native if args.native in (None, "auto")
                     else list(args.native), "batch": args.batch, "rounds": args.rounds, "iters": args.iters,
                     "warmup": args.warmup, "settle": args.settle, "pause": args.pause, "seed": args.seed,
                     "conf": args.conf, "iou": args.iou, "device": args.device, "peers": sorted(args.peers),
                     "accuracy": args.accuracy, "frames": frames.desc, "process": "one spawned worker per candidate"},
        "groups": out_groups,
        "streams": streams,
        "targets": [t for g in out_groups for t in g["targets"]],
        "skipped": [{"group": g["id"], "file": c["file"], "name": c["name"], "reason": c["skipped"]}
                    for g in out_groups for c in g["candidates"] if c.get("skipped")],
    }
    res["warnings"] = busy_warnings(res)
    (args.out / "raw.json").write_text(json.dumps({"command": res["command"], "groups": raw}) + "\n", encoding="utf-8")
    files = report.write_all(res, args.out)
    report.print_tables(res)
    print("wrote " + ", ".join(str(p) for p in [*files.values(), args.out / "raw.json"]))
    return res


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    return run_cli(lambda: run(resolve(args), argv), args.debug)


if __name__ == "__main__":
    sys.exit(main())
