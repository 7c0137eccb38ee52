"""Load test of ``engine.serve``: N concurrent clients over loopback against the same Detector in a loop.

For each server mode it starts ``python -m engine.serve`` (from ``.venv-triton``) on free 127.0.0.1 ports,
warms it up, lets ``--clients`` threads each send up to ``--requests`` single-frame requests (raw uint8
frames) for at most ``--duration`` seconds, then stops the server. The baseline is the same model in a
``Detector`` called in a loop in this process (its defaults). Modes and the baseline run in ``--rounds``
rounds, in a shuffled order each round; a mode's figure is the median over rounds.

Reported per mode: throughput (frames/s) and its ratio to the baseline (the target: at least 0.8),
p50/p95/p99 latency, the mean batch Triton really ran (its Prometheus metrics: inferences / executions),
and the CPU milliseconds per served frame of the clients and of the server's processes (Triton, its
Python-backend stubs that run the Detectors, the serving Python), which do not depend on how busy the machine is the way
throughput does. Modes (``--modes``): ``default`` (the server's defaults), ``on``/``off`` (dynamic batching
forced on/off, the instances and threads of ``--instances``/``--threads``), ``on-1x`` (batching on, one
instance on all cores: the defaults before they were measured), ``direct`` (the defaults with ``--no-front``:
clients reach Triton's own endpoints, so ``default`` against ``direct`` is what engine.serve's front costs).

    python scripts/triton_load.py --model deploy/demo.onnx --clients 8 --duration 30 --rounds 2

Bounded: at most 64 clients, 10,000 requests each and 600 s per mode; nothing leaves 127.0.0.1.
Not a unit test; its figures go in benchmarks/RESULTS.md ("Triton") with the machine's load.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = ROOT / "assets" / "demo" / "val" / "images"
LIMITS = {"clients": 64, "requests": 10_000, "duration": 600.0}
TARGET = 0.8  # served frames/s at least this share of the Detector in a loop (issue 22)
MODES = {
    "default": ([], "the server's defaults"),
    "on": (["--dynamic-batching", "on"], "dynamic batching on"),
    "off": (["--dynamic-batching", "off"], "dynamic batching off"),
    "on-1x": (["--dynamic-batching", "on", "--instances", "1", "--threads", "0"],
              "dynamic batching on, 1 instance on all cores"),
    "direct": (["--no-front"], "the defaults, clients reaching Triton's own endpoints (no front: its cost)"),
}
BASELINE = "Detector in a loop"


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
    load_avg: list[float] = field(default_factory=list)  # 1-minute load before and after: other work skews figures
    cpu_ms_per_frame: dict[str, float] = field(default_factory=dict)
    server_said: str = ""
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


SERVED = ("yolo", "yolo_encoded")  # the models engine.serve loads: ready when both are
START_TRIES = 2  # a start has failed under load before (the stub handshake, with pytriton): one retry


class Server:
    """``python -m engine.serve`` as a subprocess on free loopback ports; stopped with SIGTERM."""

    def __init__(self, python: Path, model: Path, flags: list[str], log: Path) -> None:
        self.http, self.grpc, self.metrics = _free_ports(3)
        cmd = [str(python), "-m", "engine.serve", "--model", str(model), "--http-port", str(self.http),
               "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics), *flags]
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
                if all(client.is_model_ready(m) for m in SERVED):
                    return
            except Exception:  # not listening yet
                pass
            time.sleep(0.5)
        raise RuntimeError(f"engine.serve not ready in {timeout:.0f}s; see {self.log}")

    def said(self) -> str:
        """The server's own line saying what it serves and how (batching, instances, threads)."""
        lines = [ln for ln in self.log.read_text(errors="replace").splitlines() if ln.startswith("serving ")]
        return lines[-1] if lines else ""

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


def _cpu_seconds(pid: int | None) -> dict[str, float]:
    """CPU seconds so far of this process ("client") and of ``pid``'s process tree, by kind of process."""
    try:
        import psutil
    except ImportError:
        return {}
    me = psutil.Process()
    out = {"client": sum(me.cpu_times()[:2])}
    if pid is None:
        return out
    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        try:
            cmd = " ".join(p.cmdline())
            name = ("server (Python)" if p.pid == pid else "stub (Detector)" if "stub" in cmd
                    else "Triton" if "tritonserver" in cmd else "other")
            out[name] = out.get(name, 0.0) + sum(p.cpu_times()[:2])
        except psutil.Error:  # exited meanwhile
            pass
    return out


