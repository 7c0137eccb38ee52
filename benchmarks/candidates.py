"""What is timed: our ``Detector`` on an artifact, or Ultralytics ``predict`` (.pt or its own ONNX).

Every candidate is called with a list of BGR frames (one batch) and returns the call's milliseconds
per stage and its wall time. Ours reads the stages from ``Detector.last_timings``; Ultralytics from
``Results.speed`` (milliseconds per image, so multiplied back by the batch). The wall time is taken
around the whole call, so any work outside the three stages counts too.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

OURS, PEER = "ours", "peer"
PEER_PT, PEER_ONNX = "ultralytics .pt", "ultralytics onnx"


@dataclass(frozen=True)
class CallTimes:
    """Milliseconds of one call (a batch of frames)."""

    preprocess: float
    inference: float
    postprocess: float
    end_to_end: float


@dataclass
class Candidate:
    """One thing timed in a group.

    Attributes:
        name: unique within its group ("ours fp32", "ultralytics .pt").
        role: ``"ours"`` or ``"peer"``.
        form: fp32 / fp16 / int8 / int8-cpu / end2end / trt-* / pt / onnx.
        path: the model file.
        imgsz: the model input (height, width).
        label: a longer description for the tables.
        skip: why it is not run here (``None``: it runs).
    """

    name: str
    role: str
    form: str
    path: Path
    imgsz: tuple[int, int]
    label: str = ""
    skip: str | None = None
    options: dict = field(default_factory=dict)
    _runner: Callable | None = field(default=None, repr=False)
    _closer: Callable | None = field(default=None, repr=False)

    def load(self) -> None:
        if self._runner is None:
            self._runner, self._closer = _make_runner(self, **self.options)

    def __call__(self, frames: Sequence[np.ndarray]) -> CallTimes:
        return self._runner(frames)

    def close(self) -> None:
        if self._closer is not None:
            self._closer()
        self._runner = self._closer = None


def _make_runner(c: Candidate, conf: float, iou: float, device: str):
    if c.role == OURS:
        return _ours_runner(c.path, conf, iou, device)
    return _ultralytics_runner(c.path, c.imgsz, conf, iou, device)


def _ours_runner(path: Path, conf: float, iou: float, device: str):
    from engine import Detector

    opts = {"device": device} if path.suffix == ".onnx" else {}
    det = Detector(path, conf=conf, iou=iou, **opts)

    def run(frames: Sequence[np.ndarray]) -> CallTimes:
        t = time.perf_counter()
        det(list(frames))
        wall = (time.perf_counter() - t) * 1e3
        lt = det.last_timings
        return CallTimes(lt["preprocess"], lt["inference"], lt["postprocess"], wall)

    return run, det.close


def _ultralytics_device(device: str) -> str:
    return "cpu" if device == "cpu" else "0"


def quiet_ultralytics() -> None:
    """Ultralytics logs each model load at INFO on stdout: keep the benchmark's stdout for its tables."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import logging

    from ultralytics.utils import LOGGER

    LOGGER.setLevel(logging.WARNING)


def _ultralytics_runner(path: Path, imgsz: tuple[int, int], conf: float, iou: float, device: str):
    quiet_ultralytics()
    from ultralytics import YOLO

    model = YOLO(str(path), task="detect")
    kwargs = dict(imgsz=list(imgsz), conf=conf, iou=iou, device=_ultralytics_device(device), verbose=False)

    def run(frames: Sequence[np.ndarray]) -> CallTimes:
        source = frames[0] if len(frames) == 1 else list(frames)
        t = time.perf_counter()
        results = model.predict(source, **kwargs)
        wall = (time.perf_counter() - t) * 1e3
        s, n = results[0].speed, len(frames)  # Results.speed is per image
        return CallTimes(s["preprocess"] * n, s["inference"] * n, s["postprocess"] * n, wall)

    return run, lambda: None


def accuracy_predictor(c: Candidate, device: str):
    """A fresh predictor of ``c`` with the build's accuracy-report settings (conf 0.001, IoU 0.7), and its closer."""
    from exporters.accuracy import EVAL_CONF, EVAL_IOU, EVAL_MAX_DET

    if c.role == OURS:
        from engine import Detector

        opts = {"device": device} if c.path.suffix == ".onnx" else {}
        det = Detector(c.path, conf=EVAL_CONF, iou=EVAL_IOU, max_det=EVAL_MAX_DET, **opts)
        return det, det.close
    from exporters.ultralytics_ref import UltralyticsPredictor

    quiet_ultralytics()
    return UltralyticsPredictor(c.path, imgsz=c.imgsz, conf=EVAL_CONF, iou=EVAL_IOU, max_det=EVAL_MAX_DET,
                                device=_ultralytics_device(device)), lambda: None
