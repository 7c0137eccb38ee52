"""Build stage: ONNX graphs → ``<stem>.<precision>.engine`` + ``<stem>.<precision>.json`` (TensorRT).

Runs after the ONNX and quantize stages. Which graph each precision is built from:

=========  ===========================  ===========================================
precision  TensorRT-RTX 1.x / 11.x      TensorRT 10.x
=========  ===========================  ===========================================
fp32       ``onnx``                     ``onnx``
fp16       ``fp16.onnx`` (FP16 graph)   ``onnx`` + the FP16 builder flag
int8       ``int8.onnx`` (Q/DQ)         ``int8.onnx`` + the INT8 and FP16 flags
=========  ===========================  ===========================================

Each engine is its own artifact: one whose graph was withheld is skipped with that reason, one whose
build raises is withheld, and the others are still built. With no TensorRT installed the engines are
skipped (the report says which extra installs one), unless ``--require-engine`` was given. Last, the
engines delivered are timed where a GPU is and the fastest is marked recommended in their records and
sidecars; without a GPU the choice is pending (:mod:`exporters.engine_choice`).
"""
from __future__ import annotations

import importlib.metadata
import shlex
from pathlib import Path

from engine.artifacts import FP16_ENGINE, FP32_ENGINE, INT8_ENGINE
from engine.errors import BackendUnavailableError, ConfigError
from engine.metadata import Precision, file_sha256

from .records import NOT_ASKED

ENGINES = {"fp32": FP32_ENGINE, "fp16": FP16_ENGINE, "int8": INT8_ENGINE}
# Which earlier-stage flag writes each graph (for the messages).
PRODUCERS: dict[str, str] = {
    "fp16.onnx": "--fp16 (the default: drop --no-fp16)",
    "int8.onnx": "--int8 --data data.yaml (its train split calibrates; or --calib PATH)",
}


def source_key(precision: str, flavor) -> str:
    """The key of the graph a precision is built from (see the module table)."""
    if precision == "int8":
        return "int8.onnx"
    if precision == "fp16" and flavor.strongly_typed:
        return "fp16.onnx"
    return "onnx"


def rebuild_command(cfg, precision: str) -> str:
    """The command that builds this engine again (the CLI's own argv when run from the CLI)."""
    if cfg.argv is not None:
        return "python -m exporters.build " + shlex.join(cfg.argv)
    e = cfg.export
    parts = ["python", "-m", "exporters.build"]
    for flag, value in (("--weights", e.weights), ("--onnx", e.onnx)):
        if value is not None:
            parts += [flag, str(value)]
    if e.imgsz is not None:
        parts += ["--imgsz", f"{e.imgsz[0]},{e.imgsz[1]}"]
    parts += ["--dynamic"] if e.dynamic else (["--batch", str(e.batch)] if e.batch != 1 else [])
    parts += ["--out", str(e.out), "--engine", precision]
    opts = cfg.engines
    if opts.profile is not None:
        parts += ["--engine-batch", ",".join(map(str, opts.profile))]
    if opts.targets is not None:
        parts += ["--engine-targets", ",".join(opts.targets)]
    cmd = shlex.join(parts)
    return cmd + ("   (plus this build's --int8 calibration flags)" if precision == "int8" else "")


def _cuda_versions(flavor) -> dict[str, str]:
    out: dict[str, str] = {}
    names = [d.metadata["Name"] for d in importlib.metadata.distributions() if d.metadata["Name"]]
    for name in names:
        low = name.lower().replace("-", "_")
        if low.startswith(f"{flavor.module}_cu") and low[len(flavor.module) + 3:].isdigit():
            out["tensorrt_cuda"] = low[len(flavor.module) + 3:]
    try:
        from engine.cuda import versions

        out["driver"], out["runtime"] = versions()
    except Exception:  # no cuda-python: the sidecar just says less
        pass
    return out


def _built_on(flavor, targets) -> dict[str, str] | None:
    """The GPU of this machine when the engine is tied to it (TensorRT 10/11, or RTX 'current')."""
    if flavor.compute_targets and "current" not in targets:
        return None
    try:
        from engine.cuda import device_info

        info = device_info(0)
        return {"gpu": info.name, "sm": info.sm_tag}
    except Exception:
        return None


