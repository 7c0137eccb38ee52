"""Write NVIDIA Triton Inference Server model repositories from our artifacts.

One model per artifact::

    <repo>/<name>/config.pbtxt
    <repo>/<name>/1/model.onnx     (backend "onnxruntime")  or  model.plan  (backend "tensorrt")
                                   or  model.xml + model.bin  (backend "openvino", an OpenVINO IR; CPU instances)

Tensor names, dims and dtypes come from the artifact's metadata (and, for ONNX, are checked against the
graph itself); ``max_batch_size``, ``dynamic_batching`` and ``instance_group`` from
:class:`TritonOptions`. The metadata is also stored in the config's ``parameters`` (key
``yolodeploy``, JSON), so a client can read the class names from Triton's model-config endpoint.

The config is written as protobuf text by hand (no protobuf needed to build); the tests parse every
generated file into Triton's own ``ModelConfig`` message shipped in ``tritonclient``.
"""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable

from engine.errors import ConfigError, ExportError, ModelLoadError
from engine.metadata import (
    METADATA_KEY,
    HeadLayout,
    ModelMetadata,
    PixelFormat,
    from_onnx_props,
)

from .io import atomic_path, ensure_out_dir, write_bytes_atomic

END2END_OUTPUTS = ("num_dets", "boxes", "scores", "classes")  # exporters.end2end's order
MODEL_FILES = {"onnxruntime": "model.onnx", "tensorrt": "model.plan", "openvino": "model.xml"}
_ONNX_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 6: "TYPE_INT32", 7: "TYPE_INT64", 2: "TYPE_UINT8", 3: "TYPE_INT8",
               9: "TYPE_BOOL", 11: "TYPE_FP64", 16: "TYPE_BF16"}


class Device(str, Enum):
    """Where Triton places a model's instances (``instance_group.kind``)."""

    GPU = "gpu"
    CPU = "cpu"


@dataclass(frozen=True)
class TritonOptions:
    """How the generated models are scheduled.

    Attributes:
        max_batch: ``max_batch_size`` of dynamic-batch models (capped by an engine's profile maximum).
        queue_delay_us: ``dynamic_batching.max_queue_delay_microseconds``.
        preferred: ``dynamic_batching.preferred_batch_size``; empty = half of ``max_batch`` and ``max_batch``.
        instances: ``instance_group.count``.
        device: instance kind of ONNX models (``int8-cpu`` ONNX is always CPU, engines always GPU).
    """

    max_batch: int = 8
    queue_delay_us: int = 2000
    preferred: tuple[int, ...] = ()
    instances: int = 1
    device: Device = Device.GPU

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.queue_delay_us < 0 or self.instances < 1:
            raise ConfigError(f"--triton-max-batch {self.max_batch}, --triton-queue-delay-us {self.queue_delay_us}, "
                              f"--triton-instances {self.instances} out of range",
                              "use --triton-max-batch >= 1, --triton-queue-delay-us >= 0, --triton-instances >= 1")
        if any(not 1 <= p <= self.max_batch for p in self.preferred):
            raise ConfigError(f"--triton-preferred {list(self.preferred)} must lie in 1..--triton-max-batch "
                              f"({self.max_batch})", "e.g. --triton-preferred 4,8 with --triton-max-batch 8")


@dataclass(frozen=True)
class TensorConfig:
    """One model input or output as Triton sees it (``dims`` without the batch axis when batching)."""

    name: str
    data_type: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class ModelConfig:
    """What goes into one ``config.pbtxt``."""

    name: str
    backend: str
    max_batch_size: int
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]
    instance_kind: str
    instance_count: int
    dynamic_batching: bool
    preferred_batch_sizes: tuple[int, ...] = ()
    queue_delay_us: int = 0
    default_model_filename: str = "model.onnx"
    metadata_json: str = ""
    parameters: tuple[tuple[str, str], ...] = ()  # backend parameters (Triton's OpenVINO backend reads its own keys)


