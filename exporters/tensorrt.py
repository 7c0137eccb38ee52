"""ONNX → TensorRT engine, one builder for TensorRT-RTX 1.x, TensorRT 11.x and TensorRT 10.x.

The flavour differences live in :class:`engine.backends.trt_flavor.TrtFlavor` (the version gate);
this module only asks it. Strongly typed flavours (RTX, 11.x) take precision from the graph: FP16 from
the FP16 ONNX, INT8 from the Q/DQ ONNX. TensorRT 10.x takes FP16/INT8 as builder flags.

TensorRT-RTX builds ahead of time for a list of compute capabilities and needs no GPU to do so (only
running the engine does). Its default here is every RTX generation from Ampere, SM80 to SM120 (Blackwell),
plus SM75 (Turing) only when this machine's GPU is a Turing one or ``--engine-targets`` asks for it: each
target adds its own copy of the weights and kernels (the FP16 demo engine: 24.8 MB with SM75, 9.9 MB
without). Turing has no FP32 GEMM in TensorRT-RTX, so a parsed network with an FP32 matrix multiply
(YOLO11's attention in an FP32 or INT8-with-FP32 graph) drops a default SM75 before building, with a note
in the sidecar, and fails before building when SM75 was asked for. Deciding before building matters: in
TensorRT-RTX 1.7.1 a build that failed for SM75 left the process in a state where every later build, on
a fresh builder and network too, wrote a larger engine (demo FP32 at 320: 18.0 MB against 13.8; the INT8 +
FP16 engine built after it: 22.5 MB against 15.2). Should the builder still refuse a default SM75 for
another reason, the build is retried without it, on a fresh builder and network.

The builder's own figures go to the sidecar: the weights memory TensorRT reports (``weights_bytes``; the
rest of the engine is kernels and tactics for each target) and which compute layers the strongly typed
network runs in FP32 (:func:`float32_layers`).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from engine.backends.trt_flavor import TrtFlavor, capturing_logger, import_tensorrt
from engine.backends.trt_sidecar import ProfileSpec
from engine.errors import ConfigError, EngineBuildError
from engine.metadata import Precision

from .io import write_bytes_atomic

Log = Callable[[str], None]
RTX_TARGETS: tuple[str, ...] = ("sm80", "sm86", "sm89", "sm120")
TURING = "sm75"
_TURING_REJECTED = "Turing (SM75)"
_WEIGHTS = re.compile(r"Total Weights Memory: (\d+) bytes")
# Layers that may write FP32 in an FP16 or INT8 + FP16 network: constants (weights, scales, shapes) and the
# casts that keep the graph's input and output FP32.
FP32_ALLOWED = frozenset({"CONSTANT", "CAST", "SHAPE", "ASSERTION", "IDENTITY"})


@dataclass(frozen=True)
class BatchProfile:
    """Dynamic batch range of an optimization profile: ``min <= opt <= max``."""

    min: int = 1
    opt: int = 4
    max: int = 8

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ConfigError(f"--engine-batch {self.min},{self.opt},{self.max} must satisfy 1 <= min <= opt <= max",
                              "use --engine-batch 1,4,8 (min,opt,max)")


@dataclass(frozen=True)
class EngineConfig:
    """How to build one engine.

    Attributes:
        precision: FP32, FP16 or INT8. Strongly typed flavours need the matching graph (FP16 ONNX,
            Q/DQ ONNX); TensorRT 10 sets the FP16 / INT8 builder flags.
        workspace_mib: builder workspace limit in MiB (``None``: TensorRT's default, all device memory).
        opt_level: builder optimization level 0..5 (TensorRT's default 3; higher builds slower).
        profile: batch range for an ONNX with a dynamic batch dimension (ignored for a static one).
        targets: TensorRT-RTX compute capabilities (``"sm86"`` or ``"86"``; ``"current"``: this machine's
            GPU); ``None``: :data:`RTX_TARGETS`, plus SM75 on a Turing machine. Must stay ``None`` for
            TensorRT 10/11.
        timing_cache: TensorRT 10/11: file of kernel timings, read if present and updated after the build.
        tensorrt: ``"auto"`` (TensorRT-RTX if installed, else TensorRT), ``"rtx"`` or ``"tensorrt"``.
        verbose: echo TensorRT's info messages.
        int8_float: an INT8 engine's layers that are not INT8 (``--int8-float``): ``fp16`` lets TensorRT 10
            run them in FP16 (its FP16 flag); ``fp32`` keeps them FP32, as the accuracy gate judged them.
            Strongly typed flavours take this from the graph itself.
    """

    precision: Precision = Precision.FP32
    workspace_mib: int | None = None
    opt_level: int = 3
    profile: BatchProfile = field(default_factory=BatchProfile)
    targets: tuple[str, ...] | None = None
    timing_cache: Path | None = None
    tensorrt: str = "auto"
    verbose: bool = False
    int8_float: str = "fp16"

    def __post_init__(self) -> None:
        if not 0 <= self.opt_level <= 5:
            raise ConfigError(f"--engine-opt-level {self.opt_level} is outside 0..5", "use 3 (TensorRT's default)")
        if self.workspace_mib is not None and self.workspace_mib < 1:
            raise ConfigError(f"--engine-workspace {self.workspace_mib} MiB must be >= 1", "omit it for TensorRT's default")
        if self.targets is not None:
            object.__setattr__(self, "targets", tuple(normalize_target(t) for t in self.targets))


def normalize_target(text: str) -> str:
    """``"86"``, ``"8.6"``, ``"sm_86"``, ``"SM86"`` → ``"sm86"``; ``"current"`` stays."""
    t = str(text).strip().lower().replace("sm_", "").replace("sm", "").replace(".", "")
    if t == "current":
        return t
    if not t.isdigit() or len(t) not in (2, 3):
        raise ConfigError(f"--engine-targets: '{text}' is not a compute capability",
                          f"use e.g. 86 (RTX 30), 89 (RTX 40), 120 (RTX 50), or current; default {','.join(RTX_TARGETS)}")
    return f"sm{t}"


@dataclass(frozen=True)
class BuiltEngine:
    """A serialized engine and what the sidecar needs to say about it."""

    plan: bytes
    flavor: TrtFlavor
    precision: Precision
    targets: tuple[str, ...]
    profiles: tuple[ProfileSpec, ...]
    seconds: float
    notes: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)


def build_engine(onnx_path: str | Path, cfg: EngineConfig) -> bytes:
    """Build ``onnx_path`` into a serialized engine (see :func:`build` for the details kept beside it)."""
    return build(onnx_path, cfg).plan


def build(onnx_path: str | Path, cfg: EngineConfig, log: Log = print) -> BuiltEngine:
    """Parse ``onnx_path`` and build an engine with the installed TensorRT.

    Raises:
        BackendUnavailableError: no (supported) TensorRT is installed; the message names the extra.
        ConfigError: a setting this flavour does not have (targets on TensorRT 10/11...).
        EngineBuildError: the ONNX does not parse (each failing node listed) or the build fails.
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise EngineBuildError(f"ONNX file not found: {onnx_path}", "export it first: python -m exporters.build")
    trt, flavor = import_tensorrt(cfg.tensorrt)
    if cfg.targets is not None and not flavor.compute_targets:
        raise ConfigError(f"--engine-targets is a TensorRT-RTX setting; {flavor.label} builds for the GPU it runs on",
                          "drop --engine-targets, or install TensorRT-RTX: pip install -e .[rtx]")
    if cfg.timing_cache is not None and not flavor.timing_cache:
        log(f"note: {flavor.label} has no timing cache; --engine-timing-cache is ignored "
            "(its runtime cache of JIT kernels is kept beside the engine at run time)")
    targets = _targets(cfg, flavor)
    notes: list[str] = []
    t0 = time.perf_counter()
    parsed = _parse(trt, flavor, onnx_path, cfg, log)
    blockers = [n for n, kind in parsed.fp32 if kind == "MATRIX_MULTIPLY"]
    if TURING in targets and blockers:  # decided before building: see the module docstring
        reason = f"Cannot compile operation '{blockers[0]}' for Turing (SM75): FP32 GEMM is not supported"
        if cfg.targets is not None:
            raise EngineBuildError(f"{flavor.label} cannot build {onnx_path} ({cfg.precision.value}) for sm75: {reason}",
                                   _build_fix([_TURING_REJECTED], flavor))
        notes.append(_turing_note([f"{_TURING_REJECTED}: {reason}"], cfg.precision))
        log(f"note: {notes[-1]}")
        targets = tuple(t for t in targets if t != TURING)
    plan = _build_once(trt, flavor, parsed.builder, parsed.network, cfg, parsed.profiles, targets, parsed.logger)
    if plan is None and cfg.targets is None and TURING in targets and any(
            _TURING_REJECTED in e for e in parsed.logger.errors):
        notes.append(_turing_note(parsed.logger.errors, cfg.precision))
        log(f"note: {notes[-1]}")
        targets = tuple(t for t in targets if t != TURING)
        parsed = _parse(trt, flavor, onnx_path, cfg, log)
        plan = _build_once(trt, flavor, parsed.builder, parsed.network, cfg, parsed.profiles, targets, parsed.logger)
    logger = parsed.logger
    if plan is None:
        raise EngineBuildError(f"{flavor.label} failed to build {onnx_path} ({cfg.precision.value}): "
                               + ("; ".join(_short(e) for e in logger.errors[-4:]) or "no error was logged"),
                               _build_fix(logger.errors, flavor))
    seconds = time.perf_counter() - t0
    weights = next((int(m.group(1)) for line in logger.infos for m in [_WEIGHTS.search(line)] if m), None)
    settings = {"workspace_mib": cfg.workspace_mib, "opt_level": cfg.opt_level, "weights_bytes": weights}
    if parsed.fp32 and cfg.precision is not Precision.FP32 and flavor.strongly_typed:
        names = [n for n, _ in parsed.fp32]
        notes.append(f"{len(names)} compute layers run FP32 ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})")
    return BuiltEngine(bytes(plan), flavor, cfg.precision, targets, parsed.profiles, seconds, tuple(notes), settings)


@dataclass
class _Parsed:
    logger: Any
    builder: Any
    network: Any
    profiles: tuple[ProfileSpec, ...]
    fp32: list[tuple[str, str]]  # (layer, type) of the compute layers that write FP32


def _parse(trt, flavor: TrtFlavor, onnx_path: Path, cfg: EngineConfig, log: Log) -> _Parsed:
    """A fresh logger, builder, network and parser for one build attempt, the ONNX parsed into them."""
    logger = capturing_logger(trt, echo=log if cfg.verbose else None, verbose=cfg.verbose)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, flavor))
    parser = trt.OnnxParser(network, logger)
    # parse_from_file, never parse(bytes): TensorRT-RTX 1.7's parse() crashed on a non-ONNX buffer here.
    if not parser.parse_from_file(str(onnx_path)):
        raise EngineBuildError(_parser_report(parser, onnx_path, flavor), _parser_fix(parser, flavor))
    _check_graph_precision(network, cfg.precision, flavor, onnx_path)
    return _Parsed(logger, builder, network, _profiles(network, cfg.profile), _float32_layers(network))


