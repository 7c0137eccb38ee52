"""Explicit INT8: Q/DQ nodes written into the ONNX graph from one set of calibrated ranges.

Two forms come from the same :class:`calibration.TensorRanges` (one NNCF statistics pass, see
:mod:`calibration.strategies`), each with the Q/DQ placement its runtime fuses:

* :attr:`QuantTarget.TENSORRT` → ``<stem>.int8.onnx``: symmetric int8 activations and per-channel
  int8 weights (every zero point 0), placed after NVIDIA's guidance by :mod:`exporters.qdq_tensorrt`
  (convolution inputs, both inputs of residual additions, a Quantize right after each layer that
  computes a tensor, one scale per Concat, attention MatMuls unquantized), bias float. Every layer
  that is not INT8 is FP16 and the graph's input and output FP32 (:mod:`exporters.mixed_precision`):
  strongly typed TensorRT (11, TensorRT-RTX) runs each layer in its graph type, so without this the
  float layers ran FP32. ``float_dtype="fp32"`` writes the INT8 graph with FP32 float layers instead.
* :attr:`QuantTarget.CPU` → ``<stem>.int8-cpu.onnx``: uint8 activations with asymmetric ranges and
  int8 weights (U8S8) on every operator ONNX Runtime has an integer kernel for (its own
  ``quantize_static``, so the graph is the pattern ONNX Runtime fuses into ``QLinearConv``), with the
  range rules and tweaks of :mod:`exporters.qdq_cpu`, and :mod:`exporters.cpu_graph` making its input
  uint8 BGR pixels (bit-identical to the float input), its upsamples NHWC Gathers and its int8
  convolutions with fewer than 16 outputs 16 wide (zero filters; the same outputs).

In both, the decode tail (everything after the detect head's last convolutions: DFL, box decode,
sigmoid, the final concat) stays float: its output concat mixes box pixels (0..640) and scores
(0..1) and collapses to mAP 0 under one int8 scale (DESIGN.md). And in both the detect head's tensors
(:func:`detect_head`) take the extremes seen over all calibration images, the rest the method's
estimate (:func:`head_ranges`).
"""
from __future__ import annotations

import fnmatch
import inspect
import tempfile
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from calibration.cache import TensorRanges
from calibration.strategies import quiet_ort
from engine.errors import ConfigError, ExportError

from .onnx_graph import graph_index

WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
LAYOUT_OPS = ("Reshape", "Concat", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity")
CLASS_BRANCH_MAX_SHARE = 0.10  # the class branch stays float up to this share of the convolution MACs


class QuantTarget(str, Enum):
    """Which INT8 artifact: the TensorRT form (S8S8, FP16 elsewhere) or the ONNX Runtime CPU form (U8S8)."""

    TENSORRT = "tensorrt"
    CPU = "cpu"

    @property
    def suffix(self) -> str:
        return ".int8.onnx" if self is QuantTarget.TENSORRT else ".int8-cpu.onnx"

    @property
    def label(self) -> str:
        return ("INT8 TensorRT form (S8S8 + FP16; on ORT CPU, approximates TensorRT)" if self is QuantTarget.TENSORRT
                else "INT8 CPU form (U8S8)")


@dataclass(frozen=True)
class CpuFormSpec:
    """The CPU form's steps around ONNX Runtime's ``quantize_static`` (see :mod:`exporters.qdq_cpu`)."""

    float_stem: bool = True  # the convolutions that read the image and their SiLU float (stem_convs, stem_silus)
    float_attention: bool = True  # attention's activation MatMuls and Softmax float (attention_nodes)
    shared_concat: bool = True  # one range for each Concat's inputs and output (share_concat_ranges)
    silu_ranges: bool = True  # conv outputs that only feed a SiLU start where SiLU turns flat
    float_head: bool = True  # the head's last convolutions write float for the decode tail
    cpu_rewrites: bool = True  # exporters.cpu_graph: Gather upsamples, uint8 BGR input


CPU_FORM = CpuFormSpec()
FLOAT_DTYPES = ("fp16", "fp32")  # the TensorRT form's non-INT8 layers


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ExportError("INT8 needs the 'onnx' package", "pip install -e .[export]") from None
    return onnx


def _dfl_conv(node, init: dict) -> bool:
    """DFL's fixed convolution: weights ``arange(c)`` of shape (1, c, 1, 1), the expectation of a softmax."""
    if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in init:
        return False
    w = _onnx().numpy_helper.to_array(init[node.input[1]])
    return w.ndim == 4 and w.shape[0] == 1 and np.array_equal(w.reshape(-1), np.arange(w.size, dtype=w.dtype))


def decode_tail(model) -> list[str]:
    """Names of the nodes after the detect head's last learned convolutions.

    Found from the graph, not from names: every node from which no learned convolution or matrix
    product can be reached (DFL's fixed convolution does not count as learned). That is DFL, the box
    decode, the class sigmoid, the reshapes and concats of the head outputs, and any end-to-end tail.
    """
    g = graph_index(model)
    init, producer = g.inits, g.producer
    stack = [n for n in model.graph.node if n.op_type in WEIGHTED_OPS and not _dfl_conv(n, init)]
    upstream: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in upstream:
            continue
        upstream.add(id(node))
        stack.extend(producer[i] for i in node.input if i in producer)
    return [n.name for n in model.graph.node if id(n) not in upstream]


def _branches(model, tail: Sequence[str] | None = None) -> dict[str, str]:
    """Each detect-head node (outside the decode tail) and the one tensor the tail reads that it reaches."""
    tail = set(decode_tail(model) if tail is None else tail)
    consumers = graph_index(model).consumers
    reach: dict[str, set[str]] = {}
    for n in reversed(model.graph.node):  # ONNX keeps nodes in topological order
        if n.name in tail:
            continue
        r: set[str] = set()
        for o in n.output:
            for c in consumers.get(o, []):
                r |= {o} if c.name in tail else reach.get(c.name, set())
        reach[n.name] = r
    return {n.name: next(iter(reach[n.name])) for n in model.graph.node if len(reach.get(n.name, ())) == 1}


def detect_head(model, tail: Sequence[str] | None = None) -> list[str]:
    """The detect head's branches: the nodes (outside the decode tail) from which exactly one of the
    tensors the tail reads can be reached, i.e. one scale's box convolutions or its class convolutions.
    Found from the graph, not from names; the neck, which feeds several scales, is not part of it."""
    return list(_branches(model, tail))


def class_branch(model, tail: Sequence[str] | None = None) -> list[str]:
    """The detect head's class branches: the head nodes whose tensor reaches the tail's class ``Sigmoid``
    through layout operators only (the box branches meet DFL or the box decode first).

    Found from the graph. Empty when the graph does not tell the two apart (an export that concatenates
    each scale's boxes and classes before splitting them). Made for detect heads; another head whose
    branch reaches a Sigmoid in the tail through layout operators (an OBB angle) would count as well.
    """
    g = graph_index(model)

    def scores(t: str, seen: set[str]) -> bool:
        for c in g.consumers.get(t, []):
            if c.op_type == "Sigmoid":
                return True
            if c.op_type in LAYOUT_OPS and c.name not in seen:
                seen.add(c.name)
                if any(scores(o, seen) for o in c.output):
                    return True
        return False

    branches = _branches(model, tail)
    ends = set(branches.values())
    classes = {t for t in ends if scores(t, set())}
    if not classes or classes == ends:
        return []
    return [n for n, t in branches.items() if t in classes]


def conv_macs(model, input_shape: Sequence[int] | None = None) -> dict[str, int]:
    """Multiply-accumulates of every ``Conv`` whose output shape ONNX shape inference finds, for one input
    of ``input_shape`` (``None``: the graph input's own shape, a dynamic batch taken as 1; the project's
    exports fix H and W). ``ConvTranspose``, ``MatMul`` and ``Gemm`` are not counted; a Conv whose weight
    is not an initializer or whose output shape stays unknown is left out."""
    onnx = _onnx()
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {i.name for i in m.graph.initializer}
    first = next(i for i in m.graph.input if i.name not in inits)
    dims = first.type.tensor_type.shape.dim
    for d, v in zip(dims, input_shape or [d.dim_value or 1 for d in dims]):
        d.ClearField("dim_param")
        d.dim_value = int(v)
    del m.graph.value_info[:]
    m = onnx.shape_inference.infer_shapes(m, data_prop=True)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*m.graph.value_info, *m.graph.output)}
    weights = {i.name: list(i.dims) for i in m.graph.initializer}
    out = {}
    for n in m.graph.node:
        shape = shapes.get(n.output[0])
        if n.op_type == "Conv" and n.input[1] in weights and shape and all(shape[1:]):
            out[n.name] = int(np.prod(shape[1:]) * np.prod(weights[n.input[1]][1:]))
    return out