# ---- the pure parts: metadata → tensor specs → config → text ----------------------------------

def model_name(stem: str, kind: str) -> str:
    """Triton model name of artifact ``kind`` (``"onnx"``, ``"int8-cpu.onnx"``, ``"fp32.engine"``) of ``stem``."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{stem}_{kind}")


def tensor_specs(meta: ModelMetadata) -> tuple[tuple[TensorConfig, ...], tuple[TensorConfig, ...]]:
    """Full-shape (batch axis first, ``-1`` if dynamic) inputs and outputs described by ``meta``."""
    b = -1 if meta.batch is None else meta.batch
    in_type = "TYPE_UINT8" if meta.pixels is PixelFormat.NHWC_BGR_UINT8 else "TYPE_FP32"
    inputs = (TensorConfig(meta.input_name, in_type, meta.pixels.shape(b, meta.imgsz)),)
    if meta.head is HeadLayout.RAW:
        return inputs, (TensorConfig(meta.output_names[0], "TYPE_FP32", (b, 4 + meta.num_classes, meta.raw_anchors)),)
    if meta.thresholds is None or len(meta.output_names) != len(END2END_OUTPUTS):
        raise ExportError(f"end-to-end metadata without thresholds or with outputs {list(meta.output_names)}",
                          "re-export the model with this tool (python -m exporters.build --end2end)")
    k = meta.thresholds.max_det
    shapes = {"num_dets": ("TYPE_INT32", (b, 1)), "boxes": ("TYPE_FP32", (b, k, 4)),
              "scores": ("TYPE_FP32", (b, k)), "classes": ("TYPE_INT32", (b, k))}
    return inputs, tuple(TensorConfig(n, *shapes[role]) for n, role in zip(meta.output_names, END2END_OUTPUTS))


def make_config(name: str, backend: str, meta: ModelMetadata, inputs: tuple[TensorConfig, ...],
                outputs: tuple[TensorConfig, ...], opts: TritonOptions, device: Device,
                profile_max_batch: int | None = None) -> ModelConfig:
    """The Triton config of one model from its full-shape tensors and the scheduling options.

    Dynamic batch: ``max_batch_size`` = ``opts.max_batch`` (capped by an engine profile), dims without
    the batch axis, dynamic batching on. Static batch N (1 included): ``max_batch_size`` 0 and the full
    dims, so Triton sends exactly N; its ONNX Runtime and TensorRT backends refuse a non-zero
    ``max_batch_size`` unless the model's first dimension is dynamic (``onnxruntime_utils.cc``,
    ``CompareDimsSupported``: "the first dimension must be -1").
    """
    common = dict(name=name, backend=backend, instance_kind=f"KIND_{device.name}", instance_count=opts.instances,
                  default_model_filename=MODEL_FILES[backend], metadata_json=meta.to_json(),
                  parameters=_openvino_parameters(meta) if backend == "openvino" else ())
    if meta.batch is not None:
        return ModelConfig(max_batch_size=0, inputs=inputs, outputs=outputs, dynamic_batching=False, **common)
    strip = lambda ts: tuple(TensorConfig(t.name, t.data_type, t.dims[1:]) for t in ts)  # noqa: E731
    mb = min(opts.max_batch, profile_max_batch) if profile_max_batch else opts.max_batch
    preferred = tuple(p for p in opts.preferred if p <= mb) or tuple(sorted({max(1, mb // 2), mb}))
    return ModelConfig(max_batch_size=mb, inputs=strip(inputs), outputs=strip(outputs), dynamic_batching=True,
                       preferred_batch_sizes=preferred, queue_delay_us=opts.queue_delay_us, **common)


def _openvino_parameters(meta: ModelMetadata) -> tuple[tuple[str, str], ...]:
    """Triton's OpenVINO backend: latency for a static batch; throughput streams under dynamic batching; a
    static-batch IR is not reshaped to a dynamic batch."""
    if meta.batch is None:
        return (("PERFORMANCE_HINT", "THROUGHPUT"),)
    return (("PERFORMANCE_HINT", "LATENCY"), ("SKIP_OV_DYNAMIC_BATCHSIZE", "YES"))


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _tensor_block(key: str, tensors: tuple[TensorConfig, ...]) -> list[str]:
    lines = [f"{key} ["]
    for i, t in enumerate(tensors):
        sep = "," if i < len(tensors) - 1 else ""
        lines += ["  {", f"    name: {_quote(t.name)}", f"    data_type: {t.data_type}",
                  f"    dims: [ {', '.join(str(d) for d in t.dims)} ]", "  }" + sep]
    return lines + ["]"]


def config_pbtxt(cfg: ModelConfig) -> str:
    """``config.pbtxt`` text (protobuf text format of Triton's ``inference.ModelConfig``)."""
    lines = ["# written by python -m exporters.build --triton (yolo-deploy); see README, \"Triton\"",
             f"name: {_quote(cfg.name)}", f"backend: {_quote(cfg.backend)}",
             f"default_model_filename: {_quote(cfg.default_model_filename)}",
             f"max_batch_size: {cfg.max_batch_size}"]
    lines += _tensor_block("input", cfg.inputs) + _tensor_block("output", cfg.outputs)
    if cfg.dynamic_batching:
        lines += ["dynamic_batching {",
                  f"  preferred_batch_size: [ {', '.join(str(p) for p in cfg.preferred_batch_sizes)} ]",
                  f"  max_queue_delay_microseconds: {cfg.queue_delay_us}", "}"]
    lines += ["instance_group [", "  {", f"    count: {cfg.instance_count}", f"    kind: {cfg.instance_kind}",
              "  }", "]"]
    params = (*cfg.parameters, *(((METADATA_KEY, cfg.metadata_json),) if cfg.metadata_json else ()))
    for key, value in params:
        lines += ["parameters {", f"  key: {_quote(key)}", f"  value {{ string_value: {_quote(value)} }}", "}"]
    return "\n".join(lines) + "\n"


# ---- reading artifacts -------------------------------------------------------------------------

def _onnx_io(path: Path) -> tuple[ModelMetadata | None, tuple[TensorConfig, ...], tuple[TensorConfig, ...]]:
    """Metadata and full-shape inputs/outputs of an ONNX file (symbolic dims as -1)."""
    try:
        import onnx
    except ImportError:
        raise ExportError(f"reading {path} needs the onnx package", "pip install -e .[export]") from None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # DecodeError and friends
        raise ModelLoadError(f"{path} is not a readable ONNX file ({type(e).__name__})", "export it again") from None
    init = {i.name for i in model.graph.initializer}

    def spec(v) -> TensorConfig:
        t = v.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        return TensorConfig(v.name, _ONNX_TYPES.get(t.elem_type, "TYPE_INVALID"), dims)

    meta = from_onnx_props({p.key: p.value for p in model.metadata_props})
    return (meta, tuple(spec(v) for v in model.graph.input if v.name not in init),
            tuple(spec(v) for v in model.graph.output))


def _checked(path: Path, expected: tuple[TensorConfig, ...], graph: tuple[TensorConfig, ...]) -> tuple[TensorConfig, ...]:
    """The graph's tensors where they agree with the metadata's (a symbolic graph dim takes the metadata's)."""
    if [t.name for t in expected] != [t.name for t in graph]:
        raise ExportError(f"{path}: graph tensors {[t.name for t in graph]} differ from its metadata's "
                          f"{[t.name for t in expected]}", "re-export the model with this tool")
    out = []
    for e, g in zip(expected, graph):
        same = len(e.dims) == len(g.dims) and all(gd in (-1, ed) or ed == -1 for ed, gd in zip(e.dims, g.dims))
        if not same or g.data_type == "TYPE_INVALID":
            raise ExportError(f"{path}: tensor '{g.name}' is {g.data_type} {list(g.dims)} in the graph but "
                              f"{list(e.dims)} by its metadata", "re-export the model with this tool")
        out.append(TensorConfig(g.name, g.data_type, tuple(ed if gd == -1 else gd for ed, gd in zip(e.dims, g.dims))))
    return tuple(out)


def _engine_sidecar(path: Path) -> tuple[ModelMetadata | None, int | None]:
    """Metadata and profile max batch from an engine's ``<stem>.<precision>.json`` sidecar, if present."""
    side = path.with_suffix(".json")
    if not side.is_file():
        return None, None
    try:
        d = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"engine sidecar {side} is unreadable ({e})", "rebuild the engine") from None
    meta_d = d.get("metadata") if isinstance(d.get("metadata"), dict) else (d if "names" in d else None)
    meta = ModelMetadata.from_dict(meta_d) if meta_d else None
    prof = d.get("profile") or {}
    mx = prof.get("max") if isinstance(prof, dict) else None
    return meta, (int(mx[0]) if isinstance(mx, (list, tuple)) and mx and int(mx[0]) > 0 else None)


