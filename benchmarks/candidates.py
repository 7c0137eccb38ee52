"""What is timed: our ``Detector`` on an artifact, or Ultralytics ``predict`` on a ``.pt`` or on its own exports.

The parent plans :class:`Candidate` s; each one runs in a worker process (:mod:`benchmarks.worker`), where
:func:`make_runner` builds its runner. A runner is called with a list of BGR frames (one batch) and returns
the call's milliseconds per stage and its wall time: ours reads the stages from ``Detector.last_timings``,
Ultralytics from ``Results.speed`` (milliseconds per image, multiplied back by the batch). The wall time is
taken around the whole call, so work outside the three stages counts too. A runner also counts the input
size every call really ran (Ultralytics' letterbox picks it per frame for a ``.pt``).

:data:`PEERS` lists the Ultralytics peers once: what ``--peers`` names, how each is exported, and what it needs.
"""
from __future__ import annotations

import importlib.util
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .worker import CallTimes, WorkerSpec

OURS, PEER = "ours", "peer"


@dataclass(frozen=True)
class PeerKind:
    """One Ultralytics peer.

    Attributes:
        key: its ``--peers`` name.
        name: its candidate name in the tables.
        label: a longer description.
        export: ``YOLO.export`` arguments that make its file (``None``: the ``.pt`` itself).
        needs: modules it needs (a missing one: the peer is listed as not run, with the install line).
        calibrated: its export calibrates INT8 on the train split of ``--data``.
    """

    key: str
    name: str
    label: str
    export: tuple[tuple[str, object], ...] | None
    needs: tuple[str, ...]
    calibrated: bool = False

    def missing(self) -> str | None:
        """Why it cannot run here, or ``None``."""
        gone = [m for m in self.needs if importlib.util.find_spec(m) is None]
        return f"{', '.join(gone)} not installed (pip install -e .[export,bench])" if gone else None


PEERS: tuple[PeerKind, ...] = (
    PeerKind("pt", "ultralytics .pt", "Ultralytics predict, PyTorch .pt", None, ("ultralytics", "torch")),
    PeerKind("onnx", "ultralytics onnx", "Ultralytics predict, its own ONNX export (ONNX Runtime)",
             (("format", "onnx"),), ("ultralytics", "onnxruntime")),
    PeerKind("openvino", "ultralytics openvino", "Ultralytics predict, its own OpenVINO export (FP32)",
             (("format", "openvino"),), ("ultralytics", "openvino")),
    PeerKind("openvino-int8", "ultralytics openvino int8",
             "Ultralytics predict, its own OpenVINO export, INT8 by NNCF calibrated on the train split of --data",
             (("format", "openvino"), ("quantize", 8)), ("ultralytics", "openvino", "nncf"), calibrated=True),
)
PEER_BY_KEY = {p.key: p for p in PEERS}
PEER_PT, PEER_ONNX, PEER_OV, PEER_OV_INT8 = (p.name for p in PEERS)


@dataclass
class Candidate:
    """One thing timed in a group (planned in the parent; run in its own worker).

    Attributes:
        name: unique within its group ("ours fp32", "ultralytics .pt").
        role: ``"ours"`` or ``"peer"``.
        form: fp32 / int8-cpu / trt-fp16 ... (ours, from the artifact table) or a peer's key.
        path: the model file or folder.
        imgsz: the input size asked for (height, width).
        label: a longer description for the tables.
        skip: why it is not run here (``None``: it runs).
        rect: Ultralytics' minimal-padding letterbox (``False`` in square groups, so the ``.pt`` runs square).
        reference: shown for a comparison inside the group, not at the group's input size.
    """

    name: str
    role: str
    form: str
    path: Path
    imgsz: tuple[int, int]
    label: str = ""
    skip: str | None = None
    rect: bool | None = None
    reference: bool = False

    def spec(self, frames, batch: int, warmup: int, conf: float, iou: float, device: str) -> WorkerSpec:
        return WorkerSpec(self.name, self.role, Path(self.path), tuple(self.imgsz), frames, batch, warmup, conf, iou,
                          device, self.rect)


# ---- in the worker process -------------------------------------------------------------------