@dataclass(frozen=True)
class ClassBranch:
    """The layer choice for the detect head's class branches: kept float when they are cheap."""

    nodes: tuple[str, ...]  # kept float (empty: quantized, not found, or its cost unknown)
    share: float | None  # their share of the model's convolution MACs (None: not found or not measurable)
    found: bool

    def summary(self) -> str:
        """One line for the build's log and reports: which way the choice went and why."""
        if not self.found:
            return "detect head's class branch not told apart from the box branch: quantized with the rest"
        if self.share is None:
            return ("the detect head's class branch quantized: its share of the convolution MACs could not be "
                    "measured (shapes or weights the ONNX shape inference does not see)")
        if self.nodes:
            n = len(self.nodes)
            return (f"the detect head's class branch kept float ({n} node{'s' if n != 1 else ''}, "
                    f"{self.share:.1%} of the convolution MACs)")
        return (f"the detect head's class branch quantized: {self.share:.1%} of the convolution MACs, over the "
                f"{CLASS_BRANCH_MAX_SHARE:.0%} it may cost in float")


def class_branch_choice(model, input_shape: Sequence[int] | None = None,
                        tail: Sequence[str] | None = None) -> ClassBranch:
    """Keep the detect head's class branches float when they are at most :data:`CLASS_BRANCH_MAX_SHARE` of the
    model's convolution MACs.

    The class logits rank every detection (mAP is a ranking measure), and a scale's class branch sees
    small differences between similar objects: measured on the demo and the signs model at 320 and
    640 on 600 fresh images (benchmarks/RESULTS.md, "INT8"), keeping it float cut the signs model's
    drop at 320 from 0.35 to 0.13 points (CPU form, mean of three calibration draws) and from 0.47 to
    0.27 (TensorRT form), and at 640 from 0.49 to -0.09 (TensorRT form). YOLO11's class branch is made of
    depthwise and 1x1 convolutions (3.0 % of the MACs in the demo, 4.0-5.5 % in YOLO11n/s/m with 80
    classes) and on ONNX Runtime's CPU provider the float branch ran no slower than the quantized one;
    YOLOv8's is full 3x3 convolutions (21-24 % of YOLOv8n/s's MACs), so it stays INT8 there.
    """
    nodes = class_branch(model, tail)
    if not nodes:
        return ClassBranch((), None, False)
    macs = conv_macs(model, input_shape)
    convs = {n.name for n in model.graph.node if n.op_type == "Conv"}
    if not macs or convs - set(macs):  # a Conv the count misses: no share to judge by
        return ClassBranch((), None, True)
    share = sum(macs.get(n, 0) for n in nodes) / sum(macs.values())
    return ClassBranch(tuple(nodes) if share <= CLASS_BRANCH_MAX_SHARE else (), share, True)


@dataclass(frozen=True)
class BoxBranch:
    """The layer choice for the detect head's box branches: kept float when they regress the box sides directly."""

    nodes: tuple[str, ...]  # kept float (empty: a head with DFL, or branches not told apart)

    @property
    def direct(self) -> bool:
        """Every box branch ends in a convolution with 4 outputs (no DFL bins): the branch is kept float."""
        return bool(self.nodes)

    def summary(self) -> str:
        """One line for the build's log and reports; empty when the box branch is quantized with the rest."""
        if not self.nodes:
            return ""
        n = len(self.nodes)
        return (f"the detect head's box branch kept float ({n} node{'s' if n != 1 else ''}: no DFL, it regresses "
                "the 4 box sides directly)")


