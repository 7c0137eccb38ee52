"""The one versioned metadata schema every artifact carries.

ONNX files hold it as JSON under the ``metadata_props`` key :data:`METADATA_KEY`; engine sidecars
(``<stem>.<precision>.json``) embed the same dictionary. Later features extend the schema *here*:
add a field with a default, bump :data:`SCHEMA_VERSION`, and teach :meth:`ModelMetadata.from_dict`
to read the older versions.

An ONNX file exported by Ultralytics without this tool has no such key; :func:`from_onnx_props`
then reads Ultralytics' own keys (``names``, ``imgsz``, ``stride``, ``task``, ``batch``), so such
models still load.
"""
from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ._version import __version__
from .errors import MetadataError

SCHEMA_VERSION = 3  # 2: pixels (the input's pixel format; version 1 files read as NCHW_RGB_FLOAT); 3: anchors
METADATA_KEY = "yolodeploy"


class Precision(str, Enum):
    """Numeric precision of an artifact's compute."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


class HeadLayout(str, Enum):
    """What the model's output means.

    ``RAW``: one tensor ``(B, 4 + num_classes, anchors)`` of xywh boxes (input pixels) and class scores,
    decoded and NMS'd on the host. ``END2END``: fixed-size detections (``num_dets, boxes, scores,
    classes``) with the decode inside the graph.
    """

    RAW = "raw"
    END2END = "end2end"


class PixelFormat(str, Enum):
    """How a graph takes its image.

    ``NCHW_RGB_FLOAT``: ``(B, 3, H, W)`` float RGB planes scaled to 0..1 (Ultralytics' export; the graph's
    float dtype, fp32 or fp16). ``NHWC_BGR_UINT8``: ``(B, H, W, 3)`` uint8 pixels, the letterboxed frame
    as OpenCV holds it. The INT8 CPU form takes this: the graph reorders the channels and its first
    DequantizeLinear is the ``/255``, so preprocessing is a resize and nothing else, and the graph
    computes bit for bit what it computed from the float planes.
    """

    NCHW_RGB_FLOAT = "nchw-rgb-float"
    NHWC_BGR_UINT8 = "nhwc-bgr-uint8"

    @classmethod
    def of_input(cls, shape: tuple, dtype) -> "PixelFormat":
        """The format of a graph input from its shape and dtype (the graph is the truth)."""
        if np.dtype(dtype) == np.uint8 and len(shape) == 4 and shape[-1] == 3:
            return cls.NHWC_BGR_UINT8
        return cls.NCHW_RGB_FLOAT

    def shape(self, batch: int | None, imgsz: tuple[int, int]) -> tuple:
        """The input's shape for ``batch`` images of ``imgsz`` (height, width)."""
        h, w = imgsz
        return (batch, h, w, 3) if self is PixelFormat.NHWC_BGR_UINT8 else (batch, 3, h, w)


@dataclass(frozen=True)
class Thresholds:
    """Thresholds baked into a graph at export (end-to-end heads only).

    ``max_det`` is the graph's rows per image (K). ``nms``: NMS runs inside the graph; ``False`` means the
    graph keeps the top-K candidates above ``conf`` and the host NMS (at ``iou``) finishes on them.
    """

    conf: float
    iou: float
    max_det: int
    nms: bool = True


