"""OpenVINO IRs from our FP32 ONNX: FP32 by OpenVINO's own converter, INT8 by NNCF.

    export_openvino(fp32_onnx, out, meta)                       -> out/<stem>_openvino/<stem>.xml + .bin
    quantize_openvino(fp32_onnx, calibration, out, meta)        -> out/<stem>.int8_openvino/<stem>.xml + .bin

Both convert the same ONNX the other artifacts come from (``ov.convert_model``; no torch), carry our
metadata in the IR's ``rt_info`` (key ``yolodeploy``, read back by :mod:`engine.backends.openvino`), and
write through a temporary folder renamed into place (:func:`exporters.io.staged`). Both take uint8 BGR
pixels (:func:`uint8_input`: OpenVINO's preprocessing steps at the head of the graph), so the runtime's
letterbox writes no float image. The build stage
(:mod:`exporters.openvino_stage`) uses the parts: :func:`convert`, :func:`int8_model`, :func:`write_ir`.

INT8 is NNCF's post-training quantization on the OpenVINO model, the path Ultralytics' ``format=openvino,
int8=True`` takes: its ``MIXED`` preset (symmetric int8 weights, asymmetric activations) with OpenVINO's
own placement, calibrated on the same letterboxed images as the ONNX INT8 forms. Float stays what
:func:`float_nodes` finds: the decode tail (DFL, box decode, sigmoid, the output concat: what Ultralytics
keeps float too), the head's last convolutions and its class branch; plus ``--exclude`` and the gate's
fallback layers. Unlike Ultralytics we run NNCF's full
bias correction (``fast_bias_correction=False``): a longer build, the same IR speed (it only changes
biases), and on the demo at 320 (500 fresh images) mAP50-95 0.8296 instead of 0.8286 against 0.8312 for the
FP32 IR (``benchmarks/RESULTS.md``, "OpenVINO").
:func:`sensitivity` ranks the INT8 layers for that fallback, as :func:`exporters.sensitivity.rank_layers` does
for the ONNX forms.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from calibration.strategies import quiet_nncf
from engine.artifacts import FP32_IR, INT8_IR
from engine.errors import ExportError
from engine.metadata import METADATA_KEY, ModelMetadata, Precision

from .io import ensure_out_dir, staged
from .sensitivity import Stability

INSTALL = "pip install -e .[openvino] (openvino and nncf)"


def _ov():
    try:
        import openvino as ov
    except ImportError:
        raise ExportError("OpenVINO IRs need the 'openvino' package", INSTALL) from None
    return ov


def _nncf():
    try:
        import nncf
    except ImportError:
        raise ExportError("the INT8 OpenVINO IR needs the 'nncf' package", INSTALL) from None
    return nncf


def convert(fp32_onnx: Path):
    """The ``ov.Model`` of an ONNX file, by OpenVINO's converter."""
    try:
        return _ov().convert_model(str(fp32_onnx))
    except Exception as e:  # noqa: BLE001 - the converter's own error types
        raise ExportError(f"OpenVINO could not convert {fp32_onnx} ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
                          "rerun with --debug and report it with the model; --no-openvino skips the IRs") from e


def uint8_input(model):
    """``model`` (float RGB planes in 0..1, ``(B, 3, H, W)``) taking the letterboxed frame as OpenCV holds it:
    ``(B, H, W, 3)`` uint8 BGR. OpenVINO's preprocessing steps put the conversion, the channel reversal and
    the ``/255`` at the head of the graph, where its CPU plugin runs them in one pass, so the runtime's
    letterbox is a resize into the input and nothing else (as for the INT8 CPU form,
    :class:`engine.metadata.PixelFormat`). An input that is already uint8 is left alone."""
    ov = _ov()
    from openvino.preprocess import PrePostProcessor

    if model.inputs[0].get_element_type() == ov.Type.u8:
        return model
    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    ppp.input().preprocess().convert_element_type(ov.Type.f32).reverse_channels().scale(255.0)
    return ppp.build()


def float_input(run):
    """A runner of an IR's raw outputs that takes the float planes the ONNX runners take (the letterboxed
    NCHW batch), for an IR whose input is uint8 BGR (:func:`uint8_input`): the same pixels, converted back."""
    from engine.preprocess import bgr_from_planes

    return lambda x: run(bgr_from_planes(x) if np.asarray(x).dtype != np.uint8 else x)


