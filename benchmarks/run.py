"""``python -m benchmarks.run``: ms per frame per stage (and mAP) of our artifacts beside Ultralytics, in one run.

With no arguments it benchmarks the bundled demo at 640x640: every artifact ``python -m exporters.build``
makes from it, Ultralytics ``predict`` on the .pt and on the ONNX Ultralytics exports, the 16:9 input
(384x640) against the square one on 16:9 frames, and YOLO11n and YOLO11m built from their yaml files
(random weights: timing only). Output: tables on stdout, ``results.json``, ``results.md`` and
``chart.png`` in ``--out``. Built artifacts are cached in ``--out/artifacts`` and reused.

Errors are one message and a fix, exit code 2 (``--debug`` shows the traceback).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
from pathlib import Path

from engine.cli import run_cli
from engine.errors import ConfigError, DeployError
from exporters.config import parse_imgsz

from . import report
from .candidates import OURS, PEER_ONNX, PEER_PT
from .env import environment, load_average
from .harness import Group, calls_per_candidate, group_ratios, measure, summarize_group
from .stats import Target

DEFAULT_ARCH = ("yolo11n", "yolo11m")


def _csv_paths(text: str) -> list[Path]:
    return [Path(p.strip()) for p in text.split(",") if p.strip()]


def _batches(text: str) -> list[int]:
    try:
        sizes = sorted({int(p) for p in text.split(",") if p.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch {text!r}: use a comma list of sizes, e.g. 1,4") from None
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError(f"--batch {text!r}: sizes must be >= 1")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.run", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Milliseconds per frame per stage (and mAP) of our artifacts beside Ultralytics predict, in one "
                    "run. With no arguments: the bundled demo at 640 (every artifact the build makes, Ultralytics on "
                    "the .pt and on its own ONNX, the 16:9 input on 16:9 frames) and YOLO11n/YOLO11m with random "
                    "weights (timing only).")
    m = ap.add_argument_group("models (default: the bundled demo, plus --arch)")
    m.add_argument("--demo", action=argparse.BooleanOptionalAction, default=None,
                   help="benchmark the bundled demo (assets/demo/demo.pt). None: on when neither --weights nor "
                        "--models is given")
    m.add_argument("--weights", type=_csv_paths, default=None, metavar="W.pt[,W2.pt]",
                   help="Ultralytics detect checkpoints: each is built into our artifacts and compared with "
                        "Ultralytics on it. With --models: the .pt those files came from (the peers run it)")
    m.add_argument("--models", type=_csv_paths, default=None, metavar="A.onnx,B.int8-cpu.onnx,C.engine",
                   help="artifacts to time as they are (nothing is built); .engine files are skipped with a note "
                        "where TensorRT or a GPU is missing")
    m.add_argument("--arch", default="auto", metavar="yolo11n,yolo11m|none",
                   help="Ultralytics model yamls built with random weights (timing only). auto: "
                        f"{','.join(DEFAULT_ARCH)} when neither --weights nor --models is given, else none")
    m.add_argument("--data", type=Path, default=None, metavar="YAML",
                   help="labelled data.yaml of --weights: its train split calibrates INT8 (the build's accuracy "
                        "gate needs it; without it no INT8 form is built), its val split gives the frames and "
                        "--accuracy. None: the demo's data.yaml for the demo")
    f = ap.add_argument_group("frames (decoded once, before timing)")
    src = f.add_mutually_exclusive_group()
    src.add_argument("--images", type=Path, default=None, metavar="DIR",
                     help="image folder; None: the val split of --data, else the demo val images")
    src.add_argument("--video", type=Path, default=None, metavar="FILE", help="video file (its first frames)")
    f.add_argument("--max-frames", type=int, default=100, metavar="N", help="frames loaded and cycled through")
    s = ap.add_argument_group("shapes")
    s.add_argument("--imgsz", default="640", help="model input: 640 or height,width")
    s.add_argument("--wide", default="auto", metavar="auto|none|H,W",
                   help="also compare a 16:9 input against --imgsz on 16:9 frames (1280x720); auto: the "
                        "width of --imgsz with the height 9/16 of it rounded up to the stride (640 -> 384,640)")
    s.add_argument("--batch", type=_batches, default="1", metavar="1,4",
                   help="frames per call; sizes above 1 use a dynamic-batch export and report per-frame figures")
    t = ap.add_argument_group("timing")
    t.add_argument("--warmup", type=int, default=10, metavar="N", help="untimed calls per candidate first")
    t.add_argument("--iters", type=int, default=100, metavar="N", help="timed calls per candidate")
    t.add_argument("--block", type=int, default=5, metavar="N",
                   help="timed calls a candidate runs per turn of the round-robin (smaller: drift spreads more evenly)")
    t.add_argument("--settle", type=int, default=1, metavar="N",
                   help="untimed calls at the start of each turn: the previous candidate's thread pool may still be "
                        "spinning, which slows the first call after a switch (a deployed model runs alone)")
    t.add_argument("--peers", default="pt,onnx", metavar="pt,onnx|none",
                   help="Ultralytics peers: predict on the .pt, and on the ONNX Ultralytics exports")
    t.add_argument("--conf", type=float, default=0.25, help="confidence threshold, the same for every candidate")
    t.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold, the same for every candidate")
    t.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where ONNX Runtime and PyTorch run (engines always run on the GPU)")
    ap.add_argument("--accuracy", action="store_true",
                    help="add mAP50 and mAP50-95 (engine.eval.evaluate, conf 0.001, IoU 0.7) on the labelled val split")
    ap.add_argument("--out", type=Path, default=Path("runs/benchmarks"), help="results folder (artifacts cached in it)")
    ap.add_argument("--rebuild", action="store_true", help="build every artifact again instead of reusing the cache")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("--debug", action="store_true", help="show full tracebacks")
    return ap


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Check the flags against each other and fill in the defaults that depend on others."""
    from .harness import wide_imgsz

    args.imgsz = parse_imgsz(args.imgsz)
    args.weights, args.models = args.weights or [], args.models or []
    if args.demo is None:
        args.demo = not (args.weights or args.models)
    if min(args.warmup, args.settle, args.iters - 1, args.block - 1, args.max_frames - 1) < 0:
        raise ConfigError("--warmup and --settle must be >= 0, --iters, --block and --max-frames >= 1",
                          "use the defaults")
    arch = args.arch.strip().lower()
    if arch == "auto":
        args.arch = list(DEFAULT_ARCH) if not (args.weights or args.models) else []
    else:
        args.arch = [] if arch == "none" else [a.strip() for a in arch.split(",") if a.strip()]
    peers = {p.strip().lower() for p in args.peers.split(",") if p.strip()} - {"none"}
    if peers - {"pt", "onnx"}:
        raise ConfigError(f"--peers {args.peers!r}", "use pt, onnx, pt,onnx or none")
    args.peers = peers
    wide = args.wide.strip().lower()
    args.wide = None if wide == "none" or args.models else (wide_imgsz(args.imgsz) if wide == "auto"
                                                            else parse_imgsz(wide))
    if args.wide == args.imgsz:
        args.wide = None
    if args.models and len(args.weights) > 1:
        raise ConfigError("--models takes one --weights (the .pt they came from)", "pass a single --weights")
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
            self.n += k
            if enabled and (self.n % self.step == 0 or self.n == total):
                print(f"timing: {self.n}/{total} calls", file=sys.stderr, flush=True)

        def set_description(self, d):
            pass

        def close(self):
            pass

    return _Plain()


