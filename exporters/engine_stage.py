"""Build stage: ONNX graphs → ``<stem>.<precision>.engine`` + ``<stem>.<precision>.json`` (TensorRT).

Runs after the ONNX and quantize stages. Which graph each precision is built from:

=========  ===========================  ===========================================
precision  TensorRT-RTX 1.x / 11.x      TensorRT 10.x
=========  ===========================  ===========================================
fp32       ``onnx``                     ``onnx``
fp16       ``fp16.onnx`` (FP16 graph)   ``onnx`` + the FP16 builder flag
int8       ``int8.onnx`` (Q/DQ)         ``int8.onnx`` + the INT8 and FP16 flags
=========  ===========================  ===========================================

With no TensorRT installed, the stage says which extra installs one and leaves the ONNX artifacts
as they are (exit 0), unless ``--require-engine`` was given.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import shlex
import sys
from pathlib import Path
from typing import Any

from engine.errors import BackendUnavailableError, ConfigError
from engine.metadata import Precision, file_sha256

# Which earlier-stage flag writes each graph (kept here, in one place, for the error messages).
PRODUCERS: dict[str, str] = {
    "fp16.onnx": "--fp16 (the default: drop --no-fp16)",
    "int8.onnx": "--int8 --data data.yaml (its train split calibrates; or --calib PATH)",
}
PRECISIONS = ("fp32", "fp16", "int8")


def add_arguments(ap: argparse.ArgumentParser) -> None:
    from .tensorrt import RTX_TARGETS

    g = ap.add_argument_group("TensorRT engines (need the rtx or trt extra)")
    g.add_argument("--engine", default="auto",
                   help="engines to build: a comma list of fp32,fp16,int8; 'auto' builds every precision whose "
                        "graph this run produced when a TensorRT is installed; 'none' builds none")
    g.add_argument("--tensorrt", default="auto", choices=("auto", "rtx", "tensorrt"),
                   help="which TensorRT builds: auto = TensorRT-RTX if installed, else TensorRT 10/11")
    g.add_argument("--engine-batch", default=None, metavar="MIN,OPT,MAX",
                   help="optimization profile of a --dynamic model's batch; None means 1,4,8")
    g.add_argument("--engine-targets", default=None, metavar="CC[,CC...]",
                   help=f"TensorRT-RTX compute capabilities, e.g. 86 for an RTX 30 card, or 'current' "
                        f"(default: every RTX generation, {','.join(t[2:] for t in RTX_TARGETS)})")
    g.add_argument("--engine-workspace", type=int, default=None, metavar="MIB",
                   help="builder workspace limit in MiB (default: TensorRT's, all GPU memory)")
    g.add_argument("--engine-opt-level", type=int, default=3, help="builder optimization level 0..5")
    g.add_argument("--engine-timing-cache", type=Path, default=None,
                   help="TensorRT 10/11 timing cache file, read and updated (TensorRT-RTX has none)")
    g.add_argument("--engine-verbose", action="store_true", help="show TensorRT's build log")
    g.add_argument("--require-engine", action="store_true",
                   help="fail (exit 2) when no TensorRT is installed instead of skipping the engines")


def wanted_precisions(text: str) -> tuple[str, ...] | None:
    """``--engine`` → precisions; ``None`` for ``auto``; ``()`` for ``none``."""
    text = (text or "auto").strip().lower()
    if text == "auto":
        return None
    if text == "none":
        return ()
    items = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    bad = [p for p in items if p not in PRECISIONS]
    if bad or not items:
        raise ConfigError(f"--engine {text!r}: unknown precision {', '.join(bad) or '(empty)'}",
                          "use a comma list of fp32, fp16, int8 (or auto / none)")
    return items


def source_key(precision: str, flavor) -> str:
    """The ``ctx.artifacts`` key of the graph a precision is built from (see the module table)."""
    if precision == "int8":
        return "int8.onnx"
    if precision == "fp16" and flavor.strongly_typed:
        return "fp16.onnx"
    return "onnx"


def _batch_profile(args: argparse.Namespace, dynamic: bool):
    from .tensorrt import BatchProfile

    if args.engine_batch is None:
        return BatchProfile()
    if not dynamic:
        raise ConfigError(f"--engine-batch {args.engine_batch} needs a dynamic-batch model",
                          "add --dynamic, or drop --engine-batch for a static batch")
    try:
        lo, opt, hi = (int(v) for v in args.engine_batch.split(","))
    except ValueError:
        raise ConfigError(f"--engine-batch {args.engine_batch!r} is not MIN,OPT,MAX", "use e.g. 1,4,8") from None
    return BatchProfile(lo, opt, hi)


def rebuild_command(args: argparse.Namespace, precision: str) -> str:
    """The command that builds this engine again (the CLI's own argv when run from the CLI)."""
    if sys.argv and Path(sys.argv[0]).as_posix().endswith("exporters/build.py"):
        return "python -m exporters.build " + shlex.join(sys.argv[1:])
    parts = ["python", "-m", "exporters.build"]
    for flag, value in (("--weights", args.weights), ("--onnx", args.onnx), ("--imgsz", args.imgsz)):
        if value is not None:
            parts += [flag, str(value)]
    parts += ["--dynamic"] if args.dynamic else (["--batch", str(args.batch)] if args.batch != 1 else [])
    parts += ["--out", str(args.out), "--engine", precision]
    for flag, value in (("--engine-batch", args.engine_batch), ("--engine-targets", args.engine_targets)):
        if value is not None:
            parts += [flag, str(value)]
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


def _write(built, src: Path, out: Path, stem: str, args, ctx) -> Path:
    from engine.backends.trt_sidecar import EngineSidecar, sidecar_path

    from .io import write_bytes_atomic

    precision = built.precision.value
    meta = ctx.info["metadata"].replace(precision=built.precision)
    sidecar = EngineSidecar(
        metadata=meta, tensorrt=built.flavor.module, tensorrt_version=built.flavor.version,
        targets=built.targets, built_on=_built_on(built.flavor, built.targets), cuda=_cuda_versions(built.flavor),
        profiles=built.profiles, source_onnx=src.name, source_onnx_sha256=file_sha256(src),
        builder={**built.settings, "seconds": round(built.seconds, 2), "notes": list(built.notes),
                 "engine_bytes": len(built.plan)},
        rebuild_command=rebuild_command(args, precision))
    engine_path = out / f"{stem}.{precision}.engine"
    write_bytes_atomic(engine_path, built.plan)
    write_bytes_atomic(sidecar_path(engine_path), sidecar.to_json().encode())
    ctx.log(f"wrote {engine_path} ({len(built.plan) / 1e6:.1f} MB, {built.flavor.label}, "
            f"{','.join(built.targets) or 'this GPU'}, built in {built.seconds:.1f}s) + {sidecar_path(engine_path).name}")
    return engine_path


def run(args: argparse.Namespace, ctx: Any) -> None:
    wanted = wanted_precisions(args.engine)
    if wanted == ():
        return
    from engine.backends.trt_flavor import import_tensorrt

    from .tensorrt import EngineConfig, build

    try:
        _, flavor = import_tensorrt(args.tensorrt)
    except BackendUnavailableError as e:
        if args.require_engine:
            raise
        ctx.log(f"engines skipped: {e.message}\n  to build them: {e.fix}")
        ctx.info["engines"] = {"skipped": e.message}
        return
    onnx_path: Path = ctx.artifacts["onnx"]
    meta = ctx.info["metadata"]
    profile = _batch_profile(args, meta.batch is None)
    targets = tuple(t for t in args.engine_targets.split(",") if t.strip()) if args.engine_targets else None
    auto = wanted is None
    report = ctx.info.setdefault("engines", {})
    for precision in wanted or PRECISIONS:
        key = source_key(precision, flavor)
        src = ctx.artifacts.get(key)
        if src is None and key in ctx.withheld:
            ctx.log(f"{precision} engine not built: {onnx_path.stem}.{key} was withheld by the accuracy gate")
            continue
        if src is None:
            if auto:
                continue
            raise ConfigError(f"--engine {precision} needs the {key.replace('.onnx', '').upper()} graph "
                              f"({onnx_path.stem}.{key}), which this run did not produce",
                              f"add {PRODUCERS[key]}")
        cfg = EngineConfig(precision=Precision(precision), workspace_mib=args.engine_workspace,
                           opt_level=args.engine_opt_level, profile=profile, targets=targets,
                           timing_cache=args.engine_timing_cache, tensorrt=args.tensorrt, verbose=args.engine_verbose)
        ctx.log(f"building the {precision} engine from {Path(src).name} with {flavor.label}")
        built = build(src, cfg, ctx.log)
        path = _write(built, Path(src), onnx_path.parent, onnx_path.stem, args, ctx)
        ctx.artifacts[f"{precision}.engine"] = path
        report[precision] = {"path": str(path), "bytes": len(built.plan), "seconds": round(built.seconds, 2),
                             "targets": list(built.targets), "tensorrt": built.flavor.label,
                             "weights_bytes": built.settings.get("weights_bytes")}
    # issue 23: time the engines where a GPU is, recommend the fastest (exporters/engine_choice.py)
    from .engine_choice import recommend

    recommend(ctx)
