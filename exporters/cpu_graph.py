"""Rewrites of the INT8 CPU form's Q/DQ graph for ONNX Runtime's CPU provider.

ONNX Runtime runs the quantized graph channels-last (NHWC) between its int8 convolutions. Three spots of
the YOLO graph cost more there than they need to; the rewrites keep the numbers:

* :func:`upsample_as_gather`: a nearest ``Resize`` by whole factors (YOLO's ``Upsample(2)``) between a
  DequantizeLinear and a QuantizeLinear of the same scale becomes two ``Gather`` s of uint8 rows and
  pixels in NHWC (its Transposes cancel against ONNX Runtime's own). ONNX Runtime's channels-last uint8
  Resize copies element by element (0.24 ms for the demo's two upsamples at 320, in its profiler); the
  Gathers copy whole rows and pixels (0.04 ms) and give bit-identical outputs.
* :func:`bgr_uint8_input`: the image input becomes ``(B, H, W, 3)`` uint8, the letterboxed frame as
  OpenCV holds it (:attr:`engine.metadata.PixelFormat.NHWC_BGR_UINT8`). In the graph a Transpose and a
  Gather of the planes (B, G, R → R, G, B) feed a DequantizeLinear of scale ``float32(1/255)``, the
  product the float letterbox computes, so every later tensor is bit for bit what the float input gave.
  The DequantizeLinear is per channel (three equal scales): ONNX Runtime would fuse a per-tensor one
  with the float stem into an int8 convolution on 3 channels, slower and not the same numbers. The
  runtime's preprocessing shrinks to a resize into the input (0.25 ms against 0.47 ms for the float
  planes on the demo's frames). An int8 stem on a 4-channel BGRx input was faster still but cost
  accuracy (benchmarks/RESULTS.md): the stem stays float.
* :func:`widen_narrow_convs`: an int8 convolution with fewer than 16 output channels (YOLO11's first
  bottleneck has 8) gets zero filters up to 16, and the convolutions that read it through its SiLU get
  zero weights for the new channels. ONNX Runtime's U8S8 convolution runs 8 output channels 2.3-2.6x
  slower than 16 (0.42-0.46 against 0.18 ms for YOLO11n's ``model.2.m.0.cv1`` at 640, two profiles);
  the readers weight the extra channels by zero, so the outputs are bit-identical.

All are pure functions of a loaded ``onnx.ModelProto`` that edit it in place and say what they did.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .onnx_graph import attr as _attr
from .onnx_graph import drop_unused_initializers, graph_index

_INPUT_SCALE = np.float32(1.0 / 255.0)
WIDE_CHANNELS = 16  # ONNX Runtime's U8S8 convolution kernels work on 16 output channels at a time
# between a narrow convolution and its readers: ops that act on each channel alone (scalar parameters)
_CHANNELWISE = frozenset({"QuantizeLinear", "DequantizeLinear", "Sigmoid", "Mul", "Relu", "LeakyRelu",
                          "HardSigmoid", "HardSwish", "Clip", "Tanh"})


@dataclass(frozen=True)
class CpuRewrites:
    """What :func:`rewrite_cpu_form` changed."""

    upsamples: int  # nearest Resizes turned into Gathers
    uint8_input: bool  # the input is NHWC uint8 BGR
    widened: int = 0  # narrow int8 convolutions given zero filters up to WIDE_CHANNELS


def _helpers():
    from onnx import TensorProto, helper, numpy_helper

    return TensorProto, helper, numpy_helper


def _as_text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _static_hw(model) -> dict[str, tuple[int, int]]:
    """Height and width of every 4-D tensor whose last two dims shape inference knows."""
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(model)
    out = {}
    for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output):
        dims = v.type.tensor_type.shape.dim
        if len(dims) == 4 and all(d.HasField("dim_value") for d in dims[2:]):
            out[v.name] = (int(dims[2].dim_value), int(dims[3].dim_value))
    return out


def upsample_as_gather(model) -> int:
    """Turn quantized nearest Resizes by whole factors into NHWC row and pixel Gathers; return how many.

    Matched: ``DequantizeLinear(x) → Resize(mode=nearest, coordinate_transformation_mode=asymmetric,
    nearest_mode=floor, scales=[1, 1, fh, fw] whole) → QuantizeLinear`` with one scale and zero point on
    both sides (what a Resize in the CPU form gets) and a static height and width. The pair becomes
    ``Transpose(NHWC) → Gather(rows) → Gather(pixels) → Transpose(NCHW)`` on the uint8 tensor; output
    ``i`` along an axis reads input ``i // f``, which is Resize's ``floor(i / f)``.
    """
    _, helper, numpy_helper = _helpers()
    g = graph_index(model)
    inits, producer, consumers = g.inits, g.producer, g.consumers
    value = lambda name: numpy_helper.to_array(inits[name]) if name in inits else None  # noqa: E731
    plans, shapes = [], None
    for n in model.graph.node:
        if n.op_type != "Resize" or len(n.input) < 3 or _as_text(_attr(n, "mode", b"nearest")) != "nearest":
            continue
        if (_as_text(_attr(n, "coordinate_transformation_mode", b"half_pixel")) != "asymmetric"
                or _as_text(_attr(n, "nearest_mode", b"round_prefer_floor")) != "floor"):
            continue
        scales = value(n.input[2])
        if scales is None or scales.shape != (4,) or list(scales[:2]) != [1, 1]:
            continue
        fh, fw = (float(f) for f in scales[2:])
        if not (fh.is_integer() and fw.is_integer() and fh >= 1 and fw >= 1):
            continue
        dq, outs = producer.get(n.input[0]), consumers.get(n.output[0], [])
        if dq is None or dq.op_type != "DequantizeLinear" or len(outs) != 1 or outs[0].op_type != "QuantizeLinear":
            continue
        q = outs[0]
        if len(dq.input) < 3 or len(q.input) < 3 or not all(
                value(a) is not None and value(b) is not None and np.array_equal(value(a), value(b))
                for a, b in zip(dq.input[1:3], q.input[1:3])):
            continue
        shapes = _static_hw(model) if shapes is None else shapes
        hw = shapes.get(n.input[0])
        if hw is not None:
            plans.append((n, dq, q, hw, (int(fh), int(fw))))
    if not plans:
        return 0
    replaced = {id(q): (n, dq, hw, f) for n, dq, q, hw, f in plans}
    dropped = {id(n) for n, *_ in plans}
    nodes = []
    for node in model.graph.node:
        if id(node) in dropped:
            continue
        if id(node) not in replaced:
            nodes.append(node)
            continue
        resize, dq, (h, w), (fh, fw) = replaced[id(node)]
        base = resize.name or resize.output[0]
        rows, cols = f"{base}_gather_rows", f"{base}_gather_pixels"
        model.graph.initializer.extend([
            numpy_helper.from_array(np.arange(h * fh, dtype=np.int64) // fh, rows),
            numpy_helper.from_array(np.arange(w * fw, dtype=np.int64) // fw, cols)])
        nodes += [
            helper.make_node("Transpose", [dq.input[0]], [f"{base}_nhwc"], name=f"{base}_to_nhwc", perm=[0, 2, 3, 1]),
            helper.make_node("Gather", [f"{base}_nhwc", rows], [f"{base}_rows"], name=f"{base}_rows", axis=1),
            helper.make_node("Gather", [f"{base}_rows", cols], [f"{base}_pixels"], name=f"{base}_pixels", axis=2),
            helper.make_node("Transpose", [f"{base}_pixels"], [node.output[0]], name=f"{base}_to_nchw", perm=[0, 3, 1, 2]),
        ]
    # the Resize's DequantizeLinear goes if nothing else reads it
    still_read = {i for nd in nodes for i in nd.input} | {o.name for o in model.graph.output}
    nodes = [nd for nd in nodes if not (nd.op_type == "DequantizeLinear" and nd.output[0] not in still_read)]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    drop_unused_initializers(model)
    return len(plans)


def bgr_uint8_input(model) -> bool:
    """Make the image input ``(B, H, W, 3)`` uint8 BGR; return whether the graph was changed.

    Only a graph with one float input of shape ``(B, 3, H, W)`` is changed. The input keeps its name;
    its readers get ``DequantizeLinear(Gather(Transpose(pixels), [2, 1, 0]), 1/255, 0)``, the same float
    planes the float letterbox writes.
    """
    tensor_proto, helper, numpy_helper = _helpers()
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        return False
    inp = inputs[0]
    tt = inp.type.tensor_type
    dims = tt.shape.dim
    if tt.elem_type != tensor_proto.FLOAT or len(dims) != 4 or dims[1].dim_value != 3:
        return False
    name = inp.name
    planes, rgb = f"{name}_bgr_planes", f"{name}_rgb_planes"
    floats = f"{name}_float"
    for n in model.graph.node:
        for k, i in enumerate(n.input):
            if i == name:
                n.input[k] = floats
    # a per-channel DequantizeLinear (three equal scales): ONNX Runtime fuses a per-tensor one with the
    # float stem into an int8 convolution, which is slower and not the same numbers
    model.graph.initializer.extend([numpy_helper.from_array(np.array([2, 1, 0], np.int64), f"{name}_rgb_order"),
                                    numpy_helper.from_array(np.full(3, _INPUT_SCALE), f"{name}_scale"),
                                    numpy_helper.from_array(np.zeros(3, np.uint8), f"{name}_zero_point")])
    pre = [helper.make_node("Transpose", [name], [planes], name=f"{name}_to_planes", perm=[0, 3, 1, 2]),
           helper.make_node("Gather", [planes, f"{name}_rgb_order"], [rgb], name=f"{name}_bgr_to_rgb", axis=1),
           helper.make_node("DequantizeLinear", [rgb, f"{name}_scale", f"{name}_zero_point"], [floats],
                            name=f"{name}_div255", axis=1)]
    nodes = pre + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    dim = lambda d: d.dim_value if d.HasField("dim_value") else (d.dim_param or None)  # noqa: E731
    new_input = helper.make_tensor_value_info(name, tensor_proto.UINT8, [dim(dims[0]), dim(dims[2]), dim(dims[3]), 3])
    model.graph.input.remove(inp)
    model.graph.input.insert(0, new_input)
    return True


def _sole_dequantize(g, tensor: str):
    """The DequantizeLinear that makes ``tensor`` when one node reads it and it reads initializers that
    nothing else reads (so they can be rewritten for that node alone), else None."""
    dq = g.producer.get(tensor)
    if dq is None or dq.op_type != "DequantizeLinear" or len(g.consumers.get(tensor, [])) != 1:
        return None
    if any(i not in g.inits or len(g.consumers.get(i, [])) != 1 for i in dq.input if i):
        return None
    return dq


def _int8_weight(g, node):
    """``(initializer, its DequantizeLinear)`` of ``node``'s int8 weight when only ``node`` reads it, else None."""
    dq = _sole_dequantize(g, node.input[1]) if len(node.input) > 1 else None
    w = g.inits[dq.input[0]] if dq is not None else None
    if w is None or w.data_type != _helpers()[0].INT8 or len(w.dims) != 4:
        return None
    if len(dq.input) > 2 and dq.input[2] and _helpers()[2].to_array(g.inits[dq.input[2]]).any():
        return None  # a zero weight is the int8 0 only where the zero point is 0 (symmetric weights)
    return w, dq