def _accuracy(group: Group, device: str, cache: dict, log) -> dict[str, dict]:
    """mAP of each candidate (cached by file and size); one that cannot be scored gets a note instead."""
    from engine.eval.evaluate import evaluate

    from .candidates import accuracy_predictor

    out = {}
    for c in group.running():
        if c.form == "end2end":  # its graph dropped every box under the conf baked in at export
            group.notes.append(f"{c.name}: no mAP (the graph keeps only boxes above the conf baked in at export; "
                               "mAP needs conf 0.001)")
            continue
        key = (str(c.path), c.imgsz, c.role)
        if key not in cache:
            log(f"mAP of {c.name} ({c.path.name}) on {group.data}")
            try:
                pred, close = accuracy_predictor(c, device)
                try:
                    cache[key] = evaluate(pred, group.data, progress=sys.stderr.isatty())
                finally:
                    close()
            except DeployError as e:
                cache[key] = f"{c.name}: no mAP ({e.message})"
        if isinstance(cache[key], str):
            group.notes.append(cache[key])
        else:
            out[c.name] = cache[key]
    return out


def _targets(group: dict) -> list[dict]:
    """Issue 8's targets, wherever this run has the candidates they compare."""
    g, out = group, []
    if g["kind"] == "main" and g["batch"] == 1:
        specs = [Target("INT8 CPU form vs Ultralytics .pt", "ours int8-cpu", PEER_PT, 0.35),
                 Target("INT8 CPU form vs Ultralytics ONNX", "ours int8-cpu", PEER_ONNX, 0.5),
                 Target("our FP32 vs Ultralytics ONNX", "ours fp32", PEER_ONNX, 0.95)]
    elif g["kind"] == "wide" and len(g.get("sizes", [])) == 2:
        sq, wd = g["sizes"]
        specs = [Target(f"{wd} model vs {sq} on 16:9 frames ({form})", f"ours {form} {wd}", f"ours {form} {sq}", 0.65)
                 for form in ("fp32", "int8-cpu")]
    else:
        return []
    by_name = {c["name"]: c for c in g["candidates"] if not c.get("skipped")}
    for t in specs:
        a, b = by_name.get(t.numerator), by_name.get(t.denominator)
        value = a["per_frame_ms"]["end_to_end"]["p50"] / b["per_frame_ms"]["end_to_end"]["p50"] if a and b else None
        out.append({"group": g["id"], **t.verdict(value)})
    return out


