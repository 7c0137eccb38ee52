"""The wire format of ``engine.serve``: request inputs to frames, detections to outputs and back.

Pure NumPy and OpenCV: the server uses it, and so can a client (``detections_from_outputs``).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import cv2
import numpy as np

from ..detections import Detections
from ..errors import DeployError, InputImageError

IMAGE_INPUT = "image"
ENCODED_INPUT = "encoded"
OUTPUTS = ("num_detections", "boxes", "scores", "class_ids", "class_names")
# A response carrying one of these (instead of OUTPUTS) is an error for that request alone; the model
# inside Triton (engine/serve/triton_model.py) sends it as INVALID_ARG (client) or INTERNAL (server).
CLIENT_ERROR = "_engine_serve_client_error"
SERVER_ERROR = "_engine_serve_server_error"
EMPTY_INPUT = ("{where} has shape {shape}, with nothing in it; fix: send at least one "
               "frame of at least 1x1 pixels (or one non-empty image file)")


def one_line(err: DeployError) -> str:
    """A typed error as the one line a client reads: what is wrong, then the fix."""
    return f"{err.message}; fix: {err.fix}" if err.fix else err.message


def error_outputs(message: str, server: bool = False) -> dict[str, np.ndarray]:
    """The response of one request that failed: ``message`` as a client error (or a server error)."""
    return {SERVER_ERROR if server else CLIENT_ERROR: np.array([message.encode("utf-8")], dtype=np.bytes_)}


def frames_from_image_input(batch: np.ndarray, request: int = 0) -> list[np.ndarray]:
    """The frames of one request's ``image`` input, checked: uint8, ``(batch, H, W, 3)``, H and W >= 1."""
    where = f"request {request}: input '{IMAGE_INPUT}'"
    if batch.dtype != np.uint8:
        raise InputImageError(f"{where} has dtype {batch.dtype}", "send uint8 BGR pixels (TYPE_UINT8 / 'UINT8')")
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise InputImageError(f"{where} has shape {list(batch.shape)}",
                              "send shape [batch, height, width, 3] (BGR, as cv2.imread gives, with a batch axis)")
    if batch.shape[1] < 1 or batch.shape[2] < 1:
        raise InputImageError(f"{where} is an empty frame ({batch.shape[1]}x{batch.shape[2]} pixels)",
                              "send frames of at least 1x1 pixels")
    return [np.ascontiguousarray(f) for f in batch]


def frames_from_encoded_input(batch: np.ndarray, request: int = 0) -> list[np.ndarray]:
    """Decode one request's ``encoded`` input (bytes ``(batch, 1)``) into BGR frames."""
    frames = []
    for i, blob in enumerate(np.asarray(batch, dtype=object).reshape(-1)):
        data = blob if isinstance(blob, (bytes, bytearray)) else bytes(blob)
        frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
        if frame is None:
            raise InputImageError(
                f"request {request}: input '{ENCODED_INPUT}' item {i} ({len(data)} bytes, starting {data[:8]!r}) "
                "is not an image OpenCV can decode",
                f"send the bytes of a JPEG/PNG/BMP/WebP file, or raw uint8 BGR frames as '{IMAGE_INPUT}'")
        frames.append(frame)
    return frames


def pack_outputs(dets: Sequence[Detections]) -> dict[str, np.ndarray]:
    """One request's detections as Triton outputs, padded to the largest count among its frames.

    At least one row (K >= 1) even when nothing was found, so that no output is zero-size (an earlier
    pytriton-based server could not send those; clients read ``num_detections`` either way).
    """
    k = max(1, max((len(d) for d in dets), default=0))
    b = len(dets)
    out = {"num_detections": np.zeros((b, 1), np.int32), "boxes": np.zeros((b, k, 4), np.float32),
           "scores": np.zeros((b, k), np.float32), "class_ids": np.full((b, k), -1, np.int32)}
    for i, d in enumerate(dets):
        n = len(d)
        out["num_detections"][i, 0] = n
        out["boxes"][i, :n] = d.xyxy
        out["scores"][i, :n] = d.confidence
        out["class_ids"][i, :n] = d.class_id
    # a bytes array ("S"), not objects: Triton's Python backend sends it as BYTES all the same
    names = [[s.encode() for s in d.class_name] + [b""] * (k - len(d)) for d in dets]
    out["class_names"] = np.array(names, dtype=np.bytes_).reshape(b, k)
    return out


def detections_from_outputs(outputs: Mapping[str, np.ndarray], names: Sequence[str] | None = None) -> list[Detections]:
    """A response's outputs (``{name: array}``, e.g. from ``result.as_numpy``) → one Detections per frame.

    ``names`` (the model's class names) default to those found in the response's ``class_names``.
    """
    nums = np.asarray(outputs["num_detections"]).reshape(-1)
    found: dict[int, str] = {}
    result = []
    for i, n in enumerate(nums.tolist()):
        ids = np.asarray(outputs["class_ids"])[i, :n]
        if "class_names" in outputs:
            for c, s in zip(ids.tolist(), np.asarray(outputs["class_names"])[i, :n].tolist()):
                found[c] = s.decode() if isinstance(s, bytes) else str(s)
        result.append((np.asarray(outputs["boxes"])[i, :n], np.asarray(outputs["scores"])[i, :n], ids))
    if names is None:
        size = max(found, default=-1) + 1
        names = [found.get(c, str(c)) for c in range(size)]
    return [Detections(b, s, c, names) for b, s, c in result]