def write_ir(model, folder: Path, stem: str, meta: ModelMetadata, compress_fp16: bool = False) -> Path:
    """Write ``model`` as ``folder/<stem>.xml`` + ``.bin`` taking uint8 BGR pixels (:func:`uint8_input`), with
    ``meta`` in its rt_info (no staging); return ``folder``."""
    from engine.metadata import PixelFormat

    model = uint8_input(model)
    model.set_rt_info(meta.replace(pixels=PixelFormat.NHWC_BGR_UINT8).to_json(), [METADATA_KEY])
    _ov().save_model(model, str(Path(folder) / f"{stem}.xml"), compress_to_fp16=compress_fp16)
    return Path(folder)


def save_ir(model, final: Path, stem: str, meta: ModelMetadata, compress_fp16: bool = False) -> Path:
    """:func:`write_ir` into a temporary folder renamed onto ``final`` (never a half-written IR); return ``final``."""
    ensure_out_dir(Path(final).parent)
    with staged(final) as tmp:
        write_ir(model, tmp, stem, meta, compress_fp16)
    return Path(final)


def export_openvino(fp32_onnx: Path, out_dir: Path, meta: ModelMetadata, compress_fp16: bool = False) -> Path:
    """The FP32 IR of ``fp32_onnx`` in ``out_dir/<stem>_openvino/``; returns that folder.

    ``compress_fp16`` stores the weights as FP16 (half the size; OpenVINO computes in the device's
    precision either way). ``meta`` is the FP32 ONNX's metadata (its source hash and name included).
    """
    fp32_onnx = Path(fp32_onnx)
    return save_ir(convert(fp32_onnx), FP32_IR.path(out_dir, fp32_onnx.stem), fp32_onnx.stem,
                   meta.replace(precision=Precision.FP32), compress_fp16)


def calibration_dataset(images: Iterable[np.ndarray]):
    """An ``nncf.Dataset`` over model-ready batches (e.g. :class:`calibration.readers.CalibrationImages`,
    iterated again on each of NNCF's passes)."""
    return _nncf().Dataset(images)


def ov_names(model, onnx_names: Iterable[str]) -> list[str]:
    """The OpenVINO operations made from ONNX nodes ``onnx_names`` (an ONNX ``Conv`` named ``X`` becomes
    ``X/WithoutBiases`` and ``X``); names that are already OpenVINO names match themselves."""
    wanted = set(onnx_names)
    return [op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_friendly_name() in wanted or op.get_friendly_name().rsplit("/", 1)[0] in wanted]


def float_nodes(model) -> list[str]:
    """ONNX node names of ``model`` (our FP32 ONNX) that the INT8 IR keeps float: the decode tail
    (:func:`exporters.quantize.decode_tail`), the convolutions that feed it (the head's last ones), and the
    detect head's class branch (Ultralytics' ``Detect.cv3``, found under the head's module scope).

    The class scores are what INT8 hurt most: on the second model (four classes, mAP50-95 0.35) the INT8 IR
    lost 0.68 points at 320 with the class branch in int8 and 0.13 with it float (the box branch float
    instead: 0.61); the class branch and the last convolutions are about 4 % of YOLO11n's multiply-adds.
    """
    from .quantize import WEIGHTED_OPS, decode_tail

    tail = decode_tail(model)
    in_tail = set(tail)
    feeds_tail = {i for n in model.graph.node if n.name in in_tail for i in n.input}
    last = [n.name for n in model.graph.node
            if n.op_type in WEIGHTED_OPS and n.name not in in_tail and set(n.output) & feeds_tail]
    scopes = {"/".join(n.split("/")[:2]) for n in last if n.startswith("/")}  # "/model.23"
    classes = [n.name for n in model.graph.node if any(n.name.startswith(f"{s}/cv3") for s in scopes)]
    return list(dict.fromkeys([*tail, *last, *classes]))


