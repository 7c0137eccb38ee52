"""Our CUDA kernel, from Python: the GPU letterbox behind ``Detector(preprocess="gpu")``.

The source is a readable ``.cu`` file beside this module (``kernels/letterbox.cu``), compiled at first use
by NVRTC (:mod:`engine.cuda.nvrtc`) and launched through ``cuda-python``'s driver API. This module
imports without ``cuda-python`` (``ctypes`` only); compiling needs it and NVRTC, launching needs an
NVIDIA GPU with its driver.

:class:`GpuLetterbox` is one kernel: resize (bilinear, as OpenCV) + pad 114 + BGR→RGB + 1/255 + HWC→CHW,
from a uint8 frame into a model's FP32 or FP16 input buffer on the device. Each frame goes through pinned
host memory to the device, so the copy is asynchronous on the caller's stream.

Post-processing on the GPU is the end-to-end graph's job (``python -m exporters.build --end2end``: decode
and top-K inside the engine, only K rows cross PCIe); a separate NMS kernel that nothing ran was removed.

The launch geometry (:func:`letterbox_launch`) and the argument struct are plain Python, shared with the
tests that run the same kernel source on the CPU.
"""
from __future__ import annotations

import ctypes
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError
from ..preprocess import LetterboxGeometry, as_bgr
from .memory import DeviceBuffer, PinnedBuffer
from .runtime import CudaError, CudaUnavailableError, check, cudart, device_info, set_device, unavailable_reason
from .stream import Event, Stream

LETTERBOX_FILE, LETTERBOX_KERNELS = "letterbox", ("letterbox_f32", "letterbox_f16")
LETTERBOX_BLOCK = (32, 8)
INSTALL = "pip install cuda-python nvidia-cuda-nvrtc, on a machine with an NVIDIA GPU and its driver"


class LetterboxArgs(ctypes.Structure):
    """``LetterboxArgs`` of ``letterbox.cu`` (same field order and C layout)."""

    _fields_ = [("src_h", ctypes.c_int), ("src_w", ctypes.c_int), ("src_pitch", ctypes.c_int),
                ("dst_h", ctypes.c_int), ("dst_w", ctypes.c_int), ("new_h", ctypes.c_int), ("new_w", ctypes.c_int),
                ("top", ctypes.c_int), ("left", ctypes.c_int), ("scale_x", ctypes.c_double),
                ("scale_y", ctypes.c_double)]


def letterbox_args(frame_shape: tuple[int, ...], pitch: int, g: LetterboxGeometry) -> LetterboxArgs:
    """Kernel arguments for one frame placed by ``g`` (scales in double, as OpenCV computes them)."""
    h, w = frame_shape[:2]
    (nh, nw), (dh, dw) = g.new_hw, g.dst_hw
    return LetterboxArgs(h, w, pitch, dh, dw, nh, nw, g.top, g.left, 1.0 / (nw / w), 1.0 / (nh / h))