def is_rtx_engine(path: Path, kind: str = "") -> bool:
    """Whether an engine was built by TensorRT-RTX (by its kind or sidecar), which Triton's TensorRT backend cannot run."""
    if "rtx" in kind.lower():
        return True
    side = Path(path).with_suffix(".json")
    try:
        text = side.read_text(encoding="utf-8").lower() if side.is_file() else ""
    except OSError:
        return False
    return "tensorrt_rtx" in text or "tensorrt-rtx" in text


# ---- writing --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Source:
    """What a Triton model is made of: its backend, metadata, tensors, device and files (name in ``1/`` → file)."""

    backend: str
    meta: ModelMetadata
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]
    device: Device
    files: dict[str, Path]
    profile_max: int | None = None


def _onnx_source(artifact: Path, meta: ModelMetadata | None, device: Device) -> _Source:
    own, g_in, g_out = _onnx_io(artifact)
    meta = own or meta
    if meta is None:
        raise ExportError(f"{artifact} has no metadata (names, imgsz)", "export it with python -m exporters.build")
    e_in, e_out = tensor_specs(meta)
    return _Source("onnxruntime", meta, _checked(artifact, e_in, g_in), _checked(artifact, e_out, g_out), device,
                   {"model.onnx": artifact})


def _engine_source(artifact: Path, meta: ModelMetadata | None, device: Device) -> _Source:
    side_meta, profile_max = _engine_sidecar(artifact)
    meta = side_meta or meta
    if meta is None:
        raise ExportError(f"engine {artifact} has no sidecar {artifact.with_suffix('.json').name} and no metadata "
                          "was given", "rebuild the engine with python -m exporters.build")
    # Triton's TensorRT backend runs on GPUs only
    return _Source("tensorrt", meta, *tensor_specs(meta), Device.GPU, {"model.plan": artifact}, profile_max)