def int8_model(fp32_onnx: Path, calibration: Iterable[np.ndarray], keep_float: Sequence[str] = (),
               subset_size: int | None = None):
    """The ``ov.Model`` of ``fp32_onnx`` quantized by NNCF (not written).

    Args:
        fp32_onnx: our FP32 ONNX (the decode tail is found in it and kept float).
        calibration: model-ready batches (NCHW float in 0..1, letterboxed), or an ``nncf.Dataset``.
        keep_float: more node names (ONNX or OpenVINO) left in float: ``--exclude``, the gate's fallback.
        subset_size: calibration samples NNCF uses (default: every one given).
    """
    import onnx

    nncf = _nncf()
    fp32_onnx = Path(fp32_onnx)
    model = convert(fp32_onnx)
    keep = ov_names(model, [*float_nodes(onnx.load(str(fp32_onnx), load_external_data=False)), *keep_float])
    dataset = calibration if isinstance(calibration, nncf.Dataset) else calibration_dataset(calibration)
    n = subset_size or dataset.get_length() or 300
    try:  # NNCF logs a line per node it leaves float; its warnings and our images' summary still show
        with quiet_nncf(logging.WARNING, stdout=False):
            return nncf.quantize(model, dataset, preset=nncf.QuantizationPreset.MIXED, subset_size=n,
                                 fast_bias_correction=False, ignored_scope=nncf.IgnoredScope(names=keep, validate=False))
    except Exception as e:  # noqa: BLE001 - NNCF raises from deep inside
        raise ExportError(f"NNCF could not quantize {fp32_onnx} ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
                          "rerun with --debug; --exclude the node named above to keep it float") from e


def quantize_openvino(fp32_onnx: Path, calibration: Iterable[np.ndarray], out_dir: Path, meta: ModelMetadata,
                      keep_float: Sequence[str] = (), subset_size: int | None = None, final: Path | None = None) -> Path:
    """:func:`int8_model` written to ``out_dir/<stem>.int8_openvino/`` (or ``final``); returns that folder.
    ``meta`` is the FP32 ONNX's metadata (stamped INT8 here). No accuracy gate: the build stage has it."""
    fp32_onnx = Path(fp32_onnx)
    q = int8_model(fp32_onnx, calibration, keep_float, subset_size)
    return save_ir(q, final or INT8_IR.path(out_dir, fp32_onnx.stem), fp32_onnx.stem,
                   meta.replace(precision=Precision.INT8))


def quantized_layers(model) -> dict[str, tuple[list[str], str]]:
    """The INT8 layers of an NNCF-quantized ``ov.Model``: each operation fed by a FakeQuantize, with the
    float tensors (operation names) its FakeQuantizes read and its own output."""
    layers: dict[str, tuple[list[str], str]] = {}
    for op in model.get_ordered_ops():
        srcs = [i.get_source_output().get_node() for i in op.inputs()]
        fq = [s for s in srcs if s.get_type_name() == "FakeQuantize"]
        if fq and op.get_type_name() != "FakeQuantize":
            ins = [f.input(0).get_source_output().get_node().get_friendly_name() for f in fq]
            layers[op.get_friendly_name()] = (ins, op.get_friendly_name())
    return layers


def sensitivity(fp32_onnx: Path, int8_ir: Path,
                images: Iterable[np.ndarray]) -> tuple[list[tuple[str, float]], Stability | None]:
    """Rank the INT8 IR's layers by the output error each adds (most harmful first), with the ranking's
    :class:`~exporters.sensitivity.Stability`, as :func:`exporters.sensitivity.rank_layers` does for Q/DQ
    ONNX: both models run in f32 on the CPU with every layer's input and output exposed; the names are
    OpenVINO operation names."""
    from engine.backends.openvino import find_model_file

    from .sensitivity import rank_runs

    ov = _ov()
    core = ov.Core()
    q = core.read_model(str(find_model_file(int8_ir)))
    f = convert(Path(fp32_onnx))
    layers = quantized_layers(q)
    watch = sorted({t for ins, out in layers.values() for t in (*ins, out)})

    def runner(model):
        ops = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
        names = [t for t in watch if t in ops and ops[t].get_type_name() not in ("Parameter", "Constant")]
        model.add_outputs([ops[t].output(0) for t in names])
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        req = compiled.create_infer_request()
        ports = {t: compiled.outputs[len(compiled.outputs) - len(names) + k] for k, t in enumerate(names)}

        def run(x: np.ndarray) -> dict[str, np.ndarray]:
            res = req.infer({0: x})
            return {t: res[p] for t, p in ports.items()}
        return float_input(run) if compiled.inputs[0].get_element_type() == ov.Type.u8 else run

    return rank_runs(layers, runner(f), runner(q), images)


def ir_runner(ir: Path):
    """A raw-output runner of an IR on OpenVINO's CPU device in f32 (for :mod:`exporters.agreement`): the
    conversion is judged, not the device's default precision (bf16 on some CPUs)."""
    from engine.backends.openvino import find_model_file

    ov = _ov()
    compiled = ov.Core().compile_model(str(find_model_file(ir)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    req = compiled.create_infer_request()
    run = lambda x: req.infer({0: x})[0].copy()  # noqa: E731
    return float_input(run) if compiled.inputs[0].get_element_type() == ov.Type.u8 else run
