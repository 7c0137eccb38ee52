"""TensorRT backend: ``.engine`` / ``.plan`` files built by ``python -m exporters.build --engine ...``.

Works with TensorRT-RTX 1.x (``tensorrt_rtx``) and TensorRT 10.x / 11.x (``tensorrt``), whichever built
the engine (its sidecar says). Before deserializing, the sidecar is checked against the TensorRT and
GPU here; a mismatch is an :class:`EngineMismatchError` with the exact rebuild command.

Memory: per thread, one execution context with its own stream, pinned host buffers and device
buffers, all sized for the largest batch once at creation; the hot path allocates nothing. A call
queues H2D → ``execute_async_v3`` → D2H on that stream and synchronizes once, after the last copy,
before the host reads the outputs.
"""
from __future__ import annotations

import os
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import cuda
from ..errors import BackendUnavailableError, ConfigError, DeployError, InputImageError, ModelLoadError
from .base import Backend, TensorSpec
from .trt_flavor import capturing_logger, import_tensorrt
from .trt_sidecar import (EngineMismatchError, EngineSidecar, check_flavor, check_gpu, missing_flavor_hint,
                          read_sidecar)


class EngineRunError(DeployError):
    """TensorRT refused to run an engine (shape outside its profile, enqueue failure...)."""


@dataclass(frozen=True)
class _IoTensor:
    name: str
    is_input: bool
    dtype: np.dtype
    shape: tuple[int, ...]          # -1 for dynamic dimensions
    max_shape: tuple[int, ...]      # inputs: the profile's max (or the static shape)
    min_shape: tuple[int, ...]


def _parse_device(device: Any) -> int:
    if device in (None, "auto", "cuda"):
        return 0
    if isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    if isinstance(device, int) and not isinstance(device, bool) and device >= 0:
        return device
    raise ConfigError(f"device={device!r} is not a CUDA device for a TensorRT engine",
                      "pass device=0 (or another GPU index); TensorRT runs on a GPU only, use the .onnx for the CPU")


