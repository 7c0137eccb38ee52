"""Which INT8 layers hurt most: the ranking the gate's fallback keeps float, and how stable it is.

A layer's score is the noise-to-signal ratio of its output against the FP32 graph minus the worst one of
its activation inputs, each on a typical image (:func:`typical_nsr`): the error it adds by rounding its
inputs and weights, as amplified by the layer. Both graphs run unoptimized (Q/DQ executed as written, so
the INT8 graph is the exact fake-quant simulation) on up to :data:`RANK_IMAGES` calibration images (never
the gate's own images). :func:`rank_layers` also ranks each half of the images on its own
(:class:`Stability`): how many of the top :data:`TOP` layers the halves share, and how much of the error
that one half's own top layers carry the other half's picks carry there. Layers whose scores nearly tie
swap places from one draw of images to the next, so the second figure is the one that says whether the
fallback would buy the same. Measured on two models at 320 and 640, both forms, with pairs of disjoint
draws of images (``python -m benchmarks.rank_stability``): 128 images give 0.94-1.00 of it on average
(82-98 % the same top 8 layers), 32 images 0.87-0.98 (benchmarks/RESULTS.md, 'The sensitivity ranking's
images').
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

RANK_IMAGES = 128
TOP = 8
TRIM = 0.1  # the share of images cut at each end of every tensor's ratios (typical_nsr)


@dataclass(frozen=True)
class Stability:
    """How far a ranking depends on its images: the two halves of them ranked on their own.

    Attributes:
        images: how many images the ranking ran on.
        overlap: the share of the top ``top`` layers that both halves name.
        capture: the error that one half's top layers carry on the other half, over what that half's own
            top layers carry (the mean of both ways; 1.0: the picks buy the same).
        top: how many top layers are compared (:data:`TOP`, or all when a form has fewer INT8 layers).
    """

    images: int
    overlap: float
    capture: float
    top: int = TOP

    def text(self) -> str:
        """The accuracy report's line: both figures, in words."""
        return (f"on {self.images} calibration images; the top {self.top} layers ranked on either half of them "
                f"carry {self.capture:.0%} of the error that the other half's own top {self.top} carry there "
                f"({round(self.overlap * self.top)} of {self.top} the same layers)")


Layers = dict[str, tuple[list[str], str]]  # a layer -> (its activation input tensors, its output tensor)
Run = Callable[[np.ndarray], dict[str, np.ndarray]]  # one input -> the watched tensors by name


