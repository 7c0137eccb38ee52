"""Checked CUDA runtime calls through cuda-python (``cuda.bindings.runtime``), imported on first use.

Every call goes through :func:`check`, which turns a non-zero ``cudaError_t`` into a :class:`CudaError`
naming the call and the CUDA error (``cudaErrorInsufficientDriver`` ...). A missing driver or device is
a :class:`CudaUnavailableError`, which is also a :class:`BackendUnavailableError`, so callers that only
want "is there a usable GPU" catch one type.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from ..errors import CudaError, CudaUnavailableError

_CUDART: Any = None
INSTALL_HINT = "pip install -e .[rtx] (TensorRT-RTX) or .[trt] / .[gpu]: each brings cuda-python"
# cudaErrorInsufficientDriver, cudaErrorNoDevice, cudaErrorInvalidDevice, cudaErrorDevicesUnavailable,
# cudaErrorStartupFailure, cudaErrorSystemDriverMismatch: "this machine has no usable GPU", not a bug.
_NO_GPU_CODES = {35, 100, 101, 46, 127, 803}


def cudart() -> Any:
    """The ``cuda.bindings.runtime`` module (older cuda-python: ``cuda.cudart``), imported once."""
    global _CUDART
    if _CUDART is None:
        for name in ("cuda.bindings.runtime", "cuda.cudart"):
            try:
                _CUDART = importlib.import_module(name)
                break
            except ImportError:
                continue
        else:
            raise CudaUnavailableError("cuda-python is not installed (needed for GPU buffers and streams)",
                                       INSTALL_HINT, call="import cuda.bindings.runtime")
    return _CUDART


def error_name(err: Any) -> str:
    """``cudaErrorInsufficientDriver``-style name of a ``cudaError_t`` (falls back to its number)."""
    rt = cudart()
    try:
        ok, name = rt.cudaGetErrorName(err)
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # a broken error lookup must not hide the original error
        return f"cudaError {int(err)}"


def _error_string(err: Any) -> str:
    try:
        ok, text = cudart().cudaGetErrorString(err)
        return text.decode() if isinstance(text, bytes) else str(text)
    except Exception:
        return ""


def check(result: Any, call: str) -> Any:
    """Unpack a cuda-python ``(err, *values)`` result; raise :class:`CudaError` when ``err`` is not 0.

    Returns ``None``, the single value, or a tuple of values.
    """
    err, values = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
    code = int(err)
    if code != 0:
        name = error_name(err)
        text = _error_string(err)
        message = f"CUDA call {call} failed: {name}" + (f" ({text})" if text else "")
        if code in _NO_GPU_CODES:
            raise CudaUnavailableError(message, "this needs an NVIDIA GPU with a current driver: install or update "
                                       "the driver (nvidia-smi must list the GPU), or run the .onnx with ONNX Runtime",
                                       call=call, error_name=name)
        fix = ("the GPU is out of memory: use a smaller batch or free GPU memory" if code == 2 else
               "rerun with --debug; if it persists, report it with the output of python -m benchmarks.verify")
        raise CudaError(message, fix, call=call, error_name=name)
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def unavailable_reason() -> str | None:
    """Why no CUDA device can be used here, or ``None`` when at least one answers."""
    try:
        count = check(cudart().cudaGetDeviceCount(), "cudaGetDeviceCount()")
    except CudaError as e:
        return e.message
    return None if count else "cudaGetDeviceCount() found no CUDA device"


@dataclass(frozen=True)
class DeviceInfo:
    """A CUDA device as the runtime reports it."""

    index: int
    name: str
    sm: tuple[int, int]
    total_memory: int
    driver_version: str
    runtime_version: str

    @property
    def sm_tag(self) -> str:
        """``"sm86"`` for compute capability 8.6 (the form sidecars store)."""
        return f"sm{self.sm[0]}{self.sm[1]}"


def _version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}" if v else "none"


def versions() -> tuple[str, str]:
    """(driver, runtime) CUDA versions as ``"13.0"`` strings; the driver reads ``"none"`` without one."""
    rt = cudart()
    driver = check(rt.cudaDriverGetVersion(), "cudaDriverGetVersion()")
    runtime = check(rt.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion()")
    return _version(int(driver or 0)), _version(int(runtime or 0))


def set_device(index: int) -> None:
    """Make ``index`` the calling thread's current device (CUDA's current device is per thread)."""
    check(cudart().cudaSetDevice(int(index)), f"cudaSetDevice({index})")


def device_info(index: int = 0) -> DeviceInfo:
    """Name, compute capability and memory of device ``index``; a typed error when it does not exist."""
    rt = cudart()
    count = check(rt.cudaGetDeviceCount(), "cudaGetDeviceCount()") or 0
    if not 0 <= index < count:
        raise CudaUnavailableError(f"CUDA device {index} does not exist ({count} device(s) found)",
                                   f"pass device=0..{max(count - 1, 0)}", call="cudaGetDeviceCount()")
    prop = check(rt.cudaGetDeviceProperties(int(index)), f"cudaGetDeviceProperties({index})")
    name = prop.name.decode(errors="replace").rstrip("\x00") if isinstance(prop.name, bytes) else str(prop.name)
    driver, runtime = versions()
    return DeviceInfo(index, name, (int(prop.major), int(prop.minor)), int(prop.totalGlobalMem), driver, runtime)
