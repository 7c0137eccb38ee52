"""Timing: candidates of a group take turns (round-robin blocks) on the same frames, after a warm-up.

A group is what is compared: our artifacts and the Ultralytics peers of one model at one input size
and batch. Within a group every candidate runs ``block`` calls in turn until each has run ``iters``,
so a machine that slows down or speeds up during the run (other processes, thermal limits) affects
every candidate alike. Call ``i`` of every candidate gets the same frames.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from .candidates import OURS, CallTimes, Candidate
from .stats import STAGES, fps, per_frame, ratio_table, summarize


@dataclass
class Group:
    """Candidates measured together.

    Attributes:
        id: unique key, e.g. ``demo 640x640 b1``.
        title: one line for the tables.
        model: the model's label.
        random: random weights (timing only).
        batch: frames per call.
        frames: the BGR frames, cycled.
        frames_desc: where the frames came from.
        candidates: ours first, then the peers.
        data: labelled data for ``--accuracy`` (``None``: no mAP for this group).
        kind: ``"main"``, ``"wide"`` (16:9 frames, two input sizes) or ``"models"`` (``--models``).
    """

    id: str
    title: str
    model: str
    random: bool
    batch: int
    frames: list[np.ndarray]
    frames_desc: str
    candidates: list[Candidate]
    data: Path | None = None
    kind: str = "main"
    notes: list[str] = field(default_factory=list)

    def running(self) -> list[Candidate]:
        return [c for c in self.candidates if c.skip is None]


def batch_frames(frames: Sequence[np.ndarray], call: int, batch: int) -> list[np.ndarray]:
    """The frames of call number ``call``: the next ``batch`` frames, cycling."""
    n = len(frames)
    return [frames[(call * batch + k) % n] for k in range(batch)]


def measure(group: Group, warmup: int, iters: int, block: int, settle: int = 1,
            tick: Callable[[int], None] = lambda n: None) -> dict[str, list[CallTimes]]:
    """Warm up each candidate, then time ``iters`` calls each in round-robin turns of ``block`` calls.

    Each turn starts with ``settle`` untimed calls: the candidate that ran before may leave its thread pool
    spinning for a while (ONNX Runtime's workers busy-wait for more work), which on a small CPU slows
    the next candidate's first call by up to 2x. A deployed model runs alone, so that cost is not its own.
    """
    cands = group.running()
    for c in cands:
        for i in range(warmup):
            c(batch_frames(group.frames, i, group.batch))
            tick(1)
    times: dict[str, list[CallTimes]] = {c.name: [] for c in cands}
    while any(len(times[c.name]) < iters for c in cands):
        for c in cands:
            done = len(times[c.name])
            if done >= iters:
                continue
            for _ in range(settle):
                c(batch_frames(group.frames, done, group.batch))
                tick(1)
            for i in range(done, min(done + block, iters)):
                times[c.name].append(c(batch_frames(group.frames, i, group.batch)))
                tick(1)
    return times


def calls_per_candidate(warmup: int, iters: int, block: int, settle: int) -> int:
    """Calls :func:`measure` makes per candidate (for a progress bar)."""
    return warmup + iters + settle * -(-iters // block)


def summarize_group(group: Group, times: dict[str, list[CallTimes]]) -> dict[str, dict]:
    """Candidate → per-frame summaries of each stage (and of the overhead outside them), FPS from the median
    end-to-end."""
    out = {}
    for name, calls in times.items():
        stages = {s: summarize(per_frame([getattr(t, s) for t in calls], group.batch)) for s in STAGES}
        # per call, the wall time outside the three stages (Ultralytics' per-call setup, Results objects...)
        stages["overhead"] = summarize(per_frame([t.end_to_end - t.preprocess - t.inference - t.postprocess
                                                  for t in calls], group.batch))
        out[name] = {"per_frame_ms": stages, "fps": fps(stages["end_to_end"]["p50"]), "calls": len(calls)}
    return out


def group_ratios(group: Group, summary: dict[str, dict]) -> list[dict]:
    """Each of our candidates against each peer (ours / peer of the per-frame median)."""
    ours = {c.name: summary[c.name]["per_frame_ms"] for c in group.running() if c.role == OURS}
    peers = {c.name: summary[c.name]["per_frame_ms"] for c in group.running() if c.role != OURS}
    return ratio_table(ours, peers)


def to_16x9(frame: np.ndarray, size: tuple[int, int] = (720, 1280)) -> np.ndarray:
    """A 16:9 camera-like frame: the center crop of ``frame`` at 16:9, resized to ``size`` (height, width)."""
    h, w = frame.shape[:2]
    if w * 9 > h * 16:  # wider than 16:9: crop the sides
        cw = h * 16 // 9
        x0 = (w - cw) // 2
        frame = frame[:, x0 : x0 + cw]
    else:
        ch = w * 9 // 16
        y0 = (h - ch) // 2
        frame = frame[y0 : y0 + ch]
    return cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def wide_imgsz(imgsz: tuple[int, int], stride: int = 32) -> tuple[int, int]:
    """The 16:9 input of the same width: height ``width * 9/16`` rounded up to the stride (640 → 384x640)."""
    w = imgsz[1]
    return (-(-(w * 9 // 16) // stride) * stride, w)
