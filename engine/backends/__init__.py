"""Backends, chosen by the artifact table through a lazy registry (heavy libraries load only when used).

``REGISTRY`` maps a backend name to ``"module:Class"``; which backend loads a file comes from its kind
in :mod:`engine.artifacts` (``kind_of(path).backends[0]``). Adding a backend is one line here, one
module, and its name in the artifact kinds it runs; nothing here imports its library.

``device="auto"`` (given explicitly) lets the runtime pick among the backends a kind lists, by
:data:`AUTO_ORDER`: TensorRT where an NVIDIA GPU answers, ONNX Runtime on CUDA where onnxruntime-gpu and
a GPU are there, OpenVINO on a CPU where it is installed, ONNX Runtime otherwise. The choice is logged
(logger ``engine``) and kept on the backend as :attr:`Backend.selection`.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
from pathlib import Path
from typing import Any, Callable

from ..artifacts import ArtifactKind, kind_of, runtime_suffixes
from ..errors import BackendUnavailableError
from .base import Backend, TensorSpec

log = logging.getLogger("engine")

REGISTRY: dict[str, str] = {
    "onnxruntime": "engine.backends.onnxruntime:OnnxRuntimeBackend",
    "tensorrt": "engine.backends.tensorrt:TensorRTBackend",
    "openvino": "engine.backends.openvino:OpenVinoBackend",
}
INSTALL_HINTS: dict[str, str] = {
    "onnxruntime": "pip install onnxruntime (or onnxruntime-gpu, see README)",
    "tensorrt": "pip install -e .[rtx] (TensorRT-RTX, GeForce RTX) or .[trt] (TensorRT 10/11); both bring cuda-python",
    "openvino": "pip install -e .[openvino] (OpenVINO: Intel CPUs, iGPUs and NPUs)",
}

__all__ = ["Backend", "TensorSpec", "REGISTRY", "AUTO_ORDER", "backend_for", "load_backend", "pick_backend"]


@functools.lru_cache(maxsize=None)
def _nvidia_gpu() -> bool:
    from ..cuda.kernels import cuda_unavailable_reason  # imports without cuda-python; says why not

    return cuda_unavailable_reason() is None


def _has_tensorrt() -> bool:
    return bool(importlib.util.find_spec("tensorrt") or importlib.util.find_spec("tensorrt_rtx")) and _nvidia_gpu()


def _ort_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers() and _nvidia_gpu()


def _has_openvino() -> bool:
    return importlib.util.find_spec("openvino") is not None


#: ``device="auto"``: the first row whose backend the file's kind lists and whose test passes wins
#: (tests are looked up when called, so they can be replaced).
AUTO_ORDER: tuple[tuple[str, Callable[[], bool], str], ...] = (
    ("tensorrt", lambda: _has_tensorrt(), "an NVIDIA GPU answers and TensorRT is installed"),
    ("onnxruntime", lambda: _ort_cuda(), "an NVIDIA GPU answers and onnxruntime-gpu is installed"),
    ("openvino", lambda: _has_openvino(), "no NVIDIA GPU in use; OpenVINO is installed (CPU, Intel GPU/NPU)"),
    ("onnxruntime", lambda: True, "ONNX Runtime on the CPU (no NVIDIA GPU in use, no OpenVINO)"),
)


def pick_backend(kind: ArtifactKind) -> tuple[str, str]:
    """``(backend name, why)`` for ``device="auto"`` among the backends ``kind`` lists, by :data:`AUTO_ORDER`.

    A kind none of whose rows pass (an engine without a GPU) gets its default backend, which then says
    what is missing.
    """
    for name, test, why in AUTO_ORDER:
        if name in kind.backends and test():
            return name, why
    return kind.backends[0], f"the only backend for {kind.label}"


def backend_for(path: str | Path, backend: str = "auto", device: Any = None) -> type[Backend]:
    """The backend class for ``path`` (by suffix when ``backend == "auto"``; with ``device="auto"`` too,
    by :func:`pick_backend`)."""
    return _resolve(path, backend, device)[0]


def _resolve(path: str | Path, backend: str, device: Any) -> tuple[type[Backend], str | None]:
    path = Path(path)
    kind = kind_of(path)
    why = None
    if backend != "auto":
        name = backend
        if kind is not None and name in kind.misread_by:
            # loads without an error and computes it wrongly: OpenVINO on the TensorRT INT8 form's Q/DQ graph
            # (mAP50-95 0.56 -> 0.24 on the demo at 160), silently
            raise BackendUnavailableError(
                f"{path.name} is the {kind.label}; {name} misreads it, it runs on {', '.join(kind.backends)}",
                f"use backend='auto' or one of {', '.join(kind.backends)}" + (
                    "; for OpenVINO, use the build's OpenVINO IR (<stem>_openvino/ or <stem>.int8_openvino/)"
                    if name == "openvino" else ""))
    elif kind is None:
        name = None
    elif device == "auto":
        name, why = pick_backend(kind)
    else:
        name = kind.backends[0]
    if name is None:
        raise BackendUnavailableError(
            f"no backend handles '{path.suffix or path.name}' files ({path})",
            f"pass a model file ending in one of {', '.join(runtime_suffixes())}")
    target = REGISTRY.get(name)
    if target is None:
        raise BackendUnavailableError(
            f"backend '{name}' for {path} is not available; available: {', '.join(sorted(REGISTRY))}",
            INSTALL_HINTS.get(name, "check the backend name"))
    module, cls = target.split(":")
    try:
        return getattr(importlib.import_module(module), cls), why
    except ImportError as e:
        raise BackendUnavailableError(f"backend '{name}' cannot load its library ({e})",
                                      INSTALL_HINTS.get(name, "")) from None


def load_backend(path: str | Path, backend: str = "auto", **options: Any) -> Backend:
    """Instantiate the backend for ``path`` with backend-specific ``options``.

    With ``backend="auto"`` and ``device="auto"`` the backend is picked by :func:`pick_backend`; the
    choice is logged and kept in the backend's ``selection`` (``None`` when nothing was picked).
    """
    cls, why = _resolve(path, backend, options.get("device"))
    instance = cls(path, **options)
    instance.selection = f"{cls.name}: {why}" if why else None
    if why:
        log.info("device='auto' for %s: %s backend (%s)", Path(path).name, cls.name, why)
    return instance
