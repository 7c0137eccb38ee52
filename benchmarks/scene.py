"""A synthetic tracking scene with ground truth: shapes of the demo's classes that move, cross each
other and pass behind a pillar, written as an MP4 and a MOT-format ground-truth file.

    from benchmarks.scene import make_scene
    scene = make_scene(Path("out"), seed=0)      # out/seed0.mp4, out/gt/seed0.txt

Each object (a disc, box or triangle in its own colour) moves in a straight line at a constant speed
and bounces off the frame's edges; objects are drawn in id order, so a later one hides an earlier one
where they cross, and a grey pillar in the middle hides every object that passes behind it. The ground
truth box of an object in a frame is the tight box of its *visible* pixels (what a detector can see);
an object less than :data:`MIN_VISIBLE` visible is left out of that frame's ground truth. MOT rows:
``frame(1-based), id, left, top, width, height, 1, 1, visibility``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

MIN_VISIBLE = 0.3
COLOURS = ((40, 40, 230), (230, 60, 30), (30, 190, 40), (200, 40, 200), (20, 200, 230), (240, 240, 240),
           (10, 10, 10), (0, 120, 255))


@dataclass(frozen=True)
class Scene:
    """A written scene: the clip, its ground truth, and what made it."""

    video: Path
    gt: Path
    fps: float
    size: tuple[int, int]
    frames: int
    objects: int
    seed: int


def _mask(cls: int, box: np.ndarray, h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    if cls == 0:
        cv2.ellipse(m, ((x1 + x2) // 2, (y1 + y2) // 2), ((x2 - x1) // 2, (y2 - y1) // 2), 0, 0, 360, 255, -1)
    elif cls == 1:
        cv2.rectangle(m, (x1, y1), (x2, y2), 255, -1)
    else:
        cv2.fillPoly(m, [np.array([[(x1 + x2) // 2, y1], [x1, y2], [x2, y2]], np.int32)], 255)
    return m


def render(seed: int = 0, frames: int = 450, objects: int = 6, size: tuple[int, int] = (640, 360),
           pillar: tuple[int, int] = (290, 350)):
    """Yield ``(image, [(object_id, visible_box_xyxy, visibility), ...])`` per frame."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = (70 + 110 * xx / w + 30 * yy / h)[..., None].repeat(3, 2)
    background = np.clip(base + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
    sides = rng.uniform(44, 70, objects)
    classes = rng.integers(0, 3, objects)
    pos = np.stack([rng.uniform(0, w - sides), rng.uniform(0, h - sides)], 1)
    speed = rng.uniform(2.0, 5.0, objects)
    angle = rng.uniform(0, 2 * np.pi, objects)
    vel = np.stack([np.cos(angle), np.sin(angle) * 0.6], 1) * speed[:, None]  # mostly sideways: more crossings
    for _ in range(frames):
        img = background.copy()
        boxes = np.concatenate([pos, pos + sides[:, None]], 1)
        masks = [_mask(int(c), b, h, w) for c, b in zip(classes, boxes)]
        for k, m in enumerate(masks):
            img[m > 0] = COLOURS[k % len(COLOURS)]
        cv2.rectangle(img, (pillar[0], 0), (pillar[1], h), (128, 128, 128), -1)
        truth = []
        cover = np.zeros((h, w), bool)
        cover[:, pillar[0]:pillar[1] + 1] = True
        for k in range(objects - 1, -1, -1):  # later objects are on top
            m = masks[k] > 0
            full = int(m.sum())
            visible = m & ~cover
            cover |= m
            seen = int(visible.sum())
            if full and seen / full >= MIN_VISIBLE:
                ys, xs = np.nonzero(visible)
                truth.append((k + 1, (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), seen / full))
        yield img, sorted(truth)
        pos += vel
        for axis, limit in ((0, w), (1, h)):  # bounce off the edges
            low, high = pos[:, axis] < 0, pos[:, axis] + sides > limit
            vel[low | high, axis] *= -1
            pos[:, axis] = np.clip(pos[:, axis], 0, limit - sides)


def make_scene(out: Path, seed: int = 0, frames: int = 450, objects: int = 6, fps: float = 30.0,
               size: tuple[int, int] = (640, 360)) -> Scene:
    """Write ``out/seed<S>.mp4`` and ``out/gt/seed<S>.txt`` (MOT format) and return them."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "gt").mkdir(exist_ok=True)
    video, gt = out / f"seed{seed}.mp4", out / "gt" / f"seed{seed}.txt"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {video}")
    rows = []
    try:
        for i, (img, truth) in enumerate(render(seed, frames, objects, size)):
            writer.write(img)
            for oid, (x1, y1, x2, y2), vis in truth:
                rows.append(f"{i + 1},{oid},{x1},{y1},{x2 - x1},{y2 - y1},1,1,{vis:.3f}")
    finally:
        writer.release()
    gt.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return Scene(video, gt, fps, size, frames, objects, seed)
