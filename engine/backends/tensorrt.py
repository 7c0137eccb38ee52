"""TensorRT backend: ``.engine`` / ``.plan`` files built by ``python -m exporters.build --engine ...``.

Works with TensorRT-RTX 1.x (``tensorrt_rtx``) and TensorRT 10.x / 11.x (``tensorrt``), whichever built
the engine (its sidecar says). Before deserializing, the sidecar is checked against the TensorRT and
GPU here; a mismatch is an :class:`EngineMismatchError` with the exact rebuild command.

Three rooms: :mod:`.trt_engine` loads an engine once and shares it, :mod:`.trt_context` is one execution
context with its stream and buffers, and this module hands contexts to threads and keeps the contract
below. Written to NVIDIA's documented API and proved on the fake TensorRT and CUDA modules of
``tests/fakes`` (our logic, not TensorRT's); never run on a GPU here: ``python -m benchmarks.verify`` is
its first real run.

Thread and lifetime contract
----------------------------
* **Calls from many threads.** :meth:`~TensorRTBackend.infer`, :meth:`~TensorRTBackend.infer_device`,
  :meth:`~TensorRTBackend.device_input` and :meth:`~TensorRTBackend.input_buffer` may run in any number of
  threads at once. Each thread runs on its own *slot* (execution context, stream, pinned and device
  buffers), taken on its first call; the loading thread's is made at load, so a broken engine fails there.
  When a thread ends, its slot goes back to this backend's pool for the next new thread (no CUDA call at
  thread exit), so slots number the most threads alive at once that called, not every thread ever seen.
* **Outputs** are views of the calling thread's pinned buffers: valid until that thread's next call or
  :meth:`~TensorRTBackend.close`; copy what you keep.
* **close()** may come from any thread, during calls of others: it refuses new calls (a typed
  :class:`~engine.errors.ClosedError`), waits for the running ones to return and for the GPU
  work they queued, then frees every slot and releases the engine. It is idempotent. Between
  :meth:`~TensorRTBackend.device_input` and :meth:`~TensorRTBackend.infer_device` a caller's kernel writes
  the input buffer: close the backend only after that pair returned.
* **No CUDA in the garbage collector.** Nothing is freed in ``__del__`` (at interpreter exit CUDA and
  TensorRT may already be gone): ``close()`` or the ``with`` block frees. A backend dropped unclosed only
  warns (``ResourceWarning``) and keeps its GPU memory until the process ends.
* **One engine, many contexts.** Backends of the same engine file on the same GPU share one deserialized
  engine (:class:`~engine.backends.trt_engine.SharedEngine`): N Detectors of one process hold one engine
  and N execution contexts (``engine.serve`` instances are processes of their own: one engine each). The engine goes with the last backend's ``close()``.
* **Memory.** Every buffer is sized once for the largest batch of the engine's optimization profile; a
  batch outside the profile is refused, so nothing grows. The hot path allocates nothing. The pinned
  input buffer is exposed (:meth:`~TensorRTBackend.input_buffer`): letterbox into it and ``infer`` skips
  its one host copy.
"""
from __future__ import annotations

import threading
import warnings
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from .. import cuda
from ..errors import BackendUnavailableError, ConfigError, EngineRunError, InputImageError, ModelLoadError
from .base import Backend, TensorSpec
from .trt_context import ContextSlot
from .trt_engine import SharedEngine
from .trt_flavor import import_tensorrt
from .trt_sidecar import EngineSidecar, check_flavor, check_gpu, missing_flavor_hint, read_sidecar

__all__ = ["TensorRTBackend", "EngineRunError"]


def _parse_device(device: Any) -> int:
    if device in (None, "auto", "cuda"):
        return 0
    if isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    if isinstance(device, int) and not isinstance(device, bool) and device >= 0:
        return device
    raise ConfigError(f"device={device!r} is not a CUDA device for a TensorRT engine",
                      "pass device=0 (or another GPU index); TensorRT runs on a GPU only, use the .onnx for the CPU")