def _per_frame(before: dict, after: dict, frames: int) -> dict[str, float]:
    out = {k: round((after[k] - before.get(k, 0.0)) / max(frames, 1) * 1e3, 2) for k in after}
    if out:
        out["all"] = round(sum(out.values()), 2)
    return out


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def measure(mode: str, url: str, protocol: str, frames: list[np.ndarray], args, server: Server | None) -> ModeResult:
    run_clients(url, protocol, frames, min(args.clients, 4), 3, 30.0)  # warm-up, not counted
    before = _batch_counters(server.metrics, "yolo") if server else None
    load0, cpu0 = _load(), _cpu_seconds(server.proc.pid if server else None)
    lat, errors, first, wall = run_clients(url, protocol, frames, args.clients, args.requests, args.duration)
    cpu = _per_frame(cpu0, _cpu_seconds(server.proc.pid if server else None), len(lat))
    mean_batch = None
    if before:
        after = _batch_counters(server.metrics, "yolo")
        execs = after[1] - before[1]
        mean_batch = round((after[0] - before[0]) / execs, 2) if execs else None
    ms = np.array(lat) * 1e3 if lat else np.array([np.nan])
    return ModeResult(mode, args.clients, len(lat), errors, round(wall, 2), round(len(lat) / wall, 2),
                      *(round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)), mean_batch, [load0, _load()],
                      cpu, server.said() if server else "", first)


def baseline(model: Path, frames: list[np.ndarray], seconds: float) -> ModeResult:
    """The same model in a Detector (its defaults) called in a loop, frame by frame, in this process."""
    sys.path.insert(0, str(ROOT))
    from engine import Detector

    load0 = _load()
    with Detector(model) as det:
        for f in frames[:3]:
            det(f)
        cpu0 = _cpu_seconds(None)
        lat, t0 = [], time.perf_counter()
        while time.perf_counter() - t0 < seconds and len(lat) < 10_000:
            t = time.perf_counter()
            det(frames[len(lat) % len(frames)])
            lat.append(time.perf_counter() - t)
        wall = time.perf_counter() - t0
        cpu = _per_frame(cpu0, _cpu_seconds(None), len(lat))
    ms = np.array(lat) * 1e3
    return ModeResult(BASELINE, 1, len(lat), 0, round(wall, 2), round(len(lat) / wall, 2),
                      *(round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)), 1.0, [load0, _load()],
                      {"Detector": cpu.get("client", 0.0)} if cpu else {})


