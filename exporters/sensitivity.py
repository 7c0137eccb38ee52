"""Which INT8 layers hurt most: the ranking the gate's fallback keeps float, and how stable it is.

A layer's score is the noise-to-signal ratio of its output against the FP32 graph minus the worst one of
its activation inputs: the error it adds by rounding its inputs and weights, as amplified by the layer.
Both graphs run unoptimized (Q/DQ executed as written, so the INT8 graph is the exact fake-quant
simulation) on :data:`RANK_IMAGES` calibration images (never the gate's own images). :func:`rank_layers`
also ranks each half of the images on its own and reports how many of the top :data:`TOP` layers the
halves share: a ranking that changes with the images would keep arbitrary layers float.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

RANK_IMAGES = 32
TOP = 8


Layers = dict[str, tuple[list[str], str]]  # a layer -> (its activation input tensors, its output tensor)
Run = Callable[[np.ndarray], dict[str, np.ndarray]]  # one input -> the watched tensors by name


def _rank(layers, names, err: np.ndarray, sig: np.ndarray) -> list[tuple[str, float]]:
    nsr = dict(zip(names, np.where(sig > 0, err / np.where(sig > 0, sig, 1), 0.0)))
    scores = [(name, nsr.get(out, 0.0) - max((nsr.get(i, 0.0) for i in ins), default=0.0))
              for name, (ins, out) in layers.items()]
    return sorted(scores, key=lambda s: -s[1])


def _onnx_runs(fp32: Path, qdq: Path, skip: Sequence[str] = ()) -> tuple[Layers, Run, Run]:
    """The Q/DQ graph's INT8 layers (but ``skip``), and runners of both graphs that expose their tensors."""
    import onnx
    import onnxruntime as ort

    from engine.preprocess import bgr_from_planes

    from .onnx_graph import graph_index
    from .quantize import quantized_nodes

    q = onnx.load(str(qdq))
    f = onnx.load(str(fp32))
    f_tensors = {o for n in f.graph.node for o in n.output} | {i.name for i in f.graph.input}
    producer = graph_index(q).producer
    by_name = {n.name: n for n in q.graph.node}
    layers: Layers = {}
    skipped = set(skip)
    for name in quantized_nodes(q):
        if name in skipped:
            continue
        node = by_name[name]
        ins = []
        for i in node.input:  # DQ <- Q <- the float tensor both graphs share
            dq = producer.get(i)
            qn = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            src = qn.input[0] if qn is not None and qn.op_type == "QuantizeLinear" else i
            if src in f_tensors:
                ins.append(src)
        if node.output[0] in f_tensors:
            layers[name] = (ins, node.output[0])
    watch = sorted({t for ins, out in layers.values() for t in (*ins, out)})
    sessions = [_exposing_session(ort, onnx, m, watch) for m in (f, q)]
    inp = sessions[0].get_inputs()[0].name
    q_in = sessions[1].get_inputs()[0]
    as_q_input = bgr_from_planes if q_in.type == "tensor(uint8)" else (lambda x: x)  # the CPU form takes BGR pixels
    names = [t for t in watch if t != inp]  # the input itself carries no error
    return (layers, lambda x: dict(zip(names, sessions[0].run(names, {inp: x}))),
            lambda x: dict(zip(names, sessions[1].run(names, {q_in.name: as_q_input(x)}))))


def _exposing_session(ort, onnx, model, tensors: Sequence[str]):
    """An unoptimized CPU session of ``model`` that also outputs ``tensors``."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output} | {i.name for i in m.graph.input}
    for t in tensors:
        if t not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def rank_layers(fp32: Path, qdq: Path, images: Sequence[np.ndarray],
                skip: Sequence[str] = ()) -> tuple[list[tuple[str, float]], float | None]:
    """The INT8 layers of ``qdq`` ranked by the output error each adds (most harmful first) on all ``images``,
    and the share of its top :data:`TOP` layers that the rankings of the two halves of ``images`` have in
    common (``None`` with fewer than 4 images).

    ``skip``: nodes the form already keeps float. A float node that reads a dequantized tensor (ONNX Runtime's
    QDQ puts a DequantizeLinear before every excluded node whose input is quantized) looks like an INT8
    layer in the graph, and keeping it float would change nothing.
    """
    return rank_runs(*_onnx_runs(fp32, qdq, skip), images)


def _same_channels(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """``got`` cut to ``ref``'s channels where it has more: the CPU form's widened convolutions
    (:func:`exporters.cpu_graph.widen_narrow_convs`) add channels after the model's own, each one constant
    (a zero filter through the SiLU) and weighted by zero. Any other difference is left for the caller to
    fail on."""
    if got.shape != ref.shape and got.ndim == ref.ndim >= 2 and got.shape[1] > ref.shape[1] \
            and got.shape[:1] + got.shape[2:] == ref.shape[:1] + ref.shape[2:]:
        tail = got[:, ref.shape[1]:]
        if tail.size and np.all(tail == tail.flat[0]):
            return got[:, : ref.shape[1]]
    return got


def rank_runs(layers: Layers, run_ref: Run, run_q: Run,
              images: Sequence[np.ndarray]) -> tuple[list[tuple[str, float]], float | None]:
    """:func:`rank_layers` for any runtime (OpenVINO's IRs too): ``run_ref`` / ``run_q`` give the float and
    the INT8 model's tensors by name for one input; a tensor either leaves out scores 0."""
    names = sorted({t for ins, out in layers.values() for t in (*ins, out)})
    err = np.zeros((len(images), len(names)))
    sig = np.zeros((len(images), len(names)))
    for k, x in enumerate(images):
        ref, got = run_ref(x), run_q(x)
        for j, t in enumerate(names):
            if t in ref and t in got:
                a, b = ref[t].astype(np.float64), _same_channels(ref[t], got[t]).astype(np.float64)
                err[k, j] = float(np.sum((a - b) ** 2))
                sig[k, j] = float(np.sum(a * a))
    ranking = _rank(layers, names, err.sum(0), sig.sum(0))
    if len(images) < 4:
        return ranking, None
    half = len(images) // 2
    tops = [{n for n, _ in _rank(layers, names, e.sum(0), g.sum(0))[:TOP]}
            for e, g in ((err[:half], sig[:half]), (err[half:], sig[half:]))]
    k = min(TOP, len(ranking))
    return ranking, (len(tops[0] & tops[1]) / k if k else None)