class _Holder:
    """Kept in a thread's local storage; when the thread ends it goes, and its slot returns to the pool."""

    def __init__(self, slot: ContextSlot) -> None:
        self.slot = slot


class TensorRTBackend(Backend):
    """Run a TensorRT engine on a CUDA GPU (threads and lifetime: see the module docstring).

    Options:
        device: CUDA device index (``0`` default; ``"cuda:1"`` also accepted).
        cuda_graph: replay H2D → execute → D2H as one CUDA graph per batch size (TensorRT 10/11: captured
            by us after a warm-up call; TensorRT-RTX: its own whole-graph capture strategy).
        runtime_cache: TensorRT-RTX only: file of JIT-compiled kernels, loaded at start and saved when the
            engine's last backend closes, so the next start skips compilation. ``"auto"`` (default):
            ``<engine>.rtxcache`` beside the engine; ``None``: off.
    """

    name = "tensorrt"

    def __init__(self, path: str | Path, device: Any = 0, cuda_graph: bool = False,
                 runtime_cache: str | Path | None = "auto", **options: Any) -> None:
        super().__init__(path, **options)
        if not self.path.is_file():
            raise ModelLoadError(f"engine file not found: {self.path}",
                                 "check the path, or build one with python -m exporters.build --engine fp32")
        self.device = _parse_device(device)
        self.cuda_graph = bool(cuda_graph)
        self.sidecar: EngineSidecar = read_sidecar(self.path)
        self.metadata = self.sidecar.metadata
        self._lock = threading.Lock()
        self._local = threading.local()
        self._slots: list[ContextSlot] = []  # every slot, for close()
        self._free: list[ContextSlot] = []  # slots whose thread ended
        self._shared: SharedEngine | None = None
        self.gpu = self._check_machine()
        cuda.set_device(self.device)
        self._shared = SharedEngine.acquire(self.path, self.device, self._trt, self.flavor, self.sidecar,
                                            self._runtime_cache_path(runtime_cache))
        try:
            io = self._shared.io
            self._io_in = [t for t in io if t.is_input]
            if len(self._io_in) != 1:
                raise ModelLoadError(f"{self.path} has {len(self._io_in)} inputs; a detector engine has one image "
                                     "input", "build the engine from a detect model's ONNX")
            dyn = lambda s: tuple(None if d < 0 else int(d) for d in s)  # noqa: E731
            self.inputs = [TensorSpec(t.name, dyn(t.shape), t.dtype) for t in self._io_in]
            self.outputs = [TensorSpec(t.name, dyn(t.shape), t.dtype) for t in io if not t.is_input]
            self._slot()  # the loading thread's context and buffers, made now rather than on the first call
        except BaseException:
            self.close()
            raise

    def _check_machine(self) -> cuda.DeviceInfo:
        """The sidecar against the TensorRT and GPU here, before TensorRT sees the file."""
        try:
            self._trt, self.flavor = import_tensorrt(self.sidecar.tensorrt)
        except BackendUnavailableError as e:
            raise BackendUnavailableError(f"{self.path} was built with {self.sidecar.flavor.label}, which is not "
                                          f"installed here ({e.message})", missing_flavor_hint(self.sidecar)) from None
        check_flavor(self.sidecar, self.flavor, self.path)
        try:
            gpu = cuda.device_info(self.device)
        except cuda.CudaError as e:
            raise type(e)(f"{self.path} needs a CUDA GPU to run, and none is usable here: {e.message}", e.fix,
                          call=e.call, error_name=e.error_name) from None
        check_gpu(self.sidecar, gpu.sm_tag, gpu.name, self.path)
        return gpu

    def _runtime_cache_path(self, runtime_cache: Any) -> Path | None:
        if not self.flavor.is_rtx or runtime_cache is None:
            return None
        return self.path.with_suffix(".rtxcache") if runtime_cache == "auto" else Path(runtime_cache)

    # -- slots ---------------------------------------------------------------------------------
    def _slot(self) -> ContextSlot:
        """The calling thread's slot: its own, one a finished thread left, or a new one."""
        holder = getattr(self._local, "holder", None)
        if holder is not None:
            return holder.slot
        cuda.set_device(self.device)  # the current device is per thread
        with self._lock:
            slot = self._free.pop() if self._free else None
            if slot is None:
                slot = ContextSlot(self._shared, self.cuda_graph)
                self._slots.append(slot)
        holder = self._local.holder = _Holder(slot)
        weakref.finalize(holder, self._free.append, slot)  # thread gone → slot reusable (a list append only)
        return slot

    # -- running -------------------------------------------------------------------------------
    @property
    def batch_range(self) -> tuple[int, int]:
        """Smallest and largest batch this engine runs (its profile; both equal for a static batch)."""
        t = self._io_in[0]
        return t.min_shape[0], t.max_shape[0]

    def _check_batch(self, batch: int) -> None:
        lo, hi = self.batch_range
        if not lo <= batch <= hi:
            raise InputImageError(f"batch {batch} is outside the engine's profile {lo}..{hi} ({self.path})",
                                  f"pass {lo}..{hi} frames per call (Detector pads shorter calls and splits longer "
                                  f"ones), or rebuild with an --engine-batch MIN,OPT,MAX that covers {batch}")

    def input_buffer(self, batch: int) -> np.ndarray:
        """This thread's pinned input, shaped for ``batch``: letterbox into it and pass it (or its first rows)
        to :meth:`infer`, which then copies nothing on the host."""
        self._check_batch(batch)
        with self.gate.call():
            return self._slot().input_view((batch, *self._io_in[0].max_shape[1:]))

    def device_input(self, batch: int) -> tuple[int, cuda.Stream]:
        """This thread's device input pointer and stream, for a CUDA kernel that writes the input itself
        (``Detector(preprocess="gpu")``); then call :meth:`infer_device`. Work queued on that stream
        before :meth:`infer_device` runs before the engine."""
        self._check_batch(batch)
        with self.gate.call():
            slot = self._slot()
            return slot.device[slot.input.name].ptr, slot.stream

    def infer_device(self, batch: int) -> list[np.ndarray]:
        """Run on the input already in :meth:`device_input` (no H2D copy); host views of the outputs."""
        self._check_batch(batch)
        with self.gate.call():
            slot = self._slot()
            outs = slot.outputs(batch)
            slot.run(batch, 0, h2d=False)
            return outs

    def infer_impl(self, x: np.ndarray) -> list[np.ndarray]:
        batch = x.shape[0]
        self._check_batch(batch)
        slot = self._slot()  # inside the gate: Backend.infer holds it
        host_in = slot.input_view(x.shape)
        if host_in.ctypes.data != x.ctypes.data:  # not letterboxed into input_buffer(): one host copy
            np.copyto(host_in, x)
        outs = slot.outputs(batch)
        slot.run(batch, host_in.nbytes)
        return outs

    # -- lifetime ------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self.gate.closed

    def close(self) -> None:
        """Refuse new calls, wait for the running ones, free every slot, release the engine (idempotent)."""
        if not self.gate.close():
            return
        with self._lock:
            slots, self._slots, self._free = self._slots, [], []
        self._local = threading.local()  # the threads' holders go; their finalizers only append to a dropped list
        try:
            for slot in slots:
                slot.close()
        finally:
            shared, self._shared = self._shared, None
            if shared is not None:
                shared.release()

    def __del__(self) -> None:
        # Only a warning: freeing CUDA memory from the garbage collector can run at interpreter exit, after
        # CUDA or TensorRT were torn down, or on a thread that must not block on the GPU.
        gate = getattr(self, "gate", None)
        if gate is not None and not gate.closed and getattr(self, "_shared", None) is not None:
            warnings.warn(f"TensorRTBackend({self.path}) was never closed: its GPU memory stays allocated until the "
                          "process ends; call close() or use it in a with block", ResourceWarning, stacklevel=1)
