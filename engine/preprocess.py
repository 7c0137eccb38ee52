"""Letterbox preprocessing into a buffer allocated once.

The geometry matches Ultralytics' ``LetterBox`` (aspect kept, centered, pad 114, ``round(d - 0.1)``
for the top/left pad), so boxes map back exactly with per-axis gains, as Ultralytics' own
``scale_boxes`` does. The calibration package imports this module: there is one letterbox.

Speed: the pad border only changes when the frame size changes, so it is written once per size and
each frame writes only its resized content; the uint8 → float conversion goes straight into the
model's CHW buffer per channel (no intermediate float image). A graph that takes uint8 BGR pixels
(:attr:`~engine.metadata.PixelFormat.NHWC_BGR_UINT8`, the INT8 CPU form) gets the frame resized
straight into its input, with no conversion at all. The float planes hold exactly ``uint8 x float32(1/255)``
(border included), the product the uint8 graphs' DequantizeLinear computes, so both formats give a graph
the same numbers bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from .errors import InputImageError
from .metadata import PixelFormat

PAD_VALUE = 114


@dataclass(frozen=True)
class LetterboxGeometry:
    """How one source frame was placed into the model input.

    Attributes:
        src_hw: source frame (height, width).
        dst_hw: model input (height, width).
        new_hw: resized content (height, width) inside the input.
        top, left: padding before the content.
    """

    src_hw: tuple[int, int]
    dst_hw: tuple[int, int]
    new_hw: tuple[int, int]
    top: int
    left: int

    @classmethod
    def fit(cls, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> "LetterboxGeometry":
        """The centered, aspect-preserving placement of ``src_hw`` into ``dst_hw``."""
        h, w = src_hw
        r = min(dst_hw[0] / h, dst_hw[1] / w)
        new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
        dw, dh = (dst_hw[1] - new_w) / 2, (dst_hw[0] - new_h) / 2
        return cls((h, w), tuple(dst_hw), (new_h, new_w), round(dh - 0.1), round(dw - 0.1))

    def boxes_to_source(self, xyxy: np.ndarray) -> np.ndarray:
        """Map ``(N, 4)`` xyxy boxes from model-input pixels to source pixels, in place, clipped."""
        gx, gy = self.new_hw[1] / self.src_hw[1], self.new_hw[0] / self.src_hw[0]
        xs, ys = xyxy[:, 0::2], xyxy[:, 1::2]  # views: no copies on the hot path
        xs -= self.left
        ys -= self.top
        xs /= gx
        ys /= gy
        np.clip(xs, 0, self.src_hw[1], out=xs)
        np.clip(ys, 0, self.src_hw[0], out=ys)
        return xyxy


def as_bgr(frame: np.ndarray) -> np.ndarray:
    """Validate a frame and return it as an ``(H, W, 3)`` uint8 BGR array.

    Grayscale ``(H, W)`` / ``(H, W, 1)`` and BGRA ``(H, W, 4)`` are converted; non-contiguous arrays
    are accepted (OpenCV copies as needed). 16-bit, float, empty or wrongly shaped arrays are refused
    with :class:`InputImageError`.
    """
    if not isinstance(frame, np.ndarray):
        raise InputImageError(f"a frame must be a numpy array, got {type(frame).__name__}",
                              "pass a BGR uint8 image as read by cv2.imread or cv2.VideoCapture")
    if frame.dtype != np.uint8:
        raise InputImageError(f"a frame must be uint8, got {frame.dtype} with shape {frame.shape}",
                              "convert first, e.g. (img16 >> 8).astype(np.uint8) for 16-bit images")
    if frame.size == 0:
        raise InputImageError(f"the frame is empty (shape {frame.shape})",
                              "check that the image was read successfully (cv2.imread returns None on failure)")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        return cv2.cvtColor(np.ascontiguousarray(frame.reshape(frame.shape[:2])), cv2.COLOR_GRAY2BGR)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_BGRA2BGR)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return frame
    raise InputImageError(f"a frame must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got shape {frame.shape}",
                          "pass one image per call or a list of images; batches go in a list, not a 4-D array")


class Letterbox:
    """Letterbox frames into an input buffer owned by this object.

    Args:
        imgsz: model input (height, width).
        batch: number of frames the buffer holds.
        dtype: ``np.float32`` or ``np.float16`` (``NCHW_RGB_FLOAT``); ``np.uint8`` for ``NHWC_BGR_UINT8``.
        out: an existing array of the input's shape to write into (e.g. CUDA-pinned host memory);
            allocated here when omitted.
        pixels: the graph's :class:`~engine.metadata.PixelFormat`: ``(batch, 3, H, W)`` RGB scaled to
            0..1 (default), or ``(batch, H, W, 3)`` uint8 BGR.

    Call it with a list of BGR uint8 frames; it returns the buffer (a view of the first ``len(frames)``
    rows) and each frame's :class:`LetterboxGeometry`. Nothing is allocated per call for frames of a
    size seen before, other than OpenCV's resize of the content.
    """

    def __init__(self, imgsz: tuple[int, int], batch: int = 1, dtype=np.float32, out: np.ndarray | None = None,
                 pixels: PixelFormat = PixelFormat.NCHW_RGB_FLOAT) -> None:
        self.imgsz = (int(imgsz[0]), int(imgsz[1]))
        self.pixels = PixelFormat(pixels)
        if self.pixels is PixelFormat.NHWC_BGR_UINT8:
            dtype = np.uint8
        shape = self.pixels.shape(batch, self.imgsz)
        if out is None:
            out = np.empty(shape, dtype=dtype)
        elif out.shape != shape:
            raise ValueError(f"out buffer has shape {out.shape}, expected {shape}")
        self.buffer = out
        self._geometry: list[LetterboxGeometry | None] = [None] * batch
        self._resized: dict[tuple[int, int], np.ndarray] = {}
        self._scale = np.float32(1.0 / 255.0)
        self._fill = self._fill_bgr if self.pixels is PixelFormat.NHWC_BGR_UINT8 else self._fill_rgb

    def resized(self, batch: int) -> "Letterbox":
        """A letterbox of the same size, dtype and pixel format holding ``batch`` frames."""
        return Letterbox(self.imgsz, batch=batch, dtype=self.buffer.dtype, pixels=self.pixels)

    def __call__(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, list[LetterboxGeometry]]:
        n = len(frames)
        if n > self.buffer.shape[0]:
            raise ValueError(f"{n} frames do not fit a buffer of batch {self.buffer.shape[0]}")
        geoms = [self._fill(i, as_bgr(f)) for i, f in enumerate(frames)]
        return self.buffer[:n], geoms

    def _geometry_for(self, i: int, frame: np.ndarray, pad) -> LetterboxGeometry:
        g = self._geometry[i]
        if g is None or g.src_hw != frame.shape[:2]:
            g = LetterboxGeometry.fit(frame.shape[:2], self.imgsz)
            self.buffer[i].fill(pad)  # border written once per frame size
            self._geometry[i] = g
        return g

    def _content(self, g: LetterboxGeometry, frame: np.ndarray, dst: np.ndarray | None = None) -> np.ndarray:
        """The frame resized to its place in the input, into ``dst`` or a scratch image kept per size."""
        nh, nw = g.new_hw
        if (nh, nw) == frame.shape[:2]:
            if dst is not None:
                dst[...] = frame
            return frame
        if dst is None:
            dst = self._resized.get((nh, nw))
            if dst is None:
                dst = self._resized[(nh, nw)] = np.empty((nh, nw, 3), np.uint8)
        return cv2.resize(frame, (nw, nh), dst=dst, interpolation=cv2.INTER_LINEAR)

    def _fill_bgr(self, i: int, frame: np.ndarray) -> LetterboxGeometry:
        g = self._geometry_for(i, frame, PAD_VALUE)
        nh, nw = g.new_hw
        # rows of whole pixels: OpenCV resizes into the view in place
        self._content(g, frame, self.buffer[i, g.top : g.top + nh, g.left : g.left + nw])
        return g

    def _fill_rgb(self, i: int, frame: np.ndarray) -> LetterboxGeometry:
        g = self._geometry_for(i, frame, np.float32(PAD_VALUE) * self._scale)  # = DequantizeLinear(114, 1/255)
        nh, nw = g.new_hw
        content = self._content(g, frame)
        region = self.buffer[i, :, g.top : g.top + nh, g.left : g.left + nw]
        for c in range(3):  # BGR -> RGB while converting
            np.multiply(content[:, :, 2 - c], self._scale, out=region[c], casting="unsafe")
        return g


def bgr_from_planes(x: np.ndarray) -> np.ndarray:
    """``(B, 3, H, W)`` RGB planes in 0..1 (a float letterbox) as the ``(B, H, W, 3)`` uint8 BGR the INT8
    CPU form takes: the same pixels, since the float letterbox holds exactly ``uint8 x float32(1/255)``."""
    x = np.asarray(x, dtype=np.float32)
    return np.ascontiguousarray(np.clip(np.rint(x[:, ::-1].transpose(0, 2, 3, 1) * 255.0), 0, 255).astype(np.uint8))


def letterbox_image(frame: np.ndarray, imgsz: tuple[int, int]) -> tuple[np.ndarray, LetterboxGeometry]:
    """Letterbox one frame into a new uint8 ``(H, W, 3)`` BGR image (for calibration and tools).

    Same geometry and interpolation as :class:`Letterbox`.
    """
    frame = as_bgr(frame)
    g = LetterboxGeometry.fit(frame.shape[:2], imgsz)
    out = np.full((*g.dst_hw, 3), PAD_VALUE, np.uint8)
    nh, nw = g.new_hw
    out[g.top : g.top + nh, g.left : g.left + nw] = (
        cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR) if (nh, nw) != frame.shape[:2] else frame
    )
    return out, g
