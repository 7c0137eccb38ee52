"""INT8 calibration: image sources, one range-collection pass (NNCF's statistics), and the range cache.

    source = open_source(CalibrationConfig(Path("data.yaml"), method=CalibrationMethod.MEAN_MINMAX))
    images = CalibrationImages(source, imgsz=(640, 640))
    ranges = collect_ranges(Path("model.onnx"), images, cfg)

The letterbox is the runtime's (:mod:`engine.preprocess`), imported, not copied. NNCF is imported
only when a pass runs; :func:`nncf_dataset` turns :class:`CalibrationImages` into an ``nncf.Dataset``
for any other NNCF use (``nncf.quantize`` of an OpenVINO model, say) so every path calibrates alike.
"""
from .cache import CacheKey, TensorRanges, graph_hash
from .config import CalibrationConfig, CalibrationMethod
from .readers import CalibrationImages, CalibrationSource, SourceKind, open_source
from .strategies import collect_ranges, method_options, nncf_dataset

__all__ = ["CacheKey", "CalibrationConfig", "CalibrationImages", "CalibrationMethod", "CalibrationSource",
           "SourceKind", "TensorRanges", "collect_ranges", "graph_hash", "method_options", "nncf_dataset", "open_source"]