class _OursRunner:
    def __init__(self, spec: WorkerSpec) -> None:
        from engine import Detector, DetectorPool

        if spec.pool > 1:  # CPU ONNX Runtime detectors side by side; threads per detector
            self.det = DetectorPool(spec.path, spec.pool, threads=spec.threads or None, conf=spec.conf, iou=spec.iou,
                                    device=spec.device)  # the pool refuses anything but the CPU, with its reason
            backend, threads = self.det.detectors[0].backend.name, self.det.threads
        else:
            opts = our_options(spec.path, spec.device)
            if spec.threads:
                opts["intra_op_threads"] = spec.threads
            self.det = Detector(spec.path, conf=spec.conf, iou=spec.iou, **opts)
            backend, threads = self.det.backend.name, spec.threads
        self.sizes: Counter = Counter()
        self.info = {"backend": backend, "imgsz": list(self.det.imgsz), "pid": os.getpid(), "threads": threads}

    def __call__(self, frames: Sequence[np.ndarray]) -> CallTimes:
        t = time.perf_counter()
        self.det(list(frames))
        wall = (time.perf_counter() - t) * 1e3
        self.sizes[tuple(self.det.imgsz)] += len(frames)  # our letterbox always fills the model's input
        lt = self.det.last_timings
        return CallTimes(lt["preprocess"], lt["inference"], lt["postprocess"], wall)

    def close(self) -> None:
        self.det.close()


def our_options(path: Path, device: str) -> dict:
    """``device`` for the backends that take it (ONNX Runtime); the others pick their own."""
    from engine.artifacts import kind_of

    kind = kind_of(path)
    return {"device": device} if kind is not None and kind.backends[0] == "onnxruntime" else {}


def quiet_ultralytics() -> None:
    """Ultralytics logs each model load at INFO on stdout: keep the benchmark's stdout for its tables."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import logging

    from ultralytics.utils import LOGGER

    LOGGER.setLevel(logging.WARNING)


def _ultralytics_device(device: str) -> str:
    return "cpu" if device == "cpu" else "0"


class _UltralyticsRunner:
    def __init__(self, spec: WorkerSpec) -> None:
        quiet_ultralytics()
        from ultralytics import YOLO

        self.model = YOLO(str(spec.path), task="detect")
        self.kwargs = dict(imgsz=list(spec.imgsz), conf=spec.conf, iou=spec.iou,
                           device=_ultralytics_device(spec.device), verbose=False)
        if spec.rect is not None:
            self.kwargs["rect"] = spec.rect
        self.sizes: Counter = Counter()
        self._hooked = False
        self.info = {"backend": "ultralytics", "pid": os.getpid()}

    def __call__(self, frames: Sequence[np.ndarray]) -> CallTimes:
        source = frames[0] if len(frames) == 1 else list(frames)
        t = time.perf_counter()
        results = self.model.predict(source, **self.kwargs)
        wall = (time.perf_counter() - t) * 1e3
        if not self._hooked:  # the predictor exists after the first call (a warm-up call)
            count_input_sizes(self.model.predictor, self.sizes)
            self._hooked = True
        s, n = results[0].speed, len(frames)  # Results.speed is per image
        return CallTimes(s["preprocess"] * n, s["inference"] * n, s["postprocess"] * n, wall)

    def close(self) -> None:
        pass


def count_input_sizes(predictor, sizes: Counter) -> None:
    """Count in ``sizes`` the tensor shape Ultralytics' preprocess really makes (its letterbox picks it per frame)."""
    inner = predictor.preprocess

    def preprocess(im):
        t = inner(im)
        sizes[tuple(int(d) for d in t.shape[2:])] += int(t.shape[0])
        return t

    predictor.preprocess = preprocess


def make_runner(spec: WorkerSpec):
    """The runner of ``spec`` (called in its worker process)."""
    return _OursRunner(spec) if spec.role == OURS else _UltralyticsRunner(spec)


def accuracy_predictor(spec: WorkerSpec):
    """A fresh predictor of ``spec`` with the build's accuracy-report settings (conf 0.001, IoU 0.7), and its
    closer; a peer keeps its timing letterbox (``rect``), so its mAP is of what was timed."""
    from exporters.accuracy import EVAL_CONF, EVAL_IOU, EVAL_MAX_DET

    if spec.role == OURS:
        from engine import Detector

        det = Detector(spec.path, conf=EVAL_CONF, iou=EVAL_IOU, max_det=EVAL_MAX_DET,
                       **our_options(spec.path, spec.device))
        return det, det.close
    from exporters.ultralytics_ref import UltralyticsPredictor

    quiet_ultralytics()
    extra = {} if spec.rect is None else {"rect": spec.rect}
    return UltralyticsPredictor(spec.path, imgsz=spec.imgsz, conf=EVAL_CONF, iou=EVAL_IOU, max_det=EVAL_MAX_DET,
                                device=_ultralytics_device(spec.device), **extra), lambda: None
