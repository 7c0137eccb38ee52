"""``Detector``: frames in, :class:`Detections` out, on any backend.

Thread safety: one ``Detector`` may be called from several threads at once and gives each call the
same detections as a call alone. Each call borrows a letterbox buffer from a free list (so buffers
number the most calls ever in flight together, and nothing is allocated per call once warm); the
backend keeps per-thread IO buffers (:mod:`engine.backends.base`). ``close()`` waits for calls in
flight; later calls raise :class:`~engine.errors.ClosedError`. ``last_timings`` is the timing of the
call that finished last, whichever thread made it.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .backends import Backend, load_backend
from .backends.base import CallGate
from .detections import Detections
from .end2end import RunThresholds, finish_end2end, resolve_thresholds, split_outputs
from .errors import BackendUnavailableError, ConfigError, InputImageError, UnsupportedModelError
from .metadata import HeadLayout, ModelMetadata, PixelFormat
from .nms import postprocess_raw
from .preprocess import Letterbox

# Most frames one inference takes from a dynamic-batch model with no profile limit (ONNX Runtime): a
# longer list runs in chunks of this many, so a 10,000-frame call holds one 16-frame buffer, not 10,000.
# Beyond ~8-16 frames a batch no longer raises throughput on a CPU or a laptop GPU.
MAX_DYNAMIC_BATCH = 16


class FrameCalls:
    """``obj(frame)`` gives one :class:`Detections`, ``obj([f1, f2])`` a list, through ``obj.predict``."""

    def predict(self, frames: list[np.ndarray]) -> list[Detections]:  # pragma: no cover - overridden
        raise NotImplementedError

    def _check_open(self) -> None:
        """Raise :class:`~engine.errors.ClosedError` after ``close()`` (overridden where it applies)."""

    def __call__(self, frames: np.ndarray | Sequence[np.ndarray]) -> Detections | list[Detections]:
        self._check_open()
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
        classes: keep only these classes: ids or names, one or a list (``None`` = all); an id or name
            the model does not have is a :class:`~engine.errors.ConfigError`.
        agnostic: class-agnostic NMS.
        backend: ``"auto"`` or a backend name (``"onnxruntime"``).
        preprocess: ``"cpu"`` (default, OpenCV letterbox) or ``"gpu"``: the letterbox CUDA kernel of
            :mod:`engine.cuda.kernels` writes straight into a TensorRT engine's input buffer. Needs an
            NVIDIA GPU, cuda-python and the TensorRT backend; elsewhere a clear error.
        **backend_options: passed to the backend (e.g. ``device="cpu"``, ``intra_op_threads=2``).

    ``det(frame)`` takes one BGR uint8 image and returns a :class:`Detections`; ``det([f1, f2])``
    returns a list. :attr:`last_timings` holds the last call's preprocess / inference / postprocess
    milliseconds. Use as a context manager, or call :meth:`close`.

    Safe to call from several threads at once (see the module docstring); after :meth:`close` every
    call raises :class:`~engine.errors.ClosedError`.
    """

    def __init__(self, path: str | Path, conf: float | None = None, iou: float | None = None,
                 max_det: int | None = None, classes: int | str | Sequence[int | str] | None = None,
                 agnostic: bool = False,
                 backend: str = "auto", preprocess: str = "cpu", **backend_options: Any) -> None:
        if preprocess not in ("cpu", "gpu"):
            raise ConfigError(f"preprocess={preprocess!r}", "use preprocess='cpu' (default) or 'gpu'")
        self.agnostic = agnostic
        self._gate = CallGate(f"Detector({Path(path).name})")
        self._letterboxes: list[Letterbox] = []  # free list: a call pops one and appends it back
        self._gpu_lock = threading.Lock()  # the GPU letterbox's pinned staging is one per Detector
        self.backend: Backend = load_backend(path, backend, **backend_options)
        try:  # whatever fails after the load must not leak the backend
            self._configure(path, conf, iou, max_det, agnostic, preprocess)
            self.classes = _class_ids(classes, self.metadata.names)
        except Exception:
            self.backend.close()
            raise
        self.last_timings: dict[str, float] = {}

    def _configure(self, path, conf, iou, max_det, agnostic, preprocess) -> None:
        meta = self.backend.metadata
        _check_detect_head(meta, self.backend.outputs, path)
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
        lo, hi = self.backend.batch_range  # a dynamic engine's profile bounds the batch
        self._min_batch = lo or 1  # a shorter call is padded up to it (--engine-batch 2,4,8: one frame runs as 2)
        self._max_step = self._static_batch or (hi if hi is not None else MAX_DYNAMIC_BATCH)
        self._input_format = (spec.dtype, pixels)
        self._letterboxes.append(self._new_letterbox(self._static_batch or 1))

    def _new_letterbox(self, batch: int) -> Letterbox:
        dtype, pixels = self._input_format
        return Letterbox(self.metadata.imgsz, batch=batch, dtype=dtype, pixels=pixels)

    def _borrow_letterbox(self, step: int) -> tuple[Letterbox, bool]:
        """A letterbox for ``step`` frames, and whether it goes back to the free list after the call."""
        step = self._static_batch or max(step, self._min_batch)  # a static model always runs its whole batch
        own = self.backend.input_buffer(step)  # TensorRT: this thread's pinned input, so infer() copies nothing
        if own is not None:  # the backend's buffer belongs to this thread: not pooled
            dtype, pixels = self._input_format
            return Letterbox(self.metadata.imgsz, batch=step, dtype=dtype, out=own, pixels=pixels), False
        try:
            lb = self._letterboxes.pop()  # atomic: two threads never get the same one
        except IndexError:
            return self._new_letterbox(step), True
        return (lb if lb.buffer.shape[0] >= step else lb.resized(step)), True  # grows up to _max_step only

    @property
    def names(self) -> tuple[str, ...]:
        return self.metadata.names

    @property
    def imgsz(self) -> tuple[int, int]:
        return self.metadata.imgsz

    def _check_open(self) -> None:
        self._gate.check()

    def predict(self, frames: list[np.ndarray]) -> list[Detections]:
        """Detections for each frame, in batches of the model's batch size (a dynamic-batch model: up to
        its profile's largest batch, or :data:`MAX_DYNAMIC_BATCH` frames per inference)."""
        with self._gate.call():
            if not frames:
                return []
            step = min(len(frames), self._max_step)
            lb, pooled = self._borrow_letterbox(step)
            timings = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
            results: list[Detections] = []
            try:
                for i in range(0, len(frames), step):
                    results += self._run(lb, frames[i : i + step], timings)
            finally:
                if pooled:
                    self._letterboxes.append(lb)
            self.last_timings = timings
            return results

    def _run(self, lb: Letterbox, chunk: list[np.ndarray], timings: dict[str, float]) -> list[Detections]:
        t0 = time.perf_counter()
        if self._gpu_letterbox is not None:  # the kernel writes the engine's device input; no host tensor
            batch = self._static_batch or max(len(chunk), self._min_batch)
            with self._gpu_lock:  # the device input and stream are this thread's; the staging is shared
                geoms = self._gpu_letterbox(chunk, *self.backend.device_input(batch))
            t1 = time.perf_counter()
            outputs = self.backend.infer_device(batch)
        else:
            x, geoms = lb(chunk)
            runs = self._static_batch or self._min_batch
            if len(chunk) < runs:
                x = lb.buffer[:runs]  # a static batch or a profile's minimum: run that many, use the first rows
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
        """Release the backend (and the GPU letterbox's buffers) once calls in flight end (idempotent)."""
        if not self._gate.close():
            return
        if self._gpu_letterbox is not None:
            self._gpu_letterbox.close()
        self.backend.close()
        self._letterboxes = []

    def __enter__(self) -> "Detector":
        self._gate.check()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Detector({self.backend.path.name}{', closed' if self._gate.closed else ''}, backend={self.backend.name}, imgsz={self.imgsz}, "
                f"classes={len(self.names)}, conf={self.conf}, iou={self.iou})")


