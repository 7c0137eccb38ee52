"""Build stage (last): ``--triton DIR`` writes a Triton model repository of every model artifact built.

Runs after every other stage, so it sees the FP32 ONNX and whatever INT8/FP16 ONNX and TensorRT engines
the run produced (``ctx.artifacts``), and writes ``DIR/<stem>_<kind>/`` for each (see
:mod:`exporters.triton`). Without ``--triton`` it does nothing.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from engine.errors import ConfigError


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of batch sizes, e.g. 4,8") from None


def add_arguments(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("Triton model repository (serve the artifacts from NVIDIA Triton Inference Server)")
    g.add_argument("--triton", type=Path, metavar="DIR", default=None,
                   help="also write a Triton model repository here: DIR/<stem>_<kind>/config.pbtxt and 1/model.onnx "
                        "(onnxruntime backend) or 1/model.plan (tensorrt backend), one model per artifact built")
    g.add_argument("--triton-max-batch", type=int, default=8, metavar="N",
                   help="max_batch_size of dynamic-batch models (an engine's profile maximum caps it)")
    g.add_argument("--triton-preferred", type=_sizes, default=None, metavar="N,N",
                   help="dynamic_batching preferred batch sizes, e.g. 4,8; None = half the max batch and the max")
    g.add_argument("--triton-queue-delay-us", type=int, default=2000, metavar="US",
                   help="dynamic_batching max_queue_delay_microseconds")
    g.add_argument("--triton-instances", type=int, default=1, metavar="N", help="instance_group count per model")
    g.add_argument("--triton-device", choices=("gpu", "cpu"), default="gpu",
                   help="instance kind of ONNX models (int8-cpu ONNX is always cpu, engines always gpu)")


def run(args: argparse.Namespace, ctx) -> None:
    repo = getattr(args, "triton", None)
    if repo is None:
        return
    from .triton import Device, TritonOptions, write_repository

    if Path(repo).exists() and not Path(repo).is_dir():
        raise ConfigError(f"--triton {repo} is a file", "pass a folder for the model repository")
    opts = TritonOptions(max_batch=args.triton_max_batch, queue_delay_us=args.triton_queue_delay_us,
                         preferred=tuple(args.triton_preferred or ()), instances=args.triton_instances,
                         device=Device(args.triton_device))
    models = {k: Path(p) for k, p in ctx.artifacts.items()}
    stem = Path(ctx.artifacts["onnx"]).stem if "onnx" in ctx.artifacts else "model"
    written = write_repository(Path(repo), models, stem, opts, ctx.info.get("metadata"), ctx.log)
    ctx.artifacts["triton"] = Path(repo)
    ctx.info["triton_models"] = written