def float32_layers(network) -> list[str]:
    """Names of the compute layers of a parsed network that write FP32 (anything but :data:`FP32_ALLOWED`).

    In a strongly typed network a layer runs in its output type, so for an FP16 or INT8 + FP16 graph
    this lists what would run in FP32. ``[]`` when the network cannot be inspected.
    """
    return [name for name, _ in _float32_layers(network)]


def _float32_layers(network) -> list[tuple[str, str]]:
    if not hasattr(network, "num_layers"):
        return []
    out = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        kind = getattr(layer.type, "name", "")
        if kind not in FP32_ALLOWED and any(getattr(layer.get_output(j).dtype, "name", "") == "FLOAT"
                                            for j in range(layer.num_outputs)):
            out.append((layer.name, kind))
    return out


def _turing_note(errors: list[str], precision: Precision) -> str:
    reason = next(e for e in errors if _TURING_REJECTED in e)
    found = re.search(r"Cannot compile operation '[^']*' for Turing \(SM75\): [^.(]*", reason)
    return (f"dropped sm75 (Turing, RTX 20-series): TensorRT-RTX cannot build this {precision.value} graph for it "
            f"({(found.group(0) if found else _short(reason, 160)).strip()}); an fp16 engine can include Turing")


def graph_precision(network) -> str | None:
    """What a parsed network computes in: ``"int8"`` (Q/DQ layers), ``"fp16"`` (FP16 tensors) or ``"fp32"``;
    ``None`` when the network cannot be inspected."""
    if not hasattr(network, "num_layers"):
        return None
    qdq = half = False
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        qdq |= getattr(layer.type, "name", "") in ("QUANTIZE", "DEQUANTIZE")
        half |= any(getattr(layer.get_output(j).dtype, "name", "") == "HALF" for j in range(layer.num_outputs))
    return "int8" if qdq else "fp16" if half else "fp32"


