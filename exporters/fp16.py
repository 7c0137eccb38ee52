"""``<stem>.fp16.onnx``: the whole graph in FP16, its input and output kept FP32.

Strongly typed TensorRT (11, and TensorRT-RTX) ignores builder precision flags and builds each layer
in its ONNX type, so FP16 has to be in the graph. The conversion is ONNX Runtime's own float16 tool
(``onnxruntime.transformers.float16``: no extra dependency); ``keep_io_types`` leaves casts at the
two ends so callers still feed and read float32.

The check judges what a user sees (:mod:`exporters.agreement`): the FP16 graph's detections after NMS
at the runtime's thresholds against the FP32 graph's, and with ``--data`` its mAP50-95 against
FP32's on the val split. The bars and why:

* detections: at least 98 % matched (same class, IoU >= 0.85), score differences <= 0.05. FP16 rounds
  each operation to 11 significant bits (relative 5e-4); over the ~90 convolutions of a YOLO11n the
  measured score differences were <= 0.0018 and the smallest matched IoU 0.985 (the demo at 320 and
  640, and the same model with its box logits scaled x3, whose raw outputs differ by 4.8 px on a
  low-score anchor). The bars leave a margin of 25x on scores; a real fault (a wrong scale, a
  broken op) moves boxes or scores far past them.
* mAP: at most :data:`MAX_MAP_DROP` points, on the same images as FP32 (a paired comparison, so the
  sampling noise of the val set cancels; measured on the demo: +0.02 at 320, +0.05 at 640).

The raw-output comparison this replaces (largest difference over every anchor, 0.5 % of the input
side) failed good models on anchors that NMS throws away. Keeping the decode tail (DFL, box decode,
the final concat) in FP32 was measured and does not help: on that x3 model the largest raw
difference went from 4.84 to 4.34 px, and it comes from the FP16 backbone, not the tail; so the
graph stays FP16 throughout (TensorRT's fastest form).
"""
from __future__ import annotations

from engine.errors import ExportError

MAX_MAP_DROP = 0.3  # points of mAP50-95 an FP16 graph may lose against FP32 on the same val images


def convert_fp16(model):
    """An FP16 copy of ``model`` (an ONNX ``ModelProto``) with FP32 input and output, nodes in
    topological order (the converter appends its casts at the end, which ``onnx.checker`` refuses)."""
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as e:
        raise ExportError(f"the FP16 conversion needs onnxruntime's float16 tool ({e})",
                          "pip install -U onnxruntime packaging") from None
    try:
        m16 = convert_float_to_float16(model, keep_io_types=True)
    except Exception as e:  # shape inference or an operator the tool cannot type
        raise ExportError(f"FP16 conversion failed ({type(e).__name__}: {e})",
                          "rerun with --debug, or pass --no-fp16 to skip the FP16 graph") from e
    topological_sort(m16.graph)
    return m16


def topological_sort(graph) -> None:
    """Reorder ``graph.node`` in place so every node comes after the producers of its inputs."""
    produced_by = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    nodes = list(graph.node)
    order: list[int] = []
    done = [False] * len(nodes)
    for start in range(len(nodes)):
        stack = [start]
        while stack:
            i = stack[-1]
            if done[i]:
                stack.pop()
                continue
            pending = [produced_by[t] for t in nodes[i].input
                       if t not in ready and t in produced_by and not done[produced_by[t]] and produced_by[t] != i]
            if pending:
                stack.extend(pending)
                continue
            done[i] = True
            order.append(i)
            stack.pop()
    del graph.node[:]
    graph.node.extend(nodes[i] for i in order)
