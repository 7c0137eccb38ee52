"""``DetectorPool``: several single-threaded CPU detectors of one model, for many streams on few cores.

    from engine.pool import DetectorPool
    with DetectorPool("deploy/demo.int8-cpu.onnx", workers=2) as pool:
        results = pool.predict([frame_cam1, frame_cam2])   # in order, one Detections per frame

Why: ONNX Runtime runs an elementwise operator on one thread below roughly 100k elements (its cost
model), and at 320x320 most of a YOLO's activations (SiLU, adds, concats at P4/P5) are smaller than
that. One session given all the cores therefore leaves cores idle for much of a frame; the INT8 CPU form
suffers most, its quantized SiLU being two such passes. Two sessions with one thread each, fed one
frame each, keep both cores busy: on a 2-core Xeon the demo ran end to end at 3.7 ms per frame (INT8 CPU
form) and 6.4 ms (FP32) against 5.4 and 7.9 ms with one two-threaded detector (``python -m
benchmarks.int8_speed --workers 2``, ``benchmarks/RESULTS.md``). It raises frames per second, not the
latency of one frame, so it is for a video file, several cameras or a batch.

Each worker owns a :class:`~engine.Detector` (its own session and letterbox buffer); a call splits the
frames into one contiguous chunk per worker and runs the chunks at once on threads (ONNX Runtime and
OpenCV release the GIL; threads, not processes, so it works the same on Windows).

Ctrl-C: the calling thread runs one chunk and waits for the others. A ``KeyboardInterrupt`` lands
between any two bytecodes of that thread, and ``concurrent.futures`` takes Python-level locks there
(``wait`` acquires every future's condition in a loop): interrupted inside one, the lock stays held, the
worker blocks forever handing its result back, and ``close()`` then waits forever for the worker (the
``engine.stream`` Ctrl-C hang). So a worker hands results back through a ``queue.SimpleQueue``, whose
``put`` never blocks, and the caller only ever blocks in that queue's C ``get``: an interrupt there
loses the result, never a worker.
"""
from __future__ import annotations

import atexit
import functools
import os
import queue
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from .backends import backend_for
from .detections import Detections
from .backends.base import CallGate
from .detector import Detector, FrameCalls
from .errors import BackendUnavailableError, ConfigError
from .metadata import ModelMetadata

__all__ = ["DetectorPool", "auto_workers", "auto_hint", "default_threads"]
POOLED = ("onnxruntime", "openvino")  # CPU backends whose threads a pool shares out (intra_op_threads)


