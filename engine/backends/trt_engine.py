"""One deserialized TensorRT engine, shared by every :class:`~engine.backends.tensorrt.TensorRTBackend` of
the same file on the same GPU.

An ``ICudaEngine`` holds the weights on the GPU; an execution context holds one inference's activations.
TensorRT lets many contexts run on one engine at once, so N Detectors of one engine in one process (a
``DetectorPool``, several cameras) need one engine and N contexts, not N engines (``engine.serve`` runs
each instance in its own process: N instances hold N engines). :meth:`SharedEngine.acquire`
returns the engine already loaded for this file (same path, size and modification time, device and
runtime cache) or deserializes it; :meth:`SharedEngine.release` frees it when its last user is done. The
TensorRT-RTX runtime cache (JIT-compiled kernels) is shared the same way and saved at that last release.

Not run on a GPU here: proved with the fake TensorRT and CUDA modules of ``tests/fakes``.
"""
from __future__ import annotations

import os
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from ..errors import EngineMismatchError, ModelLoadError
from .trt_flavor import TrtFlavor, capturing_logger
from .trt_sidecar import EngineSidecar


@dataclass(frozen=True)
class IoTensor:
    """An engine input or output as TensorRT describes it."""

    name: str
    is_input: bool
    dtype: np.dtype
    shape: tuple[int, ...]          # -1 for dynamic dimensions
    max_shape: tuple[int, ...]      # inputs: the profile's max (or the static shape)
    min_shape: tuple[int, ...]


class SharedEngine:
    """A deserialized engine with its runtime, logger, IO table and (TensorRT-RTX) runtime cache.

    Use :meth:`acquire` and :meth:`release`, never the constructor: one instance per (file, device,
    runtime cache), counted by its users.
    """

    _loaded: ClassVar[dict[tuple, "SharedEngine"]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, key: tuple, path: Path, trt: ModuleType, flavor: TrtFlavor, sidecar: EngineSidecar,
                 cache_path: Path | None) -> None:
        self.key, self.path, self.trt, self.flavor, self.sidecar = key, path, trt, flavor, sidecar
        self.users = 0
        self.logger = capturing_logger(trt)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self._deserialize(path.read_bytes())
        self.io = self._read_io()
        self.cache_path = cache_path
        self.cache = None  # the RTX runtime cache, made with the first context

    @classmethod
    def acquire(cls, path: Path, device: int, trt: ModuleType, flavor: TrtFlavor, sidecar: EngineSidecar,
                cache_path: Path | None) -> "SharedEngine":
        """The engine of ``path`` on ``device`` (the caller made it the current device), loaded once."""
        st = path.stat()
        key = (str(path.resolve()), device, st.st_size, st.st_mtime_ns, flavor.module,
               None if cache_path is None else str(cache_path))
        with cls._lock:
            shared = cls._loaded.get(key)
            if shared is None:
                shared = cls._loaded[key] = cls(key, path, trt, flavor, sidecar, cache_path)
            shared.users += 1
            return shared

    def release(self) -> None:
        """One user less; the last one saves the runtime cache and drops the engine."""
        with SharedEngine._lock:
            self.users -= 1
            if self.users > 0:
                return
            SharedEngine._loaded.pop(self.key, None)
        self._save_runtime_cache()
        self.cache = None
        self.engine = None  # TensorRT frees the engine when its Python object goes
        self.runtime = None

    # -- loading -------------------------------------------------------------------------------
    def logged(self) -> str:
        """The last errors TensorRT logged (for a typed error's message)."""
        errs = self.logger.errors[-3:]
        self.logger.clear()
        return "; ".join(errs) if errs else "no error was logged"

    def _deserialize(self, blob: bytes):
        self._check_validity(blob)
        engine = self.runtime.deserialize_cuda_engine(blob)
        if engine is None:
            raise ModelLoadError(f"{self.flavor.label} could not deserialize {self.path}: {self.logged()}",
                                 f"rebuild it on this machine: {self._rebuild()}")
        return engine

    def _rebuild(self) -> str:
        return self.sidecar.rebuild_command or "python -m exporters.build --engine ..."

    def _check_validity(self, blob: bytes) -> None:
        """TensorRT-RTX reads an engine's header and says whether it can run here, and if not why."""
        probe = getattr(self.runtime, "get_engine_validity", None)
        if probe is None:
            return
        validity, diagnostics = probe(memoryview(blob)[: int(self.runtime.engine_header_size)])
        state = getattr(validity, "name", str(validity))
        if state == "VALID":
            return
        flags = getattr(self.trt, "EngineInvalidityDiagnostics", None)
        reasons = [n.lower() for n, v in (flags.__members__.items() if flags else ()) if int(diagnostics) & int(v)]
        why = ", ".join(reasons) or "no reason given"
        if state == "SUBOPTIMAL":
            warnings.warn(f"{self.flavor.label} says {self.path} runs here, but suboptimally ({why}); rebuilding it "
                          f"here may be faster: {self.sidecar.rebuild_command}", RuntimeWarning)
            return
        fix = "update the NVIDIA driver" if "old_cuda_driver" in reasons else f"rebuild it here: {self._rebuild()}"
        raise EngineMismatchError(f"{self.flavor.label} says {self.path} cannot run on this machine ({why})", fix)

    def _read_io(self) -> list[IoTensor]:
        trt, eng = self.trt, self.engine
        out = []
        for i in range(eng.num_io_tensors):
            name = eng.get_tensor_name(i)
            is_input = eng.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            shape = tuple(int(d) for d in eng.get_tensor_shape(name))
            lo = hi = shape
            if is_input and -1 in shape:
                lo, _, hi = (tuple(int(d) for d in s) for s in eng.get_tensor_profile_shape(name, 0))
            out.append(IoTensor(name, is_input, np.dtype(trt.nptype(eng.get_tensor_dtype(name))), shape, hi, lo))
        return out

    # -- contexts ------------------------------------------------------------------------------
    def new_context(self, cuda_graph: bool) -> tuple[Any, Any]:
        """``(execution context, its runtime config or None)``; the config must outlive the context.

        TensorRT-RTX contexts come from a runtime config carrying the shared runtime cache and, with
        ``cuda_graph``, its own whole-graph capture strategy. ``None`` when TensorRT could not make one.
        """
        if not self.flavor.is_rtx:
            return self.engine.create_execution_context(), None
        config = self.engine.create_runtime_config()
        if self.cache_path is not None:
            with SharedEngine._lock:
                if self.cache is None:
                    self.cache = config.create_runtime_cache()
                    if self.cache_path.is_file():  # a stale cache is ignored by TensorRT
                        self.cache.deserialize(self.cache_path.read_bytes())
            config.set_runtime_cache(self.cache)
        if cuda_graph:
            config.cuda_graph_strategy = self.trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
        return self.engine.create_execution_context(config), config

    def _save_runtime_cache(self) -> None:
        cache, path = self.cache, self.cache_path
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