def _ir_source(artifact: Path, meta: ModelMetadata | None, device: Device) -> _Source:
    from engine.backends.openvino import find_model_file, ir_metadata

    xml = find_model_file(artifact)
    meta = ir_metadata(xml) or meta
    if meta is None:
        raise ExportError(f"{xml} has no metadata (names, imgsz)", "export it with python -m exporters.build --openvino")
    # Triton's OpenVINO backend runs CPU instances only
    return _Source("openvino", meta, *tensor_specs(meta), Device.CPU,
                   {"model.xml": xml, "model.bin": xml.with_suffix(".bin")})


#: The runtime backend that loads an artifact kind (``engine.artifacts``, its first) → how its Triton model is made.
_SOURCES = {"onnxruntime": _onnx_source, "tensorrt": _engine_source, "openvino": _ir_source}


def write_model(repo: Path, name: str, artifact: Path, opts: TritonOptions, meta: ModelMetadata | None = None,
                device: Device | None = None) -> Path:
    """Write ``<repo>/<name>/config.pbtxt`` and ``<repo>/<name>/1/model.{onnx,plan,xml+bin}``; return the model folder.

    The Triton backend follows the artifact's kind (:func:`engine.artifacts.kind_of`). ``meta`` is needed
    for an engine without a sidecar (the source ONNX's metadata); an ONNX file and an OpenVINO IR (a
    folder or its ``.xml``) carry their own.
    """
    from engine.artifacts import kind_of

    artifact = Path(artifact)
    if not artifact.exists():
        raise ModelLoadError(f"artifact {artifact} not found", "build it first (python -m exporters.build)")
    spec = kind_of(artifact)
    make = _SOURCES.get(spec.backends[0]) if spec is not None else None
    if make is None:
        raise ExportError(f"{artifact}: Triton models are made from .onnx, .engine or .plan files or OpenVINO IRs",
                          "pass an ONNX model, a TensorRT engine or an OpenVINO IR folder")
    src = make(artifact, meta, device or opts.device)
    cfg = make_config(name, src.backend, src.meta, src.inputs, src.outputs, opts, src.device, src.profile_max)
    folder = Path(repo) / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    for target, source in src.files.items():
        with atomic_path(folder / "1" / target) as tmp:
            shutil.copyfile(source, tmp)
    write_bytes_atomic(folder / "config.pbtxt", config_pbtxt(cfg).encode())
    return folder