def summarize(results: list[ModeResult]) -> list[dict]:
    """Per mode: the median over rounds of frames/s, its ratio to the baseline's median, the target's verdict."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.stats import Target, percentile

    by: dict[str, list[ModeResult]] = {}
    for r in results:
        by.setdefault(r.mode, []).append(r)
    base = percentile([r.fps for r in by.get(BASELINE, [])], 50) if BASELINE in by else None
    rows = []
    for mode, rs in by.items():
        fps = percentile([r.fps for r in rs], 50)
        row = {"mode": mode, "rounds": len(rs), "fps": round(fps, 2), "fps_rounds": [r.fps for r in rs],
               "mean_batch": rs[-1].mean_batch if len(rs) == 1 else
               (round(percentile([r.mean_batch for r in rs if r.mean_batch], 50), 2)
                if any(r.mean_batch for r in rs) else None),
               "cpu_ms_per_frame": rs[-1].cpu_ms_per_frame, "p50_ms": percentile([r.p50_ms for r in rs], 50),
               "p95_ms": percentile([r.p95_ms for r in rs], 50), "errors": sum(r.errors for r in rs),
               "load_avg": [x for r in rs for x in r.load_avg], "server_said": rs[-1].server_said}
        if mode != BASELINE and base:
            row["target"] = Target(f"served ({mode}) vs {BASELINE}", mode, BASELINE, TARGET,
                                   at_least=True).verdict(fps / base)
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| mode | frames/s (median; each round) | × Detector in a loop (≥ 0.80) | mean batch | p50 / p95 ms | "
             "CPU ms per frame (all; client, Triton, stub, server) | load avg | errors |",
             "| --- | --- | --- | ---: | --- | --- | --- | ---: |"]
    for r in rows:
        t = r.get("target")
        verdict = "" if not t else f"{t['ratio']:.2f} " + ("met" if t["met"] else f"**missed** by {t['missed_by']:.2f}")
        cpu = r["cpu_ms_per_frame"]
        parts = "; ".join(f"{k} {v}" for k, v in cpu.items() if k != "all")
        lines.append(f"| {r['mode']} | {r['fps']} ({', '.join(map(str, r['fps_rounds']))}) | {verdict} | "
                     f"{'—' if r['mean_batch'] is None else r['mean_batch']} | {r['p50_ms']:.1f} / {r['p95_ms']:.1f} | "
                     f"{cpu.get('all', '—')} ({parts}) | {'–'.join(f'{x:.2f}' for x in r['load_avg'])} | "
                     f"{r['errors']} |")
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
    ap.add_argument("--requests", type=int, default=10_000, help=f"requests per client (<= {LIMITS['requests']})")
    ap.add_argument("--duration", type=float, default=30.0, help=f"seconds per mode at most (<= {LIMITS['duration']:.0f})")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of the baseline and every mode, shuffled each round")
    ap.add_argument("--seed", type=int, default=None, help="seed of the shuffles (None: a random one, recorded)")
    ap.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    ap.add_argument("--modes", default="default,direct,on,off,on-1x", help=f"server modes, of {', '.join(MODES)}")
    ap.add_argument("--max-batch", type=int, default=8, help="engine.serve --max-batch")
    ap.add_argument("--queue-delay-us", type=int, default=2000, help="engine.serve --queue-delay-us")
    ap.add_argument("--instances", type=int, default=None, help="engine.serve --instances of the on/off modes")
    ap.add_argument("--threads", type=int, default=None, help="engine.serve --threads of the on/off modes")
    ap.add_argument("--server-python", type=Path, default=ROOT / ".venv-triton" / "bin" / "python",
                    help="the Python that runs engine.serve (made by .ci/setup_triton.sh)")
    ap.add_argument("--no-baseline", action="store_true", help="leave out the Detector in a loop")
    ap.add_argument("--json", type=Path, default=None, help="write the results here too")
    ap.add_argument("--md", type=Path, default=None, help="write the Markdown report here too")
    ap.add_argument("--log-dir", type=Path, default=Path("/tmp"), help="where the servers' logs go")
    return ap


def _mode_flags(mode: str, args) -> list[str]:
    flags = list(MODES[mode][0]) + ["--max-batch", str(args.max_batch), "--queue-delay-us", str(args.queue_delay_us)]
    if mode in ("on", "off"):
        flags += (["--instances", str(args.instances)] if args.instances else []) + (
            ["--threads", str(args.threads)] if args.threads is not None else [])
    return flags


def _started(job: str, args) -> Server:
    """A ready server for ``job``; a start that fails is tried once more (and said), a second failure raised."""
    for attempt in range(1, START_TRIES + 1):
        server = Server(args.server_python, args.model, _mode_flags(job, args),
                        args.log_dir / f"triton_load_{job}{'' if attempt == 1 else f'.try{attempt}'}.log")
        try:
            server.wait_ready()
            return server
        except RuntimeError as e:
            server.stop()
            if attempt == START_TRIES:
                raise
            print(f"{job}: the server did not start ({e}); starting it again", flush=True)
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for key, top in LIMITS.items():
        v = getattr(args, key)
        if not 0 < v <= top:
            sys.exit(f"error: --{key} {v} is outside 1..{top}\n  fix: this script is bounded; pass a smaller --{key}")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(MODES) or args.rounds < 1:
        sys.exit(f"error: --modes {args.modes!r} / --rounds {args.rounds}\n  fix: use modes of {', '.join(MODES)} "
                 "and 1 round or more")
    if args.url is None and (args.model is None or not args.model.exists()):
        sys.exit(f"error: --model {args.model} not found\n  fix: pass a model built by python -m exporters.build")
    if args.url is None and not args.server_python.exists():
        sys.exit(f"error: {args.server_python} missing\n  fix: bash .ci/setup_triton.sh")
    sys.path.insert(0, str(ROOT))
    from benchmarks.env import describe, environment

    env = environment()
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    frames = _load_images(args.images, args.num_images)
    results: list[ModeResult] = []
    jobs = ([BASELINE] if args.model and not args.no_baseline else []) + (["url"] if args.url else modes)
    rng = random.Random(seed)
    for r in range(args.rounds):
        order = jobs[:]
        rng.shuffle(order)
        for job in order:
            if job == BASELINE:
                results.append(baseline(args.model, frames, min(args.duration, 20.0)))
            elif job == "url":
                results.append(measure(f"server at {args.url}", args.url, args.protocol, frames, args, None))
            else:
                server = _started(job, args)
                try:
                    url = f"127.0.0.1:{server.grpc if args.protocol == 'grpc' else server.http}"
                    results.append(measure(job, url, args.protocol, frames, args, server))
                finally:
                    server.stop()
            x = results[-1]
            print(f"round {r + 1}: {x.mode}: {x.fps} frames/s, mean batch {x.mean_batch}, load {x.load_avg}",
                  flush=True)
    env["load_avg_end"] = env_end = [round(v, 2) for v in os.getloadavg()]
    rows = summarize(results)
    busy = [x for x in (env["load_avg_start"] or [0])[:1] + env_end[:1] + [v for r in results for v in r.load_avg]
            if x > (os.cpu_count() or 1)]
    head = [f"`{' '.join(['python scripts/triton_load.py', *(argv if argv is not None else sys.argv[1:])])}`", "",
            f"Run {started} (UTC) on {describe(env)}; seed {seed}. {len(frames)} frames {frames[0].shape[1]}x"
            f"{frames[0].shape[0]} from {args.images}; model {args.model}; {args.protocol}; {args.clients} clients.",
            "Versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + "."]
    head += [f"**Warning: the load average reached {max(busy):.2f}, above the {os.cpu_count()} cores: other work "
             "shared the machine; rerun on a quiet machine.**"] if busy else []
    servers = sorted({f"- {r['mode']}: {r['server_said']}" for r in rows if r["server_said"]})
    text = "\n".join(head + ["", markdown(rows), ""] + (["How each server ran (its own log line):", *servers]
                                                          if servers else []))
    print()
    print(text)
    for r in results:
        if r.first_error:
            print(f"{r.mode}: first error: {r.first_error}")
    if args.md:
        args.md.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps({"env": env, "started": started, "seed": seed, "rows": rows,
                                         "runs": [asdict(r) for r in results]}, indent=1))
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
