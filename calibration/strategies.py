"""One calibration pass: ONNX Runtime's calibrators, chosen by :class:`CalibrationMethod`.

ONNX Runtime's ``create_calibrator`` adds every float tensor of the graph as an output and runs the
images through it. Its histogram calibrators keep every intermediate tensor of every image until
``collect_data`` returns, so the images are fed in chunks of :data:`CHUNK` (ranges and histograms
merge across chunks): memory stays bounded by the chunk, not by ``--calib-images``.
"""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from engine.errors import CalibrationError

from .cache import TensorRanges
from .config import CalibrationConfig, CalibrationMethod

CHUNK = 8


def _ort_method(method: CalibrationMethod, cfg: CalibrationConfig) -> tuple[str, dict]:
    """(ONNX Runtime's CalibrationMethod name, its calibrator options) for ``method``.

    ``minmax`` keeps raw, asymmetric ranges (``symmetric=False``): the TensorRT form symmetrizes them
    when it computes its scales, the CPU form uses them as they are.
    """
    table: dict[CalibrationMethod, tuple[str, dict]] = {
        CalibrationMethod.MINMAX: ("MinMax", {"symmetric": False}),
        CalibrationMethod.ENTROPY: ("Entropy", {"symmetric": False}),
        CalibrationMethod.PERCENTILE: ("Percentile", {"symmetric": True, "percentile": cfg.percentile}),
    }
    return table[method]


def method_options(cfg: CalibrationConfig) -> str:
    """The options that change the ranges of ``cfg.method``, as text for the cache key."""
    return f"percentile={cfg.percentile}" if cfg.method is CalibrationMethod.PERCENTILE else ""


class _ListReader:
    """ONNX Runtime's CalibrationDataReader interface over a list of input feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


@contextlib.contextmanager
def quiet_ort():
    """ONNX Runtime's quantization tools print progress and log advice at the root logger: hide both."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def collect_ranges(model_path: Path, batches: Iterable[np.ndarray], cfg: CalibrationConfig,
                   input_name: str = "images", log: Callable[[str], None] = print) -> TensorRanges:
    """Run ``batches`` through ``model_path`` once and return every float tensor's range.

    Raises:
        CalibrationError: no batch was produced (see :class:`calibration.readers.CalibrationImages`).
    """
    from onnxruntime.quantization.calibrate import CalibrationMethod as OrtMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    name, options = _ort_method(cfg.method, cfg)
    n = 0
    with tempfile.TemporaryDirectory(prefix="yolodeploy-calib-") as tmp, quiet_ort():
        calibrator = create_calibrator(Path(model_path), [], augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=getattr(OrtMethod, name), extra_options=options)
        chunk: list[dict[str, np.ndarray]] = []
        for x in batches:
            chunk.append({input_name: x})
            n += len(x)
            if len(chunk) == CHUNK:
                calibrator.collect_data(_ListReader(chunk))
                chunk = []
        if chunk:
            calibrator.collect_data(_ListReader(chunk))
        if n == 0:
            raise CalibrationError("the calibration set produced no images", "pass --calib with readable images")
        data = calibrator.compute_data()
        del calibrator  # its session holds the augmented model open (Windows cannot delete it otherwise)
    ranges = {}
    for tensor, td in data.items():
        lo, hi = td.range_value
        ranges[tensor] = (float(np.asarray(lo).min()), float(np.asarray(hi).max()))
    log(f"calibrated {len(ranges)} tensors with {cfg.method.value} on {n} images")
    return TensorRanges(cfg.method, ranges, n)
