"""Timing: each candidate of a group in its own worker process, in rounds, in a random order per round.

A group is what is compared: candidates (ours and the Ultralytics peers) of one model on the same frames,
at the input size the group states, at one batch size. :func:`run_group` spawns one worker per candidate
(:mod:`benchmarks.worker`: models and frames loaded and warmed up before any timing), then runs ``rounds``
rounds; each round visits every candidate once, in an order shuffled for that round, and the candidate
runs a few untimed calls then ``iters`` timed ones on that round's frames (the same for all). Only one
worker runs at a time; the others wait on their pipes. The figure of a candidate is the median over
rounds of its round medians, with the fastest and slowest round (:func:`benchmarks.stats.summarize_rounds`),
so a slowdown of the machine during one round moves one round's median, and a shuffled order keeps any
drift or "who ran before me" effect from favouring one candidate.
"""
from __future__ import annotations

import random
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import cv2
import numpy as np

from .candidates import OURS, Candidate
from .env import load_average
from .stats import STAGES, fps, per_frame, ratio_table, summarize_rounds
from .worker import CallTimes, FrameSet, Worker, WorkerError, size_text

Log = Callable[[str], None]


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
        imgsz: the input size the group runs its candidates at (reference rows excepted).
        data: labelled data for ``--accuracy`` (``None``: no mAP for this group).
        kind: ``"square"`` (everyone at the square size), ``"native"`` (everyone at the rect size
            Ultralytics' predictor picks for the frames) or ``"models"`` (``--models``).
    """

    id: str
    title: str
    model: str
    random: bool
    batch: int
    frames: list[np.ndarray]
    frames_desc: str
    candidates: list[Candidate]
    imgsz: tuple[int, int] = (640, 640)
    data: Path | None = None
    kind: str = "square"
    notes: list[str] = field(default_factory=list)

    def running(self) -> list[Candidate]:
        return [c for c in self.candidates if c.skip is None]


@dataclass(frozen=True)
class Timing:
    """How a group is timed (the ``--rounds``, ``--iters``... flags).

    Attributes:
        rounds: rounds; each visits every candidate once, in a shuffled order.
        iters: timed calls per candidate per round.
        warmup: untimed calls when a worker has loaded.
        settle: untimed calls at the start of each turn (the process's caches and thread pools wake up).
        pause: seconds between turns, so the previous worker's thread pools stop spinning first.
        seed: seed of the shuffles (recorded in the results).
    """

    rounds: int = 5
    iters: int = 20
    warmup: int = 10
    settle: int = 2
    pause: float = 0.2
    seed: int = 0

    def calls(self) -> int:
        """Calls per candidate (for a progress bar)."""
        return self.warmup + self.rounds * (self.iters + self.settle)


@dataclass
class GroupRun:
    """What timing a group gave: per candidate, each round's calls and the input sizes they ran."""

    times: dict[str, list[list[CallTimes]]]
    sizes: dict[str, Counter]
    orders: list[list[str]]
    load_avg: list[list[float] | None]
    info: dict[str, dict]
    accuracy: dict[str, dict | str] = field(default_factory=dict)


def measure(runners: Mapping[str, object], timing: Timing, rng: random.Random,
            tick: Callable[[int], None] = lambda n: None) -> tuple[dict, dict, list[list[str]]]:
    """Rounds of turns over ``runners`` (name → an object with ``run(start, n, settle) -> (times, sizes)``).

    Round ``r`` gives every runner the frames of call numbers ``r * iters ..``, in an order shuffled by
    ``rng``. Returns ``(times, sizes, orders)``: per name the list of rounds (each a list of
    :class:`CallTimes`), the input sizes its timed calls ran, and each round's order.
    """
    names = list(runners)
    times: dict[str, list[list[CallTimes]]] = {n: [] for n in names}
    sizes: dict[str, Counter] = {n: Counter() for n in names}
    orders = []
    for r in range(timing.rounds):
        order = names[:]
        rng.shuffle(order)
        orders.append(order)
        for name in order:
            if timing.pause > 0:
                time.sleep(timing.pause)
            calls, seen = runners[name].run(r * timing.iters, timing.iters, timing.settle)
            times[name].append(list(calls))
            sizes[name].update(seen)
            tick(timing.iters + timing.settle)
    return times, sizes, orders


def run_group(group: Group, frames: FrameSet, timing: Timing, opts: dict, log: Log,
              tick: Callable[[int], None] = lambda n: None, score: Callable | None = None) -> GroupRun:
    """Spawn a worker per running candidate (one that fails to load is marked skipped, with why), time the
    group, then (``score`` given) score each worker with ``score(worker, candidate, group.data)``."""
    with ExitStack() as stack:
        workers: dict[str, Worker] = {}
        for c in group.running():
            spec = c.spec(frames, group.batch, timing.warmup, **opts)
            try:
                workers[c.name] = stack.enter_context(Worker(spec))
            except WorkerError as e:
                c.skip = f"did not run: {e.message}"
                log(f"{group.id}: {c.name} did not load: {e}" + (f"\n{e.detail}" if e.detail else ""))
            tick(timing.warmup)
        guarded = {c.name: _Guarded(workers[c.name], c, log) for c in group.running()}
        load = [load_average()]
        times, sizes, orders = measure(guarded, timing, random.Random(timing.seed), tick)
        load.append(load_average())
        gone = {n for n, g in guarded.items() if g.failed}
        run = GroupRun({n: t for n, t in times.items() if n not in gone}, sizes, orders, load,
                       {n: w.info for n, w in workers.items()})
        if score is not None:
            for c in group.running():
                run.accuracy[c.name] = score(workers[c.name], c, group.data)
    return run


class _Guarded:
    """A worker whose failure in the middle of the timing takes out its candidate (listed as not run, with
    why), not the group."""

    def __init__(self, worker: Worker, cand: Candidate, log: Log) -> None:
        self.worker, self.cand, self.log, self.failed = worker, cand, log, False

    def run(self, start: int, n: int, settle: int):
        if self.failed:
            return [], {}
        try:
            return self.worker.run(start, n, settle)
        except WorkerError as e:
            self.failed = True
            self.cand.skip = f"failed while timed: {e.message}"
            self.log(f"{self.cand.name} failed while timed: {e}" + (f"\n{e.detail}" if e.detail else ""))
            return [], {}


def summarize_group(group: Group, times: Mapping[str, Sequence[Sequence[CallTimes]]]) -> dict[str, dict]:
    """Candidate → per-frame figures of each stage (and the overhead outside them) over rounds; FPS from
    the end-to-end figure."""
    out = {}
    for name, rounds in times.items():
        stages = {s: summarize_rounds([per_frame([getattr(t, s) for t in calls], group.batch) for calls in rounds])
                  for s in STAGES}
        # per call, the wall time outside the three stages (Ultralytics' per-call setup, Results objects...)
        stages["overhead"] = summarize_rounds([per_frame([t.end_to_end - t.preprocess - t.inference - t.postprocess
                                                          for t in calls], group.batch) for calls in rounds])
        out[name] = {"per_frame_ms": stages, "fps": fps(stages["end_to_end"]["p50"]),
                     "calls": sum(len(c) for c in rounds)}
    return out


def group_ratios(group: Group, summary: dict[str, dict]) -> list[dict]:
    """Each of our candidates against each peer (ours / peer of the per-frame figure)."""
    ours = {c.name: summary[c.name]["per_frame_ms"] for c in group.running() if c.role == OURS}
    peers = {c.name: summary[c.name]["per_frame_ms"] for c in group.running() if c.role != OURS}
    return ratio_table(ours, peers)


def ran_text(sizes: Counter, asked: tuple[int, int]) -> tuple[str, bool]:
    """The input size(s) a candidate really ran, and whether that is all the size it was asked for."""
    text = size_text(sizes) if sizes else "—"
    return text, set(sizes) <= {tuple(asked)}


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


def native_imgsz(frame_hw: tuple[int, int], imgsz: tuple[int, int], stride: int = 32) -> tuple[int, int]:
    """The input Ultralytics' predictor runs a ``frame_hw`` frame at with ``imgsz`` and its minimal-padding
    letterbox (``rect``; what a ``.pt`` does by default): the frame scaled to fit, each side padded up to a
    multiple of ``stride``. A 1280x720 frame at 640 runs at 384x640."""
    h, w = frame_hw
    r = min(imgsz[0] / h, imgsz[1] / w)
    nh, nw = int(round(h * r)), int(round(w * r))
    return nh + (imgsz[0] - nh) % stride, nw + (imgsz[1] - nw) % stride
