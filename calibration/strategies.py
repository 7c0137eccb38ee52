"""One calibration pass: NNCF's statistics collectors over every float tensor of the graph.

NNCF (Intel's post-training quantization library, Apache-2.0) collects statistics for its own
quantizers with an aggregator that runs the ONNX model once over the images, every wanted tensor
exposed, reduces each image's tensor to its minimum and maximum, and aggregates those over the
images. We use that machinery on *every* float tensor, because each INT8 form places its Q/DQ
itself (:mod:`exporters.qdq_tensorrt`, :mod:`exporters.qdq_cpu`) and needs ranges where NNCF's
own placement would put none: conv outputs before SiLU (the CPU form's fused int8 convolutions),
the inputs of Splits and Concats (the TensorRT form). One pass serves both forms.

The same pass also keeps every tensor's extremes over all images (:attr:`TensorRanges.extremes`):
the INT8 forms use them for the detect head, whose activations peak only where objects are
(:func:`exporters.quantize.head_ranges`).

The methods (:class:`CalibrationMethod`) are NNCF's range estimators:

* ``mean-minmax`` (default): the mean over images of each image's minimum and maximum, NNCF's
  default for activations (``RangeEstimatorParametersSet.MEAN_MINMAX``). Measured on two models
  at 320 and 640 (benchmarks/RESULTS.md) it lost less than the global extremes in the backbone and
  neck: a few rare images no longer stretch a range for all the others. (Not in the detect head,
  which takes the extremes: see above.)
* ``minmax``: the extremes over all images (ModelOpt's ``max``; this tool's default before).
* ``percentile``: the mean over images of each image's ``1 - percentile`` and ``percentile``
  quantiles (NNCF's ``MEAN_QUANTILE``); slower (a quantile per tensor and image).

The images come from :class:`calibration.readers.CalibrationImages` through :func:`nncf_dataset`,
the one calibration path every NNCF user of this project shares.
"""
from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from engine.errors import CalibrationError, ExportError

from .cache import TensorRanges
from .config import CalibrationConfig, CalibrationMethod

_FLOAT_TYPES = (1, 10, 11, 16)  # onnx.TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16


def _nncf():
    try:
        import nncf
    except ImportError:
        raise ExportError("INT8 calibration needs NNCF", "pip install -e .[export]   (or: pip install nncf)") from None
    return nncf


def nncf_dataset(images: Iterable[np.ndarray], input_name: str = "images"):
    """``nncf.Dataset`` over model-ready batches (e.g. :class:`calibration.readers.CalibrationImages`).

    Each item becomes ``{input_name: batch}``, the feed NNCF's ONNX backend (``nncf.quantize``, its
    statistics aggregator) runs the model with.
    """
    return _nncf().Dataset(images, lambda x: {input_name: x})


def method_options(cfg: CalibrationConfig) -> str:
    """The options that change the ranges of ``cfg.method``, as text for the cache key."""
    return f"percentile={cfg.percentile}" if cfg.method is CalibrationMethod.PERCENTILE else ""


def _collector(method: CalibrationMethod, cfg: CalibrationConfig, n: int | None):
    """An NNCF ``TensorCollector`` of one tensor's (low, high) for ``method`` (``MINMAX``: the extremes)."""
    from nncf.common.tensor_statistics.collectors import (MaxAggregator, MaxReducer, MeanAggregator, MinAggregator,
                                                          MinReducer, QuantileReducer, TensorCollector)
    from nncf.common.tensor_statistics.statistics import MinMaxTensorStatistic

    if method is CalibrationMethod.PERCENTILE:
        q = 1.0 - cfg.percentile / 100.0
        low, high = QuantileReducer(quantile=[q]), QuantileReducer(quantile=[1.0 - q])
    else:
        low, high = MinReducer(), MaxReducer()
    mean = method is not CalibrationMethod.MINMAX
    kw = {"num_samples": n, "aggregation_axes": (0,)}  # per image (batch axis), then over images
    agg_low = MeanAggregator(**kw) if mean else MinAggregator(**kw)
    agg_high = MeanAggregator(**kw) if mean else MaxAggregator(**kw)
    c = TensorCollector(MinMaxTensorStatistic)
    c.register_statistic_branch(MinMaxTensorStatistic.MIN_STAT, low, agg_low)
    c.register_statistic_branch(MinMaxTensorStatistic.MAX_STAT, high, agg_high)
    return c