def _check_graph_precision(network, precision: Precision, flavor: TrtFlavor, onnx_path: Path) -> None:
    """Strongly typed builds compute in the graph's types, so the graph must be the precision asked for;
    INT8 needs Q/DQ nodes on every flavour (there is no calibrator here)."""
    found = graph_precision(network)
    if found is None or found == precision.value:
        return
    if not flavor.strongly_typed and precision is Precision.FP16 and found == "fp32":
        return  # TensorRT 10: FP16 is the builder flag on the FP32 graph
    want = {"fp16": "the FP16 graph (<stem>.fp16.onnx)", "int8": "the Q/DQ graph (<stem>.int8.onnx)",
            "fp32": "the FP32 graph (<stem>.onnx)"}[precision.value]
    raise EngineBuildError(f"a {precision.value} engine was asked from {onnx_path}, whose graph is {found}"
                           + (f": {flavor.label} is strongly typed and would build it as {found}" if flavor.strongly_typed else ""),
                           f"build {precision.value} from {want}")


def _network_flags(trt, flavor: TrtFlavor) -> int:
    """TensorRT 11 and RTX are strongly typed whatever the flag; TensorRT 10 stays weakly typed so the
    precision flags apply."""
    if flavor.precision_flags:
        return 0
    flag = getattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def _targets(cfg: EngineConfig, flavor: TrtFlavor) -> tuple[str, ...]:
    if not flavor.compute_targets:
        return ()
    if cfg.targets is not None:
        return cfg.targets
    return (TURING, *RTX_TARGETS) if local_sm() == TURING else RTX_TARGETS


