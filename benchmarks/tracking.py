"""Tracking quality: our stream tracker against Ultralytics' ``model.track(persist=True)`` (its ByteTrack).

    python -m exporters.build                           # deploy/demo.onnx from assets/demo/demo.pt
    python -m benchmarks.tracking [--seeds 0,1,2,3,4] [--frames 450] [--tracker bytetrack] [--track-conf 0.5]
                                  [--no-peer] [--out runs/tracking]

For each seed, :mod:`benchmarks.scene` writes a clip (640x360, 30 fps) of six shapes of the demo's classes
that move, cross and pass behind a pillar, with ground-truth ids in MOT format. Then, on the same clip and
the same model:

* **ours**: ``engine.stream.Stream(deploy/demo.onnx, [clip], tracker=...)``, as ``python -m engine.stream
  --track`` runs it (ONNX Runtime, our letterbox and NMS, one roboflow ``trackers`` tracker per source);
* **Ultralytics**: ``YOLO(demo.pt).track(clip, persist=True, tracker="bytetrack.yaml")`` (PyTorch on the
  CPU, its own ByteTrack with its defaults; it detects at conf 0.1 as ``track()`` does).

Both write MOT files of the boxes they report with an id; ``trackers.eval.evaluate_mot_sequences``
(roboflow's TrackEval-parity implementation) scores them: HOTA, MOTA, IDF1, ID switches, per seed and
combined. Accuracy, not speed: the figures do not depend on the machine's load.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from benchmarks.env import cpu_model
from benchmarks.scene import make_scene
from engine.cli import run_cli
from exporters.config import DEMO_DIR, REPO_ROOT

COLUMNS = ["HOTA", "MOTA", "IDF1", "IDSW", "MT", "ML", "Frag"]


def _row(frame: int, track_id: int, box, score: float) -> str:
    x1, y1, x2, y2 = (float(v) for v in box)
    return f"{frame},{track_id},{x1:.1f},{y1:.1f},{x2 - x1:.1f},{y2 - y1:.1f},{score:.4f},-1,-1,-1"


def run_ours(onnx: Path, video: Path, out: Path, tracker) -> int:
    """Our stream with a tracker over ``video``; MOT rows to ``out``; returns the rows written."""
    from engine.stream import Stream, StreamConfig

    rows: list[str] = []

    def collect(result) -> None:
        d = result.detections
        for box, score, tid in zip(d.xyxy, d.confidence.tolist(), d.track_id.tolist()):
            if tid >= 0:
                rows.append(_row(result.index + 1, tid, box, score))

    Stream(str(onnx), [str(video)], StreamConfig(workers=1, log_interval=0), on_result=collect,
           tracker=tracker).run()
    out.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return len(rows)


def run_ultralytics(weights: Path, video: Path, out: Path) -> int:
    """Ultralytics' own tracking of ``video`` (persist=True, bytetrack.yaml); MOT rows to ``out``."""
    from ultralytics import YOLO

    model = YOLO(str(weights))
    rows: list[str] = []
    for i, r in enumerate(model.track(str(video), persist=True, tracker="bytetrack.yaml", stream=True,
                                      verbose=False, device="cpu")):
        boxes = r.boxes
        if boxes is None or boxes.id is None:
            continue
        for box, tid, score in zip(boxes.xyxy.tolist(), boxes.id.int().tolist(), boxes.conf.tolist()):
            rows.append(_row(i + 1, tid, box, score))
    out.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--onnx", type=Path, default=REPO_ROOT / "deploy" / "demo.onnx", help="our model")
    ap.add_argument("--weights", type=Path, default=DEMO_DIR / "demo.pt", help="the same model for Ultralytics")
    ap.add_argument("--seeds", default="0,1,2,3,4", help="one synthetic clip per seed")
    ap.add_argument("--frames", type=int, default=450, help="frames per clip (30 fps)")
    ap.add_argument("--tracker", default="bytetrack", choices=("bytetrack", "ocsort", "sort"), help="our tracker")
    ap.add_argument("--track-conf", type=float, default=None, help="our tracker's conf (default: TrackerConfig's)")
    ap.add_argument("--no-peer", action="store_true", help="skip Ultralytics (its files from an earlier run stay)")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "tracking")
    args = ap.parse_args(argv)
    return run_cli(lambda: _run(args), False)


def _run(args: argparse.Namespace) -> int:
    from engine.errors import ConfigError

    if not args.onnx.is_file():
        raise ConfigError(f"{args.onnx} not found", "run python -m exporters.build first, or pass --onnx")
    if args.frames < 1:
        raise ConfigError(f"--frames {args.frames} must be at least 1", "e.g. --frames 450 (15 s at 30 fps)")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise ConfigError(f"--seeds {args.seeds!r} is not a comma-separated list of integers",
                          "e.g. --seeds 0,1,2") from None
    if not args.no_peer and not args.weights.is_file():
        raise ConfigError(f"{args.weights} not found (the same model for Ultralytics)",
                          "pass --weights, or --no-peer to skip Ultralytics")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from trackers.eval import evaluate_mot_sequences

    from engine.track import TrackerConfig

    tracker = TrackerConfig(args.tracker) if args.track_conf is None else \
        TrackerConfig(args.tracker, conf=args.track_conf)
    tag = f"{args.tracker}-conf{tracker.conf:g}"
    gt_dir = args.out / "gt"
    dirs = {"ours": args.out / f"ours-{tag}", "ultralytics": args.out / "ultralytics-bytetrack"}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        scene = make_scene(args.out, seed=seed, frames=args.frames)
        n_ours = run_ours(args.onnx, scene.video, dirs["ours"] / f"seed{seed}.txt", tracker)
        n_ul = None if args.no_peer else run_ultralytics(args.weights, scene.video,
                                                         dirs["ultralytics"] / f"seed{seed}.txt")
        print(f"seed {seed}: {scene.frames} frames, {scene.objects} objects; tracked boxes: ours {n_ours}, "
              f"Ultralytics {n_ul}", flush=True)
    report = {"cpu": cpu_model(), "seeds": seeds, "frames": args.frames, "tracker": tag}
    for name, d in dirs.items():
        if name == "ultralytics" and args.no_peer and not all((d / f"seed{s}.txt").is_file() for s in seeds):
            continue
        result = evaluate_mot_sequences(gt_dir, d, metrics=["CLEAR", "HOTA", "Identity"])
        print(f"\n{name} ({d.name})\n{result.table(columns=COLUMNS)}")
        report[name] = json.loads(result.json())
    (args.out / f"report-{tag}.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"\nwrote {args.out / f'report-{tag}.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
