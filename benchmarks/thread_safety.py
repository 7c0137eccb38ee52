"""What a thread-safe ``Detector`` costs, and what it buys: the shipped design against its two peers.

    python -m benchmarks.thread_safety [--model deploy/demo.onnx] [--calls 200] [--threads 4]

Candidates, each timed in its own process on the demo val images (batch 1):

* ``shipped``: per-call state (a letterbox buffer from a free list, per-thread ONNX Runtime IO
  binding) and the close gate (a lock and a set operation on entry and exit of each call);
* ``no-gate``: the same with the gate replaced by a no-op: the difference is what the gate costs;
* ``one-lock``: the other design the issue allows, one lock around the whole call.

Each prints the median milliseconds per call from one thread, and frames per second with ``--threads``
threads calling at once; the table gives each against ``shipped``. A last line times the gate alone
(entry and exit of ``with gate.call()``, microseconds). Figures from a busy machine are not figures:
the script prints the load average before and after.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

CANDIDATES = ("shipped", "no-gate", "one-lock")


def _frames():
    import cv2

    from exporters.config import DEMO_DIR

    return [cv2.imread(str(p)) for p in sorted((DEMO_DIR / "val" / "images").glob("*.jpg"))[:8]]


def child(model: str, candidate: str, calls: int, threads: int) -> dict:
    """Time one candidate in this process."""
    import numpy as np

    from engine import Detector

    det = Detector(model, device="cpu")
    if candidate == "no-gate":
        det._gate.call = contextlib.nullcontext
    elif candidate == "one-lock":
        lock, predict = threading.Lock(), det.predict

        def locked(frames):
            with lock:
                return predict(frames)

        det.predict = locked
    frames = _frames()
    for f in frames:  # warm-up: shapes, buffers, ONNX Runtime's first runs
        det(f)
    single = []
    for i in range(calls):
        t0 = time.perf_counter()
        det(frames[i % len(frames)])
        single.append((time.perf_counter() - t0) * 1e3)

    def worker(k: int) -> None:
        for i in range(calls):
            det(frames[(k + i) % len(frames)])

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    t0 = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.perf_counter() - t0
    det.close()
    return {"ms_per_call": float(np.median(single)), "fps_threads": threads * calls / wall}


def gate_us(n: int = 200_000) -> float:
    from engine.backends.base import CallGate

    gate = CallGate("bench")
    t0 = time.perf_counter()
    for _ in range(n):
        with gate.call():
            pass
    return (time.perf_counter() - t0) / n * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.thread_safety", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="deploy/demo.onnx", help="an .onnx model (python -m exporters.build makes it)")
    ap.add_argument("--calls", type=int, default=200, help="calls per thread")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--child", choices=CANDIDATES, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.model, args.child, args.calls, args.threads)))
        return 0
    if not Path(args.model).is_file():
        print(f"error: {args.model} not found\n  fix: run python -m exporters.build, or pass --model", file=sys.stderr)
        return 2
    print(f"load average before: {os.getloadavg()}")
    results = {}
    for name in CANDIDATES:
        p = subprocess.run([sys.executable, "-m", "benchmarks.thread_safety", "--child", name, "--model", args.model,
                            "--calls", str(args.calls), "--threads", str(args.threads)],
                           capture_output=True, text=True, check=True)
        results[name] = json.loads(p.stdout.strip().splitlines()[-1])
    base = results["shipped"]
    print(f"{'candidate':10} {'ms/call (1 thread)':>20} {'vs shipped':>11} {f'fps ({args.threads} threads)':>18} "
          f"{'vs shipped':>11}")
    for name, r in results.items():
        print(f"{name:10} {r['ms_per_call']:20.3f} {r['ms_per_call'] / base['ms_per_call']:10.3f}x "
              f"{r['fps_threads']:18.1f} {r['fps_threads'] / base['fps_threads']:10.3f}x")
    print(f"the gate alone: {gate_us():.2f} us per call")
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