class _Slot:
    """One thread's execution context, stream, buffers and (optionally) captured CUDA graphs."""

    def __init__(self, backend: "TensorRTBackend") -> None:
        self.backend = backend
        self.graphs: dict[tuple[int, bool], cuda.CudaGraph] = {}
        self.views: dict[int, list[np.ndarray]] = {}
        self.batch = -1
        self.host: dict[str, cuda.PinnedBuffer] = {}
        self.device: dict[str, cuda.DeviceBuffer] = {}
        self.context = None
        self.stream = cuda.Stream()
        try:
            self._allocate()
        except BaseException:
            self.close()  # nothing half-made stays allocated
            raise

    def _allocate(self) -> None:
        backend = self.backend
        self.context = backend._new_context()
        if self.context is None:
            raise EngineRunError(f"TensorRT could not create an execution context for {backend.path}: "
                                 f"{backend._logged()}", "free GPU memory (other processes), or use a smaller batch")
        max_in = backend._io_inputs[0].max_shape
        self._set_shape(max_in)
        for t in backend._io:
            shape = max_in if t.is_input else tuple(self.context.get_tensor_shape(t.name))
            nbytes = int(np.prod(shape)) * t.dtype.itemsize
            self.host[t.name] = cuda.PinnedBuffer(nbytes)
            self.device[t.name] = cuda.DeviceBuffer(nbytes)
            self.context.set_tensor_address(t.name, self.device[t.name].ptr)

    def _set_shape(self, shape: tuple[int, ...]) -> None:
        t = self.backend._io_inputs[0]
        if -1 in t.shape and not self.context.set_input_shape(t.name, shape):
            raise EngineRunError(f"TensorRT refused input shape {shape} for {t.name} of {self.backend.path}: "
                                 f"{self.backend._logged()}", f"use shapes between {t.min_shape} and {t.max_shape}")
        self.batch = shape[0]

    def outputs(self, batch: int) -> list[np.ndarray]:
        """Host views of the outputs for ``batch`` (made once per batch size)."""
        views = self.views.get(batch)
        if views is None:
            if self.batch != batch:
                self._set_shape((batch, *self.backend._io_inputs[0].max_shape[1:]))
            views = self.views[batch] = [self.host[t.name].array(tuple(self.context.get_tensor_shape(t.name)), t.dtype)
                                         for t in self.backend._io_outputs]
        return views

    def enqueue(self, batch: int, in_bytes: int, h2d: bool = True) -> None:
        """Queue H2D → execute → D2H (no synchronize: the caller does it once)."""
        b = self.backend
        t_in = b._io_inputs[0]
        if h2d:
            self.device[t_in.name].copy_from_host(self.host[t_in.name], self.stream, in_bytes)
        if not self.context.execute_async_v3(int(self.stream.handle)):
            raise EngineRunError(f"execute_async_v3 failed for {b.path}: {b._logged()}",
                                 "run python -m benchmarks.verify --engine ... and share its report")
        for view, t in zip(self.views[batch], b._io_outputs):
            self.device[t.name].copy_to_host(self.host[t.name], self.stream, view.nbytes)

    def run(self, batch: int, in_bytes: int, h2d: bool = True) -> None:
        if self.batch != batch:
            self._set_shape((batch, *self.backend._io_inputs[0].max_shape[1:]))
        graph = self.graphs.get((batch, h2d))
        if graph is not None:
            graph.launch(self.stream)
        else:
            self.enqueue(batch, in_bytes, h2d)
            if self.backend.cuda_graph and not self.backend.flavor.is_rtx:
                self.stream.synchronize()  # the first enqueue does shape work that must not be captured
                self._capture(batch, in_bytes, h2d)
        self.stream.synchronize()  # after the last D2H copy: the host reads the outputs next

    def _capture(self, batch: int, in_bytes: int, h2d: bool) -> None:
        graph = cuda.CudaGraph()
        try:
            graph.begin_capture(self.stream)
            try:
                self.enqueue(batch, in_bytes, h2d)
            finally:
                graph.end_capture(self.stream)
        except DeployError as e:
            graph.close()
            self.backend.cuda_graph = False
            warnings.warn(f"CUDA graph capture failed ({e.message}); running without graphs", RuntimeWarning)
            return
        self.graphs[(batch, h2d)] = graph

    def close(self) -> None:
        for g in self.graphs.values():
            g.close()
        self.graphs.clear()
        self.views.clear()
        self.context = None  # TensorRT frees it when the Python object goes
        for buf in [*self.device.values(), *self.host.values()]:
            buf.close()
        self.device.clear()
        self.host.clear()
        self.stream.close()


