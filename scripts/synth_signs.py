"""A second synthetic detection data set ("signs"), unlike the demo's "shapes" in classes and look.

Four classes of sign-like symbols (ring, cross, star, arrow), rotated, filled with a two-tone gradient
or drawn as outlines, on textured backgrounds (blurred colour noise, stripes or a checkerboard) in 4:3,
3:4 and wide frames, with unlabelled distractors (thin circles, bars, dots), uneven lighting and
varied JPEG quality. It exists to train a second model on other data than the demo's, so that INT8
results are not tuned to one model (``python scripts/make_demo.py --kind signs``).
"""
from __future__ import annotations

import cv2
import numpy as np

CLASSES = ("ring", "cross", "star", "arrow")
FRAME_SIZES = ((640, 480), (480, 640), (704, 396))  # (w, h): 4:3, 3:4 portrait, wide


def _texture(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    kind = int(rng.integers(0, 3))
    if kind == 0:  # blurred colour noise: blotches of a few sizes
        cells = int(rng.integers(4, 24))
        small = rng.integers(0, 256, (cells, max(2, cells * w // h), 3)).astype(np.uint8)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    elif kind == 1:  # stripes at an angle
        period = float(rng.uniform(8, 40))
        angle = float(rng.uniform(0, np.pi))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = (np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period) + 1) / 2
        c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        img = (c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]).astype(np.uint8)
    else:  # checkerboard
        cell = int(rng.integers(10, 48))
        yy, xx = np.mgrid[0:h, 0:w]
        board = ((yy // cell + xx // cell) % 2).astype(np.float32)
        c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        img = (c0[None, None] * (1 - board[..., None]) + c1[None, None] * board[..., None]).astype(np.uint8)
    noise = rng.normal(0, float(rng.uniform(4, 18)), (h, w, 3))
    return np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def _lighting(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """A smooth brightness ramp across the frame (0.55..1.35)."""
    h, w = img.shape[:2]
    a, b = rng.uniform(0.55, 1.35, 2)
    t = np.linspace(a, b, w if rng.random() < 0.5 else h, dtype=np.float32)
    gain = t[None, :, None] if len(t) == w else t[:, None, None]
    return np.clip(img.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def _colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    mean = under.reshape(-1, 3).mean(0)
    for _ in range(50):
        col = rng.integers(0, 256, 3)
        if np.abs(col - mean).mean() > 70:
            break
    return col


def _polygon(cls: int, rng: np.random.Generator) -> np.ndarray:
    """The outline of cross, star or arrow in unit coordinates (-1..1), before rotation."""
    if cls == 1:  # cross (plus), arm width 0.25..0.45
        a = float(rng.uniform(0.25, 0.45))
        return np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a], [-1, a],
                         [-1, -a], [-a, -a]], np.float32)
    if cls == 2:  # five-pointed star
        inner = float(rng.uniform(0.38, 0.5))
        ang = np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, inner)
        return np.stack([r * np.cos(ang), -r * np.sin(ang)], 1).astype(np.float32)
    shaft = float(rng.uniform(0.2, 0.35))  # arrow pointing right
    head = float(rng.uniform(0.05, 0.35))
    return np.array([[-1, -shaft], [head, -shaft], [head, -0.8], [1, 0], [head, 0.8], [head, shaft],
                     [-1, shaft]], np.float32)


def _fill(img: np.ndarray, mask: np.ndarray, c0: np.ndarray, c1: np.ndarray, box) -> None:
    """Fill ``mask`` with a vertical gradient from ``c0`` to ``c1`` across ``box``."""
    x1, y1, x2, y2 = box
    ys = np.arange(img.shape[0], dtype=np.float32)
    t = np.clip((ys - y1) / max(y2 - y1, 1.0), 0, 1)[:, None, None]
    grad = c0[None, None].astype(np.float32) * (1 - t) + c1[None, None].astype(np.float32) * t
    m = mask.astype(bool)
    img[m] = np.broadcast_to(grad, img.shape)[m].astype(np.uint8)


def _draw(img: np.ndarray, cls: int, cx: float, cy: float, size: float, rng: np.random.Generator):
    """Draw a symbol centred at (cx, cy) with half-size ``size``; return its tight box or ``None``."""
    h, w = img.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    outline = rng.random() < 0.3
    thick = max(2, int(size * rng.uniform(0.12, 0.25)))
    if cls == 0:  # ring: an annulus (or a thick circle outline)
        r_in = float(rng.uniform(0.45, 0.75))
        cv2.circle(mask, (int(cx), int(cy)), int(size), 255, -1, cv2.LINE_AA)
        cv2.circle(mask, (int(cx), int(cy)), max(1, int(size * r_in)), 0, -1, cv2.LINE_AA)
    else:
        pts = _polygon(cls, rng)
        theta = float(rng.uniform(0, 2 * np.pi))
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]], np.float32)
        pts = (pts @ rot.T) * size + np.array([cx, cy], np.float32)
        poly = [np.round(pts).astype(np.int32)]
        if outline:
            cv2.polylines(mask, poly, True, 255, thick, cv2.LINE_AA)
        else:
            cv2.fillPoly(mask, poly, 255, cv2.LINE_AA)
    ys, xs = np.nonzero(mask > 127)
    if len(xs) < 12:
        return None
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
    region = img[int(box[1]):int(box[3]), int(box[0]):int(box[2])]
    c0 = _colour(rng, region)
    c1 = np.clip(c0.astype(np.int32) + rng.integers(-60, 61, 3), 0, 255)
    _fill(img, mask > 127, c0, c1, box)
    return box


def _distractors(img: np.ndarray, rng: np.random.Generator) -> None:
    """Unlabelled clutter: thin circle outlines, bars and dots."""
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(0, 8))):
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = int(rng.integers(0, 3))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        if kind == 0:
            cv2.circle(img, (x, y), int(rng.integers(6, 60)), col, 1, cv2.LINE_AA)
        elif kind == 1:
            cv2.line(img, (x, y), (int(rng.integers(0, w)), int(rng.integers(0, h))), col, int(rng.integers(2, 6)))
        else:
            cv2.circle(img, (x, y), int(rng.integers(2, 6)), col, -1)


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))


def make_image(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, float, float, float, float]]]:
    """One frame and its YOLO labels (class, cx, cy, w, h normalised)."""
    w, h = FRAME_SIZES[int(rng.integers(0, len(FRAME_SIZES)))]
    img = _texture(rng, w, h)
    _distractors(img, rng)
    boxes: list[np.ndarray] = []
    labels = []
    for _ in range(int(rng.integers(1, 11))):
        size = float(np.exp(rng.uniform(np.log(7), np.log(min(w, h) * 0.22))))
        cx, cy = rng.uniform(size + 1, w - size - 1), rng.uniform(size + 1, h - size - 1)
        guess = np.array([cx - size, cy - size, cx + size, cy + size], np.float32)
        if any(_overlap(guess, b) > 0.15 for b in boxes):
            continue
        cls = int(rng.integers(0, len(CLASSES)))
        box = _draw(img, cls, cx, cy, size, rng)
        if box is None:
            continue
        boxes.append(box)
        labels.append((cls, (box[0] + box[2]) / 2 / w, (box[1] + box[3]) / 2 / h,
                       (box[2] - box[0]) / w, (box[3] - box[1]) / h))
    img = _lighting(rng, img)
    if rng.random() < 0.3:  # a little motion blur
        k = int(rng.integers(3, 7))
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2] = 1.0 / k
        img = cv2.filter2D(img, -1, kernel)
    return img, labels
