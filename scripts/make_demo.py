"""Make the bundled demo: a synthetic detection dataset and a YOLO11n trained on it from scratch.

The dataset ("shapes") is of our own design so that nothing is downloaded: three classes of filled
shapes (disc, box, triangle) in random colours and sizes on cluttered, noisy backgrounds, in 16:9,
4:3 and square frames. Labels are exact (we draw the shapes), in YOLO format.

    python scripts/make_demo.py                 # dataset + training (~35 min on 2 CPU cores)
    python scripts/make_demo.py --data-only     # just the dataset
    python scripts/make_demo.py --kind signs --work /work/data/signs --assets /work/data/signs/bundle
                                                # a second model on other data (scripts/synth_signs.py)
    python scripts/make_demo.py --data-only --seed 10 --n-train 0 --n-val 600 --n-calib 0 --work /work/data/fresh
                                                # 600 fresh labelled demo-domain images (val seed 11)

The script writes the dataset to ``--work`` (default ``build/demo``), trains
``YOLO("yolo11n.yaml")`` on the CPU with a fixed seed, and copies into ``assets/demo/``:
``demo.pt`` (the best weights), ``val/`` (images + labels), ``calib/`` (unlabelled-use images + labels)
and ``data.yaml`` (train: calib, val: val) so every later stage has a labelled set to use.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("disc", "box", "triangle")
FRAME_SIZES = ((640, 360), (512, 384), (480, 480))  # (w, h): 16:9, 4:3, square
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: `scripts.synth_signs` must import


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A gradient plus noise plus a few thin lines: enough clutter that shapes must be learned."""
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0.0, 1.0, w if rng.random() < 0.5 else h, dtype=np.float32)
    grad = (c0[None, :] * (1 - t[:, None]) + c1[None, :] * t[:, None]).astype(np.float32)
    img = np.broadcast_to(grad[None, :, :], (h, w, 3)) if len(t) == w else np.broadcast_to(grad[:, None, :], (h, w, 3))
    img = img + rng.normal(0, 12, (h, w, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(0, 6))):
        p1 = tuple(int(v) for v in rng.integers(0, (w, h)))
        p2 = tuple(int(v) for v in rng.integers(0, (w, h)))
        cv2.line(img, p1, p2, tuple(int(v) for v in rng.integers(0, 256, 3)), int(rng.integers(1, 3)))
    return img


def _contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> tuple[int, int, int]:
    """A colour at least 90 (L1/3) away from the mean colour of the region it is drawn on."""
    mean = under.reshape(-1, 3).mean(0)
    for _ in range(50):
        col = rng.integers(0, 256, 3)
        if np.abs(col - mean).mean() > 90:
            break
    return tuple(int(v) for v in col)


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over the smaller box's area: a later shape must never hide an earlier one."""
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))


def _draw(img: np.ndarray, cls: int, box: np.ndarray, colour, rng: np.random.Generator) -> np.ndarray:
    """Draw shape ``cls`` filling ``box`` (x1,y1,x2,y2) and return its tight box."""
    x1, y1, x2, y2 = (int(v) for v in box)
    if cls == 0:  # disc (ellipse, mildly elongated)
        cv2.ellipse(img, ((x1 + x2) // 2, (y1 + y2) // 2), ((x2 - x1) // 2, (y2 - y1) // 2), 0, 0, 360, colour, -1)
    elif cls == 1:  # box
        cv2.rectangle(img, (x1, y1), (x2, y2), colour, -1)
    else:  # triangle, apex at a random x along the top edge
        apex = int(rng.integers(x1, x2 + 1))
        pts = np.array([[apex, y1], [x1, y2], [x2, y2]], np.int32)
        cv2.fillPoly(img, [pts], colour)
    return np.array([x1, y1, x2, y2], np.float32)


def make_image(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, float, float, float, float]]]:
    """One frame and its YOLO labels (class, cx, cy, w, h normalised)."""
    w, h = FRAME_SIZES[int(rng.integers(0, len(FRAME_SIZES)))]
    img = _background(rng, w, h)
    boxes: list[np.ndarray] = []
    labels = []
    for _ in range(int(rng.integers(1, 7))):
        side = float(np.exp(rng.uniform(np.log(22), np.log(min(w, h) * 0.55))))
        aspect = float(np.exp(rng.uniform(-0.35, 0.35)))
        bw, bh = side * aspect, side / aspect
        if bw >= w - 2 or bh >= h - 2:
            continue
        x1, y1 = rng.uniform(1, w - bw - 1), rng.uniform(1, h - bh - 1)
        box = np.array([x1, y1, x1 + bw, y1 + bh], np.float32)
        if any(_overlap(box, b) > 0.2 for b in boxes):
            continue
        cls = int(rng.integers(0, len(CLASSES)))
        region = img[int(box[1]) : int(box[3]) + 1, int(box[0]) : int(box[2]) + 1]
        tight = _draw(img, cls, box, _contrasting_colour(rng, region), rng)
        boxes.append(box)
        labels.append((cls, (tight[0] + tight[2]) / 2 / w, (tight[1] + tight[3]) / 2 / h,
                       (tight[2] - tight[0]) / w, (tight[3] - tight[1]) / h))
    img = cv2.GaussianBlur(img, (3, 3), 0)
    return img, labels


