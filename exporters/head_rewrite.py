"""Rewrite the detect head's DFL softmax into reductions over the bins axis: same numbers, far fewer cycles.

Ultralytics exports DFL (distribution focal loss decoding) as::

    Reshape (B, 4, 16, A) -> Transpose (B, 16, 4, A) -> Softmax(axis=1) -> Conv 1x1 with weights 0..15

ONNX Runtime's CPU Softmax on a non-last axis transposes internally and runs on one thread: on the
demo YOLO11n at 320 it took about 1.1 ms with one thread and 2 ms with two, more than a tenth of the
whole INT8 model, and 8.8 ms at 640 (8400 anchors). The same expectation is computed here without moving
any data, along axis 2 of the (B, 4, 16, A) tensor::

    e = Exp(x - ReduceMax(x)),  y = ReduceSum(e * [0..15]) / ReduceSum(e)

which ONNX Runtime vectorizes along the anchors (about 0.08 ms) and which TensorRT and TensorRT-RTX
build as plain reductions. Subtracting the maximum keeps ``Exp`` finite for any logits, as Softmax
does. The result has shape (B, 4, 1, A) where the convolution gave (B, 1, 4, A): the same elements in
the same order, so the Reshape that follows is unchanged. Outputs agree with the original graph to
float rounding (about 1e-4 px on box coordinates); the export's parity check runs after the rewrite.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .onnx_graph import attr as _attr
from .onnx_graph import graph_index


@dataclass(frozen=True)
class DflMatch:
    """One DFL block found in a graph: the nodes replaced and the tensors around them."""

    transpose: object
    softmax: object
    conv: object
    bins_input: str  # the (B, 4, bins, A) tensor the Transpose reads
    output: str  # the convolution's output, kept as the Div's output name
    bins: int


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)




def find_dfl(model) -> list[DflMatch]:
    """Every DFL block of ``model`` in Ultralytics' export pattern (none for heads without DFL).

    Only opset 13 and later: older Softmax normalizes over every axis after ``axis``, so the same
    node pattern there would not be DFL's per-side softmax.
    """
    from onnx import numpy_helper

    g = graph_index(model)
    init, producer, consumers = g.inits, g.producer, g.consumers
    found = []
    if _opset(model) < 13:  # before opset 13 Softmax(axis=1) normalizes over all trailing axes: not DFL
        return found
    for sm in (n for n in model.graph.node if n.op_type == "Softmax"):
        tr = producer.get(sm.input[0])
        users = consumers.get(sm.output[0], [])
        if tr is None or tr.op_type != "Transpose" or list(_attr(tr, "perm", [])) != [0, 2, 1, 3]:
            continue
        if _attr(sm, "axis", 1) != 1 or len(users) != 1 or len(consumers.get(tr.output[0], [])) != 1:
            continue
        conv = users[0]
        if conv.op_type != "Conv" or len(conv.input) != 2 or conv.input[1] not in init:
            continue
        w = numpy_helper.to_array(init[conv.input[1]])
        if w.ndim != 4 or w.shape[0] != 1 or w.shape[2:] != (1, 1) or not np.array_equal(
                w.reshape(-1), np.arange(w.size, dtype=w.dtype)):
            continue
        found.append(DflMatch(tr, sm, conv, tr.input[0], conv.output[0], int(w.size)))
    return found


def _reduce(op: str, x: str, out: str, name: str, axes: str, opset: int):
    """A keepdims reduction over axis 2, with ``axes`` as an input or an attribute as the opset wants."""
    from onnx import helper

    if opset >= (18 if op == "ReduceMax" else 13):
        return helper.make_node(op, [x, axes], [out], name=name, keepdims=1)
    return helper.make_node(op, [x], [out], name=name, keepdims=1, axes=[2])


def rewrite_dfl(model) -> int:
    """Replace each DFL block of ``model`` (in place) with reductions over the bins axis; return how many.

    The new nodes are named under the old Softmax's scope (``/model.23/dfl/...``) so node-name patterns
    (``--exclude '/model.23/dfl/*'``) and the INT8 decode-tail search still find them.
    """
    from onnx import helper, numpy_helper

    matches = find_dfl(model)
    opset = _opset(model)
    graph = model.graph
    for k, m in enumerate(matches):
        scope = m.softmax.name.rsplit("/", 1)[0] if "/" in m.softmax.name else f"dfl{k}"
        t = lambda s: f"{scope}/{s}_output_0"  # noqa: E731 - tensor names in Ultralytics' style
        proj = numpy_helper.from_array(np.arange(m.bins, dtype=np.float32).reshape(1, 1, m.bins, 1), f"{scope}.proj")
        axes = numpy_helper.from_array(np.array([2], np.int64), f"{scope}.axes")
        graph.initializer.extend([proj, axes])
        x = m.bins_input
        new = [
            _reduce("ReduceMax", x, t("ReduceMax"), f"{scope}/ReduceMax", axes.name, opset),
            helper.make_node("Sub", [x, t("ReduceMax")], [t("Sub")], name=f"{scope}/Sub"),
            helper.make_node("Exp", [t("Sub")], [t("Exp")], name=f"{scope}/Exp"),
            _reduce("ReduceSum", t("Exp"), t("ReduceSum"), f"{scope}/ReduceSum", axes.name, opset),
            helper.make_node("Mul", [t("Exp"), proj.name], [t("Mul")], name=f"{scope}/Mul"),
            _reduce("ReduceSum", t("Mul"), t("ReduceSum_1"), f"{scope}/ReduceSum_1", axes.name, opset),
            helper.make_node("Div", [t("ReduceSum_1"), t("ReduceSum")], [m.output], name=f"{scope}/Div"),
        ]
        at = list(graph.node).index(m.transpose)
        for node in (m.transpose, m.softmax, m.conv):
            graph.node.remove(node)
        for i, node in enumerate(new):
            graph.node.insert(at + i, node)
        dead = {m.transpose.output[0], m.softmax.output[0], m.output}
        for vi in [v for v in graph.value_info if v.name in dead]:
            graph.value_info.remove(vi)  # the conv output's shape changed; let inference redo it
        used = {i for n in graph.node for i in n.input}
        for init in [i for i in graph.initializer if i.name == m.conv.input[1] and i.name not in used]:
            graph.initializer.remove(init)
    return len(matches)
