"""CUDA from Python through cuda-python: pinned and device buffers, streams, events, graphs.

Importing this package needs no CUDA: ``cuda.bindings.runtime`` loads on the first call. Every call is
checked; a failure is a :class:`CudaError` naming the call and the CUDA error.
"""
from .memory import DeviceBuffer, PinnedBuffer
from .runtime import (CudaError, CudaUnavailableError, DeviceInfo, check, cudart, device_info, set_device,
                      unavailable_reason, versions)
from .stream import CudaGraph, Event, Stream
from .kernels import GpuLetterbox  # our kernel (engine/cuda/kernels/*.cu, compiled by NVRTC)
from .nvrtc import KernelCompileError

__all__ = ["PinnedBuffer", "DeviceBuffer", "Stream", "Event", "CudaGraph", "CudaError", "CudaUnavailableError",
           "DeviceInfo", "check", "cudart", "device_info", "set_device", "unavailable_reason", "versions",
           "GpuLetterbox", "KernelCompileError"]