def _write(b, built, src: Path, final: Path) -> Path:
    from engine.backends.trt_sidecar import EngineSidecar, sidecar_path

    from .io import write_bytes_atomic

    precision = built.precision.value
    meta = b.metadata.replace(precision=built.precision)
    sidecar = EngineSidecar(
        metadata=meta, tensorrt=built.flavor.module, tensorrt_version=built.flavor.version,
        targets=built.targets, built_on=_built_on(built.flavor, built.targets), cuda=_cuda_versions(built.flavor),
        profiles=built.profiles, source_onnx=src.name, source_onnx_sha256=file_sha256(src),
        builder={**built.settings, "seconds": round(built.seconds, 2), "notes": list(built.notes),
                 "engine_bytes": len(built.plan)},
        rebuild_command=rebuild_command(b.cfg, precision))
    write_bytes_atomic(final, built.plan)
    write_bytes_atomic(sidecar_path(final), sidecar.to_json().encode())
    b.log(f"wrote {final} ({len(built.plan) / 1e6:.1f} MB, {built.flavor.label}, "
          f"{','.join(built.targets) or 'this GPU'}, built in {built.seconds:.1f}s) + {sidecar_path(final).name}")
    return final


def run(b) -> None:
    opts = b.cfg.engines
    if opts.wanted == ():
        for spec in ENGINES.values():
            b.skip(spec.key, f"{NOT_ASKED} (--engine none)")
        return
    from engine.backends.trt_flavor import import_tensorrt

    try:
        _, flavor = import_tensorrt(opts.tensorrt)
    except BackendUnavailableError as e:
        if opts.require:
            raise
        for spec in ENGINES.values():
            b.skip(spec.key, f"no TensorRT: {e.message}", e.fix)
        return
    for precision, spec in ENGINES.items():
        key = source_key(precision, flavor)
        if opts.wanted is not None and precision not in opts.wanted:
            b.skip(spec.key, f"{NOT_ASKED} (--engine {','.join(opts.wanted)})")
            continue
        src = b.records.get(key)
        if src is None or src.not_asked:
            if opts.wanted is not None:  # asked for by name, but its graph was not asked for
                raise ConfigError(f"--engine {precision} needs the {key.replace('.onnx', '').upper()} graph "
                                  f"({b.cfg.export.stem}.{key}), which this run did not build", f"add {PRODUCERS[key]}")
            b.skip(spec.key, f"{NOT_ASKED}: its graph {key} was not asked for")
            continue
        _engine(b, precision, spec, key, flavor)
    _choose(b)


def _choose(b) -> None:
    """Time the delivered engines where a GPU is and recommend the fastest, else say the choice is pending
    (issue 23; :mod:`exporters.engine_choice`)."""
    from .engine_choice import recommend

    recommend(b, {p: b.path(spec.key) for p, spec in ENGINES.items() if b.path(spec.key) is not None})


def _engine(b, precision: str, spec, key: str, flavor) -> None:
    from engine.backends.trt_sidecar import sidecar_path

    from .tensorrt import BatchProfile, EngineConfig, build

    opts = b.cfg.engines
    cfg = EngineConfig(precision=Precision(precision), workspace_mib=opts.workspace_mib, opt_level=opts.opt_level,
                       profile=BatchProfile(*opts.profile) if opts.profile else BatchProfile(),
                       targets=opts.targets, timing_cache=opts.timing_cache, tensorrt=opts.tensorrt,
                       verbose=opts.verbose, int8_float=b.cfg.quantize.int8_float)
    final = spec.path(b.cfg.export.out, b.cfg.export.stem)
    inputs = {"tensorrt": f"{flavor.module} {flavor.version}", "engine": {k: str(v) for k, v in cfg.__dict__.items()}}
    from .tensorrt import _targets, local_sm

    # the targets it will really carry: RTX's default list gains sm75 on a Turing machine
    inputs["targets"] = list(_targets(cfg, flavor))
    if not flavor.compute_targets or "current" in (opts.targets or ()):
        # an engine tied to this machine's GPU: another GPU (or none, or one where there was none) rebuilds it,
        # or a rerun there would reuse it and its mismatch error's rebuild command would do nothing
        inputs["gpu"] = local_sm() or "none"

    def make(final: Path):
        from .build import Outcome
        from .records import Check

        src = b.path(key)
        b.log(f"building the {precision} engine from {src.name} with {flavor.label}")
        built = build(src, cfg, b.log)  # Build.produce logs a heartbeat while it runs
        _write(b, built, src, final)
        figures = {"engine_bytes": len(built.plan), "targets": ",".join(built.targets),
                   "tensorrt": built.flavor.label, "build_seconds": round(built.seconds, 2),
                   "weights_bytes": built.settings.get("weights_bytes")}
        summary = f"{flavor.label} built it for {','.join(built.targets) or 'this GPU'} in {built.seconds:.1f}s"
        return Outcome(final, (Check("engine build", True, summary, figures),), figures)

    b.produce(spec.key, make, inputs, sources=(key,), stale=(sidecar_path(final),))