def _kinds() -> dict:
    """Data-set kinds: name -> (make_image, class names)."""
    from scripts import synth_signs

    return {"shapes": (make_image, CLASSES), "signs": (synth_signs.make_image, synth_signs.CLASSES)}


def write_split(root: Path, n: int, seed: int, quality: int = 90, kind: str = "shapes") -> None:
    """Write ``n`` images and labels of data-set ``kind`` under ``root/images`` and ``root/labels``."""
    make = _kinds()[kind][0]
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img, labels = make(rng)
        cv2.imwrite(str(root / "images" / f"{i:05d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        lines = [f"{c} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}" for c, cx, cy, bw, bh in labels]
        (root / "labels" / f"{i:05d}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))


def write_yaml(path: Path, train: str, val: str, root: Path | None = None, kind: str = "shapes") -> None:
    """A YOLO data.yaml; without ``root`` the splits resolve against the yaml's own folder."""
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(_kinds()[kind][1]))
    head = f"path: {root.as_posix()}\n" if root else ""
    path.write_text(f"{head}train: {train}\nval: {val}\nnames:\n{names}\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "build" / "demo", help="dataset + run dir (default: build/demo)")
    ap.add_argument("--assets", type=Path, default=ROOT / "assets" / "demo", help="where the bundle goes (default: assets/demo)")
    ap.add_argument("--n-train", type=int, default=400, help="training images (default: 400)")
    ap.add_argument("--n-val", type=int, default=100, help="validation images (default: 100)")
    ap.add_argument("--n-calib", type=int, default=64, help="calibration images (default: 64)")
    ap.add_argument("--epochs", type=int, default=50, help="training epochs (default: 50)")
    ap.add_argument("--imgsz", type=int, default=320, help="training size (default: 320)")
    ap.add_argument("--seed", type=int, default=0, help="seed for data and training (default: 0)")
    ap.add_argument("--data-only", action="store_true", help="write the dataset and stop")
    ap.add_argument("--kind", default="shapes", choices=("shapes", "signs"),
                    help="data set: the demo's shapes, or signs (scripts/synth_signs.py) for a second model")
    ap.add_argument("--stem", default="demo", help="name of the weights file in --assets (default: demo)")
    args = ap.parse_args(argv)

    data = args.work / "data"
    t0 = time.time()
    for split, n, offset in (("train", args.n_train, 0), ("val", args.n_val, 1), ("calib", args.n_calib, 2)):
        write_split(data / split, n, seed=args.seed + offset, kind=args.kind)
    write_yaml(data / "data.yaml", "train/images", "val/images", root=data.resolve(), kind=args.kind)
    print(f"dataset written to {data} in {time.time() - t0:.1f}s")
    if args.data_only:
        return 0

    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO  # heavy import only when training

    model = YOLO("yolo11n.yaml")
    model.train(data=str(data / "data.yaml"), imgsz=args.imgsz, epochs=args.epochs, batch=16, workers=2,
                device="cpu", seed=args.seed, deterministic=True, amp=False, plots=False,
                project=str(args.work.resolve() / "runs"), name="train", exist_ok=True, verbose=False)
    best = args.work.resolve() / "runs" / "train" / "weights" / "best.pt"
    metrics = YOLO(str(best)).val(data=str(data / "data.yaml"), imgsz=args.imgsz, batch=16, device="cpu",
                                  plots=False, verbose=False)
    result = {"map50": float(metrics.box.map50), "map50_95": float(metrics.box.map), "imgsz": args.imgsz,
              "epochs": args.epochs, "seed": args.seed, "train_minutes": round((time.time() - t0) / 60, 1)}
    print(json.dumps(result))

    args.assets.mkdir(parents=True, exist_ok=True)
    shutil.copy2(best, args.assets / f"{args.stem}.pt")
    for split in ("val", "calib"):
        shutil.rmtree(args.assets / split, ignore_errors=True)
        shutil.copytree(data / split, args.assets / split)
    write_yaml(args.assets / "data.yaml", "calib/images", "val/images", kind=args.kind)
    (args.assets / "train_result.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
