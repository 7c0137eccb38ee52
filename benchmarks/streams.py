"""The multi-stream group: N synthetic 720p cameras through ``engine.stream`` against Ultralytics' ``predict(stream=True)``.

Each camera is a clip made from the benchmark's frames (1280x720, ``--stream-fps``, ``--stream-seconds``
long, one file per camera). Every (candidate, cameras, pace) runs once, in its own spawned process, in a
shuffled order:

- ours: ``engine.stream.Stream`` on the model path with its automatic worker choice, at the clip's frame
  rate (``CaptureConfig(realtime=True)``: a camera; frames the detector cannot keep up with are dropped and
  counted) and at max rate (read as fast as the clips decode; nothing dropped). Per camera: results per
  second, capture-to-result latency (p50/p95 of the results after the first second, the model's first calls
  being slower), dropped frames.
- Ultralytics: ``YOLO(...).predict(source="cams.streams", stream=True, stream_buffer=True)`` (its
  LoadStreams, one reader thread per source, buffered: nothing dropped), at max rate only: its loader has
  no frame-rate pacing for files, and its results carry no capture time, so no latency.
"""
from __future__ import annotations

import argparse
import os
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .candidates import OURS, PEER, PEER_BY_KEY, count_input_sizes, our_options, quiet_ultralytics
from .env import load_average
from .stats import busy, percentile
from .worker import WorkerError, in_fresh_process, size_text

Log = Callable[[str], None]
STREAM_FORMS = ("fp32", "int8-cpu")  # ours on the cameras (plus our OpenVINO forms, when built)
STREAM_PEERS = ("pt", "openvino-int8")  # Ultralytics as its users run it, and its fastest CPU form
WARMUP_S = 1.0


@dataclass(frozen=True)
class StreamSpec:
    """One run of the group."""

    name: str
    role: str
    path: Path
    imgsz: tuple[int, int]
    clips: tuple[Path, ...]
    realtime: bool
    limit_s: float
    conf: float = 0.25
    iou: float = 0.45
    device: str = "cpu"


def write_clip(frames: list[np.ndarray], path: Path, seconds: float, fps: float) -> Path:
    """A camera-like clip: the frames cycled for ``seconds`` at ``fps`` (MPEG-4 in an .mp4)."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    tmp = path.with_name("tmp-" + path.name)
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        from engine.errors import DeployError

        raise DeployError(f"OpenCV cannot write {tmp} (mp4v)", "use an OpenCV build with video writing (opencv-python)")
    for i in range(max(1, round(seconds * fps))):
        writer.write(frames[i % len(frames)])
    writer.release()
    tmp.replace(path)
    return path


def _per_camera(stamps: dict[str, list[float]], lat: dict[str, list[float]], dropped: dict[str, int | None]) -> dict:
    """Frames/s in all and per camera over the window from the first result to the last, and the latency
    of the results after the first :data:`WARMUP_S` seconds."""
    everything = [t for ts in stamps.values() for t in ts]
    if len(everything) < 2:
        raise WorkerError("fewer than two results came out", "make the clips longer (--stream-seconds)")
    t0, t1 = min(everything), max(everything)
    window = max(t1 - t0, 1e-9)
    late = [ms for name in lat for t, ms in zip(stamps[name], lat[name]) if t - t0 >= WARMUP_S]
    return {"fps_total": (len(everything) - 1) / window, "seconds": window,
            "per_camera": [{"camera": name, "frames": len(ts), "fps": len(ts) / window, "dropped": dropped.get(name)}
                           for name, ts in stamps.items()],
            "latency_p50_ms": percentile(late, 50) if late else None,
            "latency_p95_ms": percentile(late, 95) if late else None}


def _ours(spec: StreamSpec) -> dict:
    """In a fresh process: the cameras through ``engine.stream`` with its automatic worker choice."""
    from engine.stream import CaptureConfig, Stream, StreamConfig

    names = [f"cam{i}" for i in range(len(spec.clips))]
    stamps: dict[str, list[float]] = {n: [] for n in names}
    lat: dict[str, list[float]] = {n: [] for n in names}

    def on_result(r) -> None:
        stamps[r.source].append(time.perf_counter())
        lat[r.source].append(r.latency_ms)

    cfg = StreamConfig(capture=CaptureConfig(realtime=spec.realtime), log_interval=0, duration=spec.limit_s)
    stream = Stream(str(spec.path), [f"{n}={c}" for n, c in zip(names, spec.clips)], cfg, on_result=on_result,
                    conf=spec.conf, iou=spec.iou, **our_options(spec.path, spec.device))
    snap = stream.run()
    out = _per_camera(stamps, lat, {n: snap[n]["dropped"] for n in names})
    # our letterbox always fills the model's input: the size it was built at
    return out | {"workers": stream.workers, "input": f"{spec.imgsz[0]}x{spec.imgsz[1]}"}


def _ultralytics(spec: StreamSpec) -> dict:
    """In a fresh process: the cameras through Ultralytics' ``predict(stream=True)`` (LoadStreams, buffered)."""
    quiet_ultralytics()
    from ultralytics import YOLO

    listing = spec.clips[0].parent / f"cams{len(spec.clips)}.streams"
    listing.write_text("\n".join(str(c) for c in spec.clips) + "\n", encoding="utf-8")
    model = YOLO(str(spec.path), task="detect")
    stamps: dict[str, list[float]] = {}
    sizes: Counter = Counter()
    kwargs = dict(imgsz=list(spec.imgsz), conf=spec.conf, iou=spec.iou, verbose=False, stream=True,
                  stream_buffer=True, device="cpu" if spec.device == "cpu" else "0")
    if PEER_BY_KEY["pt"].name != spec.name:
        kwargs["rect"] = False  # an export runs at its own size
    hooked = False
    for r in model.predict(str(listing), **kwargs):
        if not hooked:  # the predictor exists once the first batch ran: count the sizes of the others
            count_input_sizes(model.predictor, sizes)
            hooked = True
        stamps.setdefault(Path(r.path).name, []).append(time.perf_counter())
    # LoadStreams names a result by its cleaned source path; the cameras' files are cam0.mp4, cam1.mp4...
    named = {f"cam{i}": next((v for k, v in stamps.items() if k.endswith(c.name)), []) for i, c in enumerate(spec.clips)}
    out = _per_camera(named, {n: [] for n in named}, {n: None for n in named})
    return out | {"workers": 1, "input": size_text(sizes) if sizes else ""}