def letterbox_launch(dst_hw: tuple[int, int]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(grid, block) of the letterbox kernel: one thread per output pixel."""
    bx, by = LETTERBOX_BLOCK
    return (-(-dst_hw[1] // bx), -(-dst_hw[0] // by), 1), (bx, by, 1)


# ---------------------------------------------------------------------------------------------- CUDA
def cuda_unavailable_reason() -> str | None:
    """Why CUDA kernels cannot run here (cuda-python missing, no driver, no device), or ``None``."""
    try:
        return unavailable_reason()
    except CudaError as e:  # cuda-python itself is missing
        return e.message


class _Module:
    """A compiled ``.cu`` file loaded into the current context, its kernels looked up by name.

    Compiled for the current device (``sm_XY`` when NVRTC knows it, see :func:`engine.cuda.nvrtc.arch_for_device`).
    """

    def __init__(self, file: str, kernels: tuple[str, ...], device: int = 0) -> None:
        from .nvrtc import arch_for_device, compile_kernel_file

        reason = cuda_unavailable_reason()
        if reason:
            raise CudaUnavailableError(f"CUDA kernels cannot run: {reason}", INSTALL)
        from cuda.bindings import driver

        self.driver = driver
        set_device(device)
        check(cudart().cudaFree(0), "cudaFree(0)")  # makes the device's primary context current for the driver API
        sm = device_info(device).sm
        compiled = compile_kernel_file(file, kernels, arch_for_device(*sm))
        self.module = self._drv(driver.cuModuleLoadData(compiled.image), f"cuModuleLoadData({file}.cu)")
        self.functions = {k: self._drv(driver.cuModuleGetFunction(self.module, k.encode()), f"cuModuleGetFunction({k})")
                          for k in kernels}

    def _drv(self, result: Any, call: str) -> Any:
        err, *values = result
        if int(err) != 0:
            raise CudaError(f"CUDA driver call {call} failed: {getattr(err, 'name', err)}",
                            "check the GPU and its driver; rerun with --debug", call=call,
                            error_name=str(getattr(err, "name", err)))
        return values[0] if values else None

    def launch(self, kernel: str, grid: tuple, block: tuple, stream: Any, *args: Any) -> None:
        """Launch ``kernel`` on ``stream`` with ctypes ``args`` (passed by address, as cuLaunchKernel wants)."""
        ptrs = (ctypes.c_void_p * len(args))(*[ctypes.addressof(a) for a in args])
        self._drv(self.driver.cuLaunchKernel(self.functions[kernel], *grid, *block, 0, stream,
                                             ctypes.addressof(ptrs), 0), f"cuLaunchKernel({kernel})")

    def close(self) -> None:
        if getattr(self, "module", None) is not None:
            self.driver.cuModuleUnload(self.module)
            self.module = None


def _stream_handle(stream: Any) -> Any:
    """A :class:`~engine.cuda.stream.Stream`, a raw ``cudaStream_t`` or an int → what cuda-python takes."""
    return stream.handle if isinstance(stream, Stream) else stream


class GpuLetterbox:
    """Kernel (a): letterbox BGR uint8 frames into a device NCHW buffer (FP32 or FP16).

    Args:
        imgsz: model input (height, width).
        dtype: ``np.float32`` or ``np.float16`` (the engine's input type).
        device: CUDA device index.

    ``glb(frames, dst_ptr, stream)`` copies each frame into pinned memory, then asynchronously to the
    device, and launches the kernel into slot ``i`` of ``dst_ptr`` on ``stream``; it returns each frame's
    :class:`~engine.preprocess.LetterboxGeometry` (for mapping boxes back). Nothing is allocated per call
    for frame sizes seen before. The next call first waits for this call's copies (an event), so the
    pinned staging is never overwritten while a copy still reads it.
    """

    def __init__(self, imgsz: tuple[int, int], dtype=np.float32, device: int = 0) -> None:
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float16):
            raise ConfigError(f"GPU letterbox writes float32 or float16, not {dtype}", "use the engine's input dtype")
        self.imgsz, self.dtype = (int(imgsz[0]), int(imgsz[1])), dtype
        self._mod = _Module(LETTERBOX_FILE, LETTERBOX_KERNELS, device)
        self._kernel = "letterbox_f32" if dtype == np.float32 else "letterbox_f16"
        self._staging: list[PinnedBuffer] = []
        self._device: list[DeviceBuffer] = []
        self._done = Event()
        self._pending = False

    def __call__(self, frames: Sequence[np.ndarray], dst_ptr: int, stream: Any) -> list[LetterboxGeometry]:
        if self._pending:  # the previous call's H2D copies read the pinned staging: wait for them
            self._done.synchronize()
        handle = _stream_handle(stream)
        geoms = []
        for i, frame in enumerate(frames):
            frame = np.ascontiguousarray(as_bgr(frame))
            while len(self._staging) <= i:
                self._staging.append(PinnedBuffer())
                self._device.append(DeviceBuffer())
            pinned, dev = self._staging[i], self._device[i]
            pinned.resize(frame.nbytes)
            dev.resize(frame.nbytes)
            np.copyto(pinned.array(frame.shape, np.uint8), frame)
            rt = cudart()
            check(rt.cudaMemcpyAsync(dev.ptr, pinned.ptr, frame.nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
                                     handle), "cudaMemcpyAsync(frame H2D)")
            geoms.append(self.launch(dev.ptr, frame.shape[:2], frame.strides[0], dst_ptr, handle, slot=i))
        check(cudart().cudaEventRecord(self._done.handle, handle), "cudaEventRecord")
        self._pending = True
        return geoms

    def launch(self, src_ptr: int, src_hw: tuple[int, int], pitch: int, dst_ptr: int, stream: Any,
               slot: int = 0) -> LetterboxGeometry:
        """Letterbox a BGR frame already on the device (``pitch`` bytes per row, e.g. from a hardware
        decoder) into slot ``slot`` of ``dst_ptr``; only the kernel is queued on ``stream``."""
        g = LetterboxGeometry.fit(tuple(src_hw), self.imgsz)
        plane = 3 * self.imgsz[0] * self.imgsz[1] * self.dtype.itemsize
        grid, block = letterbox_launch(self.imgsz)
        self._mod.launch(self._kernel, grid, block, _stream_handle(stream), ctypes.c_void_p(int(src_ptr)),
                         ctypes.c_void_p(int(dst_ptr) + slot * plane), letterbox_args((*src_hw, 3), pitch, g))
        return g

    def close(self) -> None:
        """Free the staging buffers, the event and the module (idempotent)."""
        for b in self._staging + self._device:
            b.close()
        self._staging, self._device = [], []
        self._done.close()
        self._mod.close()

    def __enter__(self) -> "GpuLetterbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
