"""Signal a running ``Stream`` at random moments, many times, under a CPU load made here; report each stop.

Run by tests/test_stream_signals.py as ``python -m tests.stream_signal_driver MODEL CLIP FOLDER OUT RUNS SEED``.
Each run builds a Stream with another worker count and other sources (a looping file, a looping folder,
a file read in real time, a camera URL that refuses connections, a camera that accepts and never sends:
its open holds OpenCV's FFmpeg lock, which a video writer also takes, for up to --read-timeout, here 3 s),
waits until its signal handler is in place, waits a random time (so the signal lands while the model
loads, while sources open, mid-batch or between frames), sends SIGINT or SIGTERM to this process and
times how long ``run()`` takes to return. Prints one line per run, ``run K SIG workers=W sources=... stop
S.SSs results N``, then ``max_stop S.SSs``; a run that does not return within 20 s dumps every thread's
stack and exits 1. Every partial output is checked: each video that has results plays, one frame per result.
"""
from __future__ import annotations

import faulthandler
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2

from engine.pool import DetectorPool
from engine.stream import CaptureConfig, Stream, StreamConfig
from engine.stream.sinks import JsonLinesSink, VideoSink


def silent_camera() -> tuple[str, socket.socket]:
    """An rtsp:// URL on loopback whose server accepts and never answers (a camera that hangs)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: [held.append(srv.accept()[0]) for _ in iter(int, 1)], daemon=True).start()
    return f"rtsp://127.0.0.1:{srv.getsockname()[1]}/silent", srv


def refused_camera() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"rtsp://127.0.0.1:{port}/nobody"


def cpu_load() -> list[subprocess.Popen]:
    """One busy process per core, so that signals meet a machine with no idle core."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]


def video_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def check_outputs(out: Path, live: set[str]) -> int:
    """Every result line's source has a finalized video with one frame per result (files read frame by frame)."""
    jsonl = out / "detections.jsonl"
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()] if jsonl.is_file() else []
    per_source: dict[str, int] = {}
    for x in lines:
        per_source[x["source"]] = per_source.get(x["source"], 0) + 1
    for source, n in per_source.items():
        frames = video_frames(out / f"{source}.mp4")
        ok = frames >= n if source in live else frames == n  # a real-time source repeats frames over drops
        assert ok, f"{source}: {n} results but its video plays {frames} frames"
    return len(lines)


def main() -> int:
    model, clip, folder, out_root, runs, seed = sys.argv[1:7]
    rng = random.Random(int(seed))
    silent, _srv = silent_camera()
    load = cpu_load()
    pools = {w: DetectorPool(model, workers=w) for w in (2, 3)}
    worst = 0.0
    try:
        for k in range(int(runs)):
            workers = rng.choice([1, 2, 3])
            sources = rng.choice([[f"cam={clip}"], [f"pics={folder}"], [f"cam={clip}", f"pics={folder}"],
                                  [f"live={clip}"], [f"cam={clip}", f"gone={refused_camera()}"],
                                  [f"pics={folder}", f"hung={silent}"]])
            realtime = any(s.startswith("live=") for s in sources)
            sig = rng.choice([signal.SIGINT, signal.SIGTERM])
            own = k % 5 == 0  # every fifth run loads the model itself (the signal may land while it loads)
            detector = model if own or workers == 1 else pools[workers]
            out = Path(out_root) / f"run{k}"
            config = StreamConfig(capture=CaptureConfig(loop=True, realtime=realtime, connect_attempts=0,
                                                        reconnect_max=0.5, read_timeout=3.0),
                                  log_interval=0, workers=workers if isinstance(detector, str) else None)
            stream = Stream(detector, sources, config, [VideoSink(out), JsonLinesSink(out / "detections.jsonl")])
            delay = rng.uniform(0.0, 0.4)
            sent: list[float] = []

            def fire() -> None:
                while signal.getsignal(signal.SIGINT) is not stream._signals:  # run() has its handlers in place
                    time.sleep(0.001)
                time.sleep(delay)
                sent.append(time.monotonic())
                os.kill(os.getpid(), sig)

            threading.Thread(target=fire, daemon=True).start()
            faulthandler.dump_traceback_later(20, exit=True)  # a hang: every thread's stack, then exit 1
            interrupted = False
            try:
                stream.run()
            except KeyboardInterrupt:
                interrupted = True
            done = time.monotonic()
            faulthandler.cancel_dump_traceback_later()
            assert interrupted == (sig == signal.SIGINT), f"run {k}: {sig.name} gave interrupted={interrupted}"
            stop = done - sent[0]
            worst = max(worst, stop)
            n = check_outputs(out, {"live"})
            print(f"run {k} {sig.name} workers={workers} sources={','.join(s.split('=')[0] for s in sources)} "
                  f"stop {stop:.2f}s results {n}", flush=True)
    finally:
        for p in load:
            p.kill()
            p.wait()
        for pool in pools.values():
            pool.close()
    print(f"max_stop {worst:.2f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
