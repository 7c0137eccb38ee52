"""INT8 calibration: image sources, one range-collection pass, and the range cache.

    source = open_source(CalibrationConfig(Path("data.yaml"), method=CalibrationMethod.ENTROPY))
    images = CalibrationImages(source, imgsz=(640, 640))
    ranges = collect_ranges(Path("model.onnx"), images, cfg)

The letterbox is the runtime's (:mod:`engine.preprocess`), imported, not copied. ONNX Runtime is
imported only when a pass runs.
"""
from .cache import CacheKey, TensorRanges, graph_hash
from .config import CalibrationConfig, CalibrationMethod
from .readers import CalibrationImages, CalibrationSource, SourceKind, open_source
from .strategies import collect_ranges, method_options

__all__ = ["CacheKey", "CalibrationConfig", "CalibrationImages", "CalibrationMethod", "CalibrationSource",
           "SourceKind", "TensorRanges", "collect_ranges", "graph_hash", "method_options", "open_source"]