@dataclass(frozen=True)
class ModelMetadata:
    """Self-description of an exported artifact.

    Attributes:
        names: class names, index = class id.
        imgsz: model input size ``(height, width)`` in pixels.
        stride: the model's largest stride (input sides are multiples of it).
        task: Ultralytics task; only ``"detect"`` is supported.
        batch: static batch size, or ``None`` for a dynamic batch dimension.
        precision: compute precision of this artifact.
        head: output layout, see :class:`HeadLayout`.
        thresholds: thresholds baked into the graph, if any.
        source_sha256: sha256 of the file this artifact was made from (``.pt`` or ``.onnx``).
        source_name: that file's name.
        tool_version: version of this tool that wrote the artifact.
        input_name: the graph's input tensor name.
        output_names: the graph's output tensor names, in order.
        pixels: the input's :class:`PixelFormat`.
        anchors: rows of the raw head's output (anchor points over all its levels: a P2 or P6 head has
            more than the usual strides 8, 16, 32); ``None`` in files older than schema 3, where
            :attr:`raw_anchors` assumes strides 8 up to :attr:`stride`.
        schema_version: version of this schema.
    """

    names: tuple[str, ...]
    imgsz: tuple[int, int]
    stride: int = 32
    task: str = "detect"
    batch: int | None = 1
    precision: Precision = Precision.FP32
    head: HeadLayout = HeadLayout.RAW
    thresholds: Thresholds | None = None
    source_sha256: str = ""
    source_name: str = ""
    tool_version: str = __version__
    input_name: str = "images"
    output_names: tuple[str, ...] = ("output0",)
    pixels: PixelFormat = PixelFormat.NCHW_RGB_FLOAT
    anchors: int | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not self.names:
            raise MetadataError("metadata has no class names")
        if len(self.imgsz) != 2 or min(self.imgsz) <= 0:
            raise MetadataError(f"metadata imgsz must be (height, width) > 0, got {self.imgsz!r}")
        if self.batch is not None and self.batch < 1:
            raise MetadataError(f"metadata batch must be >= 1 or None (dynamic), got {self.batch!r}")
        if self.anchors is not None and self.anchors < 1:
            raise MetadataError(f"metadata anchors must be >= 1 or None, got {self.anchors!r}")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def dynamic_batch(self) -> bool:
        return self.batch is None

    @property
    def raw_anchors(self) -> int:
        """Rows of the raw head's output: :attr:`anchors`, or for older files one per cell of each level,
        strides 8 up to :attr:`stride`."""
        if self.anchors is not None:
            return self.anchors
        return anchor_count(self.imgsz, tuple(8 << i for i in range(max(self.stride, 8).bit_length() - 3)))

    def replace(self, **changes: Any) -> "ModelMetadata":
        """A copy with ``changes`` applied (the dataclass is frozen)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (enums as their values, ``batch`` as an int or ``"dynamic"``)."""
        d = dataclasses.asdict(self)
        d["names"] = list(self.names)
        d["imgsz"] = list(self.imgsz)
        d["output_names"] = list(self.output_names)
        d["batch"] = "dynamic" if self.batch is None else self.batch
        d["precision"] = self.precision.value
        d["head"] = self.head.value
        d["pixels"] = self.pixels.value
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelMetadata":
        """Parse :meth:`to_dict` output; refuse schemas newer than this code understands."""
        version = int(d.get("schema_version", 0))
        if version < 1 or version > SCHEMA_VERSION:
            raise MetadataError(
                f"metadata schema version {version} is not one this tool ({__version__}) reads (1..{SCHEMA_VERSION})",
                "re-export the model with this version of the tool, or upgrade the tool",
            )
        try:
            batch = d.get("batch", 1)
            thr = d.get("thresholds")
            return cls(
                names=tuple(str(n) for n in d["names"]),
                imgsz=(int(d["imgsz"][0]), int(d["imgsz"][1])),
                stride=int(d.get("stride", 32)),
                task=str(d.get("task", "detect")),
                batch=None if batch in ("dynamic", None) else int(batch),
                precision=Precision(d.get("precision", "fp32")),
                head=HeadLayout(d.get("head", "raw")),
                thresholds=Thresholds(float(thr["conf"]), float(thr["iou"]), int(thr["max_det"]),
                                      bool(thr.get("nms", True))) if thr else None,
                source_sha256=str(d.get("source_sha256", "")),
                source_name=str(d.get("source_name", "")),
                tool_version=str(d.get("tool_version", "")),
                input_name=str(d.get("input_name", "images")),
                output_names=tuple(d.get("output_names", ("output0",))),
                pixels=PixelFormat(d.get("pixels", PixelFormat.NCHW_RGB_FLOAT.value)),
                anchors=None if d.get("anchors") is None else int(d["anchors"]),
                schema_version=version,
            )
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise MetadataError(f"metadata is malformed ({type(e).__name__}: {e})",
                                "re-export the model with this tool") from None

    @classmethod
    def from_json(cls, text: str) -> "ModelMetadata":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise MetadataError(f"metadata is not valid JSON ({e})", "re-export the model with this tool") from None


def anchor_count(imgsz: tuple[int, int], strides: tuple[int, ...]) -> int:
    """Anchor points of a detect head with levels at ``strides`` for input ``imgsz``: one per cell of each."""
    return sum(-(-imgsz[0] // s) * -(-imgsz[1] // s) for s in strides)


def _literal(value: str) -> Any:
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def from_onnx_props(props: Mapping[str, str]) -> ModelMetadata | None:
    """Metadata from an ONNX file's ``metadata_props`` (ours, else Ultralytics' keys), or ``None``.

    Ultralytics writes ``str()`` of Python values; they are parsed with ``ast.literal_eval`` (never
    ``eval``).
    """
    if METADATA_KEY in props:
        return ModelMetadata.from_json(props[METADATA_KEY])
    if "names" not in props or "imgsz" not in props:
        return None
    names = _literal(props["names"])
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    imgsz = _literal(props["imgsz"])
    imgsz = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
    batch = _literal(props.get("batch", "1"))
    args = _literal(props.get("args", "{}"))
    args = args if isinstance(args, dict) else {}
    dynamic = str(args.get("dynamic", False)) == "True"
    # Ultralytics' nms=True writes end2end False yet outputs finished (batch, K, 6) rows: not a raw head
    end2end = str(props.get("end2end", "False")) == "True" or str(args.get("nms", False)) == "True"
    return ModelMetadata(
        names=tuple(str(n) for n in names),
        imgsz=(int(imgsz[0]), int(imgsz[1])),
        stride=int(_literal(props.get("stride", "32"))),
        task=str(props.get("task", "detect")),
        batch=None if dynamic else int(batch) if isinstance(batch, int) else 1,
        head=HeadLayout.END2END if end2end else HeadLayout.RAW,
        tool_version="",
    )


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