def _class_ids(classes, names: Sequence[str]) -> list[int] | None:
    """``classes`` (an id, a name, or a list of them) as class ids of ``names``; ``None`` stays ``None``."""
    if classes is None:
        return None
    items = [classes] if isinstance(classes, (int, str, np.integer)) else list(classes)
    ids = []
    for c in items:
        if isinstance(c, str) and c in names:
            ids.append(names.index(c))
        elif isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c < len(names):
            ids.append(int(c))
        else:
            raise ConfigError(f"classes={classes!r}: {c!r} is not one of the model's {len(names)} classes",
                              f"pass ids 0-{len(names) - 1} or names from {list(names)[:10]}")
    return ids


def _check_detect_head(meta: ModelMetadata, outputs, path) -> None:
    """Refuse a model ``Detector`` would misread: another task (pose, segment...) or a raw head whose
    rows are not 4 box sides + one score per class (its numbers would come back as boxes and scores)."""
    fix = "export a YOLO detect model: python -m exporters.build --weights best.pt"
    if meta.task != "detect":
        raise UnsupportedModelError(f"{path} is a '{meta.task}' model; Detector runs detect models only", fix)
    if meta.head is not HeadLayout.RAW:
        return
    shape, want = tuple(outputs[0].shape), 4 + meta.num_classes
    if len(shape) != 3 or shape[1] not in (None, want):
        raise UnsupportedModelError(
            f"{path}: output '{outputs[0].name}' has shape {list(shape)}, where a raw YOLO detect head for its "
            f"{meta.num_classes} classes is [batch, {want}, anchors] (4 box sides + {meta.num_classes} scores)", fix)


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