def _per_tensor_or_axis0(g, dq) -> bool:
    """Whether a weight's DequantizeLinear is per tensor or per output channel (axis 0)."""
    return _scalar(g, dq.input[1]) or _attr(dq, "axis", 1) == 0


def _scalar(g, name: str) -> bool:
    return name in g.inits and int(np.prod(g.inits[name].dims)) == 1


def _channelwise_readers(g, start: str, outputs: set[str]):
    """``(ops, convolutions)``: what reads ``start`` through channel-wise ops only; None when anything else does."""
    region, convs, todo, seen = [], [], [start], {start}
    while todo:
        t = todo.pop()
        if t in outputs:
            return None
        for n in g.consumers.get(t, []):
            if n.op_type == "Conv" and n.input[0] == t and t not in n.input[1:] and _attr(n, "group", 1) == 1:
                convs += [] if n in convs else [n]
            elif n.op_type in _CHANNELWISE:
                if n not in region:
                    region.append(n)
                    todo += [o for o in n.output if o not in seen]
                    seen.update(n.output)
            else:
                return None
    # every input of those ops is one of these tensors or a scalar parameter (x * sigmoid(x), Q/DQ)
    if not convs or any(i and i not in seen and not _scalar(g, i) for n in region for i in n.input):
        return None
    return region, convs


