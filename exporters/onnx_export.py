"""``.pt`` (or an Ultralytics ONNX) → ``<out>/<stem>.onnx`` with our metadata, simplified, parity-checked.

The torch → ONNX step is Ultralytics' own exporter (it knows every head's export quirks), run on a
copy of the checkpoint in a temporary folder so nothing is written beside the user's weights. It is
always exported with dynamic axes and then pinned: height and width are fixed to ``imgsz`` and the
batch to ``batch`` unless ``dynamic``, so shape arithmetic folds away in onnxslim while a dynamic
batch stays correct (a static export would bake batch 1 into the head's Reshapes).
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from engine.errors import ExportError, ModelLoadError, UnsupportedModelError
from engine.metadata import (
    METADATA_KEY,
    HeadLayout,
    ModelMetadata,
    Precision,
    anchor_count,
    file_sha256,
    from_onnx_props,
)

from .checkpoint import describe_checkpoint, load_checkpoint_model
from .config import ExportConfig, check_imgsz
from .io import ensure_out_dir, save_onnx, temp_prefix, write_failure
from .parity import ParityReport, check_parity, parity_inputs

Log = Callable[[str], None]


@dataclass(frozen=True)
class OnnxArtifact:
    """The result of :func:`export_onnx`."""

    path: Path
    metadata: ModelMetadata
    parity: ParityReport


def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise ExportError("ONNX export needs the 'onnx' package", "pip install -e .[export]") from None
    return onnx


# the detect heads Ultralytics' model YAMLs build: P3-P5 (YOLOv8/11/12/26, v10), P2 (yolov8-p2), P6, P7
HEAD_LEVELS = ((8, 16, 32), (4, 8, 16, 32), (8, 16, 32, 64), (8, 16, 32, 64, 128), (4, 8, 16, 32, 64))


def head_levels(anchors: int, imgsz: tuple[int, int], max_stride: int | None = None) -> tuple[int, ...] | None:
    """The strides of a detect head of :data:`HEAD_LEVELS` whose raw output has ``anchors`` rows at ``imgsz``
    (ending at ``max_stride`` when given), or ``None``: not a raw detect head."""
    return next((levels for levels in HEAD_LEVELS if (max_stride is None or levels[-1] == max_stride)
                 and anchor_count(imgsz, levels) == anchors), None)


def pin_shapes(model, imgsz: tuple[int, int], batch: int | None, anchors: int) -> None:
    """Fix the input's height/width (and batch unless ``None``) and the output's shape in place."""
    def set_dims(value_info, dims):
        for d, v in zip(value_info.type.tensor_type.shape.dim, dims):
            if isinstance(v, int):
                d.ClearField("dim_param")
                d.dim_value = v
            elif v is not None:
                d.ClearField("dim_value")
                d.dim_param = v

    b = "batch" if batch is None else batch
    set_dims(model.graph.input[0], [b, 3, imgsz[0], imgsz[1]])
    out = model.graph.output[0]
    set_dims(out, [b, None, anchors])


def write_metadata(model, meta: ModelMetadata) -> None:
    """Put ``meta`` under our key and refresh Ultralytics' own ``imgsz``/``batch`` keys (its loader reads them)."""
    props = {p.key: p.value for p in model.metadata_props}
    props[METADATA_KEY] = meta.to_json()
    if "imgsz" in props:
        props["imgsz"] = str(list(meta.imgsz))
        props["batch"] = str(meta.batch or 1)
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)


def _slim(model, log: Log):
    try:
        import onnxslim
    except ImportError:
        raise ExportError("simplifying needs onnxslim", "pip install -e .[export], or pass --no-simplify") from None
    n = len(model.graph.node)
    model = onnxslim.slim(model)
    log(f"onnxslim: {n} -> {len(model.graph.node)} nodes")
    return model


def one_to_many(model, src: Path, head: str, log: Log) -> None:
    """Select the one-to-many branch of an NMS-free head (YOLO26, YOLOv10) in ``model``, in place.

    Such heads are trained with two branches; the one-to-one branch ends in a top-k selection instead of
    NMS. The project exports the one-to-many branch, decoded by its own NMS, as Ultralytics' own ONNX export
    does by default (``nms=None``), so a checkpoint saved with the one-to-one branch selected exports the same
    graph as one saved without. Only a head whose one-to-many branch was removed (fused for inference) is
    refused.
    """
    det = model.model[-1]
    if getattr(det, "cv2", None) is None:
        raise UnsupportedModelError(
            f"{src} has only the one-to-one branch of its NMS-free head ({head}): its one-to-many branch was "
            "removed (fused for inference)",
            "export the checkpoint as training saved it (best.pt / last.pt), which keeps both branches")
    det.end2end = False  # the head's own switch (a property in Ultralytics 8.4, a plain attribute before)
    log(f"{src.name}: NMS-free head ({head}) with the one-to-one branch selected: exporting its one-to-many "
        "branch, decoded with NMS, as Ultralytics' ONNX export does by default")


