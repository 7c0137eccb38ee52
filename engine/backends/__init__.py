"""Backends, chosen by the artifact table through a lazy registry (heavy libraries load only when used).

``REGISTRY`` maps a backend name to ``"module:Class"``; which backend loads a file comes from its kind
in :mod:`engine.artifacts` (``kind_of(path).backends[0]``). Adding a backend is one line here, one
module, and its name in the artifact kinds it runs; nothing here imports its library.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from ..artifacts import kind_of, runtime_suffixes
from ..errors import BackendUnavailableError
from .base import Backend, TensorSpec

REGISTRY: dict[str, str] = {
    "onnxruntime": "engine.backends.onnxruntime:OnnxRuntimeBackend",
    "tensorrt": "engine.backends.tensorrt:TensorRTBackend",
}
INSTALL_HINTS: dict[str, str] = {
    "onnxruntime": "pip install onnxruntime (or onnxruntime-gpu, see README)",
    "tensorrt": "pip install -e .[rtx] (TensorRT-RTX, GeForce RTX) or .[trt] (TensorRT 10/11); both bring cuda-python",
}

__all__ = ["Backend", "TensorSpec", "REGISTRY", "backend_for", "load_backend"]


def backend_for(path: str | Path, backend: str = "auto") -> type[Backend]:
    """The backend class for ``path`` (by suffix when ``backend == "auto"``)."""
    path = Path(path)
    kind = kind_of(path)
    name = (kind.backends[0] if kind else None) if backend == "auto" else backend
    if name is None:
        raise BackendUnavailableError(
            f"no backend handles '{path.suffix}' files ({path})",
            f"pass a model file ending in one of {', '.join(runtime_suffixes())}")
    target = REGISTRY.get(name)
    if target is None:
        raise BackendUnavailableError(
            f"backend '{name}' for {path} is not available; available: {', '.join(sorted(REGISTRY))}",
            INSTALL_HINTS.get(name, "check the backend name"))
    module, cls = target.split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as e:
        raise BackendUnavailableError(f"backend '{name}' cannot load its library ({e})",
                                      INSTALL_HINTS.get(name, "")) from None


def load_backend(path: str | Path, backend: str = "auto", **options: Any) -> Backend:
    """Instantiate the backend for ``path`` with backend-specific ``options``."""
    return backend_for(path, backend)(path, **options)