def parse_backend(folder: Path) -> str:
    """The ``backend:`` line of a written model's config.pbtxt."""
    text = (Path(folder) / "config.pbtxt").read_text(encoding="utf-8")
    return re.search(r'^backend: "([^"]+)"', text, re.M).group(1)


def write_repository(repo: Path, artifacts: dict[str, Path], stem: str, opts: TritonOptions,
                     meta: ModelMetadata | None = None, log: Callable[[str], None] = print) -> dict[str, Path]:
    """A model per model artifact in ``artifacts`` (artifact key → file); returns model name → folder.

    Which artifacts are models, and which Triton backend and device each gets, comes from the artifact
    table (:mod:`engine.artifacts`); the rest (reports, caches, the repository itself) is skipped, and so
    are TensorRT-RTX engines (Triton's TensorRT backend runs TensorRT engines only; their ONNX is served
    instead). CPU-only kinds (the INT8 CPU form) get CPU instances, and OpenVINO IRs run on Triton's
    OpenVINO backend, CPU instances.
    """
    from engine.artifacts import kind, kind_of

    repo = ensure_out_dir(Path(repo))
    written: dict[str, Path] = {}
    name = None
    try:
        for key, path in artifacts.items():
            try:
                spec = kind(key)
            except KeyError:
                spec = kind_of(path) if key != "triton" else None
            if spec is None or not spec.backends:
                continue
            if spec.is_engine and is_rtx_engine(Path(path), key):
                log(f"triton: skipped {Path(path).name}: a TensorRT-RTX engine, which Triton's TensorRT backend "
                    "cannot load")
                continue
            name = model_name(stem, key)
            written[name] = write_model(repo, name, Path(path), opts, meta, Device.CPU if spec.cpu_only else None)
            log(f"triton: {written[name]} ({parse_backend(written[name])} model from {Path(path).name})")
    except BaseException:  # withheld: this build's models go (half-written ones too); the rest of DIR stays
        for n in {*written, name} - {None}:
            if (repo / n).is_dir():
                shutil.rmtree(repo / n, ignore_errors=True)
        raise
    if not written:
        raise ExportError(f"no model artifacts to put in the Triton repository {repo} (had {sorted(artifacts)})",
                          "build an ONNX model or engine in the same run as --triton")
    return written
