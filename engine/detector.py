"""``Detector``: frames in, :class:`Detections` out, on any backend."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .backends import Backend, load_backend
from .detections import Detections
from .end2end import RunThresholds, finish_end2end, resolve_thresholds, split_outputs
from .errors import BackendUnavailableError, ConfigError, InputImageError
from .metadata import HeadLayout, ModelMetadata, PixelFormat
from .nms import postprocess_raw
from .preprocess import Letterbox


class FrameCalls:
    """``obj(frame)`` gives one :class:`Detections`, ``obj([f1, f2])`` a list, through ``obj.predict``."""

    def predict(self, frames: list[np.ndarray]) -> list[Detections]:  # pragma: no cover - overridden
        raise NotImplementedError

    def __call__(self, frames: np.ndarray | Sequence[np.ndarray]) -> Detections | list[Detections]:
        if isinstance(frames, np.ndarray):
            return self.predict([frames])[0]
        if not isinstance(frames, (list, tuple)):
            raise InputImageError(f"expected a BGR image or a list of images, got {type(frames).__name__}",
                                  "pass a numpy array (H, W, 3) or a list of them")
        return self.predict(list(frames))


class Detector(FrameCalls):
    """Run a YOLO detect model exported by ``python -m exporters.build`` (or by Ultralytics).

    Args:
        path: model file; the backend is chosen by suffix (``.onnx`` → ONNX Runtime).
        conf: confidence threshold (boxes with a score above it are kept); default 0.25, or for an
            end-to-end model (``--end2end``) the conf baked in at export (a looser one is refused).
        iou: IoU threshold of NMS; default 0.45, or the baked one of an end-to-end model.
        max_det: most boxes per frame; default 300, or the baked K of an end-to-end model with NMS inside.
        classes: keep only these class ids (``None`` = all).
        agnostic: class-agnostic NMS.
        backend: ``"auto"`` or a backend name (``"onnxruntime"``).
        preprocess: ``"cpu"`` (default, OpenCV letterbox) or ``"gpu"``: the letterbox CUDA kernel of
            :mod:`engine.cuda.kernels` writes straight into a TensorRT engine's input buffer. Needs an
            NVIDIA GPU, cuda-python and the TensorRT backend; elsewhere a clear error.
        **backend_options: passed to the backend (e.g. ``device="cpu"``, ``intra_op_threads=2``).

    ``det(frame)`` takes one BGR uint8 image and returns a :class:`Detections`; ``det([f1, f2])``
    returns a list. :attr:`last_timings` holds the last call's preprocess / inference / postprocess
    milliseconds. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, path: str | Path, conf: float | None = None, iou: float | None = None,
                 max_det: int | None = None, classes: Sequence[int] | None = None, agnostic: bool = False,
                 backend: str = "auto", preprocess: str = "cpu", **backend_options: Any) -> None:
        if preprocess not in ("cpu", "gpu"):
            raise ConfigError(f"preprocess={preprocess!r}", "use preprocess='cpu' (default) or 'gpu'")
        self.classes = None if classes is None else [int(c) for c in classes]
        self.agnostic = agnostic
        self.backend: Backend = load_backend(path, backend, **backend_options)
        try:  # whatever fails after the load must not leak the backend
            self._configure(path, conf, iou, max_det, agnostic, preprocess)
        except Exception:
            self.backend.close()
            raise
        self.last_timings: dict[str, float] = {}

    def _configure(self, path, conf, iou, max_det, agnostic, preprocess) -> None:
        meta = self.backend.metadata
        self._end2end = meta.head is HeadLayout.END2END
        if self._end2end:
            run = resolve_thresholds(meta, path, conf, iou, max_det, agnostic)
            conf, iou, max_det = run.conf, run.iou, run.max_det
        conf = 0.25 if conf is None else conf
        iou = 0.45 if iou is None else iou
        max_det = 300 if max_det is None else max_det
        if not 0.0 <= conf < 1.0 or not 0.0 <= iou <= 1.0 or max_det < 1:
            raise ConfigError(f"conf={conf}, iou={iou}, max_det={max_det} out of range",
                              "use 0 <= conf < 1, 0 <= iou <= 1 and max_det >= 1")
        self.conf, self.iou, self.max_det = conf, iou, max_det
        self.metadata: ModelMetadata = meta
        self.preprocess = preprocess
        spec = self.backend.inputs[0]
        pixels = PixelFormat.of_input(spec.shape, spec.dtype)  # the graph's input, whatever the metadata says
        if preprocess == "gpu" and pixels is not PixelFormat.NCHW_RGB_FLOAT:
            raise ConfigError(f"preprocess='gpu' writes float NCHW input; {path} takes {pixels.value} pixels",
                              "use preprocess='cpu' (its letterbox is a plain resize for this model)")
        self._gpu_letterbox = _gpu_letterbox(self.backend, meta.imgsz, spec.dtype) if preprocess == "gpu" else None
        self._static_batch = self.backend.max_batch
        self._letterbox = Letterbox(meta.imgsz, batch=self._static_batch or 1, dtype=spec.dtype, pixels=pixels)

    @property
    def names(self) -> tuple[str, ...]:
        return self.metadata.names

    @property
    def imgsz(self) -> tuple[int, int]:
        return self.metadata.imgsz

    def predict(self, frames: list[np.ndarray]) -> list[Detections]:
        """Detections for each frame, in batches of the model's batch size."""
        if not frames:
            return []
        hi = self.backend.batch_range[1]  # a dynamic engine's profile caps the batch
        step = self._static_batch or min(len(frames), hi or len(frames))
        if self._letterbox.buffer.shape[0] < step:  # dynamic batch: the buffer only grows
            self._letterbox = self._letterbox.resized(step)
        timings = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
        results: list[Detections] = []
        for i in range(0, len(frames), step):
            results += self._run(frames[i : i + step], timings)
        self.last_timings = timings
        return results

    def _run(self, chunk: list[np.ndarray], timings: dict[str, float]) -> list[Detections]:
        t0 = time.perf_counter()
        if self._gpu_letterbox is not None:  # the kernel writes the engine's device input; no host tensor
            batch = self._static_batch or len(chunk)
            geoms = self._gpu_letterbox(chunk, *self.backend.device_input(batch))
            t1 = time.perf_counter()
            outputs = self.backend.infer_device(batch)
        else:
            x, geoms = self._letterbox(chunk)
            if self._static_batch and len(chunk) < self._static_batch:
                x = self._letterbox.buffer  # static batch: run the whole buffer, use the first rows
            t1 = time.perf_counter()
            outputs = self.backend.infer(x)
        t2 = time.perf_counter()
        out = [Detections(g.boxes_to_source(xyxy), s, c, self.names)
               for g, (xyxy, s, c) in zip(geoms, self._decode(outputs, len(geoms)))]
        t3 = time.perf_counter()
        timings["preprocess"] += (t1 - t0) * 1e3
        timings["inference"] += (t2 - t1) * 1e3
        timings["postprocess"] += (t3 - t2) * 1e3
        return out

    def _decode(self, outputs: list[np.ndarray], n: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        if not self._end2end:
            return [postprocess_raw(outputs[0][j], self.conf, self.iou, self.max_det, self.classes, self.agnostic)
                    for j in range(n)]
        num, boxes, scores, cls = split_outputs([o.name for o in self.backend.outputs], outputs)
        run = RunThresholds(self.conf, self.iou, self.max_det)
        return [finish_end2end(num[j], boxes[j], scores[j], cls[j], self.metadata.thresholds.nms, run, self.classes,
                               self.agnostic) for j in range(n)]

    def close(self) -> None:
        """Release the backend (and the GPU letterbox's buffers)."""
        if self._gpu_letterbox is not None:
            self._gpu_letterbox.close()
        self.backend.close()

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Detector({self.backend.path.name}, backend={self.backend.name}, imgsz={self.imgsz}, "
                f"classes={len(self.names)}, conf={self.conf}, iou={self.iou})")


def _gpu_letterbox(backend: Backend, imgsz: tuple[int, int], dtype: np.dtype):
    """The letterbox kernel bound to ``backend``'s device input, or a clear error why not.

    The backend must offer ``device_input(batch) -> (device pointer, CUDA stream)`` of its input buffer
    and ``infer_device(batch) -> outputs`` running on what is there (no host-to-device copy).
    """
    fix = ("use preprocess='cpu' (default); preprocess='gpu' needs an NVIDIA GPU with its driver, "
           "pip install -e .[cuda] (cuda-python + NVRTC), and a TensorRT .engine")
    from .cuda.kernels import GpuLetterbox, cuda_unavailable_reason  # imports without cuda-python

    reason = cuda_unavailable_reason()
    if reason:
        raise BackendUnavailableError(f"preprocess='gpu' needs CUDA, which is not usable here: {reason}", fix)
    if not (hasattr(backend, "device_input") and hasattr(backend, "infer_device")):
        raise BackendUnavailableError(f"preprocess='gpu' writes into an engine's device input; the '{backend.name}' "
                                      "backend has no device-input entry (device_input / infer_device)", fix)
    return GpuLetterbox(imgsz, dtype=dtype, device=int(getattr(backend, "device", 0)))