def _rank(layers, names, err: np.ndarray, sig: np.ndarray,
          nsr: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> list[tuple[str, float]]:
    """Layers by score, most harmful first, from per-image squared errors and signals (images x tensors);
    ``nsr`` makes each tensor's ratio from them (default :func:`typical_nsr`)."""
    ratio = dict(zip(names, (nsr or typical_nsr)(err, sig)))
    scores = [(name, ratio.get(out, 0.0) - max((ratio.get(i, 0.0) for i in ins), default=0.0))
              for name, (ins, out) in layers.items()]
    return sorted(scores, key=lambda s: -s[1])


def typical_nsr(err: np.ndarray, sig: np.ndarray) -> np.ndarray:
    """Each tensor's noise-to-signal ratio on a typical image: the mean over images of each image's ratio,
    less the :data:`TRIM` highest and lowest. A ratio of sums over images let a few images decide: on the
    retrained signs model's CPU form at 640, one draw of 128 images' top layers carried 0.77 of what a second
    draw's own carried there, against 0.99 for this (benchmarks/RESULTS.md, 'The sensitivity ranking's
    images')."""
    ratio = nsr_of(err, sig)
    cut = int(TRIM * len(ratio))
    return np.sort(ratio, axis=0)[cut: len(ratio) - cut].mean(axis=0) if len(ratio) else np.zeros(ratio.shape[1:])


def nsr_of(err: np.ndarray, sig: np.ndarray) -> np.ndarray:
    """Noise-to-signal ratios, elementwise: ``err / sig``, 0 where ``sig`` is 0."""
    return np.where(sig > 0, err / np.where(sig > 0, sig, 1.0), 0.0)


def onnx_runs(fp32: Path, qdq: Path, skip: Sequence[str] = ()) -> tuple[Layers, Run, Run]:
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


def rank_layers(fp32: Path, qdq: Path, images: Iterable[np.ndarray],
                skip: Sequence[str] = ()) -> tuple[list[tuple[str, float]], Stability | None]:
    """The INT8 layers of ``qdq`` ranked by the output error each adds (most harmful first) on all ``images``,
    and the ranking's :class:`Stability` over the two halves of ``images`` (``None`` with fewer than 4).

    ``skip``: nodes the form already keeps float. A float node that reads a dequantized tensor (ONNX Runtime's
    QDQ puts a DequantizeLinear before every excluded node whose input is quantized) looks like an INT8
    layer in the graph, and keeping it float would change nothing.
    """
    return rank_runs(*onnx_runs(fp32, qdq, skip), images)


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


Rows = slice | np.ndarray  # which rows (inputs) of LayerErrors: a slice or an array of indices


@dataclass(frozen=True)
class LayerErrors:
    """Each INT8 layer's tensors, with every watched tensor's squared error and squared value per input.

    Attributes:
        layers: a layer -> (its activation input tensors, its output tensor).
        names: the watched tensors, the columns of ``err`` and ``sig``.
        err, sig: inputs x tensors: the sum of (FP32 - INT8)^2 and of FP32^2 over each tensor.
        batch: images per input (a model with a static batch above 1 takes them in batches).
    """

    layers: Layers
    names: list[str]
    err: np.ndarray
    sig: np.ndarray
    batch: int = 1

    def ranking(self, rows: Rows = slice(None), nsr: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
                ) -> list[tuple[str, float]]:
        """The layers by score on the inputs ``rows`` (all by default), most harmful first."""
        return _rank(self.layers, self.names, self.err[rows], self.sig[rows], nsr)

    def stability(self, first: Rows, second: Rows,
                  nsr: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> Stability:
        """:class:`Stability` of the rankings on two sets of inputs (rows), e.g. the two halves."""
        scores = [dict(self.ranking(rows, nsr)) for rows in (first, second)]
        k = min(TOP, len(self.layers))
        tops = [sorted(s, key=lambda name: -s[name])[:k] for s in scores]

        def carried(s: dict[str, float], picks: Sequence[str]) -> float:
            return math.fsum(max(s[p], 0.0) for p in picks)  # fsum: the same picks in another order, the same sum

        ways = []
        for mine, other in ((0, 1), (1, 0)):
            best = carried(scores[other], tops[other])
            ways.append(min(1.0, carried(scores[other], tops[mine]) / best) if best > 0 else 1.0)
        n = (len(self.err[first]) + len(self.err[second])) * self.batch
        return Stability(n, len(set(tops[0]) & set(tops[1])) / k if k else 1.0, float(np.mean(ways)), k)


def layer_errors(layers: Layers, run_ref: Run, run_q: Run, images: Iterable[np.ndarray]) -> LayerErrors:
    """Run both models on each input of ``images`` (model-ready batches, read once, one at a time: a reader
    that decodes each image as it goes will do) and keep every watched tensor's squared error and value; a
    tensor either model leaves out scores 0."""
    names = sorted({t for ins, out in layers.values() for t in (*ins, out)})
    err, sig, batch = [], [], 1
    for x in images:
        batch = len(x)
        ref, got = run_ref(x), run_q(x)
        e, s = np.zeros(len(names)), np.zeros(len(names))
        for j, t in enumerate(names):
            if t in ref and t in got:
                a, b = ref[t].astype(np.float64), _same_channels(ref[t], got[t]).astype(np.float64)
                e[j] = float(np.sum((a - b) ** 2))
                s[j] = float(np.sum(a * a))
        err.append(e)
        sig.append(s)
    shape = (len(err), len(names))
    return LayerErrors(layers, names, np.array(err).reshape(shape), np.array(sig).reshape(shape), batch)


def rank_runs(layers: Layers, run_ref: Run, run_q: Run,
              images: Iterable[np.ndarray]) -> tuple[list[tuple[str, float]], Stability | None]:
    """:func:`rank_layers` for any runtime (OpenVINO's IRs too): ``run_ref`` / ``run_q`` give the float and
    the INT8 model's tensors by name for one input (see :func:`layer_errors`)."""
    errors = layer_errors(layers, run_ref, run_q, images)
    n = len(errors.err)
    ranking = errors.ranking()
    if n < 4 or not ranking:
        return ranking, None
    return ranking, errors.stability(slice(0, n // 2), slice(n // 2, n))
