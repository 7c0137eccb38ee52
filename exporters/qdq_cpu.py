"""The INT8 CPU form's ranges and Q/DQ tweaks for ONNX Runtime's CPU provider.

The CPU form is quantized by ONNX Runtime's own ``quantize_static`` (QDQ on every operator it has an
integer kernel for, U8S8), so its graph is the pattern ONNX Runtime fuses into ``QLinearConv``,
``QLinearSigmoid``, ``QLinearMul``... What this module adds, each measured (benchmarks/RESULTS.md):

* :func:`stem_convs`: the convolution that reads the image stays float (3 input channels: too shallow
  for the U8S8 kernels), and :func:`stem_silus`: so does its SiLU (one fused float pass where the
  quantized one is a Quantize, a ``QLinearSigmoid`` and a ``QLinearMul`` over the graph's largest tensor).
* :func:`attention_nodes`: attention's activation MatMuls and its Softmax stay float (ONNX Runtime's
  ``QLinearSoftmax`` is a per-element lookup; its float Softmax is vectorized), as in the TensorRT form.
* :func:`share_concat_ranges`: one range for a Concat's inputs and output, so concatenation is a copy.
* :func:`silu_input_ranges`: a convolution's output that only feeds a SiLU is quantized for the fused
  ``QLinearConv``; below about -6 SiLU is flat (within half a step of its own output grid), so the
  range of that tensor starts there instead of at its observed minimum, and its int8 step shrinks. On
  the demo at 320 this took the CPU form's output error to that of NNCF's own placement.
* :func:`float_head_outputs`: the detect head's last convolutions (box distributions and class
  logits, read by the float decode tail) write float, not uint8: their quantization moved boxes.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from calibration.cache import TensorRanges

from .onnx_graph import UnionFind, drop_unused_initializers, graph_index

SILU_MIN_X = -1.2784645  # SiLU's minimum: it falls for x below, toward 0 as x -> -inf
LEVELS = 255  # uint8 steps


def stem_convs(model) -> list[str]:
    """The convolutions that read a graph input directly (YOLO's first 3x3 conv on the RGB image).

    The CPU form keeps them float: with 3 input channels an int8 convolution's depth of 27 is too
    shallow for ONNX Runtime's U8S8 kernels (slower than the float one), and an int8 stem on a
    4-channel input, which is faster, lost accuracy on the demo (benchmarks/RESULTS.md).
    """
    inputs = {i.name for i in model.graph.input}
    return [n.name for n in model.graph.node if n.op_type == "Conv" and n.input and n.input[0] in inputs]


def stem_silus(model) -> list[str]:
    """The ``Sigmoid`` and ``Mul`` of the SiLU after each of :func:`stem_convs` (when that is all that reads it).

    The CPU form keeps them float beside the float stem: ONNX Runtime then runs one fused float SiLU and
    a Quantize, where it ran a Quantize, a ``QLinearSigmoid`` lookup and a ``QLinearMul`` over the largest
    activation of the graph (16 x 320 x 320 at 640): about 3 % of the form's time at 640, the same
    accuracy on two models at 320 and 640 (benchmarks/RESULTS.md).
    """
    g = graph_index(model)
    stems = set(stem_convs(model))
    return [a.name for n in model.graph.node if n.name in stems for a in _silu_after(g, n)]


def attention_nodes(model) -> list[str]:
    """Attention's activation MatMuls (both inputs computed, no weight) and every Softmax.

    The CPU form keeps them float: ONNX Runtime's ``QLinearSoftmax`` runs a table lookup per element, 0.3 ms
    of the demo's CPU form at 640, where its float Softmax is vectorized; with the MatMuls float too the
    form ran about 3 % faster end to end at 640 and kept its accuracy (benchmarks/RESULTS.md). The
    TensorRT form leaves the same MatMuls to FP16 (:mod:`exporters.qdq_tensorrt`). A graph without attention
    (YOLOv8) has no such MatMul; its only Softmax, DFL's where an export keeps it, is in the float decode
    tail anyway.
    """
    inits = {i.name for i in model.graph.initializer}
    consts = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    weights = inits | consts
    return [n.name for n in model.graph.node
            if n.op_type == "Softmax" or (n.op_type == "MatMul" and not any(i in weights for i in n.input))]


# Operators whose quantized output ONNX Runtime gives its input's scale and zero point.
_SCALE_PRESERVING = frozenset({"Split", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "MaxPool",
                               "Resize", "Slice", "Gather"})


def share_concat_ranges(model, ranges: TensorRanges, keep_float: Sequence[str] = ()) -> tuple[TensorRanges, int]:
    """Give every quantized Concat one range for its inputs and its output (the union of theirs).

    A Concat whose inputs carry other scales than its output is run by ONNX Runtime as a per-input
    requantization (a 256-entry table per element); with one shared scale it is a plain copy. On the
    demo YOLO11n (17 Concats, in every C3k2, SPPF and the neck) that was 5 % of the INT8 CPU form's
    time, and mAP50-95 did not drop (0.8255 -> 0.8270 on the demo val set). TensorRT shares concat
    scales the same way. The range given to an input is given to the tensor its scale comes from
    (through Split, MaxPool, Resize, ...), and Concats that share tensors end up in one group.

    Returns:
        the new ranges and the number of Concats that now share one range.
    """
    producer = graph_index(model).producer
    skip = set(keep_float)
    groups = UnionFind()
    concats = 0
    for node in model.graph.node:
        if node.op_type != "Concat" or node.name in skip or node.output[0] not in ranges.ranges:
            continue
        chain = []
        for t in node.input:
            while t in ranges.ranges:
                chain.append(t)
                p = producer.get(t)
                if p is None or p.op_type not in _SCALE_PRESERVING or p.name in skip:
                    break
                t = p.input[0]
        if not chain:
            continue
        concats += 1
        for t in chain:
            groups.union(t, node.output[0])
    new = dict(ranges.ranges)
    for members in groups.groups().values():
        union = (min(ranges.ranges[t][0] for t in members), max(ranges.ranges[t][1] for t in members))
        new.update(dict.fromkeys(members, union))
    return replace(ranges, ranges=new), concats


def _silu(x: float) -> float:
    return x / (1.0 + np.exp(-x))


def silu_flat_below(step: float) -> float:
    """The largest ``x <= SILU_MIN_X`` with ``|silu(x)| <= step / 2`` (below it SiLU rounds to ~0)."""
    if abs(_silu(SILU_MIN_X)) <= step / 2:
        return SILU_MIN_X
    lo, hi = -200.0, SILU_MIN_X  # |silu| grows from 0 (at -inf) to 0.2785 (at SILU_MIN_X)
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if abs(_silu(mid)) <= step / 2 else (lo, mid)
    return lo


def silu_pairs(model) -> dict[str, str]:
    """``{conv output: SiLU output}`` for each convolution whose only readers are a SiLU
    (``Sigmoid(x)`` and ``Mul(x, sigmoid(x))``)."""
    g = graph_index(model)
    return {n.output[0]: silu[1].output[0] for n in model.graph.node
            if n.op_type == "Conv" and (silu := _silu_after(g, n))}


def _silu_after(g, conv) -> tuple:
    """``(Sigmoid, Mul)`` when a SiLU is all that reads ``conv``'s output, else ``()``."""
    readers = g.consumers.get(conv.output[0], [])
    sig = [r for r in readers if r.op_type == "Sigmoid"]
    mul = [r for r in readers if r.op_type == "Mul"]
    if len(readers) == 2 and sig and mul and sig[0].output[0] in mul[0].input:
        return sig[0], mul[0]
    return ()


def silu_input_ranges(model, ranges: TensorRanges) -> tuple[TensorRanges, int]:
    """Start the range of each conv output that only feeds a SiLU where SiLU turns flat.

    The bound is :func:`silu_flat_below` of the SiLU output's own uint8 step: values below it become
    the bound, whose SiLU differs from theirs by less than half an output step.

    Returns:
        the new ranges and how many were narrowed.
    """
    new, n = dict(ranges.ranges), 0
    for pre, post in silu_pairs(model).items():
        if pre not in new or post not in new:
            continue
        lo, hi = new[pre]
        plo, phi = new[post]
        cut = silu_flat_below((phi - min(plo, 0.0)) / LEVELS)
        if lo < cut < hi:
            new[pre] = (cut, hi)
            n += 1
    return replace(ranges, ranges=new), n


def float_head_outputs(q, keep_float: Sequence[str]) -> int:
    """Remove the Q/DQ pair after each convolution whose every reader is a float node (edits ``q``).

    ONNX Runtime's QDQ quantizer quantizes a convolution's output whatever reads it; the detect head's
    last convolutions feed the float decode tail, which would then read uint8-rounded box
    distributions and class logits. Returns how many convolutions now write float.
    """
    g = graph_index(q)
    floats = set(keep_float)
    drop, rename = set(), {}
    for n in q.graph.node:
        p = g.producer.get(n.input[0]) if n.op_type == "QuantizeLinear" else None
        if p is None or p.op_type != "Conv":
            continue
        dqs = g.consumers.get(n.output[0], [])
        readers = [r for d in dqs for r in g.consumers.get(d.output[0], [])]
        if dqs and readers and all(d.op_type == "DequantizeLinear" for d in dqs) and all(
                r.name in floats for r in readers):
            drop.update(id(x) for x in (n, *dqs))
            rename.update((d.output[0], n.input[0]) for d in dqs)
    nodes = [n for n in q.graph.node if id(n) not in drop]
    for n in nodes:
        for k, i in enumerate(n.input):
            if i in rename:
                n.input[k] = rename[i]
    del q.graph.node[:]
    q.graph.node.extend(nodes)
    drop_unused_initializers(q)
    return len({v for v in rename.values()})
