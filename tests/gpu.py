"""GPU detection for tests: a reason string when no CUDA device is usable, else None."""
from __future__ import annotations


def cuda_unavailable_reason() -> str | None:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return "cuda-python is not installed"
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count == 0:
        return f"cudaGetDeviceCount returned {err!r}, {count} devices"
    return None
