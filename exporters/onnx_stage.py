"""Build stage 1: the source (.pt or Ultralytics .onnx) → ``<out>/<stem>.onnx``."""
from __future__ import annotations

import argparse
from pathlib import Path

from .config import ExportConfig, parse_imgsz


def add_arguments(ap: argparse.ArgumentParser) -> None:
    src = ap.add_argument_group("source (one of; default: the bundled demo assets/demo/demo.pt)")
    src.add_argument("--weights", type=Path, help="Ultralytics .pt checkpoint (detect)")
    src.add_argument("--onnx", type=Path, help="an existing Ultralytics detect ONNX export (skips the PyTorch step)")
    shape = ap.add_argument_group("input shape")
    shape.add_argument("--imgsz", default=None,
                       help="input size: 640 or height,width such as 384,640 for 16:9 cameras "
                            "(default: the checkpoint's training size, else 640)")
    b = shape.add_mutually_exclusive_group()
    b.add_argument("--batch", type=int, default=1, help="static batch size")
    b.add_argument("--dynamic", action="store_true", help="dynamic batch dimension (height and width stay fixed)")
    ap.add_argument("--opset", type=int, default=17, help="ONNX opset")
    ap.add_argument("--out", type=Path, default=Path("deploy"), help="output folder")
    ap.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
    ap.add_argument("--keep-dfl-softmax", action="store_true",
                    help="keep the head's DFL as Ultralytics exports it (Transpose + Softmax + Conv) instead of "
                         "the equivalent reductions (default: rewritten; same outputs, faster on ONNX Runtime)")
    par = ap.add_argument_group("parity check (ONNX vs its source on real images)")
    par.add_argument("--parity-images", type=Path, default=None,
                     help="folder of images for the check (default: the demo val images, else noise)")
    par.add_argument("--parity-count", type=int, default=4, help="images used by the check")
    par.add_argument("--parity-tol", type=float, default=1e-2, help="largest allowed absolute output difference")


def config_from_args(args: argparse.Namespace) -> ExportConfig:
    return ExportConfig(
        weights=args.weights, onnx=args.onnx, imgsz=parse_imgsz(args.imgsz), batch=args.batch,
        dynamic=args.dynamic, opset=args.opset, out=args.out, parity_images=args.parity_images,
        parity_count=args.parity_count, parity_tol=args.parity_tol, simplify=not args.no_simplify,
        rewrite_dfl=not args.keep_dfl_softmax,
    )


def run(args: argparse.Namespace, ctx) -> None:
    from .onnx_export import export_onnx  # onnx / torch load only when building

    cfg = config_from_args(args)
    art = export_onnx(cfg, ctx.log)
    ctx.artifacts["onnx"] = art.path
    ctx.info["config"] = cfg
    ctx.info["metadata"] = art.metadata
    ctx.info["parity"] = art.parity
