"""Append a fixed-size detection tail to a raw YOLO detect graph (``(B, 4 + nc, A)`` → detections).

The tail decodes the boxes (cx, cy, w, h → x1, y1, x2, y2, as :func:`engine.nms.postprocess_raw`), picks
each anchor's best class, drops anchors whose score is not above ``conf`` and keeps the best ``K``
detections per image. Outputs, all of fixed shape so a runtime can preallocate them and only
detections cross PCIe:

============  ============  ==========================================================
``num_dets``  (B, 1) int32  valid rows per image (the rest are zero padding)
``boxes``     (B, K, 4) f32 x1, y1, x2, y2 in model-input pixels
``scores``    (B, K) f32    by descending score; padding rows are 0
``classes``   (B, K) int32  class ids; padding rows are -1
============  ============  ==========================================================

Two forms (:class:`TailKind`):

* ``TOPK`` (default): no NMS in the graph; the ``K`` best candidates above ``conf`` come out and the
  host NMS finishes on those few. For the same result as NMS on every candidate, ``K`` must exceed the
  number of candidates above ``conf`` (a few hundred at conf 0.25): the default is 1000. TensorRT-RTX
  1.7 builds it, as do TensorRT 10/11 and ONNX Runtime.
* ``NMS``: ONNX ``NonMaxSuppression`` (TensorRT's ``INMSLayer``), one NMS per class on one label per
  anchor, exactly the host NMS's semantics. Its data-dependent ``(N, 3)`` output is turned into
  fixed-size rows *without* ``NonZero`` (which TensorRT-RTX cannot build): the kept anchors' scores are
  scattered (``ScatterND``) into a dense ``(B, A)`` map filled with -1, and ``TopK`` takes the best
  ``K`` of it. ``K = max_det``. ONNX Runtime runs it; TensorRT-RTX 1.7.1 parses it but its builder
  refuses the NMS layer ("e2e/nms has no runners that implement it", Error Code 2, for every compute
  target and input type tried), so it is for ONNX Runtime and TensorRT 10/11 (not checked here).

Both end in ``TopK``, whose ties keep the lower anchor index first (the ONNX spec), as the host's
stable sort does.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path

import numpy as np

from engine.errors import ConfigError, ExportError
from engine.metadata import HeadLayout, ModelMetadata, Thresholds

OUTPUT_NAMES = ("num_dets", "boxes", "scores", "classes")
TOPK_MAX = 3840  # TensorRT's ITopKLayer limit on K
_P = "e2e/"  # prefix of every tensor and node name the tail adds


class TailKind(str, Enum):
    """What ends the graph: NMS inside it, or the top-K candidates for the host NMS."""

    NMS = "nms"
    TOPK = "topk"


@dataclass(frozen=True)
class End2EndConfig:
    """Thresholds and form of the end-to-end tail.

    Attributes:
        conf: keep anchors whose best class score is ``> conf``.
        iou: NMS IoU threshold (suppress when ``> iou``); recorded, not used, by the ``TOPK`` form.
        max_det: detections per image (``K`` of the ``NMS`` form).
        kind: :class:`TailKind`.
        candidates: ``K`` of the ``TOPK`` form.
    """

    conf: float = 0.25
    iou: float = 0.45
    max_det: int = 300
    kind: TailKind = TailKind.TOPK
    candidates: int = 1000

    def __post_init__(self) -> None:
        if not 0.0 <= self.conf < 1.0 or not 0.0 <= self.iou <= 1.0:
            raise ConfigError(f"--e2e-conf {self.conf} / --e2e-iou {self.iou} out of range",
                              "use 0 <= conf < 1 and 0 <= iou <= 1")
        if not 1 <= self.max_det <= TOPK_MAX or not 1 <= self.candidates <= TOPK_MAX:
            raise ConfigError(f"--max-det {self.max_det} / --e2e-candidates {self.candidates} out of range",
                              f"use values between 1 and {TOPK_MAX} (TensorRT's TopK limit)")

    @property
    def k(self) -> int:
        """Rows per image of every output."""
        return self.max_det if self.kind is TailKind.NMS else self.candidates


def end2end_metadata(meta: ModelMetadata, cfg: End2EndConfig) -> ModelMetadata:
    """``meta`` of the raw graph, as the end-to-end graph describes itself."""
    return meta.replace(head=HeadLayout.END2END, output_names=OUTPUT_NAMES,
                        thresholds=Thresholds(cfg.conf, cfg.iou, cfg.k, nms=cfg.kind is TailKind.NMS))


class _Graph:
    """A small helper that appends nodes and constants with unique names."""

    def __init__(self, graph, helper, numpy_helper) -> None:
        self.g, self.h, self.nh = graph, helper, numpy_helper
        self.n = 0

    def const(self, name: str, value) -> str:
        self.g.initializer.append(self.nh.from_array(np.asarray(value), _P + name))
        return _P + name

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, name: str | None = None, **attrs) -> str | list[str]:
        self.n += 1
        base = _P + (name or f"{op_type.lower()}_{self.n}")
        outs = [base] if n_out == 1 else [f"{base}:{i}" for i in range(n_out)]
        self.g.node.append(self.h.make_node(op_type, inputs, outs, name=base, **attrs))
        return outs[0] if n_out == 1 else outs


def add_end2end(model, cfg: End2EndConfig, num_anchors: int, num_classes: int):
    """Append the tail to ``model`` (an ``onnx.ModelProto`` with one raw-head output) and return it.

    ``model`` is changed in place; its input and batch dimension (static or dynamic) are kept.

    Raises:
        ExportError: the graph is not a single-output raw detect head of ``num_classes`` classes.
        ConfigError: ``K`` exceeds the anchors.
    """
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    if len(g.output) != 1:
        raise ExportError(f"the raw graph has {len(g.output)} outputs, expected one (B, 4+classes, anchors)",
                          "build the end-to-end graph from the raw FP32 ONNX of python -m exporters.build")
    k = cfg.k
    if k > num_anchors:
        raise ConfigError(f"K={k} detections exceed the model's {num_anchors} anchors",
                          f"pass --max-det (and --e2e-candidates) of at most {num_anchors}")
    raw = g.output[0]
    batch_dim = raw.type.tensor_type.shape.dim[0]
    batch = batch_dim.dim_value if batch_dim.HasField("dim_value") else (batch_dim.dim_param or "batch")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        raise ExportError(f"the raw graph has opset {opset}; the end-to-end tail needs 13 or newer",
                          "re-export with --opset 17 (default)")
    x = _Graph(g, helper, numpy_helper)
    A, C = num_anchors, num_classes

    # decode: (B, 4+C, A) → boxes (B, A, 4) xyxy, class scores (B, C, A)
    xywh = x.op("Slice", [raw.name, x.const("s0", [0]), x.const("s4", [4]), x.const("ax1", [1])])
    cls = x.op("Slice", [raw.name, x.const("s4b", [4]), x.const("send", [4 + C]), x.const("ax1b", [1])], name="cls")
    xywh = x.op("Transpose", [xywh], perm=[0, 2, 1])
    xy = x.op("Slice", [xywh, x.const("c0", [0]), x.const("c2", [2]), x.const("ax2", [2])])
    wh = x.op("Slice", [xywh, x.const("c2b", [2]), x.const("c4", [4]), x.const("ax2b", [2])])
    half = x.op("Div", [wh, x.const("two", np.float32(2.0))])  # host: pred[2:4] / 2
    boxes_all = x.op("Concat", [x.op("Sub", [xy, half]), x.op("Add", [xy, half])], axis=2, name="xyxy")
    # one label per anchor: its best class (ArgMax keeps the first of equal maxima, like the host)
    if opset >= 18:  # ReduceMax takes its axes as an input from opset 18 (an attribute before)
        best = x.op("ReduceMax", [cls, x.const("ax1max", [1])], keepdims=0, name="best")  # (B, A)
    else:
        best = x.op("ReduceMax", [cls], axes=[1], keepdims=0, name="best")
    label = x.op("ArgMax", [cls], axis=1, keepdims=0, name="label")  # (B, A) int64
    cand = x.op("Greater", [best, x.const("conf", np.float32(cfg.conf))], name="cand")
    neg = x.const("neg1", np.float32(-1.0))

    if cfg.kind is TailKind.NMS:
        # scores seen by NMS: the best class's score where it is a candidate, -1 elsewhere, so every
        # anchor takes part in exactly one class's NMS whatever the NMS's own score test (> or >=)
        onehot = x.op("Equal", [x.op("Unsqueeze", [label, x.const("ax1c", [1])]),
                                x.const("classes", np.arange(C, dtype=np.int64).reshape(1, C, 1))])
        mask = x.op("And", [onehot, x.op("Unsqueeze", [cand, x.const("ax1d", [1])])])
        nms_scores = x.op("Where", [mask, cls, neg], name="nms_scores")  # (B, C, A)
        sel = x.op("NonMaxSuppression", [boxes_all, nms_scores, x.const("max_out", np.array([k], np.int64)),
                                         x.const("iou", np.array([cfg.iou], np.float32)),
                                         x.const("score_thr", np.array([cfg.conf], np.float32))],
                   center_point_box=0, name="nms")  # (N, 3): batch, class, anchor
        b_idx = x.op("Gather", [sel, x.const("col0", np.int64(0))], axis=1)
        a_idx = x.op("Gather", [sel, x.const("col2", np.int64(2))], axis=1)
        flat_idx = x.op("Add", [x.op("Mul", [b_idx, x.const("A", np.int64(A))]), a_idx])  # (N,)
        best_flat = x.op("Reshape", [best, x.const("flat", [-1])])  # (B*A,)
        upd = x.op("Gather", [best_flat, flat_idx], axis=0)
        fill = x.op("ConstantOfShape", [x.op("Shape", [best_flat])],
                    value=numpy_helper.from_array(np.array([-1.0], np.float32)))
        kept = x.op("ScatterND", [fill, x.op("Unsqueeze", [flat_idx, x.const("ax1e", [1])]), upd])
        kept = x.op("Reshape", [kept, x.const("BA", [-1, A])], name="kept")  # (B, A): score if kept else -1
    else:
        kept = x.op("Where", [cand, best, neg], name="kept")

    top_val, top_idx = x.op("TopK", [kept, x.const("K", np.array([k], np.int64))], n_out=2, axis=1,
                            largest=1, sorted=1, name="topk")  # (B, K)
    valid = x.op("Greater", [top_val, x.const("half_neg", np.float32(-0.5))], name="valid")  # scores are >= 0
    num = x.op("ReduceSum", [x.op("Cast", [valid], to=TensorProto.INT32), x.const("ax1f", [1])], keepdims=1)
    idx4 = x.op("Expand", [x.op("Unsqueeze", [top_idx, x.const("ax2c", [2])]),
                           x.op("Concat", [x.op("Shape", [top_idx]), x.const("four", [4])], axis=0)])
    boxes = x.op("GatherElements", [boxes_all, idx4], axis=1)
    boxes = x.op("Where", [x.op("Unsqueeze", [valid, x.const("ax2d", [2])]), boxes, x.const("zero", np.float32(0))])
    scores = x.op("Where", [valid, top_val, x.const("zero_b", np.float32(0))])
    classes = x.op("Cast", [x.op("GatherElements", [label, top_idx], axis=1)], to=TensorProto.INT32)
    classes = x.op("Where", [valid, classes, x.const("minus1", np.int32(-1))])

    for out_name, src in zip(OUTPUT_NAMES, (num, boxes, scores, classes)):
        g.node.append(helper.make_node("Identity", [src], [out_name], name=_P + out_name))
    del g.output[:]
    g.output.extend([
        helper.make_tensor_value_info("num_dets", TensorProto.INT32, [batch, 1]),
        helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [batch, k, 4]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, k]),
        helper.make_tensor_value_info("classes", TensorProto.INT32, [batch, k]),
    ])
    return model


# ------------------------------------------------------------------------------------- file + check
@dataclass(frozen=True)
class End2EndReport:
    """The end-to-end graph against host NMS on the raw graph, over ``images`` images."""

    images: int
    detections: int
    mismatched: int
    max_box_diff: float
    saturated: int  # images whose K rows were all used (a TOPK graph may then have dropped candidates)

    @property
    def ok(self) -> bool:
        return self.mismatched == 0

    def summary(self) -> str:
        return (f"end-to-end vs host NMS over {self.images} images: {self.detections} detections, max |box diff| "
                f"{self.max_box_diff:.1e} px, {self.mismatched} images differ -> {'OK' if self.ok else 'FAIL'}")


def compare_end2end(raw_path: str | Path, e2e_path: str | Path, images: np.ndarray, cfg: End2EndConfig,
                    batch: int | None, tol: float = 1e-3) -> End2EndReport:
    """Run both graphs on ONNX Runtime CPU over letterboxed ``images`` (N, 3, H, W) and compare detections.

    The reference is :func:`engine.nms.postprocess_raw` on the raw head at ``cfg``'s thresholds; the
    end-to-end rows are finished as the runtime does (:func:`engine.end2end.finish_end2end`). An image
    matches when it has the same number of detections, the same classes in the same order and every box
    within ``tol`` pixels.
    """
    import onnxruntime as ort

    from engine.end2end import RunThresholds, finish_end2end
    from engine.nms import postprocess_raw

    so = ort.SessionOptions()
    so.log_severity_level = 3
    raw = ort.InferenceSession(str(raw_path), so, providers=["CPUExecutionProvider"])
    e2e = ort.InferenceSession(str(e2e_path), so, providers=["CPUExecutionProvider"])
    name = raw.get_inputs()[0].name
    run = RunThresholds(cfg.conf, cfg.iou, cfg.max_det)
    b = batch or 2
    dets = bad = saturated = 0
    worst = 0.0
    for i in range(0, len(images), b):
        chunk = images[i : i + b]
        n = len(chunk)
        if len(chunk) < b:  # a static batch: pad by repeating the first image
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], b - n, 0)])
        pred = raw.run(None, {name: chunk})[0]
        num, boxes, scores, classes = e2e.run(list(OUTPUT_NAMES), {name: chunk})
        for j in range(n):
            ref = postprocess_raw(pred[j], cfg.conf, cfg.iou, cfg.max_det)
            got = finish_end2end(num[j], boxes[j], scores[j], classes[j], cfg.kind is TailKind.NMS, run)
            saturated += int(num[j, 0]) == cfg.k
            dets += len(ref[0])
            if len(got[0]) != len(ref[0]) or not np.array_equal(got[2], ref[2]):
                bad += 1
                continue
            diff = float(np.abs(got[0] - ref[0]).max(initial=0.0))
            worst = max(worst, diff)
            bad += diff > tol
    return End2EndReport(len(images), dets, bad, worst, saturated)


def _graph_anchors(model) -> int | None:
    """The raw output's anchor rows as the graph declares them (the build pins them), or ``None``."""
    dims = model.graph.output[0].type.tensor_type.shape.dim
    return dims[2].dim_value if len(dims) == 3 and dims[2].dim_value > 0 else None


