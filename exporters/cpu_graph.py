"""Rewrites of the INT8 CPU form's Q/DQ graph for ONNX Runtime's CPU provider.

ONNX Runtime runs the quantized graph channels-last (NHWC) between its int8 convolutions. Two spots of
the YOLO graph cost more there than they need to; both rewrites keep the numbers:

* :func:`upsample_as_gather`: a nearest ``Resize`` by whole factors (YOLO's ``Upsample(2)``) between a
  DequantizeLinear and a QuantizeLinear of the same scale becomes two ``Gather`` s of uint8 rows and
  pixels in NHWC (its Transposes cancel against ONNX Runtime's own). ONNX Runtime's channels-last uint8
  Resize copies element by element (about 0.2 ms for the demo's two upsamples at 320); the Gathers copy
  whole rows and pixels (about 0.03 ms) and give bit-identical outputs.
* :func:`bgrx_uint8_input`: the image input becomes ``(B, H, W, 4)`` uint8, the frame as OpenCV holds
  it (:attr:`engine.metadata.PixelFormat.NHWC_BGRX_UINT8`). Its DequantizeLinear (scale 1/255, zero
  point 0) is exactly the float model's ``/255``; the BGR→RGB swap and a fourth, zero-weight channel
  are folded into the stem convolution's weights, which are then quantized per channel like every
  other layer's. The runtime's preprocessing shrinks to a resize (0.08 ms instead of 0.2-0.5 ms for
  the float planes), and the stem runs as one int8 convolution whose depth (4 channels x 3 x 3) fits
  the int8 dot-product kernels; 3 channels took 1.7x longer on the Xeon of benchmarks/RESULTS.md.

Both are pure functions of a loaded ``onnx.ModelProto`` that edit it in place and say what they did.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BGRX_CHANNELS = 4
_INPUT_SCALE = np.float32(1.0 / 255.0)


@dataclass(frozen=True)
class CpuRewrites:
    """What :func:`rewrite_cpu_form` changed."""

    upsamples: int  # nearest Resizes turned into Gathers
    uint8_input: bool  # the input is NHWC uint8 BGRx
    stem_quantized: tuple[str, ...]  # stem convolutions given int8 weights

    def summary(self) -> str:
        parts = [f"{self.upsamples} upsample(s) as NHWC Gathers"] if self.upsamples else []
        if self.uint8_input:
            parts.append("uint8 BGRx input" + (f", int8 stem ({len(self.stem_quantized)} conv)" if self.stem_quantized else ""))
        return ", ".join(parts) or "none"


def _helpers():
    from onnx import TensorProto, helper, numpy_helper

    return TensorProto, helper, numpy_helper


def _index(model) -> tuple[dict, dict, dict]:
    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return inits, producer, consumers


def _attr(node, name: str, default=None):
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


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
    inits, producer, consumers = _index(model)
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
        same = all(value(a) is not None and value(b) is not None and np.array_equal(value(a), value(b))
                   for a, b in zip(dq.input[1:3], q.input[1:3]))
        if not same or len(dq.input) < 3 or len(q.input) < 3:
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
    still_read = {i for nd in nodes for i in nd.input}
    nodes = [nd for nd in nodes if not (nd.op_type == "DequantizeLinear" and nd.output[0] not in still_read
                                        and nd.output[0] not in {o.name for o in model.graph.output})]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    _drop_unused_initializers(model)
    return len(plans)


def _drop_unused_initializers(model) -> None:
    used = {i for n in model.graph.node for i in n.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def _quantize_weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel symmetric int8 (range ±127), as the rest of the CPU form's weights."""
    amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.round(w / scale.reshape(-1, 1, 1, 1)), -127, 127).astype(np.int8)
    return q, scale


