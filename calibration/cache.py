"""Calibration results: per-tensor ranges, their cache key, and their JSON form.

A cache entry is valid for one model graph, input size, method, set of images and preprocessing: the key
holds a hash of each, so a cache made for another model, other images or a letterbox that has changed
since is never applied (it is recomputed).
The ranges are the raw observed ones (asymmetric for ``minmax``); each INT8 form derives its own
scales from them, so one pass serves the symmetric TensorRT form and the asymmetric CPU form.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from engine._version import __version__

from .config import CalibrationMethod

CACHE_SCHEMA = 3  # 2: the key gained ``preprocessing``; 3: ranges from NNCF's estimators


@dataclass(frozen=True)
class CacheKey:
    """What a set of ranges depends on."""

    graph: str  # hash of the model graph (not its metadata)
    imgsz: tuple[int, int]
    method: str
    options: str  # method options, e.g. "percentile=99.999"
    images: str  # CalibrationSource.fingerprint()
    preprocessing: str  # CalibrationImages.fingerprint()

    def differences(self, other: "CacheKey") -> list[str]:
        """Names of the fields that differ, for a log line saying why a cache is not used."""
        return [f for f in ("graph", "imgsz", "method", "options", "images", "preprocessing")
                if getattr(self, f) != getattr(other, f)]


@dataclass(frozen=True)
class TensorRanges:
    """Estimated (low, high) per tensor name from one calibration pass, and the extremes over all images.

    ``ranges`` are the method's estimates; ``extremes`` the smallest and largest values seen (the same as
    ``ranges`` for ``minmax``; empty when not measured).
    """

    method: CalibrationMethod
    ranges: Mapping[str, tuple[float, float]]
    n_images: int = 0
    extremes: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def to_ort(self):
        """ONNX Runtime's ``TensorsData`` for ``quantize_static`` (ranges as given, whatever the method)."""
        import numpy as np
        from onnxruntime.quantization.calibrate import CalibrationMethod as OrtMethod
        from onnxruntime.quantization.calibrate import TensorData, TensorsData

        data = {k: TensorData(lowest=np.array(lo, np.float32), highest=np.array(hi, np.float32))
                for k, (lo, hi) in self.ranges.items()}
        return TensorsData(OrtMethod.MinMax, data)


def graph_hash(model) -> str:
    """sha256 of an ONNX model's graph (nodes and weights), ignoring ``metadata_props``."""
    return hashlib.sha256(model.graph.SerializeToString(deterministic=True)).hexdigest()[:32]


def dumps(key: CacheKey, ranges: TensorRanges) -> str:
    """The cache file's text; tensors in name order, so the same ranges always give the same bytes."""
    return json.dumps({
        "schema": CACHE_SCHEMA, "tool_version": __version__,
        "key": {"graph": key.graph, "imgsz": list(key.imgsz), "method": key.method, "options": key.options,
                "images": key.images, "preprocessing": key.preprocessing},
        "n_images": ranges.n_images,
        "ranges": {k: [float(lo), float(hi)] for k, (lo, hi) in sorted(ranges.ranges.items())},
        "extremes": {k: [float(lo), float(hi)] for k, (lo, hi) in sorted(ranges.extremes.items())},
    }, indent=1)


def loads(text: str) -> tuple[CacheKey, TensorRanges]:
    """Parse :func:`dumps` output. Raises ``ValueError`` (or ``KeyError``/``TypeError``) when malformed."""
    d: dict[str, Any] = json.loads(text)
    if d.get("schema") != CACHE_SCHEMA:
        raise ValueError(f"cache schema {d.get('schema')!r}, expected {CACHE_SCHEMA}")
    k = d["key"]
    key = CacheKey(str(k["graph"]), (int(k["imgsz"][0]), int(k["imgsz"][1])), str(k["method"]), str(k["options"]),
                   str(k["images"]), str(k["preprocessing"]))
    ranges = {str(n): (float(v[0]), float(v[1])) for n, v in d["ranges"].items()}
    extremes = {str(n): (float(v[0]), float(v[1])) for n, v in d.get("extremes", {}).items()}
    return key, TensorRanges(CalibrationMethod(key.method), ranges, int(d.get("n_images", 0)), extremes)


def read_cache(path: Path) -> tuple[CacheKey, TensorRanges] | None:
    """The cache at ``path``, or ``None`` when absent or unreadable (a cache is disposable)."""
    try:
        return loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
