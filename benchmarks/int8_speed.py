"""End-to-end CPU speed of each precision's ONNX artifact: FP32, FP16, INT8 TensorRT form, INT8 CPU form.

    python -m exporters.build                          # deploy/demo{,.fp16,.int8,.int8-cpu}.onnx
    python -m benchmarks.int8_speed [--deploy deploy] [--stem demo] [--iters 20] [--rounds 25] [--threads N]
    python -m benchmarks.int8_speed --workers 2        # throughput of two single-threaded detectors per model

What is timed: ``Detector(path)(frame)`` on real frames (the demo val images, cycled), i.e. letterbox +
ONNX Runtime CPU inference + decode and NMS, per frame, batch 1, conf 0.25. Each model lives in its own
process (a :class:`benchmarks.worker.Worker`, as in ``benchmarks.run``: its own ONNX Runtime, thread pool
and allocator, so one model's threads and memory never slow another's), and the parent has the processes
run in interleaved rounds (each round times every model ``--iters`` times, one process at a time) so a
busy machine slows them alike. The machine, its
load before and after, and the library versions are printed first.
Per model: the median over all its calls, and its speed-up over FP32 as the median, over rounds, of
the ratio of the two models' block medians in the same round (with the middle half of those ratios). ``--threads`` sets ONNX Runtime's intra-op
threads (0: its default, all cores).

``--workers N`` times throughput instead: each model runs as a :class:`~engine.pool.DetectorPool` of N
detectors (``--threads`` each, default cores // N), a call takes N frames at once, and a call's time over
N is its time per frame. That is the figure for several cameras on one CPU, not one frame's latency.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.candidates import OURS
from benchmarks.env import cpu_model, describe, environment, load_average
from benchmarks.worker import FrameSet, Worker, WorkerSpec
from engine.cli import run_cli
from engine.errors import ConfigError, DatasetError, ModelLoadError
from exporters.config import DEMO_DIR, REPO_ROOT

PAUSE_S = 0.01  # before each block: the previous model's ONNX Runtime threads stop spinning

FORMS = (("fp32", ".onnx"), ("fp16", ".fp16.onnx"), ("int8 (TensorRT form, S8S8)", ".int8.onnx"),
         ("int8-cpu (U8S8)", ".int8-cpu.onnx"))


def _frames(folder: Path, n: int) -> list[np.ndarray]:
    from engine.eval.datasets import list_images, read_image

    files = list_images(folder)[:n]
    if not files:
        raise DatasetError(f"no images in {folder}", "pass --images with a folder of JPEG/PNG frames")
    return [read_image(p) for p in files]


FRAMES = 32


def _row(name: str, file: str, blocks: list[list[float]], fp32_blocks: list[list[float]]) -> dict:
    """One model's figures; its speed-up is the median over rounds of FP32's and its block medians.

    Pairing each block with FP32's block of the same round cancels slow drifts of a shared machine
    (here the same model's median moved between about 5.4 and 7.4 ms from one minute to the next).
    """
    calls = np.concatenate(blocks)
    med = float(np.median(calls))
    ratios = [np.median(f) / np.median(b) for f, b in zip(fp32_blocks, blocks)]
    lo, mid, hi = (float(v) for v in np.percentile(ratios, (25, 50, 75)))
    return {"model": name, "file": file, "median_ms": round(med * 1e3, 2),
            "p90_ms": round(float(np.percentile(calls, 90)) * 1e3, 2), "fps": round(1.0 / med, 1),
            "speedup_vs_fp32": round(mid, 2), "speedup_iqr": [round(lo, 2), round(hi, 2)]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deploy", type=Path, default=REPO_ROOT / "deploy", help="folder of the build (default: deploy)")
    ap.add_argument("--stem", default="demo", help="artifact stem (default: demo)")
    ap.add_argument("--images", type=Path, default=DEMO_DIR / "val" / "images", help="frames to run (default: demo val)")
    ap.add_argument("--iters", type=int, default=20, help="timed calls per model per round (default: 20)")
    ap.add_argument("--rounds", type=int, default=25, help="interleaved rounds (default: 25)")
    ap.add_argument("--warmup", type=int, default=20, help="untimed calls per model first (default: 20)")
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (default: 0 = all cores)")
    ap.add_argument("--workers", type=int, default=1,
                    help="detectors per model run side by side, N frames per call (default: 1, latency)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    return run_cli(lambda: _run(args), False)


def _run(args: argparse.Namespace) -> int:
    """Measure and print the table; the figures also go to ``--json``."""
    w = args.workers
    if w < 1:
        raise ConfigError(f"--workers {w}", "use 1 or more")
    if args.rounds < 1 or args.iters < 1 or args.warmup < 0 or args.threads < 0:
        raise ConfigError(f"--rounds {args.rounds}, --iters {args.iters}, --warmup {args.warmup}, "
                          f"--threads {args.threads}", "use --rounds and --iters >= 1, --warmup and --threads >= 0")
    if args.json:  # checked now, not after the whole run
        from engine.stream.sinks import check_writable

        check_writable(args.json.parent, "pass a --json path in a writable folder")
    env0 = environment()
    print(f"machine: {describe(env0)}", flush=True)
    paths = {name: args.deploy / f"{args.stem}{suffix}" for name, suffix in FORMS}
    paths = {name: p for name, p in paths.items() if p.is_file()}
    if "fp32" not in paths:
        raise ModelLoadError(f"{args.deploy / (args.stem + '.onnx')} not found",
                             "run python -m exporters.build first, or pass --deploy / --stem")
    times: dict[str, list[list[float]]] = {k: [] for k in paths}
    with tempfile.TemporaryDirectory(prefix="int8-speed-") as tmp, contextlib.ExitStack() as stack:
        frames = FrameSet.write(_frames(args.images, FRAMES), Path(tmp) / "frames.npy", str(args.images))
        # imgsz (0, 0): our Detector takes its input size from the model; the worker reports what ran
        workers = {name: stack.enter_context(Worker(WorkerSpec(name, OURS, p, (0, 0), frames, batch=w,
                                                                 warmup=args.warmup, device="cpu",
                                                                 threads=args.threads, pool=w)))
                   for name, p in paths.items()}  # each loads and warms up in its own process, all alive
        for _ in range(args.rounds):
            for name, worker in workers.items():
                time.sleep(PAUSE_S)
                calls, _ = worker.run(0, args.iters)
                times[name].append([c.end_to_end / 1e3 / w for c in calls])  # per frame: w frames ran at once
        info = workers["fp32"].info
        imgsz, det_threads, pids = info["imgsz"], info["threads"], {n: wk.info["pid"] for n, wk in workers.items()}
    rows = [_row(name, paths[name].name, blocks, times["fp32"]) for name, blocks in times.items()]
    import onnxruntime as ort

    env = {"cpu": cpu_model(), "cores": os.cpu_count(), "onnxruntime": ort.__version__, "imgsz": list(imgsz),
           "threads": args.threads, "workers": w, "frames": FRAMES, "calls_per_model": args.iters * args.rounds,
           "pids": pids,
           "machine": {**env0, "load_avg_end": load_average()}}
    print(f"{env['cpu']}, {env['cores']} cores, ONNX Runtime {ort.__version__} CPU, imgsz {imgsz[0]}x{imgsz[1]}, "
          f"batch 1, end to end (letterbox + inference + NMS), {env['calls_per_model']} calls per model"
          + (f", {w} detectors per model side by side ({det_threads} threads each), ms per frame = "
             f"a call's time / {w}" if w > 1 else "") + ", each model in its own process\n")
    print("| model | file | median ms | p90 ms | FPS | speed-up vs FP32 (median of rounds) | middle half of rounds |\n"
          "|---|---|---|---|---|---|---|")
    for r in rows:
        lo, hi = r["speedup_iqr"]
        print(f"| {r['model']} | {r['file']} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | {r['fps']:.1f} | "
              f"{r['speedup_vs_fp32']:.2f}x | {lo:.2f}-{hi:.2f}x |")
    print(f"\nmachine: {describe(env['machine'])}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"env": env, "rows": rows}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