def box_branch_choice(model, tail: Sequence[str] | None = None) -> BoxBranch:
    """Keep the detect head's box branches float when they regress the four box sides directly (YOLO26 and
    other heads without DFL: each scale's box branch ends in a convolution with 4 outputs).

    With DFL each side is the expectation of a softmax over 16 bins, which averages the bins' INT8 errors; a
    direct regression carries its input's and weights' rounding into the box. Measured on a YOLO26n trained
    on the demo's data, at 320 on 600 fresh images (benchmarks/RESULTS.md, "YOLO26"): with the box branch
    INT8 the TensorRT form lost 1.85 points of mAP50-95 and the CPU form 0.52, with it float -0.04 and 0.02
    (its last convolution alone float: 0.97 and 0.50). YOLO26n's box branch is 16 channels wide; the CPU form
    ran 6 % slower with it float. Found from the graph: the head branches outside :func:`class_branch`.
    """
    tail = decode_tail(model) if tail is None else tail
    classes = set(class_branch(model, tail))
    if not classes:
        return BoxBranch(())
    box = {n: t for n, t in _branches(model, tail).items() if n not in classes}
    g = graph_index(model)

    def sides(t: str) -> int | None:
        p = g.producer.get(t)
        if p is None or p.op_type != "Conv" or len(p.input) < 2 or p.input[1] not in g.inits:
            return None
        return int(g.inits[p.input[1]].dims[0])

    ends = set(box.values())
    return BoxBranch(tuple(box) if ends and all(sides(t) == 4 for t in ends) else ())


def default_float(model, input_shape: Sequence[int] | None = None) -> tuple[list[str], ClassBranch, BoxBranch]:
    """What every ONNX INT8 form keeps float before ``--exclude`` and the gate's fallback: the decode tail, by
    :func:`class_branch_choice` the class branch, by :func:`box_branch_choice` the box branch; with the two
    choices (for the log and the report)."""
    tail = decode_tail(model)
    classes = class_branch_choice(model, input_shape, tail)
    boxes = box_branch_choice(model, tail)
    return [*tail, *classes.nodes, *boxes.nodes], classes, boxes


def head_ranges(model, ranges: TensorRanges) -> tuple[TensorRanges, int]:
    """Give the detect head's tensors the extremes seen over all calibration images.

    The head's activations peak where objects are, and only there: an estimate that averages each
    image's extremes (``mean-minmax``) clips the strongest objects' box and class evidence. On a model
    trained on small, sparse objects (the "signs" model at 320) that cost the CPU form 0.79 points where
    the extremes in the head alone cost 0.20 (commit 81d80bf); on the demo it made no difference. The
    backbone and neck keep the method's estimate, which there lost less than the extremes.

    Returns:
        the new ranges and how many tensors changed.
    """
    if not ranges.extremes:
        return ranges, 0
    new, n = dict(ranges.ranges), 0
    nodes = {nd.name: nd for nd in model.graph.node}
    for name in detect_head(model):
        for t in nodes[name].output:
            if t in ranges.extremes and new.get(t) != ranges.extremes[t]:
                new[t] = ranges.extremes[t]
                n += 1
    return replace(ranges, ranges=new), n


def match_nodes(model, patterns: Iterable[str]) -> list[str]:
    """Node names matched by ``patterns``: an op type (``Sigmoid``), a node name, or a glob (``/model.23/*``).

    Raises:
        ConfigError: a pattern matches nothing (a typo would otherwise silently quantize the node).
    """
    names: list[str] = []
    for pat in patterns:
        hit = [n.name for n in model.graph.node
               if n.op_type == pat or n.name == pat or fnmatch.fnmatchcase(n.name, pat)]
        if not hit:
            raise ConfigError(f"--exclude {pat!r} matches no node or operator type of the model",
                              "name an op type (Sigmoid), a node name, or a glob such as '/model.23/cv3*' "
                              "(netron.app shows the names)")
        names += [h for h in hit if h not in names]
    return names


def parse_excludes(values: Sequence[str] | None) -> tuple[str, ...]:
    """``--exclude`` values (repeatable, each comma-separated) as one tuple of patterns."""
    return tuple(p.strip() for v in values or () for p in v.split(",") if p.strip())


def quantize_model(fp32: Path, ranges: TensorRanges, target: QuantTarget, keep_float: Sequence[str], out: Path,
                   float_dtype: str = "fp16", head_extremes: bool = True) -> Path:
    """Write the ``target`` INT8 form of ``fp32`` to ``out``, using ``ranges`` (no calibration inference).

    Args:
        fp32: the float ONNX model.
        ranges: from :func:`calibration.collect_ranges` or the cache.
        target: the form to write.
        keep_float: node names left in float (the decode tail, ``--exclude``, the gate's fallback);
            the CPU form also keeps :func:`exporters.qdq_cpu.stem_convs` (with their SiLU) and
            :func:`exporters.qdq_cpu.attention_nodes` float.
        out: the file to write.
        float_dtype: the TensorRT form's layers that are not INT8: ``fp16`` (default) or ``fp32``.
        head_extremes: the detect head's tensors take the extremes over all images (:func:`head_ranges`);
            ``False`` leaves them the calibration method's estimate, as NNCF's own quantizer does.

    Raises:
        ExportError: ONNX Runtime is too old to take precomputed ranges, quantization failed, or a
            tensor to quantize has no calibrated range.
    """
    if head_extremes:
        ranges, _ = head_ranges(_onnx().load(str(fp32), load_external_data=False), ranges)
    if target is QuantTarget.TENSORRT:
        return _tensorrt_form(fp32, ranges, keep_float, out, float_dtype)
    return _cpu_form(fp32, ranges, keep_float, out, CPU_FORM)


