"""The TensorRT INT8 form's Q/DQ placement, written after NVIDIA's guidance.

TensorRT developer guide, "Working with Quantized Types" → "Explicit Quantization":

* "Q/DQ Layer-Placement Recommendations": quantize every input of a weighted layer (convolution),
  do not quantize its output by default, and quantize the residual input of an element-wise addition
  so TensorRT can fuse the addition into the convolution before it (:attr:`TrtPlacement.residual_adds`).
* "Q/DQ Propagation" / "Q/DQ Fusion": TensorRT moves DequantizeLinear forward and QuantizeLinear backward
  through layers that commute with quantization (Split, Slice, MaxPool, nearest Resize, Reshape,
  Transpose, Concat) and fuses a Quantize into the layer that produced the tensor. So each Quantize is
  written right after the layer that computes the tensor (YOLO's convolution + SiLU, an addition), not
  after a Split or Concat that only moves it (:attr:`TrtPlacement.at_producers`); the convolution then
  writes int8 and the Split/Concat run on int8 data.
* Concatenation in int8 needs one scale for all its inputs: the inputs of a Concat that feeds a quantized
  layer, and everything that reaches them through moving layers, share one scale (the union of their
  ranges).
* Attention's two activation MatMuls carry no Q/DQ (:attr:`TrtPlacement.matmul`): on TensorRT-RTX they
  compiled as float GEMMs anyway and refused the Turing target; FP16 runs them (see
  :mod:`exporters.mixed_precision`).

Every zero point is 0 (TensorRT's int8 is symmetric); weights are int8 per output channel; biases stay float;
nodes in ``keep_float`` (the decode tail, ``--exclude``, the gate's fallback) take no Q/DQ and read float.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .onnx_graph import UnionFind, graph_index

# Layers through which TensorRT propagates Q/DQ (one data input; the output holds the input's values).
MOVERS = frozenset({"Split", "Slice", "MaxPool", "Resize", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten"})
QMAX = 127.0


@dataclass(frozen=True)
class TrtPlacement:
    """The guidance's choices, each kept only because the accuracy measured with it held (RESULTS.md)."""

    residual_adds: bool = True  # quantize both inputs of an Add of two activations
    at_producers: bool = True  # the Quantize right after the computing layer, shared by Split/Concat readers
    matmul: bool = False  # Q/DQ on attention's activation MatMuls


@dataclass(frozen=True)
class TrtQdq:
    """What :func:`write_tensorrt_form` quantized."""

    convs: int  # convolutions with int8 inputs and weights
    tensors: int  # activation tensors given a Q/DQ pair
    shared_groups: int  # groups of tensors sharing one scale (Concat inputs), of 2 or more


def plan_tensors(model, placement: TrtPlacement, keep_float: Sequence[str] = ()) -> tuple[list, UnionFind]:
    """The quantized convolutions and the activation tensors to quantize (grouped by shared scale)."""
    g = graph_index(model)
    skip = set(keep_float)
    groups = UnionFind()
    convs = [n for n in model.graph.node if n.op_type == "Conv" and n.name not in skip
             and len(n.input) > 1 and n.input[1] in g.inits]
    edges = [n.input[0] for n in convs]
    for n in model.graph.node:
        if n.name in skip:
            continue
        acts = [i for i in n.input if i and i not in g.inits]
        if n.op_type == "MatMul" and placement.matmul:
            edges += acts
        elif n.op_type == "Add" and placement.residual_adds and len(acts) == 2:
            edges += acts

    def sources(t: str) -> list[str]:
        """The tensors a quantized edge ``t`` is traced back to (through movers and Concats)."""
        if not placement.at_producers:
            return [t]
        p = g.producer.get(t)
        if p is None or p.name in skip:
            return [t]
        if p.op_type in MOVERS:
            return sources(p.input[0])
        if p.op_type == "Concat":
            out = [s for i in p.input for s in sources(i)]
            for s in out:  # one scale for every input of the Concat
                groups.union(s, out[0])
            return out
        return [t]

    for t in edges:
        for s in sources(t):
            groups.find(s)
    return convs, groups