def local_sm() -> str | None:
    """This machine's first GPU as ``"sm86"``, or ``None`` without a GPU or cuda-python."""
    try:
        from engine.cuda import device_info

        return device_info(0).sm_tag
    except Exception:  # no driver, no cuda-python, no device: nothing local to add
        return None


def _profiles(network, batch: BatchProfile) -> tuple[ProfileSpec, ...]:
    """One profile for the dynamic batch; only the batch dimension may be dynamic."""
    specs = []
    for i in range(network.num_inputs):
        t = network.get_input(i)
        shape = tuple(int(d) for d in t.shape)
        if -1 not in shape:
            continue
        if -1 in shape[1:]:
            raise EngineBuildError(f"input '{t.name}' has shape {shape}: only the batch dimension may be dynamic",
                                   "export with a fixed --imgsz (python -m exporters.build pins height and width)")
        rest = shape[1:]
        specs.append(ProfileSpec(t.name, (batch.min, *rest), (batch.opt, *rest), (batch.max, *rest)))
    return tuple(specs)


def _build_once(trt, flavor, builder, network, cfg: EngineConfig, profiles, targets, logger):
    config = builder.create_builder_config()
    if cfg.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mib << 20)
    config.builder_optimization_level = cfg.opt_level
    if flavor.precision_flags:  # TensorRT 10 only: the flags were removed in 11 and never existed in RTX
        if cfg.precision is Precision.FP16 or (cfg.precision is Precision.INT8 and cfg.int8_float == "fp16"):
            config.set_flag(trt.BuilderFlag.FP16)  # INT8: layers left float by the Q/DQ graph may run FP16
        if cfg.precision is Precision.INT8:
            config.set_flag(trt.BuilderFlag.INT8)  # explicit quantization: ranges come from Q/DQ, no calibrator
    if flavor.timing_cache and cfg.timing_cache is not None:
        blob = cfg.timing_cache.read_bytes() if cfg.timing_cache.is_file() else b""
        config.set_timing_cache(config.create_timing_cache(blob), False)
    if flavor.compute_targets:
        config.num_compute_capabilities = len(targets)
        for i, t in enumerate(targets):
            config.set_compute_capability(_capability(trt, t), i)
    if profiles:
        profile = builder.create_optimization_profile()
        for p in profiles:
            profile.set_shape(p.input, p.min, p.opt, p.max)
        config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is not None and flavor.timing_cache and cfg.timing_cache is not None:
        _save_timing_cache(config, cfg.timing_cache)
    return plan