def form_float(model, target: QuantTarget, spec: CpuFormSpec = CPU_FORM) -> list[str]:
    """The nodes a form keeps float by its own rules, beside the caller's ``keep_float``: for the CPU form its
    stem convolutions with their SiLU and attention (:func:`exporters.qdq_cpu.stem_convs`,
    :func:`~exporters.qdq_cpu.stem_silus`, :func:`~exporters.qdq_cpu.attention_nodes`);
    none for the TensorRT form, whose placement leaves attention's MatMuls unquantized by itself."""
    if target is QuantTarget.TENSORRT:
        return []
    from .qdq_cpu import attention_nodes, stem_convs, stem_silus

    nodes = [*((*stem_convs(model), *stem_silus(model)) if spec.float_stem else ()),
             *(attention_nodes(model) if spec.float_attention else ())]
    return list(dict.fromkeys(nodes))


def _tensorrt_form(fp32: Path, ranges: TensorRanges, keep_float: Sequence[str], out: Path, float_dtype: str) -> Path:
    from .mixed_precision import int8_fp16
    from .qdq_tensorrt import write_tensorrt_form

    if float_dtype not in FLOAT_DTYPES:
        raise ConfigError(f"--int8-float {float_dtype!r} is not one of {', '.join(FLOAT_DTYPES)}",
                          "use fp16 (the default) or fp32")
    model = _onnx().load(str(fp32))
    try:
        write_tensorrt_form(model, ranges.ranges, keep_float)
    except KeyError as e:
        raise ExportError(f"the TensorRT INT8 form of {fp32} needs a range the calibration did not measure ({e})",
                          "delete the calibration cache (--calib-cache) and build again") from None
    if float_dtype == "fp16":
        model = int8_fp16(model)
    _onnx().save(model, str(out))
    return out


def _cpu_form(fp32: Path, ranges: TensorRanges, keep_float: Sequence[str], out: Path, spec: CpuFormSpec) -> Path:
    from onnxruntime import __version__ as ort_version
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    from .qdq_cpu import float_head_outputs, share_concat_ranges, silu_input_ranges

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        raise ExportError(f"onnxruntime {ort_version} cannot quantize from cached ranges",
                          "pip install -U 'onnxruntime>=1.27' (or onnxruntime-gpu>=1.27: its "
                          "quantize_static takes calibration_cache_path from 1.27)")
    graph = _onnx().load(str(fp32), load_external_data=False)
    keep_float = [*keep_float, *(n for n in form_float(graph, QuantTarget.CPU, spec) if n not in keep_float)]
    if spec.silu_ranges:
        ranges, _ = silu_input_ranges(graph, ranges)
    if spec.shared_concat:
        ranges, _ = share_concat_ranges(graph, ranges, keep_float)
    ort_ranges = ranges.to_ort()
    with tempfile.TemporaryDirectory(prefix="yolodeploy-q-") as tmp:
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(ort_ranges, cache)
        try:
            with quiet_ort():
                quantize_static(
                    str(fp32), str(out), None, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=None,
                    nodes_to_exclude=list(keep_float), calibrate_method=ort_ranges.calibration_method,
                    calibration_cache_path=cache, extra_options={"WeightSymmetric": True},
                )
        except Exception as e:  # ORT raises ValueError/RuntimeError/onnx errors from deep inside
            raise ExportError(f"quantizing {fp32} to the cpu INT8 form failed ({type(e).__name__}: {e})",
                              "rerun with --debug; --exclude the node named above to keep it in float") from e
    if spec.float_head or spec.cpu_rewrites:
        from .cpu_graph import rewrite_cpu_form

        q = _onnx().load(str(out))
        if spec.float_head:
            float_head_outputs(q, keep_float)
        if spec.cpu_rewrites:
            rewrite_cpu_form(q)
        _onnx().save(q, str(out))
    return out