def default_threads(workers: int, cores: int | None = None) -> int:
    """ONNX Runtime intra-op threads per worker: the cores shared out, at least one."""
    return max(1, (cores or os.cpu_count() or 1) // workers)


def _on_cpu(cls: type, device: str) -> bool:
    """Whether ``device`` puts a session of backend ``cls`` on ONNX Runtime's CPU provider ("auto" without CUDA)."""
    return device in ("cpu", "auto") and not cls.uses_cuda(device)


def auto_workers(path: str | Path, fill: int | None, device: str = "auto", backend: str = "auto",
                 cores: int | None = None) -> int:
    """The workers a stream gives a model by default: 2 where a pool pays, else 1.

    Two when ``path`` runs on ONNX Runtime's CPU provider, the machine has two cores or more, and the
    sources can keep two detectors busy. ``fill`` is the most frames one call can get: ``None`` when a
    file or folder is among the sources (read frame by frame, it fills any batch), else the number of
    live sources (one frame each). Measured on 2 cores only (``benchmarks/RESULTS.md``); pass
    ``workers`` yourself to use more on a larger CPU.
    """
    if (cores or os.cpu_count() or 1) < 2 or (fill is not None and fill < 2):
        return 1
    try:
        cls = backend_for(path, backend)
    except BackendUnavailableError:
        return 1  # the Detector that loads it says why
    return 2 if getattr(cls, "name", None) == "onnxruntime" and _on_cpu(cls, device) else 1


def auto_hint(path: str | Path, fill: int | None, backend: str = "auto") -> dict[str, str]:
    """Options a stream gives one detector of ``path``: OpenVINO's throughput hint when the sources can keep
    several infer requests busy (``fill`` as in :func:`auto_workers`: ``None`` or 2+), else nothing.

    In throughput mode one OpenVINO detector runs a call's frames as several requests at once, on the cores
    split into streams (see :mod:`engine.backends.openvino`), which is what a pool does for ONNX Runtime.
    """
    if fill is not None and fill < 2:
        return {}
    try:
        cls = backend_for(path, backend)
    except BackendUnavailableError:
        return {}
    return {"hint": "throughput"} if getattr(cls, "name", None) == "openvino" else {}


class DetectorPool(FrameCalls):
    """``workers`` CPU :class:`~engine.Detector` s of one ONNX model, run side by side on threads.

    Args:
        path: an ``.onnx`` model (ONNX Runtime on the CPU; a GPU gets its throughput from a batch), or an
            OpenVINO IR (whose ``hint="throughput"`` does the same inside one detector).
        workers: how many detectors (at least 1); 2 or the number of cameras, up to the cores.
        threads: ONNX Runtime intra-op threads of each (default: cores // workers, at least 1).
        **detector_options: passed to each :class:`~engine.Detector` (``conf``, ``iou``, ``classes`` ...).

    ``pool.predict(frames)`` returns one :class:`~engine.Detections` per frame, in order; ``pool(frame)``
    and ``pool([f1, f2])`` work as on a Detector. Calls from several threads are served one at a time;
    after :meth:`close` every call raises :class:`~engine.errors.ClosedError`.
    """

    def __init__(self, path: str | Path, workers: int = 2, threads: int | None = None,
                 **detector_options: Any) -> None:
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ConfigError(f"workers={workers!r}", "use 1 or more workers (2, or one per camera up to the cores)")
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
            raise ConfigError(f"threads={threads!r}", "use 1 or more threads per worker, or leave it to the pool")
        backend = detector_options.pop("backend", "auto")
        cls = backend_for(path, backend)
        if getattr(cls, "name", None) not in POOLED:
            raise ConfigError(f"DetectorPool runs ONNX Runtime on the CPU; {path} loads with the "
                              f"'{getattr(cls, 'name', cls.__name__)}' backend",
                              "use one Detector with a batch for a GPU engine, or pass an .onnx model")
        device = detector_options.pop("device", "cpu")
        if not _on_cpu(cls, device):
            raise ConfigError(f"DetectorPool(device={device!r})", "the pool is for the CPU: leave device out")
        if "intra_op_threads" in detector_options:
            raise ConfigError("DetectorPool(intra_op_threads=...)", "pass threads= (per worker) instead")
        self.workers, self.threads = workers, threads or default_threads(workers)
        self._gate = CallGate(f"DetectorPool({Path(path).name})")
        self.detectors: list[Detector] = []
        self._jobs: list[queue.SimpleQueue] = []
        self._threads: list[threading.Thread] = []
        try:
            for _ in range(workers):
                self.detectors.append(Detector(path, backend=backend, device="cpu",
                                               intra_op_threads=self.threads, **detector_options))
        except Exception:
            self.close()
            raise
        self._call = [0]  # the number of the current call: a worker skips the jobs of an interrupted one
        for k, det in enumerate(self.detectors[1:], 1):  # the calling thread runs detector 0 itself
            jobs: queue.SimpleQueue = queue.SimpleQueue()
            t = threading.Thread(target=_work, args=(det, jobs, self._call), name=f"detector-pool-{k}", daemon=True)
            t.start()
            self._jobs.append(jobs)
            self._threads.append(t)
        # daemon workers never block the interpreter's exit, but one must not be inside ONNX Runtime while
        # the interpreter tears down (std::terminate): a pool left open is closed at exit
        self._at_exit = functools.partial(_close_pool, weakref.ref(self))
        atexit.register(self._at_exit)
        self._lock = threading.Lock()
        self.last_timings: dict[str, float] = {}

    # what Stream and callers read from a Detector
    @property
    def names(self) -> tuple[str, ...]:
        return self.detectors[0].names

    @property
    def imgsz(self) -> tuple[int, int]:
        return self.detectors[0].imgsz

    @property
    def metadata(self) -> ModelMetadata:
        return self.detectors[0].metadata

    @property
    def max_batch(self) -> int | None:
        """Frames one call spreads at once: workers x the model's static batch (``None``: dynamic batch)."""
        static = self.detectors[0].backend.max_batch
        return self.workers * static if static else None

    def _check_open(self) -> None:
        self._gate.check()

    def predict(self, frames: list[np.ndarray]) -> list[Detections]:
        """Detections for each frame, in order; the frames are split into one chunk per worker."""
        with self._gate.call(), self._lock:
            if not frames:
                return []
            n = len(frames)
            size = -(-n // self.workers)  # ceil: contiguous chunks, the last may be short
            chunks = [frames[i : i + size] for i in range(0, n, size)]
            done: queue.SimpleQueue = queue.SimpleQueue()  # per call: a late result of an interrupted call goes nowhere
            self._call[0] += 1
            for k, (jobs, chunk) in enumerate(zip(self._jobs, chunks[1:]), 1):
                jobs.put((self._call[0], k, chunk, done))
            parts: dict[int, list[Detections] | BaseException] = {}
            try:
                parts[0] = self.detectors[0].predict(chunks[0])  # the calling thread runs one chunk itself
            except Exception as e:  # noqa: BLE001 - raised below, after the workers are done
                parts[0] = e
            while len(parts) < len(chunks):  # never leave a worker running into the next call
                k, part = done.get()
                parts[k] = part
            for part in parts.values():
                if isinstance(part, BaseException):
                    raise part
            self.last_timings = {k: max(d.last_timings.get(k, 0.0) for d in self.detectors[: len(chunks)])
                                 for k in ("preprocess", "inference", "postprocess")}
            return [r for k in range(len(chunks)) for r in parts[k]]

    def close(self) -> None:
        """Wait for a call in flight, stop the threads and release every detector's session (idempotent)."""
        if not self._gate.close():
            return
        if hasattr(self, "_at_exit"):
            atexit.unregister(self._at_exit)
            self._call[0] += 1  # jobs still queued by an interrupted call are skipped, not run
        for jobs in self._jobs:
            jobs.put(None)
        for t in self._threads:
            t.join(timeout=30)  # a chunk in flight ends in milliseconds; never wait forever
        for det in self.detectors:
            det.close()  # closed detectors stay in the list: names, imgsz and metadata remain readable
        self._jobs, self._threads = [], []

    def __enter__(self) -> "DetectorPool":
        self._gate.check()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        name = self.detectors[0].backend.path.name if self.detectors else "?"
        closed = ", closed" if self._gate.closed else ""
        return f"DetectorPool({name}{closed}, workers={self.workers}, threads={self.threads})"


def _close_pool(ref: "weakref.ref[DetectorPool]") -> None:
    pool = ref()
    if pool is not None:
        pool.close()


def _work(det: Detector, jobs: queue.SimpleQueue, current: list[int]) -> None:
    """A worker thread: run each ``(call, index, chunk, done)`` job on ``det`` and put ``(index, detections
    or exception)`` into ``done``; skip the jobs of a call that is no longer ``current[0]``; ``None`` stops it."""
    while (job := jobs.get()) is not None:
        call, k, chunk, done = job
        if call != current[0]:  # its caller was interrupted and has moved on: nobody waits for it
            continue
        try:
            part: list[Detections] | BaseException = det.predict(chunk)
        except BaseException as e:  # noqa: BLE001 - handed to the caller, which raises it
            part = e
        done.put((k, part))
