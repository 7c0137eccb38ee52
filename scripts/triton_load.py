"""Load test of ``engine.serve``: N concurrent clients over loopback, dynamic batching on and off.

For each mode it starts ``python -m engine.serve`` (from ``.venv-triton``) on free 127.0.0.1 ports, warms
it up, lets ``--clients`` threads each send up to ``--requests`` single-frame requests (raw uint8 frames)
for at most ``--duration`` seconds, then stops the server. Reported per mode: requests, errors,
throughput (frames/s), p50/p95/p99 latency, and the mean batch Triton actually ran (from its Prometheus
metrics: inferences / executions). ``--baseline`` adds the local ``Detector`` on one thread.

    python scripts/triton_load.py --model deploy/demo.onnx --clients 8 --requests 100 --duration 60

Bounded: at most 64 clients, 10,000 requests each and 600 s per mode; nothing leaves 127.0.0.1.
Not a unit test; its figures go in benchmarks/RESULTS.md ("Triton").
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = ROOT / "assets" / "demo" / "val" / "images"
LIMITS = {"clients": 64, "requests": 10_000, "duration": 600.0}


@dataclass
class ModeResult:
    mode: str
    clients: int
    requests: int
    errors: int
    seconds: float
    fps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_batch: float | None
    load_avg: float = 0.0  # the machine's 1-minute load average at the end: other work skews the figures
    first_error: str = ""


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _load_images(folder: Path, count: int) -> list[np.ndarray]:
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))[:count]
    frames = [f for f in (cv2.imread(str(p)) for p in files) if f is not None]
    if not frames:
        sys.exit(f"error: no images in {folder}\n  fix: pass --images with a folder of JPEG/PNG files")
    return frames


def _metric(text: str, name: str, model: str) -> float:
    m = re.search(rf'^{name}\{{model="{re.escape(model)}",version="1"\}} ([0-9.e+]+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def _batch_counters(metrics_port: int, model: str) -> tuple[float, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    return _metric(text, "nv_inference_count", model), _metric(text, "nv_inference_exec_count", model)


class Server:
    """``python -m engine.serve`` as a subprocess on free loopback ports; stopped with SIGTERM."""

    def __init__(self, python: Path, model: Path, max_batch: int, dynamic: bool, threads: int, delay_us: int,
                 log: Path) -> None:
        self.http, self.grpc, self.metrics = _free_ports(3)
        cmd = [str(python), "-m", "engine.serve", "--model", str(model), "--http-port", str(self.http),
               "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics), "--max-batch", str(max_batch),
               "--threads", str(threads), "--queue-delay-us", str(delay_us)] + ([] if dynamic else ["--no-dynamic-batching"])
        self.log = log
        with open(log, "w") as f:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 180) -> None:
        import tritonclient.http as th

        client = th.InferenceServerClient(f"127.0.0.1:{self.http}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"engine.serve exited with {self.proc.returncode}; see {self.log}")
            try:
                if client.is_model_ready("yolo"):
                    return
            except Exception:  # not listening yet
                pass
            time.sleep(0.5)
        raise RuntimeError(f"engine.serve not ready in {timeout:.0f}s; see {self.log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _client_module(protocol: str):
    if protocol == "grpc":
        import tritonclient.grpc as mod
    else:
        import tritonclient.http as mod
    return mod


def run_clients(url: str, protocol: str, frames: list[np.ndarray], clients: int, requests: int,
                duration: float) -> tuple[list[float], int, str, float]:
    """Latencies (s) of successful requests, error count, first error, wall seconds."""
    mod = _client_module(protocol)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    first_error: list[str] = []
    start_barrier = threading.Barrier(clients + 1)
    deadline = [0.0]

    def worker(k: int) -> None:
        client = mod.InferenceServerClient(url)
        inputs = []
        for f in frames:
            inp = mod.InferInput("image", [1, *f.shape], "UINT8")
            inp.set_data_from_numpy(f[None])
            inputs.append(inp)
        start_barrier.wait()
        for j in range(requests):
            if time.perf_counter() > deadline[0]:
                break
            t = time.perf_counter()
            try:
                client.infer("yolo", [inputs[(k + j) % len(inputs)]])
                latencies[k].append(time.perf_counter() - t)
            except Exception as e:  # counted, the first one reported
                errors[k] += 1
                if not first_error:
                    first_error.append(f"{type(e).__name__}: {str(e)[:300]}")

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    deadline[0] = time.perf_counter() + duration
    t0 = time.perf_counter()
    start_barrier.wait()
    for t in threads:
        t.join(timeout=duration + 120)
    wall = time.perf_counter() - t0
    return [x for per in latencies for x in per], sum(errors), (first_error or [""])[0], wall


def measure(mode: str, url: str, protocol: str, frames: list[np.ndarray], args, metrics_port: int | None) -> ModeResult:
    run_clients(url, protocol, frames, min(args.clients, 4), 3, 30.0)  # warm-up, not counted
    before = _batch_counters(metrics_port, "yolo") if metrics_port else None
    lat, errors, first, wall = run_clients(url, protocol, frames, args.clients, args.requests, args.duration)
    mean_batch = None
    if before:
        after = _batch_counters(metrics_port, "yolo")
        execs = after[1] - before[1]
        mean_batch = round((after[0] - before[0]) / execs, 2) if execs else None
    ms = np.array(lat) * 1e3 if lat else np.array([np.nan])
    return ModeResult(mode, args.clients, len(lat), errors, round(wall, 2), round(len(lat) / wall, 2),
                      *(round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)), mean_batch,
                      round(os.getloadavg()[0], 1), first)


def baseline(model: Path, frames: list[np.ndarray], seconds: float, threads: int) -> ModeResult:
    """The local Detector on one thread, frame by frame: the server's cost is measured against it."""
    sys.path.insert(0, str(ROOT))
    from engine import Detector

    opts = {"intra_op_threads": threads} if model.suffix == ".onnx" else {}
    with Detector(model, **opts) as det:
        for f in frames[:3]:
            det(f)
        lat, t0 = [], time.perf_counter()
        while time.perf_counter() - t0 < seconds and len(lat) < 10_000:
            t = time.perf_counter()
            det(frames[len(lat) % len(frames)])
            lat.append(time.perf_counter() - t)
        wall = time.perf_counter() - t0
    ms = np.array(lat) * 1e3
    return ModeResult("local Detector (1 thread)", 1, len(lat), 0, round(wall, 2), round(len(lat) / wall, 2),
                      *(round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)), 1.0,
                      round(os.getloadavg()[0], 1))