def _ultralytics_onnx(weights: Path, imgsz: tuple[int, int], opset: int, tmp: Path) -> Path:
    """Run Ultralytics' exporter on a copy of ``weights`` inside ``tmp``; return the ONNX path."""
    from ultralytics import YOLO
    from ultralytics.utils import LOGGER

    copy = tmp / weights.name
    try:
        shutil.copy2(weights, copy)
    except OSError as e:
        raise (write_failure(e, copy, weights.stat().st_size) or e) from None
    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)
    try:
        f = YOLO(str(copy)).export(format="onnx", imgsz=list(imgsz), dynamic=True, simplify=False,
                                   opset=opset, device="cpu", batch=1)
    except Exception as e:  # Ultralytics raises many types; keep the message, drop the deep traceback
        # the export writes a copy of the weights and an ONNX of about their size into the output folder
        need = 2 * weights.stat().st_size
        disk = next((write_failure(c, tmp.parent / f"{weights.stem}.onnx", need)
                     for c in _chain(e) if isinstance(c, OSError)), None)
        if disk is not None:  # a full disk surfaces as whatever Ultralytics makes of it: name it for what it is
            raise disk from None
        raise ExportError(f"Ultralytics' ONNX export of {weights} failed ({type(e).__name__}: {e})",
                          "check that the checkpoint trains/predicts in Ultralytics; rerun with --debug for the traceback") from e
    finally:
        LOGGER.setLevel(level)
    return Path(f)