def float_tensors(model) -> list[str]:
    """Every float tensor a node writes, plus the float graph inputs, in graph order."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    kinds = {v.name: v.type.tensor_type.elem_type for v in
             (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    names += [o for n in model.graph.node for o in n.output if o]
    return [t for t in dict.fromkeys(names) if kinds.get(t) in _FLOAT_TYPES]


@contextlib.contextmanager
def _quiet(log: logging.Logger, level: int = logging.ERROR, stdout: bool = True):
    """``log`` at ``level`` and (``stdout``) stdout swallowed for the duration."""
    before = log.level
    log.setLevel(level)
    try:
        with contextlib.redirect_stdout(io.StringIO()) if stdout else contextlib.nullcontext():
            yield
    finally:
        log.setLevel(before)


def quiet_nncf(level: int = logging.ERROR, stdout: bool = True):
    """NNCF logs its progress at INFO and prints through rich: keep both out of the build's log
    (``level``: the lowest NNCF record still shown; ``stdout=False`` leaves stdout alone, e.g. while the
    calibration images' own summary prints)."""
    return _quiet(logging.getLogger("nncf"), level, stdout)


def quiet_ort():
    """ONNX Runtime's quantization tools print progress and log advice at the root logger: hide both."""
    return _quiet(logging.getLogger())


def collect_ranges(model_path: Path, batches: Iterable[np.ndarray], cfg: CalibrationConfig,
                   input_name: str = "images", log: Callable[[str], None] = print,
                   tensors: Sequence[str] | None = None) -> TensorRanges:
    """Run ``batches`` through ``model_path`` once and return the range of every float tensor.

    Args:
        tensors: the tensors to measure (default: :func:`float_tensors`, every one).

    Raises:
        CalibrationError: no batch was produced (see :class:`calibration.readers.CalibrationImages`).
        ExportError: NNCF is not installed.
    """
    import onnx

    nncf = _nncf()
    from nncf.common.graph.transformations.commands import TargetType
    from nncf.common.tensor_statistics.statistic_point import StatisticPoint, StatisticPointsContainer
    from nncf.onnx.graph.nncf_graph_builder import GraphConverter
    from nncf.onnx.graph.transformations.commands import ONNXTargetPoint
    from nncf.onnx.statistics.aggregator import ONNXStatisticsAggregator

    model = onnx.load(str(model_path))
    wanted = float_tensors(model) if tensors is None else list(tensors)
    producer = {o: (n.name, k) for n in model.graph.node for k, o in enumerate(n.output)}
    reader = {}
    for n in model.graph.node:
        for k, i in enumerate(n.input):
            reader.setdefault(i, (n.name, k))
    container, collectors, extremes = StatisticPointsContainer(), {}, {}
    n_items = len(batches) if hasattr(batches, "__len__") else None
    for t in wanted:
        if t in producer:
            point = ONNXTargetPoint(TargetType.POST_LAYER_OPERATION, *producer[t])
        elif t in reader:  # a graph input: measured where its first reader takes it
            point = ONNXTargetPoint(TargetType.PRE_LAYER_OPERATION, *reader[t])
        else:
            continue
        collectors[t] = _collector(cfg.method, cfg, n_items)
        container.add_statistic_point(StatisticPoint(point, collectors[t], "yolodeploy"))
        if cfg.method is not CalibrationMethod.MINMAX:  # the same reduced values, aggregated as extremes
            extremes[t] = _collector(CalibrationMethod.MINMAX, cfg, n_items)
            container.add_statistic_point(StatisticPoint(point, extremes[t], "yolodeploy-extremes"))
    seen = [0]

    def counted():
        for x in batches:
            seen[0] += len(x)
            yield x

    aggregator = ONNXStatisticsAggregator(nncf_dataset(counted(), input_name))
    aggregator.register_statistic_points(container)
    with quiet_nncf():
        try:
            aggregator.collect_statistics(model, GraphConverter.create_nncf_graph(model))
        except nncf.ValidationError:
            seen[0] = 0
    if seen[0] == 0:
        raise CalibrationError("the calibration set produced no images", "pass --calib with readable images")
    ranges = {t: _low_high(c) for t, c in collectors.items()}
    ext = {t: _low_high(c) for t, c in extremes.items()} if extremes else dict(ranges)
    log(f"calibrated {len(ranges)} tensors with {cfg.method.value} (NNCF {nncf.__version__}) on {seen[0]} images")
    return TensorRanges(cfg.method, ranges, seen[0], ext)


def _low_high(collector) -> tuple[float, float]:
    s = collector.get_statistics()
    return float(np.asarray(s.min_values.data).min()), float(np.asarray(s.max_values.data).max())