class TensorRTBackend(Backend):
    """Run a TensorRT engine on a CUDA GPU.

    Options:
        device: CUDA device index (``0`` default; ``"cuda:1"`` also accepted).
        cuda_graph: replay H2D → execute → D2H as one CUDA graph per batch size (TensorRT 10/11: captured
            by us after a warm-up call; TensorRT-RTX: its own whole-graph capture strategy).
        runtime_cache: TensorRT-RTX only: file of JIT-compiled kernels, loaded at start and saved on
            ``close()`` so the next start skips compilation. ``"auto"`` (default): ``<engine>.rtxcache``
            beside the engine; ``None``: off.

    Each thread that calls :meth:`infer` gets its own execution context, stream and buffers, so one
    backend can serve several threads at once. Outputs are views of that thread's pinned buffers:
    consume or copy them before that thread's next call.
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
        self._slots: list[_Slot] = []
        self.gpu = self._check_machine()
        cuda.set_device(self.device)
        self._engine = self._deserialize()
        self._io = self._read_io()
        self._io_inputs = [t for t in self._io if t.is_input]
        self._io_outputs = [t for t in self._io if not t.is_input]
        if len(self._io_inputs) != 1:
            raise ModelLoadError(f"{self.path} has {len(self._io_inputs)} inputs; a detector engine has one image input",
                                 "build the engine from a detect model's ONNX")
        dyn = lambda s: tuple(None if d < 0 else int(d) for d in s)  # noqa: E731
        self.inputs = [TensorSpec(t.name, dyn(t.shape), t.dtype) for t in self._io_inputs]
        self.outputs = [TensorSpec(t.name, dyn(t.shape), t.dtype) for t in self._io_outputs]
        self._cache_path, self._cache, self._runtime_configs = self._init_runtime_cache(runtime_cache), None, []
        self._slot()  # the loading thread's context and buffers, allocated now rather than on the first call

    # -- loading -------------------------------------------------------------------------------
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

    def _deserialize(self):
        self._logger = capturing_logger(self._trt)
        self._runtime = self._trt.Runtime(self._logger)
        blob = self.path.read_bytes()
        self._check_validity(blob)
        engine = self._runtime.deserialize_cuda_engine(blob)
        if engine is None:
            raise ModelLoadError(f"{self.flavor.label} could not deserialize {self.path}: {self._logged()}",
                                 f"rebuild it on this machine: {self.sidecar.rebuild_command or 'python -m exporters.build --engine ...'}")
        return engine

    def _logged(self) -> str:
        errs = self._logger.errors[-3:]
        self._logger.clear()
        return "; ".join(errs) if errs else "no error was logged"

    def _check_validity(self, blob: bytes) -> None:
        """TensorRT-RTX reads an engine's header and says whether it can run here, and if not why."""
        probe = getattr(self._runtime, "get_engine_validity", None)
        if probe is None:
            return
        validity, diagnostics = probe(memoryview(blob)[: int(self._runtime.engine_header_size)])
        state = getattr(validity, "name", str(validity))
        if state == "VALID":
            return
        flags = getattr(self._trt, "EngineInvalidityDiagnostics", None)
        reasons = [n.lower() for n, v in (flags.__members__.items() if flags else ()) if int(diagnostics) & int(v)]
        why = ", ".join(reasons) or "no reason given"
        if state == "SUBOPTIMAL":
            warnings.warn(f"{self.flavor.label} says {self.path} runs here, but suboptimally ({why}); rebuilding it "
                          f"here may be faster: {self.sidecar.rebuild_command}", RuntimeWarning)
            return
        fix = ("update the NVIDIA driver" if "old_cuda_driver" in reasons else
               f"rebuild it here: {self.sidecar.rebuild_command or 'python -m exporters.build --engine ...'}")
        raise EngineMismatchError(f"{self.flavor.label} says {self.path} cannot run on this machine ({why})", fix)

    def _read_io(self) -> list[_IoTensor]:
        trt, eng = self._trt, self._engine
        out = []
        for i in range(eng.num_io_tensors):
            name = eng.get_tensor_name(i)
            is_input = eng.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            shape = tuple(int(d) for d in eng.get_tensor_shape(name))
            lo = hi = shape
            if is_input and -1 in shape:
                lo, _, hi = (tuple(int(d) for d in s) for s in eng.get_tensor_profile_shape(name, 0))
            out.append(_IoTensor(name, is_input, np.dtype(trt.nptype(eng.get_tensor_dtype(name))), shape, hi, lo))
        return out

    def _init_runtime_cache(self, runtime_cache: Any) -> Path | None:
        if not self.flavor.is_rtx or runtime_cache is None:
            return None
        return self.path.with_suffix(".rtxcache") if runtime_cache == "auto" else Path(runtime_cache)

    def _new_context(self):
        """An execution context; on TensorRT-RTX through a runtime config (runtime cache, CUDA graphs)."""
        if not self.flavor.is_rtx:
            return self._engine.create_execution_context()
        trt = self._trt
        config = self._engine.create_runtime_config()
        if self._cache_path is not None:
            if self._cache is None:
                self._cache = config.create_runtime_cache()
                if self._cache_path.is_file():
                    self._cache.deserialize(self._cache_path.read_bytes())  # a stale cache is ignored by TensorRT
            config.set_runtime_cache(self._cache)
        if self.cuda_graph:
            config.cuda_graph_strategy = trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
        self._runtime_configs.append(config)  # must outlive its context
        return self._engine.create_execution_context(config)

    # -- running -------------------------------------------------------------------------------
    def _slot(self) -> _Slot:
        slot = getattr(self._local, "slot", None)
        if slot is None:
            if self._engine is None:
                raise EngineRunError(f"{self.path}: infer() after close()", "create a new backend")
            cuda.set_device(self.device)  # the current device is per thread
            with self._lock:
                slot = _Slot(self)
                self._slots.append(slot)
            self._local.slot = slot
        return slot

    def input_buffer(self, batch: int) -> np.ndarray:
        """This thread's pinned input view for ``batch``: letterbox into it and pass it to :meth:`infer`
        to skip one host copy."""
        t = self._io_inputs[0]
        return self._slot().host[t.name].array((batch, *t.max_shape[1:]), t.dtype)

    @property
    def batch_range(self) -> tuple[int, int]:
        """Smallest and largest batch this engine runs (its profile; both equal for a static batch)."""
        t = self._io_inputs[0]
        return t.min_shape[0], t.max_shape[0]

    def _check_batch(self, batch: int) -> None:
        t = self._io_inputs[0]
        if not t.min_shape[0] <= batch <= t.max_shape[0]:
            raise InputImageError(f"batch {batch} is outside the engine's profile {t.min_shape[0]}..{t.max_shape[0]} "
                                  f"({self.path})", f"pass {t.min_shape[0]}..{t.max_shape[0]} frames per call, or "
                                  "rebuild with a larger --engine-batch")

    def device_input(self, batch: int) -> tuple[int, cuda.Stream]:
        """This thread's device input pointer and stream, for a CUDA kernel that writes the input itself
        (``Detector(preprocess="gpu")``); then call :meth:`infer_device`. Work queued on that stream
        before :meth:`infer_device` runs before the engine."""
        self._check_batch(batch)
        slot = self._slot()
        return slot.device[self._io_inputs[0].name].ptr, slot.stream

    def infer_device(self, batch: int) -> list[np.ndarray]:
        """Run on the input already in :meth:`device_input` (no H2D copy); host views of the outputs."""
        self._check_batch(batch)
        slot = self._slot()
        outs = slot.outputs(batch)
        slot.run(batch, 0, h2d=False)
        return outs

    def infer_impl(self, x: np.ndarray) -> list[np.ndarray]:
        t = self._io_inputs[0]
        batch = x.shape[0]
        self._check_batch(batch)
        slot = self._slot()
        host_in = slot.host[t.name].array(x.shape, t.dtype)
        if host_in.ctypes.data != x.ctypes.data:
            np.copyto(host_in, x)
        outs = slot.outputs(batch)
        slot.run(batch, host_in.nbytes)
        return outs

    def close(self) -> None:
        """Free every thread's context, stream and buffers; save the RTX runtime cache (idempotent)."""
        with getattr(self, "_lock", threading.Lock()):
            slots, self._slots = getattr(self, "_slots", []), []
            self._local = threading.local()  # threads' references to the closed slots go too
            for slot in slots:
                slot.close()
            self._save_runtime_cache()
            self._runtime_configs = []
            self._cache = None
            self._engine = None
            self._runtime = None

    def _save_runtime_cache(self) -> None:
        cache, path = getattr(self, "_cache", None), getattr(self, "_cache_path", None)
        if cache is None or path is None:
            return
        tmp = None
        try:
            blob = cache.serialize()
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(memoryview(blob))
            os.replace(tmp, path)
            tmp = None
        except OSError as e:
            warnings.warn(f"could not save the TensorRT-RTX runtime cache {path} ({e}); the next start compiles "
                          "kernels again", RuntimeWarning)
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)

    def __del__(self) -> None:  # a forgotten close() must not leak pinned memory
        try:
            self.close()
        except Exception:
            pass