def _chain(e: BaseException):
    """``e`` and the exceptions it was raised from or during."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def export_onnx(cfg: ExportConfig, log: Log = print) -> OnnxArtifact:
    """Build ``<cfg.out>/<stem>.onnx`` from ``cfg.weights`` (or the demo) or from ``cfg.onnx``.

    Raises:
        ModelLoadError, UnsupportedModelError: a bad source file.
        ConfigError: a bad ``imgsz`` for this model.
        OutputDirError: ``cfg.out`` cannot be written.
        ParityError: the ONNX outputs differ from the source beyond ``cfg.parity_tol``.
    """
    onnx = _import_onnx()
    src = cfg.source
    if cfg.onnx is not None:
        return _from_onnx(cfg, log)
    torch_model, ckpt = load_checkpoint_model(src)  # once: described here, the parity reference below
    info = describe_checkpoint(src, torch_model, ckpt)
    if info.end2end:
        one_to_many(torch_model, src, info.head, log)
    imgsz = cfg.imgsz or info.train_imgsz or (640, 640)
    check_imgsz(imgsz, info.stride)
    out = ensure_out_dir(cfg.out)
    meta = ModelMetadata(names=info.names, imgsz=imgsz, stride=info.stride,
                         batch=None if cfg.dynamic else cfg.batch, source_sha256=file_sha256(src),
                         source_name=src.name, anchors=anchor_count(imgsz, info.strides))
    log(f"exporting {src} ({info.arch or 'unknown arch'}, {len(info.names)} classes) at imgsz {imgsz[0]}x{imgsz[1]}, "
        f"batch {'dynamic' if cfg.dynamic else cfg.batch}, opset {cfg.opset}")
    with tempfile.TemporaryDirectory(prefix=temp_prefix("export"), dir=out) as tmp:
        raw = _ultralytics_onnx(src, imgsz, cfg.opset, Path(tmp))
        model = onnx.load(str(raw))
        _check_raw_head(model, src, len(info.names))
        pin_shapes(model, imgsz, meta.batch, meta.anchors)
        model = _finish(model, meta, cfg, log)
        return _verify_and_write(model, meta, cfg, out, _torch_runner(torch_model), src.name, log)


def _check_raw_head(model, src: Path, nc: int) -> None:
    """Refuse an Ultralytics export that is not the raw head ``(B, 4 + classes, anchors)``.

    An Ultralytics release that exports the NMS-free head's top-k branch by default writes ``(B, k, 6)``.
    """
    dims = [[d.dim_value or None for d in o.type.tensor_type.shape.dim] for o in model.graph.output]
    if len(dims) != 1 or len(dims[0]) != 3 or dims[0][1] not in (None, 4 + nc):
        import ultralytics

        raise UnsupportedModelError(
            f"Ultralytics {ultralytics.__version__} exported {src} with outputs {dims}, not the raw detect head "
            f"(B, {4 + nc}, anchors): the NMS-free head's top-k branch",
            "pip install -U ultralytics (8.4.190, which this project is tested with, exports the one-to-many branch)")


def _finish(model, meta: ModelMetadata, cfg: ExportConfig, log: Log):
    onnx = _import_onnx()
    if cfg.simplify:
        model = _slim(model, log)
    if cfg.rewrite_dfl:
        from .head_rewrite import rewrite_dfl

        if rewrite_dfl(model):
            log("DFL: softmax + 1x1 conv rewritten as reductions over the bins (same outputs, no transpose)")
    write_metadata(model, meta)
    onnx.checker.check_model(model, full_check=True)
    return model


def _verify_and_write(model, meta, cfg, out: Path, reference, ref_name: str, log: Log) -> OnnxArtifact:
    final = out / f"{cfg.stem}.onnx"
    inputs = parity_inputs(meta.imgsz, cfg.parity_images, cfg.parity_count)
    report = check_parity(reference, model.SerializeToString(), inputs, meta.batch, cfg.parity_tol, ref_name)
    log(report.summary())
    save_onnx(model, final)  # checked first, so a failed check leaves nothing under the final name
    log(f"wrote {final} ({final.stat().st_size / 1e6:.1f} MB)")
    return OnnxArtifact(final, meta, report)


def _torch_runner(model):
    import torch

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            y = model(torch.from_numpy(x))
        return (y[0] if isinstance(y, (list, tuple)) else y).numpy()

    return run


def _ort_runner(path: Path):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def _read_onnx(path: Path):
    onnx = _import_onnx()
    if not path.is_file():
        raise ModelLoadError(f"ONNX file not found: {path}", "pass --onnx path/to/model.onnx")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:  # protobuf DecodeError, ValidationError, OSError...
        raise ModelLoadError(f"{path} is not a valid ONNX model ({type(e).__name__}: {str(e).splitlines()[0][:160]})",
                             "the file is truncated or corrupt: export it again") from None
    return model


_RAW_HEAD_FIX = ("pass the checkpoint instead (--weights best.pt), or export the raw head: yolo export model=best.pt "
                 "format=onnx (no nms= argument)")


def _from_onnx(cfg: ExportConfig, log: Log) -> OnnxArtifact:
    """Adopt an existing Ultralytics detect ONNX export (no torch needed)."""
    src = cfg.onnx
    model = _read_onnx(src)
    props = {p.key: p.value for p in model.metadata_props}
    if props.get("task", "detect") != "detect" or len(model.graph.output) != 1:
        raise UnsupportedModelError(f"{src} is not a detection export (task {props.get('task', '?')}, "
                                    f"{len(model.graph.output)} outputs)", "pass an Ultralytics detect ONNX export")
    prior = from_onnx_props(props)
    if prior is not None and prior.head is HeadLayout.END2END:
        raise UnsupportedModelError(f"{src} is an end-to-end export whose outputs are final detections (nms=True or "
                                    "an NMS-free head); not supported here yet", _RAW_HEAD_FIX)
    if prior is not None and prior.precision is not Precision.FP32:  # this tool's FP16 / INT8 files
        raise UnsupportedModelError(f"{src} is this tool's {prior.precision.value} model; --onnx takes an FP32 one",
                                    f"pass the FP32 ONNX it was made from ({src.parent / (src.name.split('.')[0] + '.onnx')}) "
                                    "or the .pt with --weights")
    dims = [d.dim_value or None for d in model.graph.input[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] != 3:
        raise UnsupportedModelError(f"{src} input is not NCHW with 3 channels (dims {dims})", "pass an image model export")
    imgsz = cfg.imgsz or (prior.imgsz if prior else None) or ((dims[2], dims[3]) if dims[2] and dims[3] else (640, 640))
    stride = prior.stride if prior else 32
    check_imgsz(imgsz, stride)
    if dims[2] and dims[3] and tuple(imgsz) != (dims[2], dims[3]):
        raise UnsupportedModelError(f"{src} was exported for {dims[2]}x{dims[3]} input only; --imgsz {imgsz[0]},{imgsz[1]} "
                                    "cannot be run on it", f"drop --imgsz, or re-export with dynamic=True, or pass the "
                                    ".pt with --weights")
    probe = _ort_runner(src)(np.zeros((1 if not dims[0] else dims[0], 3, *imgsz), np.float32))
    levels = head_levels(probe.shape[2], imgsz, prior.stride if prior else None) if probe.ndim == 3 else None
    if probe.ndim != 3 or probe.shape[1] <= 4 or levels is None:
        kind = " but final detections (nms=True or NMS-free)" if probe.ndim == 3 and probe.shape[2] == 6 else ""
        raise UnsupportedModelError(f"{src} output shape {probe.shape} is not a raw detect head (B, 4+classes, "
                                    f"anchors){kind}", _RAW_HEAD_FIX)
    nc = probe.shape[1] - 4
    names = prior.names if prior and len(prior.names) == nc else tuple(f"class{i}" for i in range(nc))
    out = ensure_out_dir(cfg.out)
    meta = ModelMetadata(names=names, imgsz=imgsz, stride=max(levels), batch=None if cfg.dynamic else cfg.batch,
                         source_sha256=file_sha256(src), source_name=src.name, anchors=int(probe.shape[2]))
    if dims[0] is not None and meta.batch != dims[0]:
        raise UnsupportedModelError(f"{src} has a fixed batch of {dims[0]}; it cannot become batch {meta.batch or 'dynamic'}",
                                    "re-export it from the .pt with --weights, or drop --batch/--dynamic")
    log(f"adopting {src} ({nc} classes) at imgsz {imgsz[0]}x{imgsz[1]}")
    pin_shapes(model, imgsz, meta.batch, meta.anchors)
    model = _finish(model, meta, cfg, log)
    if out.resolve() == src.resolve().parent and cfg.stem == src.stem:
        raise ExportError(f"--out {out} would overwrite the source {src}", "pass a different --out folder")
    return _verify_and_write(model, meta, cfg, out, _ort_runner(src), src.name, log)