def bgrx_uint8_input(model, quantize_stem: bool = True) -> tuple[str, ...] | None:
    """Make the image input ``(B, H, W, 4)`` uint8 BGRx; return the stem convs given int8 weights.

    Returns ``None`` (graph unchanged) unless the graph has one float input of shape ``(B, 3, H, W)``
    read only by convolutions with constant weights (YOLO's stem). With ``quantize_stem`` those
    convolutions get per-channel int8 weights and an int32 bias (scale ``1/255 x`` the weight scale),
    so ONNX Runtime fuses each into one QLinearConv on the uint8 pixels; otherwise they stay float on
    the exact ``/255`` of the input.
    """
    tensor_proto, helper, numpy_helper = _helpers()
    inits, _, consumers = _index(model)
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        return None
    inp = inputs[0]
    tt = inp.type.tensor_type
    dims = tt.shape.dim
    if tt.elem_type != tensor_proto.FLOAT or len(dims) != 4 or dims[1].dim_value != 3:
        return None
    readers = consumers.get(inp.name, [])
    if not readers or any(n.op_type != "Conv" or len(n.input) < 2 or n.input[1] not in inits
                          or n.input[0] != inp.name or _attr(n, "group", 1) != 1 for n in readers):
        return None
    name, pixels, nchw = inp.name, f"{inp.name}_bgrx_nchw", f"{inp.name}_float_bgrx"
    new_inits = [numpy_helper.from_array(np.array(_INPUT_SCALE), f"{name}_scale"),
                 numpy_helper.from_array(np.array(0, np.uint8), f"{name}_zero_point")]
    pre = [helper.make_node("Transpose", [name], [pixels], name=f"{name}_to_nchw", perm=[0, 3, 1, 2]),
           helper.make_node("DequantizeLinear", [pixels, f"{name}_scale", f"{name}_zero_point"], [nchw],
                            name=f"{name}_dequantize")]
    quantized = []
    for conv in readers:
        w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float32)
        w = np.concatenate([w[:, ::-1], np.zeros_like(w[:, :1])], axis=1)  # RGB -> BGR, then the 4th channel
        base = conv.name or conv.output[0]
        conv.input[0] = nchw
        if not quantize_stem:
            new_inits.append(numpy_helper.from_array(w, f"{base}_weight_bgrx"))
            conv.input[1] = f"{base}_weight_bgrx"
            continue
        wq, ws = _quantize_weights(w)
        new_inits += [numpy_helper.from_array(wq, f"{base}_weight_bgrx_quantized"),
                      numpy_helper.from_array(ws, f"{base}_weight_bgrx_scale"),
                      numpy_helper.from_array(np.zeros(len(ws), np.int8), f"{base}_weight_bgrx_zero_point")]
        pre.append(helper.make_node("DequantizeLinear", [f"{base}_weight_bgrx_quantized", f"{base}_weight_bgrx_scale",
                                                         f"{base}_weight_bgrx_zero_point"], [f"{base}_weight_bgrx"],
                                    name=f"{base}_weight_dequantize", axis=0))
        conv.input[1] = f"{base}_weight_bgrx"
        if len(conv.input) > 2 and conv.input[2]:
            b = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float32)
            bs = (_INPUT_SCALE * ws).astype(np.float32)
            new_inits += [numpy_helper.from_array(np.round(b / bs).astype(np.int32), f"{base}_bias_quantized"),
                          numpy_helper.from_array(bs, f"{base}_bias_scale"),
                          numpy_helper.from_array(np.zeros(len(bs), np.int32), f"{base}_bias_zero_point")]
            pre.append(helper.make_node("DequantizeLinear", [f"{base}_bias_quantized", f"{base}_bias_scale",
                                                             f"{base}_bias_zero_point"], [f"{base}_bias"],
                                        name=f"{base}_bias_dequantize", axis=0))
            conv.input[2] = f"{base}_bias"
        quantized.append(conv.name)
    batch = dims[0]
    h, w_ = dims[2], dims[3]
    new_input = helper.make_tensor_value_info(name, tensor_proto.UINT8, [
        batch.dim_value if batch.HasField("dim_value") else (batch.dim_param or None),
        h.dim_value if h.HasField("dim_value") else (h.dim_param or None),
        w_.dim_value if w_.HasField("dim_value") else (w_.dim_param or None), BGRX_CHANNELS])
    nodes = pre + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(new_inits)
    model.graph.input.remove(inp)
    model.graph.input.insert(0, new_input)
    _drop_unused_initializers(model)
    return tuple(quantized)


def rewrite_cpu_form(model, float_nodes=()) -> CpuRewrites:
    """Apply both rewrites to a CPU-form graph; stem convolutions named in ``float_nodes`` stay float."""
    upsamples = upsample_as_gather(model)
    inits = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in inits]
    stems = [n.name for n in model.graph.node if n.input and n.input[0] in inputs]
    stem = bgrx_uint8_input(model, quantize_stem=not any(s in set(float_nodes) for s in stems))
    return CpuRewrites(upsamples, stem is not None, stem or ())