def markdown(results: list[ModeResult]) -> str:
    lines = ["| mode | clients | requests | errors | frames/s | p50 ms | p95 ms | p99 ms | mean batch | load avg |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| {r.mode} | {r.clients} | {r.requests} | {r.errors} | {r.fps} | {r.p50_ms} | {r.p95_ms} | "
                     f"{r.p99_ms} | {'—' if r.mean_batch is None else r.mean_batch} | {r.load_avg} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python scripts/triton_load.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--model", type=Path, help="model to serve (a dynamic-batch .onnx lets batches run as one)")
    ap.add_argument("--url", default=None, help="load an already running server (host:port of --protocol) instead; "
                                                "one mode, as that server was started")
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of frames to send")
    ap.add_argument("--num-images", type=int, default=16, help="frames loaded from --images")
    ap.add_argument("--clients", type=int, default=8, help=f"concurrent clients (<= {LIMITS['clients']})")
    ap.add_argument("--requests", type=int, default=100, help=f"requests per client (<= {LIMITS['requests']})")
    ap.add_argument("--duration", type=float, default=60.0, help=f"seconds per mode at most (<= {LIMITS['duration']:.0f})")
    ap.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    ap.add_argument("--modes", default="on,off", help="dynamic batching modes to run: on, off or on,off")
    ap.add_argument("--max-batch", type=int, default=8, help="engine.serve --max-batch")
    ap.add_argument("--queue-delay-us", type=int, default=2000, help="engine.serve --queue-delay-us")
    ap.add_argument("--threads", type=int, default=0, help="engine.serve --threads (ONNX Runtime intra-op)")
    ap.add_argument("--server-python", type=Path, default=ROOT / ".venv-triton" / "bin" / "python",
                    help="the Python that runs engine.serve (made by .ci/setup_triton.sh)")
    ap.add_argument("--baseline", action="store_true", help="also time the local Detector on one thread")
    ap.add_argument("--json", type=Path, default=None, help="write the results here too")
    ap.add_argument("--log-dir", type=Path, default=Path("/tmp"), help="where the servers' logs go")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for key, top in LIMITS.items():
        v = getattr(args, key)
        if not 0 < v <= top:
            sys.exit(f"error: --{key} {v} is outside 1..{top}\n  fix: this script is bounded; pass a smaller --{key}")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not set(modes) <= {"on", "off"} or not modes:
        sys.exit(f"error: --modes {args.modes!r}\n  fix: use on, off or on,off")
    if args.url is None and (args.model is None or not args.model.is_file()):
        sys.exit(f"error: --model {args.model} is not a file\n  fix: pass a model built by python -m exporters.build")
    if args.url is None and not args.server_python.exists():
        sys.exit(f"error: {args.server_python} missing\n  fix: bash .ci/setup_triton.sh")
    frames = _load_images(args.images, args.num_images)
    results: list[ModeResult] = []
    if args.baseline and args.model:
        results.append(baseline(args.model, frames, min(args.duration, 20.0), args.threads))
        print(markdown(results[-1:]).splitlines()[-1], flush=True)
    if args.url:
        results.append(measure(f"server at {args.url}", args.url, args.protocol, frames, args, None))
    for mode in ([] if args.url else modes):
        name = (f"dynamic batching on (max batch {args.max_batch}, delay {args.queue_delay_us} us)" if mode == "on"
                else "dynamic batching off")
        server = Server(args.server_python, args.model, args.max_batch, mode == "on", args.threads,
                        args.queue_delay_us, args.log_dir / f"triton_load_{mode}.log")
        try:
            server.wait_ready()
            url = f"127.0.0.1:{server.grpc if args.protocol == 'grpc' else server.http}"
            results.append(measure(name, url, args.protocol, frames, args, server.metrics))
        finally:
            server.stop()
        print(markdown(results[-1:]).splitlines()[-1], flush=True)
    print()
    print(f"{len(frames)} frames {frames[0].shape[1]}x{frames[0].shape[0]} from {args.images}; model "
          f"{args.model}; {args.protocol}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs")
    print(markdown(results))
    for r in results:
        if r.first_error:
            print(f"{r.mode}: first error: {r.first_error}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