def widen_narrow_convs(model, channels: int = WIDE_CHANNELS) -> int:
    """Give int8 convolutions with fewer than ``channels`` outputs zero filters up to ``channels``; return how many.

    Matched: a ``Conv`` (group 1) whose weight is a DequantizeLinear of an int8 initializer it alone reads,
    whose output reaches nothing but other such convolutions' data inputs through channel-wise ops with
    scalar parameters (its Quantize/Dequantize pairs and SiLU), never a graph output. The new filters
    are zero with a zero bias (their scales copy the first channel's, as ONNX Runtime's fusion into an
    int8 convolution expects); the readers get zero weights for the new input channels, so whatever those
    channels hold after the SiLU adds nothing, and every output stays bit for bit what it was. Weights with
    a non-zero zero point are left alone (their int8 0 is not 0.0).
    """
    _, _, numpy_helper = _helpers()
    g = graph_index(model)
    outputs = {o.name for o in model.graph.output}
    value = lambda name: numpy_helper.to_array(g.inits[name])  # noqa: E731

    def put(name: str, array) -> None:
        g.inits[name].CopyFrom(numpy_helper.from_array(array, name))

    def pad(array, n: int, axis: int, fill):
        shape = list(array.shape)
        shape[axis] = n
        return np.concatenate([array, np.full(shape, fill, array.dtype)], axis=axis)

    widened = 0
    for conv in list(model.graph.node):
        if conv.op_type != "Conv" or _attr(conv, "group", 1) != 1:
            continue
        own = _int8_weight(g, conv)
        if own is None or not 2 <= own[0].dims[0] < channels or not _per_tensor_or_axis0(g, own[1]):
            continue
        readers = _channelwise_readers(g, conv.output[0], outputs)
        if readers is None:
            continue
        region, convs = readers
        theirs = [_int8_weight(g, c) for c in convs]
        if any(t is None or not _per_tensor_or_axis0(g, t[1]) for t in theirs):
            continue
        bias = None  # the names of its bias and, when dequantized, that bias's scale and zero point
        if len(conv.input) > 2 and conv.input[2]:
            if (bdq := _sole_dequantize(g, conv.input[2])) is not None:
                bias = list(bdq.input)
            elif conv.input[2] in g.inits and len(g.consumers[conv.input[2]]) == 1:
                bias = [conv.input[2]]
            else:
                continue
        (w, wdq) = own
        c = w.dims[0]
        n = channels - c
        put(w.name, pad(value(w.name), n, 0, 0))
        # per-channel parameters grow (scales copy the first channel's, the rest are zeros); per-tensor stay
        for k, p in [*enumerate(wdq.input[1:], 1), *enumerate(bias or [])]:
            a = value(p)
            if a.ndim == 1 and a.shape[0] == c:
                put(p, pad(a, n, 0, a[0] if k == 1 else 0))
        for rw, _ in theirs:
            put(rw.name, pad(value(rw.name), n, 1, 0))
        stale = {conv.output[0], wdq.output[0], *(bias and [conv.input[2]] or []),
                 *(t[1].output[0] for t in theirs)} | {o for r in region for o in r.output}
        kept = [v for v in model.graph.value_info if v.name not in stale]  # their channel count changed
        del model.graph.value_info[:]
        model.graph.value_info.extend(kept)
        widened += 1
    return widened + (widen_narrow_convs(model, channels) if widened else 0)  # a reader may be narrow too


def rewrite_cpu_form(model) -> CpuRewrites:
    """Apply the three rewrites to a CPU-form graph (in place)."""
    upsamples = upsample_as_gather(model)
    widened = widen_narrow_convs(model)
    return CpuRewrites(upsamples, bgr_uint8_input(model), widened)