def _comparisons(group: dict) -> list[dict]:
    if group["kind"] != "wide" or len(group.get("sizes", [])) != 2:
        return []
    sq, wd = group["sizes"]
    by_name = {c["name"]: c for c in group["candidates"] if not c.get("skipped")}
    out = []
    for form in ("fp32", "int8-cpu"):
        a, b = by_name.get(f"ours {form} {wd}"), by_name.get(f"ours {form} {sq}")
        if a and b:
            out.append({"group": group["id"], "name": f"{form}: {wd} / {sq}",
                        "ratio": a["per_frame_ms"]["end_to_end"]["p50"] / b["per_frame_ms"]["end_to_end"]["p50"]})
    return out


def run(args: argparse.Namespace, argv: list[str]) -> dict:
    """Plan, build, time and report; returns the results dict (also written to ``args.out``)."""
    from .plan import load_frames, plan

    os.environ.setdefault("YOLO_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    log = _log_to(args.out / "benchmark.log")
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    env = environment()
    frames = load_frames(args)
    groups = plan(args, frames, log)
    opts = {"conf": args.conf, "iou": args.iou, "device": args.device}
    total = sum(calls_per_candidate(args.warmup, args.iters, args.block, args.settle) * len(g.running())
                for g in groups)
    bar = _bar(total, not args.no_progress)
    acc_cache: dict = {}
    out_groups = []
    try:
        for g in groups:
            bar.set_description(g.id)
            for c in g.running():
                c.options = opts
                c.load()
            load = [load_average()]
            try:
                times = measure(g, args.warmup, args.iters, args.block, args.settle, bar.update)
            finally:
                for c in g.running():
                    c.close()
            load.append(load_average())
            acc = {}
            if args.accuracy and g.batch == 1 and not g.random:
                if g.data is None:
                    g.notes.append("no mAP: no labelled data (pass --data data.yaml)")
                else:
                    acc = _accuracy(g, args.device, acc_cache, log)
            out_groups.append(_group_result(g, times, acc) | {"load_avg": load})
    finally:
        bar.close()
    env["load_avg_end"] = load_average()
    res = {
        "schema": 1, "command": "python -m benchmarks.run" + (" " + shlex.join(argv) if argv else ""),
        "started": started, "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "env": env,
        "settings": {"imgsz": list(args.imgsz), "wide": list(args.wide) if args.wide else None, "batch": args.batch,
                     "warmup": args.warmup, "iters": args.iters, "block": args.block, "settle": args.settle,
                     "conf": args.conf,
                     "iou": args.iou, "device": args.device, "peers": sorted(args.peers), "accuracy": args.accuracy,
                     "frames": frames.desc},
        "groups": out_groups,
        "comparisons": [c for g in out_groups for c in _comparisons(g)],
        "targets": [t for g in out_groups for t in _targets(g)],
        "skipped": [{"group": g["id"], "file": c["file"], "reason": c["skipped"]}
                    for g in out_groups for c in g["candidates"] if c.get("skipped")],
    }
    files = report.write_all(res, args.out)
    report.print_tables(res)
    print("wrote " + ", ".join(str(p) for p in files.values()))
    return res


def _group_result(g: Group, times: dict, acc: dict) -> dict:
    summary = summarize_group(g, times)
    cands = []
    for c in g.candidates:
        row = {"name": c.name, "role": c.role, "form": c.form, "label": c.label, "file": c.path.name,
               "path": str(c.path), "imgsz": list(c.imgsz), "skipped": c.skip}
        if c.skip is None:
            row.update(summary[c.name])
            if c.name in acc:
                row.update(map50=acc[c.name].map50, map50_95=acc[c.name].map50_95)
        cands.append(row)
    res = {"id": g.id, "title": g.title, "kind": g.kind, "model": g.model, "random_weights": g.random,
           "batch": g.batch, "frames": g.frames_desc, "notes": g.notes, "accuracy": bool(acc),
           "candidates": cands, "ratios": group_ratios(g, summary)}
    if g.kind == "wide":
        sizes = sorted({tuple(c.imgsz) for c in g.candidates if c.role == OURS}, key=lambda s: -s[0] * s[1])
        res["sizes"] = [f"{h}x{w}" for h, w in sizes]
    return res


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    return run_cli(lambda: run(resolve(args), argv), args.debug)


if __name__ == "__main__":
    sys.exit(main())
