"""Our two CUDA kernels, from Python: GPU letterbox (a) and GPU decode + top-K + NMS (b).

Sources are readable ``.cu`` files beside this module (``kernels/letterbox.cu``, ``kernels/postprocess.cu``),
compiled at first use by NVRTC (:mod:`engine.cuda.nvrtc`) and launched through ``cuda-python``'s driver
API. This module imports without ``cuda-python`` (``ctypes`` only); compiling needs it and NVRTC,
launching needs an NVIDIA GPU with its driver.

* :class:`GpuLetterbox` — one kernel: resize (bilinear, as OpenCV) + pad 114 + BGR→RGB + 1/255 +
  HWC→CHW, from a uint8 frame into a model's FP32 or FP16 input buffer on the device. Each frame goes
  through pinned host memory to the device, so the copy is asynchronous on the caller's stream.
* :class:`GpuPostprocess` — decode + confidence filter + top-K + NMS on the raw head on the device; only
  ``num_dets, boxes, scores, classes`` (``K = max_det`` rows, the layout of an ``--end2end`` graph)
  come back to the host.

The launch geometry (:func:`letterbox_launch`, :func:`postprocess_launches`) and the argument structs
are plain Python, shared with the tests that run the same kernel sources on the CPU.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError
from ..preprocess import LetterboxGeometry, as_bgr
from .memory import DeviceBuffer, PinnedBuffer
from .runtime import CudaError, CudaUnavailableError, check, cudart, device_info, set_device, unavailable_reason
from .stream import Event, Stream

LETTERBOX_FILE, LETTERBOX_KERNELS = "letterbox", ("letterbox_f32", "letterbox_f16")
POSTPROCESS_FILE, POSTPROCESS_KERNELS = "postprocess", ("pp_filter", "pp_rank", "pp_mask", "pp_select")
LETTERBOX_BLOCK = (32, 8)
BLOCK = 256
INSTALL = "pip install cuda-python nvidia-cuda-nvrtc, on a machine with an NVIDIA GPU and its driver"


class LetterboxArgs(ctypes.Structure):
    """``LetterboxArgs`` of ``letterbox.cu`` (same field order and C layout)."""

    _fields_ = [("src_h", ctypes.c_int), ("src_w", ctypes.c_int), ("src_pitch", ctypes.c_int),
                ("dst_h", ctypes.c_int), ("dst_w", ctypes.c_int), ("new_h", ctypes.c_int), ("new_w", ctypes.c_int),
                ("top", ctypes.c_int), ("left", ctypes.c_int), ("scale_x", ctypes.c_double),
                ("scale_y", ctypes.c_double)]


class PPArgs(ctypes.Structure):
    """``PPArgs`` of ``postprocess.cu``."""

    _fields_ = [("batch", ctypes.c_int), ("num_classes", ctypes.c_int), ("num_anchors", ctypes.c_int),
                ("cap", ctypes.c_int), ("max_det", ctypes.c_int), ("agnostic", ctypes.c_int),
                ("conf", ctypes.c_float), ("iou", ctypes.c_float)]


class PPBuffers(ctypes.Structure):
    """``PPBuffers`` of ``postprocess.cu``: device pointers (see the .cu file for each shape)."""

    _fields_ = [(n, ctypes.c_void_p) for n in (
        "pred", "class_mask", "count", "cand_score", "cand_anchor", "cand_class", "rank_box", "rank_score",
        "rank_class", "mask", "removed", "num_dets", "boxes", "scores", "classes")]


def letterbox_args(frame_shape: tuple[int, ...], pitch: int, g: LetterboxGeometry) -> LetterboxArgs:
    """Kernel arguments for one frame placed by ``g`` (scales in double, as OpenCV computes them)."""
    h, w = frame_shape[:2]
    (nh, nw), (dh, dw) = g.new_hw, g.dst_hw
    return LetterboxArgs(h, w, pitch, dh, dw, nh, nw, g.top, g.left, 1.0 / (nw / w), 1.0 / (nh / h))


def letterbox_launch(dst_hw: tuple[int, int]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(grid, block) of the letterbox kernel: one thread per output pixel."""
    bx, by = LETTERBOX_BLOCK
    return (-(-dst_hw[1] // bx), -(-dst_hw[0] // by), 1), (bx, by, 1)


def postprocess_launches(batch: int, num_anchors: int, cap: int) -> list[tuple[str, tuple, tuple]]:
    """The four launches of kernel (b), in order: ``(kernel, grid, block)``."""
    words = cap // 64
    return [
        ("pp_filter", (-(-num_anchors // BLOCK), batch, 1), (BLOCK, 1, 1)),
        ("pp_rank", (-(-num_anchors // BLOCK), batch, 1), (BLOCK, 1, 1)),
        ("pp_mask", (-(-(cap * words) // BLOCK), batch, 1), (BLOCK, 1, 1)),
        ("pp_select", (-(-batch // 32), 1, 1), (32, 1, 1)),
    ]


def iou_threshold_f32(iou: float) -> float:
    """``iou`` as float32, rounded down where needed so ``x > t`` in float32 equals ``x > iou`` in double."""
    t = np.float32(iou)
    return float(np.nextafter(t, np.float32(-np.inf)) if float(t) > iou else t)


def class_mask_words(classes: Sequence[int] | None, num_classes: int) -> np.ndarray | None:
    """Bit ``c`` set for each kept class id (``None``: all classes, no mask)."""
    if classes is None:
        return None
    words = np.zeros(-(-num_classes // 32), np.uint32)
    for c in classes:
        if 0 <= int(c) < num_classes:
            words[int(c) >> 5] |= np.uint32(1 << (int(c) & 31))
    return words


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


@dataclass(frozen=True)
class PostprocessResult:
    """Host views of kernel (b)'s outputs; ``candidates`` counts the anchors above ``conf`` per image."""

    num_dets: np.ndarray  # (B, 1) int32
    boxes: np.ndarray  # (B, K, 4) float32
    scores: np.ndarray  # (B, K) float32
    classes: np.ndarray  # (B, K) int32
    candidates: np.ndarray  # (B,) int32; above ``cap`` the lowest-scoring were dropped


_SCRATCH = ("count", "cand_score", "cand_anchor", "cand_class", "rank_box", "rank_score", "rank_class", "mask",
            "removed", "class_mask", "pred")
_OUTPUTS = {"num_dets": np.int32, "boxes": np.float32, "scores": np.float32, "classes": np.int32, "count": np.int32}


class GpuPostprocess:
    """Kernel (b): raw head on the device → ``K = max_det`` detections per image on the host.

    Args:
        num_classes, num_anchors: the raw head's ``(4 + num_classes, num_anchors)``.
        batch: most images per call (every buffer is sized for it once).
        max_det: detections per image (K).
        cap: most candidates per image that are ranked and NMS'd (a multiple of 64; the rest, the lowest
            scores, are dropped, as Ultralytics' ``max_nms`` does). Its square in bits is the IoU mask.
        device: CUDA device index.

    ``pp(pred_ptr, conf, iou, stream, batch=..., classes=..., agnostic=...)`` queues the four launches
    and the copies of the outputs into pinned host memory on ``stream``, synchronizes after the last
    copy and returns a :class:`PostprocessResult` (views of pinned memory, valid until the next call).
    :meth:`run_host` takes a host array instead (it copies it to the device first).
    """

    def __init__(self, num_classes: int, num_anchors: int, batch: int = 1, max_det: int = 300, cap: int = 1024,
                 device: int = 0) -> None:
        if cap % 64 or cap < 64 or max_det < 1 or batch < 1:
            raise ConfigError(f"cap={cap}, max_det={max_det}, batch={batch}",
                              "use cap a positive multiple of 64, max_det >= 1, batch >= 1")
        self.nc, self.A, self.batch, self.max_det, self.cap = num_classes, num_anchors, batch, max_det, cap
        self._mod = _Module(POSTPROCESS_FILE, POSTPROCESS_KERNELS, device)
        B, A, K, words = batch, num_anchors, max_det, cap // 64
        dev_bytes = dict(count=4 * B, cand_score=4 * B * A, cand_anchor=4 * B * A, cand_class=4 * B * A,
                         rank_box=16 * B * cap, rank_score=4 * B * cap, rank_class=4 * B * cap,
                         mask=8 * B * cap * words, removed=8 * B * words, class_mask=4 * -(-num_classes // 32),
                         pred=4 * B * (4 + num_classes) * A, num_dets=4 * B, boxes=16 * B * K, scores=4 * B * K,
                         classes=4 * B * K)
        self._dev = {k: DeviceBuffer(n) for k, n in dev_bytes.items()}
        shapes = dict(num_dets=(B, 1), boxes=(B, K, 4), scores=(B, K), classes=(B, K), count=(B,))
        self._host = {k: PinnedBuffer(dev_bytes[k]) for k in _OUTPUTS}
        self._views = {k: self._host[k].array(shapes[k], _OUTPUTS[k]) for k in _OUTPUTS}
        self._pred_staging = PinnedBuffer()
        self.stream = Stream()

    def _buffers(self, pred_ptr: int, with_mask: bool) -> PPBuffers:
        ptrs = {k: b.ptr for k, b in self._dev.items()}
        ptrs["pred"] = int(pred_ptr)
        ptrs["class_mask"] = ptrs["class_mask"] if with_mask else None
        return PPBuffers(**ptrs)

    def launch(self, pred_ptr: int, conf: float, iou: float, stream: Any, batch: int | None = None,
               classes: Sequence[int] | None = None, agnostic: bool = False) -> int:
        """Queue the four kernels on ``stream`` (outputs stay on the device); returns the batch."""
        batch = self.batch if batch is None else int(batch)
        if not 1 <= batch <= self.batch:
            raise ConfigError(f"batch {batch} is outside 1..{self.batch} of this GpuPostprocess",
                              "create it with a larger batch")
        rt, handle = cudart(), _stream_handle(stream)
        mask = class_mask_words(classes, self.nc)
        if mask is not None:  # pageable and tiny: cudaMemcpyAsync copies it before returning
            check(rt.cudaMemcpyAsync(self._dev["class_mask"].ptr, mask.ctypes.data, mask.nbytes,
                                     rt.cudaMemcpyKind.cudaMemcpyHostToDevice, handle), "cudaMemcpyAsync(class mask)")
        check(rt.cudaMemsetAsync(self._dev["count"].ptr, 0, 4 * batch, handle), "cudaMemsetAsync(count)")
        args = PPArgs(batch, self.nc, self.A, self.cap, self.max_det, int(agnostic), float(np.float32(conf)),
                      iou_threshold_f32(iou))
        bufs = self._buffers(pred_ptr, mask is not None)
        for kernel, grid, block in postprocess_launches(batch, self.A, self.cap):
            self._mod.launch(kernel, grid, block, handle, args, bufs)
        return batch

    def enqueue(self, pred_ptr: int, conf: float, iou: float, stream: Any, batch: int | None = None,
                classes: Sequence[int] | None = None, agnostic: bool = False) -> int:
        """:meth:`launch`, then the D2H copies of the outputs into pinned memory, without waiting.

        The host may read the outputs only after ``stream`` is synchronized.
        """
        batch = self.launch(pred_ptr, conf, iou, stream, batch, classes, agnostic)
        rt, handle = cudart(), _stream_handle(stream)
        for k in _OUTPUTS:
            n = self._views[k].nbytes // self.batch * batch
            check(rt.cudaMemcpyAsync(self._host[k].ptr, self._dev[k].ptr, n, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                                     handle), f"cudaMemcpyAsync({k} D2H)")
        return batch

    def __call__(self, pred_ptr: int, conf: float, iou: float, stream: Any = None, batch: int | None = None,
                 classes: Sequence[int] | None = None, agnostic: bool = False) -> PostprocessResult:
        stream = self.stream if stream is None else stream
        batch = self.enqueue(pred_ptr, conf, iou, stream, batch, classes, agnostic)
        check(cudart().cudaStreamSynchronize(_stream_handle(stream)), "cudaStreamSynchronize")  # after the last copy
        v = self._views
        return PostprocessResult(v["num_dets"][:batch], v["boxes"][:batch], v["scores"][:batch], v["classes"][:batch],
                                 v["count"][:batch])

    def run_host(self, pred: np.ndarray, conf: float, iou: float, classes: Sequence[int] | None = None,
                 agnostic: bool = False) -> PostprocessResult:
        """Copy a host ``(B, 4 + nc, A)`` float32 head to the device (through pinned memory), then :meth:`__call__`."""
        pred = np.ascontiguousarray(pred, dtype=np.float32)
        if pred.ndim != 3 or pred.shape[1:] != (4 + self.nc, self.A) or not 1 <= len(pred) <= self.batch:
            raise ConfigError(f"raw head of shape {pred.shape}, expected (1..{self.batch}, {4 + self.nc}, {self.A})",
                              "pass the model's raw output, at most the batch this GpuPostprocess was made for")
        self._pred_staging.resize(pred.nbytes)
        np.copyto(self._pred_staging.array(pred.shape, np.float32), pred)
        self._dev["pred"].copy_from_host(self._pred_staging, self.stream, pred.nbytes)
        return self(self._dev["pred"].ptr, conf, iou, self.stream, len(pred), classes, agnostic)

    def close(self) -> None:
        """Free every buffer, the stream and the module (idempotent)."""
        for b in [*self._dev.values(), *self._host.values(), self._pred_staging]:
            b.close()
        self.stream.close()
        self._mod.close()

    def __enter__(self) -> "GpuPostprocess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
