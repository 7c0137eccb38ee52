"""Zones (polygons) and lines of a rule, in normalized (0-1) or pixel coordinates.

A rule's zone decides which boxes count: a box is in the zone when its anchor point is (Frigate's
convention: the bottom centre of the box, where an object touches the ground; ``center`` for objects
seen from above). A line rule counts a track once its anchor has crossed the line segment, in any
direction or towards the screen's ``left``, ``right``, ``up`` or ``down`` side of the line.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

Point = tuple[float, float]
ANCHORS = ("bottom_center", "center")
DIRECTIONS = ("any", "left", "right", "up", "down")


def _cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """z of (a - o) x (b - o), for arrays of points; > 0: b is right of o→a on screen (y grows downwards)."""
    return (a[..., 0] - o[..., 0]) * (b[..., 1] - o[..., 1]) - (a[..., 1] - o[..., 1]) * (b[..., 0] - o[..., 0])


def _segments_cross(p1: np.ndarray, p2: np.ndarray, q1: np.ndarray, q2: np.ndarray) -> bool:
    """Whether segments p1-p2 and q1-q2 properly intersect (touching ends do not count)."""
    d1, d2 = _cross(q1, q2, p1), _cross(q1, q2, p2)
    d3, d4 = _cross(p1, p2, q1), _cross(p1, p2, q2)
    return bool(d1 * d2 < 0 and d3 * d4 < 0)


def polygon_problem(points: Sequence[Point]) -> str | None:
    """Why ``points`` is not a usable zone (``None`` when it is): too few corners, no area, crossing edges."""
    if len(points) < 3:
        return f"a zone needs at least 3 corners, got {len(points)}"
    p = np.asarray(points, dtype=np.float64)
    n = len(p)
    for i in range(n):
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:  # neighbours through the closing edge
                continue
            if _segments_cross(p[i], p[(i + 1) % n], p[j], p[(j + 1) % n]):
                return f"the zone's edges cross each other (edge {i + 1} and edge {j + 1})"
    area = 0.5 * abs(float(np.dot(p[:, 0], np.roll(p[:, 1], -1)) - np.dot(p[:, 1], np.roll(p[:, 0], -1))))
    if area <= 1e-12:
        return "the zone's corners enclose no area (all on one line or repeated)"
    return None


@dataclass(frozen=True)
class Shape:
    """Points of a zone or a line; ``normalized``: fractions of the frame's width and height."""

    points: tuple[Point, ...]
    normalized: bool
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def pixels(self, width: int, height: int) -> np.ndarray:
        """The points in pixels of a ``width`` x ``height`` frame (float32, computed once per size)."""
        got = self._cache.get((width, height))
        if got is None:
            p = np.asarray(self.points, dtype=np.float32)
            if self.normalized:
                p = p * np.array([width, height], dtype=np.float32)
            got = self._cache[(width, height)] = p
        return got


def anchors(xyxy: np.ndarray, anchor: str) -> np.ndarray:
    """``(N, 2)`` anchor points of boxes: ``bottom_center`` or ``center``."""
    x = (xyxy[:, 0] + xyxy[:, 2]) * 0.5
    y = xyxy[:, 3] if anchor == "bottom_center" else (xyxy[:, 1] + xyxy[:, 3]) * 0.5
    return np.stack([x, y], axis=1)


def inside(zone: Shape, points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Boolean per point: inside the zone or on its edge."""
    contour = zone.pixels(width, height)
    return np.array([cv2.pointPolygonTest(contour, (float(x), float(y)), False) >= 0 for x, y in points.tolist()],
                    dtype=bool)


def direction_problem(line: Sequence[Point], direction: str) -> str | None:
    """Why ``direction`` cannot be told for ``line`` (a horizontal line has no left/right side)."""
    (x1, y1), (x2, y2) = line
    if direction in ("left", "right") and y1 == y2:
        return "a horizontal line is crossed up or down, not left or right"
    if direction in ("up", "down") and x1 == x2:
        return "a vertical line is crossed left or right, not up or down"
    return None


def crossed(line: Shape, before: np.ndarray, after: np.ndarray, direction: str, width: int, height: int) -> bool:
    """Whether moving from ``before`` to ``after`` crosses the line segment towards ``direction``.

    ``right`` / ``left``: from the line's side with smaller / larger x to the other (screen x grows to the
    right); ``down`` / ``up`` likewise with y (screen y grows downwards). Starting exactly on the line counts.
    """
    a, b = line.pixels(width, height)
    side_before, side_after = float(_cross(a, b, before)), float(_cross(a, b, after))
    if side_after == 0 or side_before * side_after > 0:
        return False  # still on one side
    if float(_cross(before, after, a)) * float(_cross(before, after, b)) > 0:
        return False  # passed beyond one end of the segment
    if direction == "any":
        return True
    normal = np.array([a[1] - b[1], b[0] - a[0]], dtype=np.float64)  # perpendicular to the line
    towards = float(np.dot(after - before, normal))  # > 0: moved along +normal
    axis = normal[0] if direction in ("left", "right") else normal[1]
    return towards * axis > 0 if direction in ("right", "down") else towards * axis < 0
