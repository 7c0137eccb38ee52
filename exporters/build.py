"""``python -m exporters.build``: a trained ``.pt`` becomes deployable artifacts.

With no arguments it builds the bundled demo model (``assets/demo/demo.pt``) into ``deploy/``.
Errors are printed as one message and a fix, with exit code 2 (``--debug`` shows the traceback).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from engine.errors import DeployError

from .config import ExportConfig, parse_imgsz


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m exporters.build",
        description="Export an Ultralytics YOLOv8/YOLO11 detect checkpoint to ONNX with metadata and a parity check. "
                    "With no source, builds the bundled demo model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
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
    par = ap.add_argument_group("parity check (ONNX vs its source on real images)")
    par.add_argument("--parity-images", type=Path, default=None,
                     help="folder of images for the check (default: the demo val images, else noise)")
    par.add_argument("--parity-count", type=int, default=4, help="images used by the check")
    par.add_argument("--parity-tol", type=float, default=1e-2, help="largest allowed absolute output difference")
    ap.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
    ap.add_argument("--debug", action="store_true", help="show full tracebacks")
    return ap


def config_from_args(args: argparse.Namespace) -> ExportConfig:
    return ExportConfig(
        weights=args.weights, onnx=args.onnx, imgsz=parse_imgsz(args.imgsz), batch=args.batch,
        dynamic=args.dynamic, opset=args.opset, out=args.out, parity_images=args.parity_images,
        parity_count=args.parity_count, parity_tol=args.parity_tol, simplify=not args.no_simplify,
    )


def run(cfg: ExportConfig, log=print) -> dict:
    """Build every artifact ``cfg`` asks for; return ``{kind: path}``."""
    from .onnx_export import export_onnx  # heavy imports (onnx, torch) only when building

    t0 = time.perf_counter()
    onnx_art = export_onnx(cfg, log)
    artifacts = {"onnx": onnx_art.path}
    log(f"done in {time.perf_counter() - t0:.1f}s: " + ", ".join(f"{k}={v}" for k, v in artifacts.items()))
    return artifacts


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(config_from_args(args))
    except DeployError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing half-written was left in the output folder", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
