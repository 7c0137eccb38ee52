"""What tracking, incident rules and event delivery add per frame of one stream, with 10 objects in view.

    python -m benchmarks.alerts_cost [--frames 2000] [--rounds 3] [--objects 10]

Each candidate runs in its own process, in interleaved rounds (so a busy machine slows them alike), on
the same synthetic detections: ``--objects`` boxes moving across a 640x360 frame, each leaving after a
few seconds and replaced by a new one, so incidents keep starting and ending (with snapshots):

* ``ultralytics-bytetrack`` (the peer): Ultralytics' ``BYTETracker.update`` alone, as ``model.track`` runs it;
* ``track``: our :class:`~engine.track.TrackingProcessor` (roboflow's ByteTrack), one result at a time;
* ``track+rules+sinks``: the tracker, then :class:`~engine.events.EventsProcessor` with two rules (one
  with a zone) delivering to ``events.jsonl`` and a webhook on a local HTTP server, snapshots written.

Per candidate: the pipeline thread's time per frame (median, p95, mean) — what a stream's frame waits
for — and the process's CPU time per frame over all its threads (the bus and sink threads too), which
is what the stream costs the machine. No model runs: the detector's time is the same with or without
these stages.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

CANDIDATES = ("ultralytics-bytetrack", "track", "track+rules+sinks")
NAMES = ("disc", "box", "triangle")
RULES = {"rules": [{"name": "disc-alert", "classes": ["disc"], "min_confidence": 0.5, "min_duration": 1.0,
                    "end_after": 1.0},
                   {"name": "right-half", "classes": ["box", "triangle"], "min_duration": 0.5, "end_after": 1.0,
                    "zone": [[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]]}]}


def detections(frames: int, objects: int, seed: int = 0):
    """Per frame: (xyxy, score, class) of ``objects`` boxes; each object lives 2-6 s, then a new one starts."""
    from engine.detections import Detections

    rng = np.random.default_rng(seed)
    w, h, side = 640, 360, 40

    def spawn():
        return [rng.uniform(0, w - side), rng.uniform(0, h - side), rng.uniform(-3, 3), rng.uniform(-2, 2),
                int(rng.integers(60, 180)), int(rng.integers(0, 3)), rng.uniform(0.55, 0.95)]

    live = [spawn() for _ in range(objects)]
    out = []
    for _ in range(frames):
        boxes, scores, classes = [], [], []
        for k, o in enumerate(live):
            o[0] = min(max(o[0] + o[2], 0), w - side)
            o[1] = min(max(o[1] + o[3], 0), h - side)
            o[4] -= 1
            if o[4] <= 0:
                live[k] = o = spawn()
            boxes.append([o[0], o[1], o[0] + side, o[1] + side])
            scores.append(o[6] + rng.normal(0, 0.02))
            classes.append(o[5])
        out.append(Detections(np.array(boxes, np.float32), np.clip(scores, 0.1, 1.0), np.array(classes), NAMES))
    return out


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def _ultralytics(dets):
    from types import SimpleNamespace

    from ultralytics.trackers.byte_tracker import BYTETracker
    from ultralytics.utils import YAML
    from ultralytics.utils.checks import check_yaml

    class Boxes:  # what BYTETracker reads from Ultralytics' Boxes (NumPy side)
        def __init__(self, xyxy, conf, cls):
            self.xyxy, self.conf, self.cls = xyxy, conf, cls
            self.xywh = np.c_[(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]]

        def __len__(self):
            return len(self.conf)

        def __getitem__(self, m):
            return Boxes(self.xyxy[m], self.conf[m], self.cls[m])

    tracker = BYTETracker(SimpleNamespace(**YAML.load(check_yaml("bytetrack.yaml"))))
    boxes = [Boxes(d.xyxy, d.confidence, d.class_id.astype(np.float32)) for d in dets]

    def step(i: int) -> None:
        tracker.update(boxes[i])

    return step, lambda: None


def _ours(dets, with_events: bool, folder: Path):
    from engine.events import EventsProcessor
    from engine.events.rules import parse_alerts
    from engine.stream.metrics import StreamMetrics
    from engine.stream.processors import StreamContext
    from engine.stream.sinks import StreamResult
    from engine.stream.sources import SourceKind, SourceSpec
    from engine.track import TrackingProcessor

    metrics = StreamMetrics()
    metrics.add("cam")
    context = StreamContext(NAMES, {"cam": SourceSpec("clip.mp4", "cam", SourceKind.FILE)}, metrics, tracked=True)
    stages = [TrackingProcessor("bytetrack")]
    server = None
    if with_events:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        rules = {**RULES, "webhook": {"url": f"http://127.0.0.1:{server.server_address[1]}/hook"}}
        stages.append(EventsProcessor(parse_alerts(rules, "rules.yaml"), folder / "save"))
    for s in stages:
        s.start(context)
    image = np.full((360, 640, 3), 100, np.uint8)

    def step(i: int) -> None:
        result = StreamResult("cam", i, 1.7e9 + i / 30, image, dets[i], 0.0, 30.0)
        for s in stages:
            result = s.process(result)

    def close() -> None:
        for s in stages:
            s.close()
        if server is not None:
            server.shutdown()

    return step, close


def run_candidate(name: str, frames: int, objects: int) -> dict:
    """Time ``name`` over ``frames`` frames in this process (100 untimed frames first)."""
    warm = 100
    dets = detections(frames + warm, objects)
    with tempfile.TemporaryDirectory() as tmp:
        if name == "ultralytics-bytetrack":
            step, close = _ultralytics(dets)
        else:
            step, close = _ours(dets, name == "track+rules+sinks", Path(tmp))
        for i in range(warm):
            step(i)
        times = np.empty(frames)
        cpu0 = time.process_time()
        for i in range(frames):
            t0 = time.perf_counter()
            step(warm + i)
            times[i] = time.perf_counter() - t0
        cpu = time.process_time() - cpu0  # every thread of this process: the bus and sinks too
        close()
        events = 0
        log = Path(tmp) / "save" / "events.jsonl"
        if log.is_file():
            events = len(log.read_text(encoding="utf-8").splitlines())
    return {"candidate": name, "frames": frames, "median_ms": float(np.median(times) * 1e3),
            "p95_ms": float(np.percentile(times, 95) * 1e3), "mean_ms": float(times.mean() * 1e3),
            "cpu_ms_per_frame": cpu / frames * 1e3, "events": events}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=2000, help="timed frames per candidate and round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; each runs every candidate once, in turn")
    ap.add_argument("--objects", type=int, default=10, help="objects in view in every frame")
    ap.add_argument("--candidate", choices=CANDIDATES, help=argparse.SUPPRESS)  # one child process
    args = ap.parse_args(argv)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    if args.candidate:
        print(json.dumps(run_candidate(args.candidate, args.frames, args.objects)))
        return 0
    from benchmarks.env import cpu_model

    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; load before: {os.getloadavg()[0]:.2f}", flush=True)
    rows: dict[str, list[dict]] = {c: [] for c in CANDIDATES}
    for r in range(args.rounds):
        for c in CANDIDATES:
            p = subprocess.run([sys.executable, "-m", "benchmarks.alerts_cost", "--candidate", c, "--frames",
                                str(args.frames), "--objects", str(args.objects)], capture_output=True, text=True,
                               cwd=Path(__file__).resolve().parents[1])
            if p.returncode != 0:
                raise SystemExit(f"{c} failed:\n{p.stderr[-3000:]}")
            rows[c].append(json.loads(p.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1} {c}: {rows[c][-1]['median_ms']:.3f} ms median", flush=True)
    peer = np.median([x["median_ms"] for x in rows["ultralytics-bytetrack"]])
    print(f"\n{args.objects} objects, {args.frames} frames x {args.rounds} rounds per candidate "
          f"(medians over rounds; load after: {os.getloadavg()[0]:.2f})")
    print(f"{'candidate':24s} {'median ms':>10s} {'p95 ms':>8s} {'mean ms':>8s} {'CPU ms/frame':>13s} "
          f"{'vs peer':>8s} {'events':>7s}")
    for c, rs in rows.items():
        med = float(np.median([x["median_ms"] for x in rs]))
        print(f"{c:24s} {med:10.3f} {np.median([x['p95_ms'] for x in rs]):8.3f} "
              f"{np.median([x['mean_ms'] for x in rs]):8.3f} {np.median([x['cpu_ms_per_frame'] for x in rs]):13.3f} "
              f"{med / peer:7.2f}x {rs[-1]['events']:7d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
