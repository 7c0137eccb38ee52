"""``Detector``: frames in, :class:`Detections` out, on any backend."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .backends import Backend, load_backend
from .detections import Detections
from .errors import ConfigError, InputImageError, UnsupportedModelError
from .metadata import HeadLayout, ModelMetadata
from .nms import postprocess_raw
from .preprocess import Letterbox


class Detector:
    """Run a YOLO detect model exported by ``python -m exporters.build`` (or by Ultralytics).

    Args:
        path: model file; the backend is chosen by suffix (``.onnx`` → ONNX Runtime).
        conf: confidence threshold (boxes with a score above it are kept).
        iou: IoU threshold of NMS.
        max_det: most boxes per frame.
        classes: keep only these class ids (``None`` = all).
        agnostic: class-agnostic NMS.
        backend: ``"auto"`` or a backend name (``"onnxruntime"``).
        **backend_options: passed to the backend (e.g. ``device="cpu"``, ``intra_op_threads=2``).

    ``det(frame)`` takes one BGR uint8 image and returns a :class:`Detections`; ``det([f1, f2])``
    returns a list. :attr:`last_timings` holds the last call's preprocess / inference / postprocess
    milliseconds. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, path: str | Path, conf: float = 0.25, iou: float = 0.45, max_det: int = 300,
                 classes: Sequence[int] | None = None, agnostic: bool = False, backend: str = "auto",
                 **backend_options: Any) -> None:
        if not 0.0 <= conf < 1.0 or not 0.0 <= iou <= 1.0 or max_det < 1:
            raise ConfigError(f"conf={conf}, iou={iou}, max_det={max_det} out of range",
                              "use 0 <= conf < 1, 0 <= iou <= 1 and max_det >= 1")
        self.conf, self.iou, self.max_det = conf, iou, max_det
        self.classes = None if classes is None else [int(c) for c in classes]
        self.agnostic = agnostic
        self.backend: Backend = load_backend(path, backend, **backend_options)
        meta = self.backend.metadata
        if meta.head is not HeadLayout.RAW:
            raise UnsupportedModelError(f"{path} has a '{meta.head.value}' head, which this runtime does not run yet",
                                        "export the raw head (python -m exporters.build without --end2end)")
        self.metadata: ModelMetadata = meta
        spec = self.backend.inputs[0]
        self._static_batch = self.backend.max_batch
        self._letterbox = Letterbox(meta.imgsz, batch=self._static_batch or 1, dtype=spec.dtype)
        self.last_timings: dict[str, float] = {}

    @property
    def names(self) -> tuple[str, ...]:
        return self.metadata.names

    @property
    def imgsz(self) -> tuple[int, int]:
        return self.metadata.imgsz

    def __call__(self, frames: np.ndarray | Sequence[np.ndarray]) -> Detections | list[Detections]:
        if isinstance(frames, np.ndarray):
            return self.predict([frames])[0]
        if not isinstance(frames, (list, tuple)):
            raise InputImageError(f"expected a BGR image or a list of images, got {type(frames).__name__}",
                                  "pass a numpy array (H, W, 3) or a list of them")
        return self.predict(list(frames))

    def predict(self, frames: list[np.ndarray]) -> list[Detections]:
        """Detections for each frame, in batches of the model's batch size."""
        if not frames:
            return []
        step = self._static_batch or len(frames)
        if self._letterbox.buffer.shape[0] < step:  # dynamic batch: the buffer only grows
            self._letterbox = Letterbox(self.imgsz, batch=step, dtype=self._letterbox.buffer.dtype)
        timings = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
        results: list[Detections] = []
        for i in range(0, len(frames), step):
            results += self._run(frames[i : i + step], timings)
        self.last_timings = timings
        return results

    def _run(self, chunk: list[np.ndarray], timings: dict[str, float]) -> list[Detections]:
        t0 = time.perf_counter()
        x, geoms = self._letterbox(chunk)
        if self._static_batch and len(chunk) < self._static_batch:
            x = self._letterbox.buffer  # static batch: run the whole buffer, use the first rows
        t1 = time.perf_counter()
        pred = self.backend.infer(x)[0]
        t2 = time.perf_counter()
        out = []
        for j, g in enumerate(geoms):
            xyxy, scores, cls = postprocess_raw(pred[j], self.conf, self.iou, self.max_det, self.classes, self.agnostic)
            out.append(Detections(g.boxes_to_source(xyxy), scores, cls, self.names))
        t3 = time.perf_counter()
        timings["preprocess"] += (t1 - t0) * 1e3
        timings["inference"] += (t2 - t1) * 1e3
        timings["postprocess"] += (t3 - t2) * 1e3
        return out

    def close(self) -> None:
        """Release the backend."""
        self.backend.close()

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Detector({self.backend.path.name}, backend={self.backend.name}, imgsz={self.imgsz}, "
                f"classes={len(self.names)}, conf={self.conf}, iou={self.iou})")