def plan_runs(args, built: dict[str, Path], peers: dict[str, Path], size: tuple[int, int], clip_dir: Path,
              frames: list[np.ndarray], log: Log) -> list[StreamSpec]:
    """Every (candidate, cameras, pace) of the group; ``built``: our form → file, ``peers``: peer key → file."""
    cams = max(args.streams)
    clip = write_clip(frames, clip_dir / "cam0.mp4", args.stream_seconds, args.stream_fps)
    clips = [clip] + [_link(clip, clip_dir / f"cam{i}.mp4") for i in range(1, cams)]
    log(f"streams: {cams} camera clip(s) of {args.stream_seconds:g} s at {args.stream_fps:g} fps in {clip_dir}")
    opts = {"conf": args.conf, "iou": args.iou, "device": args.device}
    limit = args.stream_seconds * 20 + 30  # a safety net: a run ends when its clips end
    runs = []
    for n in args.streams:
        for form, path in built.items():
            for realtime in (True, False):
                runs.append(StreamSpec(f"ours {form}", OURS, path, size, tuple(clips[:n]), realtime, limit, **opts))
        for key, path in peers.items():
            peer = PEER_BY_KEY[key]
            imgsz = tuple(args.imgsz) if peer.export is None else size  # a .pt letterboxes to the native size itself
            runs.append(StreamSpec(peer.name, PEER, path, imgsz, tuple(clips[:n]), False, limit, **opts))
    return runs


def _link(src: Path, dst: Path) -> Path:
    """Another camera: the same clip under its own name (a hard link, else a copy)."""
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        import shutil

        shutil.copy2(src, dst)
    return dst


def measure_runs(runs: list[StreamSpec], seed: int, log: Log) -> list[dict]:
    """Each run in its own fresh process, in a shuffled order; a run that fails is listed with why."""
    order = list(range(len(runs)))
    random.Random(seed).shuffle(order)
    cores = os.cpu_count()
    results: dict[int, dict] = {}
    for k in order:
        spec = runs[k]
        pace = "frame rate" if spec.realtime else "max rate"
        row = {"name": spec.name, "role": spec.role, "file": spec.path.name, "cameras": len(spec.clips), "pace": pace}
        log(f"streams: {spec.name}, {len(spec.clips)} camera(s) at {pace}")
        load = load_average()
        try:
            fn = _ours if spec.role == OURS else _ultralytics
            row.update(in_fresh_process(fn, spec, name=f"stream {spec.name}", timeout=spec.limit_s + 300))
        except WorkerError as e:
            row["skipped"] = e.message
            log(f"streams: {spec.name} failed: {e}" + (f"\n{e.detail}" if e.detail else ""))
        row["load_avg"] = load_average() or load
        row["busy"] = busy(load, cores) or busy(row["load_avg"], cores)
        results[k] = row
    return [results[k] for k in range(len(runs))]


def run_streams(args, frames, log: Log) -> list[dict]:
    """The multi-stream group of ``python -m benchmarks.run``: the first trained model at the native size (the
    square one without ``--native``), our CPU forms and the Ultralytics peers of :data:`STREAM_PEERS`."""
    from .artifacts import build_ours, form_of, ultralytics_export
    from .harness import native_imgsz, to_16x9
    from .plan import sources

    trained = sources(argparse.Namespace(**{**vars(args), "arch": []}), log)
    if not trained:
        log("streams: no trained model in this run (--models only, or random weights): no multi-stream group")
        return []
    src = trained[0]
    cams = [to_16x9(f) for f in frames.frames]
    size = tuple(args.imgsz)
    if args.native:
        size = args.native if args.native != "auto" else native_imgsz(cams[0].shape[:2], args.imgsz)
    root = args.cache
    built = {}
    for path in build_ours(src, size, False, root, args.rebuild, log).files:
        form, _ = form_of(path)
        if form in STREAM_FORMS or "openvino" in form:
            built[form] = path
    peers = {}
    for key in STREAM_PEERS:
        peer = PEER_BY_KEY[key]
        if key in args.peers and peer.missing() is None and (not peer.calibrated or src.data):
            peers[key] = src.weights if peer.export is None else ultralytics_export(src, peer, size, False, root,
                                                                                    args.rebuild, log)
    runs = plan_runs(args, built, peers, size, args.out / "streams", cams, log)
    return measure_runs(runs, args.seed, log)
