"""Soak test of the stream pipeline: many frames through it, resident memory must stay flat.

    python scripts/soak_stream.py                       # 10,000 frames, demo model, looped clip + RTSP
    python scripts/soak_stream.py --frames 2000 --no-rtsp --model deploy/demo.onnx

Sources: a generated clip read frame by frame in a loop, plus (when GStreamer's RTSP server is
installed, see tests/rtsp_server.py) a live RTSP camera on loopback. Every result goes through the
video and JSON-lines sinks into a temporary folder. Resident memory (RSS) is sampled every
``--sample-every`` frames; after ``--warmup`` frames it must stay within ``--tolerance`` (5 %) of its
post-warm-up baseline. Prints a summary and a Markdown row for benchmarks/RESULTS.md; exit code 1
when memory grew. Not a unit test: it takes minutes.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.stream.sinks import JsonLinesSink, StreamResult, VideoSink  # noqa: E402
from engine.stream import CaptureConfig, Stream, StreamConfig  # noqa: E402


def rss_mb() -> float:
    """Resident set size of this process in MiB (psutil, else /proc)."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        import os

        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def machine() -> str:
    """CPU model, cores, OS and Python, for the results table."""
    import os

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()}, Python {platform.python_version()}"


def default_model(work: Path) -> Path:
    """The bundled demo model exported to ONNX (needs the export extra).

    Exported in a child process: torch must not inflate this process's memory, which is what we measure.
    """
    import subprocess

    pt = ROOT / "assets" / "demo" / "demo.pt"
    if not pt.is_file():
        sys.exit(f"{pt} missing: pass --model, or run python scripts/make_demo.py")
    subprocess.run([sys.executable, "-m", "exporters.build", "--weights", str(pt), "--out", str(work)],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return work / "demo.onnx"


class Sampler:
    """Counts results and samples RSS every ``every`` frames (on the pipeline thread: no extra thread)."""

    def __init__(self, every: int) -> None:
        self.every, self.n = every, 0
        self.samples: list[tuple[int, float, float]] = [(0, time.perf_counter(), rss_mb())]

    def __call__(self, result: StreamResult) -> None:
        self.n += 1
        if self.n % self.every == 0:
            self.samples.append((self.n, time.perf_counter(), rss_mb()))
            if self.n % (self.every * 8) == 0:
                print(f"  {self.n:6d} frames  rss {self.samples[-1][2]:7.1f} MiB", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--frames", type=int, default=10_000, help="frames to process in all")
    ap.add_argument("--model", type=Path, help="model file (default: the demo model, exported here)")
    ap.add_argument("--no-rtsp", action="store_true", help="file source only (no GStreamer RTSP server)")
    ap.add_argument("--warmup", type=int, default=1000, help="frames before the memory baseline")
    ap.add_argument("--sample-every", type=int, default=100, help="frames between RSS samples")
    ap.add_argument("--tolerance", type=float, default=0.05, help="allowed RSS growth after warm-up (fraction)")
    ap.add_argument("--json", type=Path, help="also write the summary here")
    args = ap.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")

    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        work = Path(tmp)
        from tests.rtsp_server import RtspServer, make_clip, unavailable_reason

        clip = make_clip(work / "clip.mp4", frames=300, size=(640, 360), fps=15.0)
        model = args.model or default_model(work)
        sources, server = [f"clip={clip}"], None
        reason = "--no-rtsp" if args.no_rtsp else unavailable_reason()
        if reason is None:
            # a 60 s clip: at its end the server closes the stream, so the soak also reconnects every minute
            server = RtspServer(make_clip(work / "live.mp4", frames=900, size=(640, 360), fps=15.0)).start()
            sources.append(f"cam={server.url}")
        else:
            print(f"no RTSP source: {reason}")
        sampler = Sampler(args.sample_every)
        config = StreamConfig(capture=CaptureConfig(loop=True, reconnect_max=1.0, read_timeout=5),
                              max_frames=args.frames, log_interval=60)
        sinks = [VideoSink(work / "out"), JsonLinesSink(work / "out" / "detections.jsonl")]
        print(f"soak: {args.frames} frames, model {model}, sources {', '.join(sources)}")
        t0 = time.perf_counter()
        try:
            snap = Stream(str(model), sources, config, sinks, on_result=sampler).run()
        finally:
            if server is not None:
                server.kill()
        elapsed = time.perf_counter() - t0
        video_mb = sum(p.stat().st_size for p in (work / "out").glob("*.mp4")) / 2**20

    after = [s for s in sampler.samples if s[0] >= args.warmup]
    if len(after) < 2:
        print("too few frames after warm-up to judge memory; raise --frames or lower --warmup")
        return 1
    base = after[0][2]
    peak, final = max(s[2] for s in after), after[-1][2]
    growth = (peak - base) / base
    summary = {
        "frames": sampler.n, "seconds": round(elapsed, 1), "fps": round(sampler.n / elapsed, 1),
        "rss_start_mb": round(sampler.samples[0][2], 1), "rss_after_warmup_mb": round(base, 1),
        "rss_peak_mb": round(peak, 1), "rss_final_mb": round(final, 1), "growth_pct": round(100 * growth, 2),
        "flat": growth <= args.tolerance, "video_mb": round(video_mb, 1), "sources": snap,
        "machine": machine(),
        "command": "python scripts/soak_stream.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    print(json.dumps(summary, indent=2))
    cam = snap.get("cam", {})
    print("\n| frames | time | fps | RSS after warm-up | peak | final | growth | live drops | reconnects |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {sampler.n} | {elapsed:.0f} s | {summary['fps']} | {base:.1f} MiB | {peak:.1f} MiB | {final:.1f} MiB "
          f"| {100 * growth:+.2f} % | {cam.get('dropped', '-')} | {cam.get('reconnects', '-')} |")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    print("memory flat" if summary["flat"] else f"memory grew {100 * growth:.1f} % (> {100 * args.tolerance:.0f} %)")
    return 0 if summary["flat"] else 1


if __name__ == "__main__":
    sys.exit(main())
