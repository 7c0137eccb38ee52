"""The command line of ``python -m exporters.build``: flags → one frozen :class:`~exporters.config.BuildConfig`.

Everything argparse knows stops here: :func:`config_from_args` turns the parsed flags into typed
configs, and the stages below see only those.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from calibration.config import (
    DEFAULT_MAX_IMAGES,
    DEFAULT_VIDEO_EVERY,
    CalibrationConfig,
    CalibrationMethod,
)
from engine.errors import ConfigError

from .config import (
    DEMO_DATA,
    INT8_FLOAT_DTYPES,
    BuildConfig,
    EngineOptions,
    ExportConfig,
    OpenVinoOptions,
    QuantizeOptions,
    TritonSettings,
    parse_imgsz,
)


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of batch sizes, e.g. 4,8") from None


def _source_flags(ap: argparse.ArgumentParser) -> None:
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
                     help="folder of images for the checks (default: the demo val images, else noise)")
    par.add_argument("--parity-count", type=int, default=4, help="images used by the parity check")
    par.add_argument("--parity-tol", type=float, default=1e-2, help="largest allowed absolute output difference")


def _quantize_flags(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("FP16 and INT8 (each checked, then delivered or withheld; see README, 'INT8')")
    g.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=True,
                   help="write <stem>.fp16.onnx: an FP16 graph with FP32 input/output (what strongly typed "
                        "TensorRT builds FP16 from), delivered when its detections agree with FP32's")
    g.add_argument("--int8", action=argparse.BooleanOptionalAction, default=None,
                   help="write <stem>.int8.onnx (TensorRT, S8S8) and <stem>.int8-cpu.onnx (ONNX Runtime CPU, U8S8), "
                        "each only if it passes the accuracy gate; needs --data. None: on for the bundled demo only")
    g.add_argument("--data", type=Path, default=None, metavar="YAML",
                   help="YOLO data.yaml: its val split scores every artifact (accuracy report), its train split "
                        "calibrates unless --calib is given. None: the demo's data.yaml when building the demo")
    g.add_argument("--calib", type=Path, default=None, metavar="PATH",
                   help="calibration images: a folder, a .txt image list, a video (every --calib-every frame) "
                        "or a data.yaml (its train split). None: the train split of --data")
    g.add_argument("--calib-method", default=CalibrationMethod.MEAN_MINMAX.value,
                   choices=[m.value for m in CalibrationMethod],
                   help="how activation ranges are estimated (NNCF's estimators; see README, 'INT8')")
    g.add_argument("--int8-float", default="fp16", choices=INT8_FLOAT_DTYPES,
                   help="the TensorRT INT8 form's layers that are not INT8: fp16 (as ModelOpt; strongly typed "
                        "TensorRT runs each layer in its graph type) or fp32")
    g.add_argument("--calib-images", type=int, default=DEFAULT_MAX_IMAGES, metavar="N",
                   help="at most this many calibration images (a seeded random subset when there are more)")
    g.add_argument("--calib-seed", type=int, default=0, metavar="SEED", help="seed of that subset")
    g.add_argument("--calib-every", type=int, default=DEFAULT_VIDEO_EVERY, metavar="N",
                   help="from a video, every Nth frame")
    g.add_argument("--calib-cache", type=Path, default=None, metavar="FILE",
                   help="tensor-range cache, reused when the model, size, method and images match. "
                        "None: <out>/<stem>.calib.json")
    g.add_argument("--exclude", action="append", default=None, metavar="NODES",
                   help="keep more nodes in float: comma list of op types (Sigmoid), node names or globs "
                        "('/model.23/cv3*'); repeatable. The decode tail is always kept float")
    g.add_argument("--max-map-drop", type=float, default=1.0, metavar="POINTS",
                   help="largest mAP50-95 loss of an INT8 form vs the FP32 ONNX, in points (0-100 scale); the "
                        "upper end of the drop's paired-bootstrap interval (and the drop itself) is held to it")


def _end2end_flags(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("end-to-end graph (fixed-size outputs num_dets, boxes, scores, classes)")
    g.add_argument("--end2end", action=argparse.BooleanOptionalAction, default=True,
                   help="also write <stem>.end2end.onnx: box decode and score selection inside the graph, "
                        "K detections per image out (--no-end2end skips it)")
    g.add_argument("--e2e-tail", choices=("topk", "nms"), default="topk",
                   help="topk: the graph keeps the best --e2e-candidates boxes above --e2e-conf and the runtime's "
                        "NMS finishes on them (builds with TensorRT-RTX, TensorRT 10/11 and ONNX Runtime); "
                        "nms: NMS inside the graph (ONNX NonMaxSuppression: ONNX Runtime and TensorRT 10/11; "
                        "TensorRT-RTX 1.7 has no NMS layer implementation)")
    g.add_argument("--e2e-conf", type=float, default=0.25,
                   help="confidence threshold baked into the graph; at run time only a stricter one is allowed")
    g.add_argument("--e2e-iou", type=float, default=0.45, help="NMS IoU threshold (baked in by --e2e-tail nms)")
    g.add_argument("--max-det", type=int, default=300, help="detections per image (K of --e2e-tail nms)")
    g.add_argument("--e2e-candidates", type=int, default=1000,
                   help="candidate rows per image of --e2e-tail topk (more than the boxes above --e2e-conf, "
                        "or the lowest-scoring are dropped before NMS)")


def _engine_flags(ap: argparse.ArgumentParser) -> None:
    from .tensorrt import RTX_TARGETS

    g = ap.add_argument_group("TensorRT engines (need the rtx or trt extra)")
    g.add_argument("--engine", default="auto",
                   help="engines to build: a comma list of fp32,fp16,int8; 'auto' builds every precision whose "
                        "graph this run delivered when a TensorRT is installed; 'none' builds none")
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


def _openvino_flags(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("OpenVINO IRs (x86 CPUs, Intel iGPUs and NPUs; need the openvino extra)")
    g.add_argument("--openvino", action=argparse.BooleanOptionalAction, default=None,
                   help="write <stem>_openvino/ (FP32 IR) and, when INT8 is built, <stem>.int8_openvino/ (INT8 by "
                        "NNCF, accuracy-gated). None: on when the openvino package is installed")
    g.add_argument("--openvino-fp16", action="store_true",
                   help="store the FP32 IR's weights as FP16 (half the size; OpenVINO computes in the device's "
                        "precision)")


def _triton_flags(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("Triton model repository (serve the artifacts from NVIDIA Triton Inference Server)")
    g.add_argument("--triton", type=Path, metavar="DIR", default=None,
                   help="also write a Triton model repository here: DIR/<stem>_<kind>/config.pbtxt and 1/model.onnx "
                        "(onnxruntime backend) or 1/model.plan (tensorrt backend), one model per artifact delivered")
    g.add_argument("--triton-max-batch", type=int, default=8, metavar="N",
                   help="max_batch_size of dynamic-batch models (an engine's profile maximum caps it)")
    g.add_argument("--triton-preferred", type=_sizes, default=None, metavar="N,N",
                   help="dynamic_batching preferred batch sizes, e.g. 4,8; None = half the max batch and the max")
    g.add_argument("--triton-queue-delay-us", type=int, default=2000, metavar="US",
                   help="dynamic_batching max_queue_delay_microseconds")
    g.add_argument("--triton-instances", type=int, default=1, metavar="N", help="instance_group count per model")
    g.add_argument("--triton-device", choices=("gpu", "cpu"), default="gpu",
                   help="instance kind of ONNX models (int8-cpu ONNX is always cpu, engines always gpu)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every flag (``--help`` explains each, with its default)."""
    ap = argparse.ArgumentParser(
        prog="python -m exporters.build",
        description="Build deployable artifacts from an Ultralytics detect checkpoint (YOLOv8, YOLO11, YOLO12, "
                    "YOLO26, YOLOv10). With no source, builds the bundled demo model. Every artifact is checked, then "
                    "delivered or withheld with the figures that show why; exit code 0 when all were "
                    "delivered, 3 when some were withheld (the rest are usable), 2 when the build failed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for add in (_source_flags, _quantize_flags, _end2end_flags, _engine_flags, _openvino_flags, _triton_flags):
        add(ap)
    run = ap.add_argument_group("the run")
    run.add_argument("--strict", action="store_true",
                     help="any withheld artifact fails the build (exit 2) instead of exit 3 with the rest delivered")
    run.add_argument("--rebuild", action="store_true",
                     help="rebuild every artifact (default: reuse those whose inputs did not change since the "
                          "last build into --out)")
    run.add_argument("--debug", action="store_true", help="show full tracebacks")
    return ap


def _quantize_options(args: argparse.Namespace, export: ExportConfig) -> QuantizeOptions:
    from .quantize import parse_excludes

    demo = export.weights is None and export.onnx is None
    int8 = demo if args.int8 is None else bool(args.int8)
    data = args.data or (DEMO_DATA if demo else None)
    if int8 and data is None:
        raise ConfigError("--int8 needs --data data.yaml: INT8 is only written after its accuracy is checked on "
                          "a labelled val split", "add --data path/to/data.yaml (and --calib PATH for other "
                          "calibration images than its train split)")
    ignored = [f for f, v in (("--calib", args.calib), ("--calib-cache", args.calib_cache), ("--exclude", args.exclude))
               if v]
    if not int8 and ignored:  # they would do nothing: a typo'd path or node name must not pass unseen
        raise ConfigError(f"{', '.join(ignored)} given, but this build makes no INT8 model",
                          "add --int8 (with --data data.yaml), or drop " + ", ".join(ignored))
    calib = None
    if int8:
        calib = CalibrationConfig(source=args.calib or data, max_images=args.calib_images, seed=args.calib_seed,
                                  video_every=args.calib_every, method=CalibrationMethod(args.calib_method))
    cache = args.calib_cache or export.out / f"{export.stem}.calib.json"
    return QuantizeOptions(int8, data, calib, cache, parse_excludes(args.exclude), args.max_map_drop, args.int8_float)


def config_from_args(args: argparse.Namespace) -> BuildConfig:
    """Turn parsed flags into the build's config (every flag checked here, before any work)."""
    from .end2end import End2EndConfig, TailKind
    from .triton import Device, TritonOptions

    export = ExportConfig(
        weights=args.weights, onnx=args.onnx, imgsz=parse_imgsz(args.imgsz), batch=args.batch,
        dynamic=args.dynamic, opset=args.opset, out=args.out, parity_images=args.parity_images,
        parity_count=args.parity_count, parity_tol=args.parity_tol, simplify=not args.no_simplify,
        rewrite_dfl=not args.keep_dfl_softmax)
    e2e = (End2EndConfig(conf=args.e2e_conf, iou=args.e2e_iou, max_det=args.max_det, kind=TailKind(args.e2e_tail),
                         candidates=args.e2e_candidates) if args.end2end else None)
    engines = EngineOptions.parse(args.engine, tensorrt=args.tensorrt, batch=args.engine_batch,
                                  targets=args.engine_targets, workspace_mib=args.engine_workspace,
                                  opt_level=args.engine_opt_level, timing_cache=args.engine_timing_cache,
                                  verbose=args.engine_verbose, require=args.require_engine, dynamic=args.dynamic)
    triton = None
    if args.triton is not None:
        triton = TritonSettings(Path(args.triton), TritonOptions(
            max_batch=args.triton_max_batch, queue_delay_us=args.triton_queue_delay_us,
            preferred=tuple(args.triton_preferred or ()), instances=args.triton_instances,
            device=Device(args.triton_device)))
    quantize = _quantize_options(args, export)
    if engines.wanted and "int8" in engines.wanted and not quantize.int8:  # an INT8 engine is built from the Q/DQ
        # graph on every TensorRT (found out after the export and the other engines, before)
        raise ConfigError(f"--engine {','.join(engines.wanted)} asks for an int8 engine, but this build makes no "
                          "INT8 graph", "add --int8 --data data.yaml, or drop int8 from --engine")
    return BuildConfig(export=export, fp16=bool(args.fp16), quantize=quantize, end2end=e2e,
                       engines=engines, openvino=OpenVinoOptions(args.openvino, args.openvino_fp16), triton=triton,
                       strict=args.strict, rebuild=args.rebuild, debug=args.debug)