def _scale(lo: float, hi: float) -> np.float32:
    amax = max(abs(float(lo)), abs(float(hi)))
    return np.float32(amax / QMAX if amax > 0 else 1.0 / QMAX)


def write_tensorrt_form(model, ranges: Mapping[str, tuple[float, float]], keep_float: Sequence[str] = (),
                        placement: TrtPlacement = TrtPlacement()) -> TrtQdq:
    """Insert the TensorRT form's Q/DQ into ``model`` (edited in place) from calibrated ``ranges``.

    Raises:
        KeyError: a tensor to quantize has no range (the calibration pass must cover every tensor).
    """
    from onnx import helper, numpy_helper

    convs, groups = plan_tensors(model, placement, keep_float)
    skip = set(keep_float)
    members = groups.groups()
    scale_of: dict[str, np.float32] = {}
    for root, ts in members.items():
        missing = [t for t in ts if t not in ranges]
        if missing:
            raise KeyError(f"no calibrated range for {missing[0]}")
        s = _scale(min(ranges[t][0] for t in ts), max(ranges[t][1] for t in ts))
        scale_of.update(dict.fromkeys(ts, s))

    inits = {i.name: i for i in model.graph.initializer}
    new_inits, rename = [], {}
    pre: dict[str, list] = {}  # tensor -> the Q/DQ nodes that follow its producer
    zero = "qdq_zero_point_int8"
    new_inits.append(numpy_helper.from_array(np.zeros((), np.int8), zero))
    for t, s in sorted(scale_of.items()):
        base = t.replace("/", "_").strip("_")
        sname, q, dq = f"{base}_qscale", f"{t}_q", f"{t}_dq"
        new_inits.append(numpy_helper.from_array(np.array(s, np.float32), sname))
        pre[t] = [helper.make_node("QuantizeLinear", [t, sname, zero], [q], name=f"{base}_Q"),
                  helper.make_node("DequantizeLinear", [q, sname, zero], [dq], name=f"{base}_DQ")]
        rename[t] = dq
    for n in convs:  # per-output-channel int8 weights
        w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
        amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
        ws = np.where(amax > 0, amax / QMAX, 1.0).astype(np.float32)
        wq = np.clip(np.round(w / ws.reshape(-1, *([1] * (w.ndim - 1)))), -QMAX, QMAX).astype(np.int8)
        base = n.input[1]
        new_inits += [numpy_helper.from_array(wq, f"{base}_int8"), numpy_helper.from_array(ws, f"{base}_wscale"),
                      numpy_helper.from_array(np.zeros(len(ws), np.int8), f"{base}_wzero")]
        dqw = helper.make_node("DequantizeLinear", [f"{base}_int8", f"{base}_wscale", f"{base}_wzero"],
                               [f"{base}_dq"], name=f"{base}_DQ", axis=0)
        pre.setdefault(f"@{n.name}", []).append(dqw)
        n.input[1] = f"{base}_dq"
    nodes = []
    for t in (i.name for i in model.graph.input):
        nodes += pre.get(t, [])
    for n in model.graph.node:
        if n.name not in skip:
            for k, i in enumerate(n.input):
                if i in rename:
                    n.input[k] = rename[i]
        nodes += pre.get(f"@{n.name}", [])
        nodes.append(n)
        for o in n.output:
            nodes += pre.get(o, [])
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(new_inits)
    unused = {n.input[1].removesuffix("_dq") for n in convs}
    keep = [i for i in model.graph.initializer if i.name not in unused or i.name in
            {x for nd in model.graph.node for x in nd.input}]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    shared = sum(1 for ts in members.values() if len(ts) > 1)
    return TrtQdq(len(convs), len(scale_of), shared)