def int8_metadata(meta, model):
    """``meta`` for an INT8 artifact: precision INT8 and the pixel format of ``model``'s input."""
    from engine.metadata import PixelFormat, Precision

    inits = {i.name for i in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in inits)
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim)
    dtype = np.uint8 if inp.type.tensor_type.elem_type == _onnx().TensorProto.UINT8 else np.float32
    return meta.replace(precision=Precision.INT8, pixels=PixelFormat.of_input(dims, dtype))


def tensorrt_problems(model) -> list[str]:
    """Why TensorRT would refuse ``model``'s Q/DQ: non-int8 types, non-zero zero points, int32 bias.

    An empty list means every QuantizeLinear / DequantizeLinear is int8 with zero points of 0.
    """
    onnx = _onnx()
    g = graph_index(model)
    init, producer = g.inits, g.producer
    problems = []
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(node.input) < 3 or node.input[2] not in init:
            problems.append(f"{node.name}: no int8 zero point (defaults to uint8)")
            continue
        zp = init[node.input[2]]
        if zp.data_type != onnx.TensorProto.INT8:
            problems.append(f"{node.name}: zero point of type {onnx.TensorProto.DataType.Name(zp.data_type)}")
        elif np.any(onnx.numpy_helper.to_array(zp) != 0):
            problems.append(f"{node.name}: non-zero zero point")
        if node.op_type == "DequantizeLinear" and node.input[0] in init:
            dtype = init[node.input[0]].data_type
            if dtype != onnx.TensorProto.INT8:
                problems.append(f"{node.name}: dequantizes a {onnx.TensorProto.DataType.Name(dtype)} constant")
        elif node.op_type == "DequantizeLinear" and node.input[0] in producer \
                and producer[node.input[0]].op_type != "QuantizeLinear":
            problems.append(f"{node.name}: dequantizes the output of {producer[node.input[0]].op_type}")
    return problems


def quantized_nodes(model) -> list[str]:
    """Compute nodes of a Q/DQ model that take at least one dequantized input (its INT8 layers)."""
    producer = graph_index(model).producer
    out = []
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if any(i in producer and producer[i].op_type == "DequantizeLinear" for i in node.input):
            out.append(node.name)
    return out


def load_or_calibrate(fp32: Path, model, meta, cfg, cache: Path, log=print, show_progress: bool = True):
    """The calibrated ranges of ``fp32``: from ``cache`` when its key matches, else from one pass (then cached).

    The key covers the graph (not its metadata), the input size, the method and its options, the names
    and sizes of the images the source lists, and what the letterbox makes of fixed test frames, so a
    cache is never applied to another model or set, nor after the preprocessing has changed.

    Returns:
        ``(TensorRanges, CalibrationSource)``.

    Raises:
        CalibrationError: the source is missing, empty or entirely unreadable.
    """
    from calibration import strategies
    from calibration.cache import CacheKey, dumps, graph_hash, read_cache
    from calibration.readers import CalibrationImages, open_source

    from .io import write_bytes_atomic

    source = open_source(cfg)
    images = CalibrationImages(source, meta.imgsz, meta.batch, show_progress=show_progress, log=log)
    key = CacheKey(graph_hash(model), tuple(meta.imgsz), cfg.method.value, strategies.method_options(cfg),
                   source.fingerprint(), images.fingerprint())
    cache = Path(cache)
    if cache.is_file():
        entry = read_cache(cache)
        if entry is None:
            log(f"calibration cache {cache} is unreadable or from an older version; calibrating again")
        elif entry[0] == key:
            log(f"calibration: reusing {cache} ({len(entry[1].ranges)} tensor ranges from {entry[1].n_images} images; "
                "no calibration inference)")
            return entry[1], source
        else:
            log(f"calibration cache {cache} was made for another {', '.join(key.differences(entry[0]))}; "
                "calibrating again")
    log(f"calibrating ({cfg.method.value}) on {source.description}")
    ranges = strategies.collect_ranges(fp32, images, cfg, input_name=meta.input_name, log=log)
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(cache, dumps(key, ranges).encode("utf-8"))
    log(f"wrote calibration cache {cache}")
    return ranges, source