def _capability(trt, tag: str):
    name = "CURRENT" if tag == "current" else tag.upper()
    value = getattr(trt.ComputeCapability, name, None)
    if value is None:
        known = [n.lower() for n in trt.ComputeCapability.__members__ if n.startswith("SM")]
        raise ConfigError(f"--engine-targets: this TensorRT-RTX has no target {tag}", f"use some of {', '.join(known)}")
    return value


def _save_timing_cache(config, path: Path) -> None:
    """Write the timing cache the build filled (kernel timings a later build can reuse)."""
    cache = config.get_timing_cache()
    if cache is not None:
        write_bytes_atomic(path, bytes(cache.serialize()))


def _short(msg: str, limit: int = 300) -> str:
    msg = " ".join(str(msg).split())
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def _parser_report(parser, onnx_path: Path, flavor: TrtFlavor) -> str:
    """Each parser error on its own line, with node index, name and operator."""
    lines = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        node = int(e.node())
        if node < 0:
            lines.append(f"  - (whole model) {e.code()}: {_short(e.desc())}")
        else:
            lines.append(f"  - node #{node} '{e.node_name()}' ({e.node_operator()}): {_short(e.desc())}")
    n = len(lines)
    return (f"{flavor.label}'s ONNX parser rejected {onnx_path} ({n} error{'s' if n != 1 else ''}):\n"
            + "\n".join(lines or ["  - (no error was reported)"]))


def _parser_fix(parser, flavor: TrtFlavor) -> str:
    ops = sorted({str(parser.get_error(i).node_operator()) for i in range(parser.num_errors)} - {""})
    if not ops:
        return "the file is not a readable ONNX model: export it again with python -m exporters.build"
    extra = " (TensorRT-RTX ships no plugin library)" if flavor.is_rtx else ""
    return (f"{flavor.label} cannot build operator(s) {', '.join(ops)}{extra}: export without them (e.g. without "
            "Ultralytics' nms=True), or replace those nodes")


def _build_fix(errors: list[str], flavor: TrtFlavor) -> str:
    text = " ".join(errors)
    if "Quantized constant" in text:
        return "a Q/DQ graph quantizes a constant that does not feed a DequantizeLinear: quantize Conv inputs only"
    if "insufficient" in text or "cudaError 35" in text:
        return (f"{flavor.label} needs a GPU and driver for this build (targets 'current' or standard TensorRT): "
                "build on the GPU machine, or use TensorRT-RTX with explicit --engine-targets")
    if _TURING_REJECTED in text:
        return "drop 75 from --engine-targets, or build the fp16 or the INT8 + FP16 (--int8-float fp16) engine for Turing"
    return "rerun with --engine-verbose for TensorRT's full log"