def fit_to_anchors(cfg: End2EndConfig, anchors: int, log=print) -> End2EndConfig:
    """``cfg`` with ``K`` cut to the model's anchors: keeping the best K of fewer than K anchors keeps them
    all, so a small ``--imgsz`` (525 anchors at 160) takes the default 1000 candidates as every anchor."""
    if cfg.k <= anchors:
        return cfg
    field = "max_det" if cfg.kind is TailKind.NMS else "candidates"
    log(f"end-to-end graph: K={cfg.k} exceeds the model's {anchors} anchors at this size; it keeps all {anchors}")
    return replace(cfg, **{field: anchors})


def export_end2end(raw_path: str | Path, cfg: End2EndConfig, out: str | Path | None = None,
                   check_images: np.ndarray | None = None, log=print) -> tuple[Path, End2EndReport | None]:
    """``<stem>.onnx`` (raw head, our metadata) → ``<out>/<stem>.end2end.onnx``, checked on ``check_images``.

    Raises:
        ModelLoadError: ``raw_path`` is missing, or not a raw detect head with our metadata.
        ParityError: on ``check_images`` the graph's detections differ from host NMS on the raw graph.
    """
    import onnx

    from engine.errors import ModelLoadError, ParityError
    from engine.metadata import METADATA_KEY, from_onnx_props

    from .io import atomic_path, ensure_out_dir

    raw_path = Path(raw_path)
    if not raw_path.is_file():
        raise ModelLoadError(f"ONNX file not found: {raw_path}", "export it first: python -m exporters.build")
    model = onnx.load(str(raw_path))
    meta = from_onnx_props({p.key: p.value for p in model.metadata_props})
    if meta is None or meta.head is not HeadLayout.RAW:
        raise ModelLoadError(f"{raw_path} is not a raw detect head with metadata", "pass the .onnx of python -m exporters.build")
    anchors = _graph_anchors(model) or meta.raw_anchors  # the graph's own count (a P2 or P6 head has more)
    cfg = fit_to_anchors(cfg, anchors, log)
    add_end2end(model, cfg, anchors, meta.num_classes)
    e2e_meta = end2end_metadata(meta, cfg)
    props = {p.key: p.value for p in model.metadata_props}
    props[METADATA_KEY] = e2e_meta.to_json()
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model, full_check=True)
    final = ensure_out_dir(Path(out) if out is not None else raw_path.parent) / f"{raw_path.stem}.end2end.onnx"
    report = None
    with atomic_path(final) as tmp:
        onnx.save(model, str(tmp))
        if check_images is not None:
            report = compare_end2end(raw_path, tmp, check_images, cfg, meta.batch)
            log(report.summary())
            if not report.ok:
                hint = (f"{report.saturated} images filled all {cfg.k} candidate rows: raise --e2e-candidates or --e2e-conf"
                        if report.saturated else "rerun with --debug and report it")
                raise ParityError(f"{final.name}: {report.summary()}", hint)
    tail = (f"NMS inside (iou {cfg.iou}), K={cfg.k}" if cfg.kind is TailKind.NMS
            else f"top-{cfg.k} candidates, NMS on the host")
    log(f"wrote {final} (conf {cfg.conf}, {tail})")
    return final, report
