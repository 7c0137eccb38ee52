"""Export configuration: a frozen dataclass the CLI fills and the build functions read."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from calibration.config import CalibrationConfig
from engine.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO_ROOT / "assets" / "demo"
DEMO_WEIGHTS = DEMO_DIR / "demo.pt"
DEMO_DATA = DEMO_DIR / "data.yaml"


MAX_IMGSZ = 4096  # a side past this is a typo (YOLO detectors are trained at 320-1536), not a model input


def parse_imgsz(text: str | int | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"640"`` → (640, 640); ``"384,640"`` → (384, 640) as (height, width); ``None`` passes through."""
    if text is None or isinstance(text, tuple):
        return text
    if isinstance(text, int):
        text = str(text)
    m = re.fullmatch(r"\s*(\d+)\s*(?:[,x]\s*(\d+)\s*)?", str(text))
    vals = [int(v) for v in m.groups() if v is not None] if m else []
    if not vals or min(vals) <= 0:
        raise ConfigError(f"--imgsz {text!r} is not a size", "use one number (640) or height,width (384,640)")
    if max(vals) > MAX_IMGSZ:
        raise ConfigError(f"--imgsz {text!r}: a side of {max(vals)} pixels is past the {MAX_IMGSZ} this tool takes "
                          "(the model's buffers alone would need gigabytes)",
                          "use the size the model was trained at, e.g. --imgsz 640 or --imgsz 384,640")
    return (vals[0], vals[0]) if len(vals) == 1 else (vals[0], vals[1])


def check_imgsz(imgsz: tuple[int, int], stride: int) -> None:
    """Refuse input sides that are not multiples of the model stride, naming the nearest valid size."""
    bad = [s for s in imgsz if s % stride]
    if bad:
        fixed = ",".join(str(-(-s // stride) * stride) for s in imgsz)
        raise ConfigError(f"--imgsz {imgsz[0]},{imgsz[1]}: each side must be a multiple of the model stride {stride}",
                          f"try --imgsz {fixed}")


@dataclass(frozen=True)
class ExportConfig:
    """What ``python -m exporters.build`` builds.

    Attributes:
        weights: an Ultralytics ``.pt`` (or ``None`` when ``onnx`` is given).
        onnx: an existing Ultralytics detect ONNX export to take instead of ``weights``.
        imgsz: model input (height, width); ``None`` = the checkpoint's training size (else 640).
        batch: static batch size (ignored when ``dynamic``).
        dynamic: dynamic batch dimension (height and width stay fixed).
        opset: ONNX opset.
        out: output directory.
        parity_images: images for the parity check (a folder); ``None`` = the demo val images, else noise.
        parity_count: how many images the parity check uses.
        parity_tol: largest allowed absolute difference of the raw head outputs.
        simplify: run onnxslim.
        rewrite_dfl: compute the head's DFL softmax as reductions (exporters.head_rewrite); same
            outputs, about 1 ms less per frame on ONNX Runtime's CPU provider at 320.
    """

    weights: Path | None = None
    onnx: Path | None = None
    imgsz: tuple[int, int] | None = None
    batch: int = 1
    dynamic: bool = False
    opset: int = 17
    out: Path = Path("deploy")
    parity_images: Path | None = None
    parity_count: int = 4
    parity_tol: float = 1e-2
    simplify: bool = True
    rewrite_dfl: bool = True

    def __post_init__(self) -> None:
        if self.weights is not None and self.onnx is not None:
            raise ConfigError("--weights and --onnx were both given", "pass one source: a .pt with --weights or an .onnx with --onnx")
        if self.batch < 1:
            raise ConfigError(f"--batch {self.batch} must be >= 1", "use --batch 1 (default) or --dynamic")
        if not 11 <= self.opset <= 21:
            raise ConfigError(f"--opset {self.opset} is outside 11..21", "use --opset 17 (default)")
        if self.parity_count < 1 or self.parity_tol <= 0:
            raise ConfigError("--parity-count must be >= 1 and --parity-tol > 0", "use the defaults (4 images, 1e-2)")
        if self.parity_images is not None and not Path(self.parity_images).is_dir():
            raise ConfigError(f"--parity-images {self.parity_images}: no such folder",
                              "pass a folder of images like the deployment's, or drop the flag (the demo val images)")

    def check_source(self) -> None:
        """The model file must exist: checked when a build starts (before its output folder is made)."""
        for flag, path, what in (("--weights", self.weights, "a checkpoint, e.g. runs/detect/train/weights/best.pt"),
                                 ("--onnx", self.onnx, "an Ultralytics detect ONNX export")):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{flag} {path}: no such file", f"pass {what}")

    @property
    def source(self) -> Path:
        """The input file: ``weights``, ``onnx``, or the bundled demo model."""
        return self.onnx or self.weights or DEMO_WEIGHTS

    @property
    def stem(self) -> str:
        return self.source.stem


def _existing(flag: str, path: Path | None, kind: str = "file or folder") -> None:
    """A path flag must name something that exists: a typo is an error, never a silent fallback."""
    if path is not None and not Path(path).exists():
        raise ConfigError(f"{flag} {path}: no such {kind}", f"check the path given to {flag}")


INT8_FLOAT_DTYPES = ("fp16", "fp32")


@dataclass(frozen=True)
class QuantizeOptions:
    """The INT8 forms (and the accuracy data every artifact is scored on).

    Attributes:
        int8: build the two INT8 forms (TensorRT S8S8 and ONNX Runtime CPU U8S8).
        data: the YOLO data.yaml whose val split scores every artifact (``None``: no mAP figures).
        calib: where calibration images come from (``None`` when ``int8`` is off).
        cache: the calibration range cache file.
        exclude: extra nodes kept float (op types, names or globs).
        max_map_drop: largest mAP50-95 loss of an INT8 form against the FP32 ONNX, points (the upper end
            of its paired-bootstrap interval is held to it; see :mod:`exporters.gate`).
        int8_float: the TensorRT form's layers that are not INT8: ``fp16`` (as ModelOpt) or ``fp32``.
    """

    int8: bool
    data: Path | None
    calib: CalibrationConfig | None
    cache: Path
    exclude: tuple[str, ...] = ()
    max_map_drop: float = 1.0
    int8_float: str = "fp16"

    def __post_init__(self) -> None:
        if self.max_map_drop < 0:
            raise ConfigError(f"--max-map-drop {self.max_map_drop} is negative", "use points of mAP50-95, e.g. 1.0")
        if self.int8_float not in INT8_FLOAT_DTYPES:
            raise ConfigError(f"--int8-float {self.int8_float!r} is not one of {', '.join(INT8_FLOAT_DTYPES)}",
                              "use --int8-float fp16 (default) or fp32")
        _existing("--data", self.data, "file")
        if self.calib is not None:
            _existing("--calib", self.calib.source)


ENGINE_PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class EngineOptions:
    """Which TensorRT engines to build and how (see :mod:`exporters.engine_stage`).

    Attributes:
        wanted: precisions asked for by name; ``None``: every precision whose graph was delivered.
        tensorrt: ``auto``, ``rtx`` or ``tensorrt``.
        profile: the batch profile (min, opt, max) of a dynamic-batch model (``None``: 1,4,8).
        targets: TensorRT-RTX compute capabilities (``None``: every RTX generation).
        require: no TensorRT installed is a failure instead of a skip.
    """

    wanted: tuple[str, ...] | None = None
    tensorrt: str = "auto"
    profile: tuple[int, int, int] | None = None
    targets: tuple[str, ...] | None = None
    workspace_mib: int | None = None
    opt_level: int = 3
    timing_cache: Path | None = None
    verbose: bool = False
    require: bool = False

    def __post_init__(self) -> None:
        """Every engine flag checked now, before the export and the INT8 calibration it would follow."""
        from .tensorrt import BatchProfile, EngineConfig

        if self.targets == ():
            raise ConfigError("--engine-targets names no compute capability",
                              "list them, e.g. --engine-targets 86,89, or 'current', or leave it out")
        cfg = EngineConfig(workspace_mib=self.workspace_mib, opt_level=self.opt_level, targets=self.targets,
                           profile=BatchProfile(*self.profile) if self.profile else BatchProfile())
        object.__setattr__(self, "targets", cfg.targets)  # normalized: "86" -> "sm86"

    @classmethod
    def parse(cls, engine: str, *, batch: str | None, targets: str | None, dynamic: bool,
              **rest) -> "EngineOptions":
        """From the CLI's text forms: ``--engine fp16,int8`` / ``auto`` / ``none``, ``--engine-batch 1,4,8``."""
        text = (engine or "auto").strip().lower()
        wanted: tuple[str, ...] | None
        if text == "auto":
            wanted = None
        elif text == "none":
            wanted = ()
        else:
            wanted = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
            bad = [p for p in wanted if p not in ENGINE_PRECISIONS]
            if bad or not wanted:
                raise ConfigError(f"--engine {text!r}: unknown precision {', '.join(bad) or '(empty)'}",
                                  "use a comma list of fp32, fp16, int8 (or auto / none)")
        profile = None
        if batch is not None:
            if not dynamic:
                raise ConfigError(f"--engine-batch {batch} needs a dynamic-batch model",
                                  "add --dynamic, or drop --engine-batch for a static batch")
            try:
                lo, opt, hi = (int(v) for v in batch.split(","))
            except ValueError:
                raise ConfigError(f"--engine-batch {batch!r} is not MIN,OPT,MAX", "use e.g. 1,4,8") from None
            profile = (lo, opt, hi)
        tgt = tuple(t.strip() for t in targets.split(",") if t.strip()) if targets is not None else None
        return cls(wanted=wanted, profile=profile, targets=tgt, **rest)


@dataclass(frozen=True)
class OpenVinoOptions:
    """The OpenVINO IRs (see :mod:`exporters.openvino_stage`).

    Attributes:
        wanted: write them; ``None``: when the ``openvino`` package is installed (``True`` without it is an error).
        fp16_weights: store the FP32 IR's weights as FP16 (half the size; OpenVINO computes in the device's precision).
    """

    wanted: bool | None = None
    fp16_weights: bool = False

    def __post_init__(self) -> None:
        if self.wanted and not self.installed():
            raise ConfigError("--openvino needs the openvino package",
                              "pip install -e .[openvino], or leave out --openvino")

    @staticmethod
    def installed() -> bool:
        import importlib.util

        return importlib.util.find_spec("openvino") is not None


@dataclass(frozen=True)
class TritonSettings:
    """``--triton DIR``: where the model repository goes and how its models are scheduled."""

    repo: Path
    options: object  # exporters.triton.TritonOptions (untyped here: this module stays free of the Triton writer)

    def __post_init__(self) -> None:
        if Path(self.repo).exists() and not Path(self.repo).is_dir():
            raise ConfigError(f"--triton {self.repo} is a file", "pass a folder for the model repository")


@dataclass(frozen=True)
class BuildConfig:
    """Everything one ``python -m exporters.build`` run does, resolved and checked before any work.

    Attributes:
        export: the FP32 ONNX (source, size, batch, parity).
        fp16: build the FP16 ONNX.
        quantize: the INT8 forms and the accuracy data.
        end2end: the end-to-end graph's settings (``exporters.end2end.End2EndConfig``; ``None``: not built).
        engines: the TensorRT engines.
        openvino: the OpenVINO IRs.
        triton: the Triton model repository (``None``: not written).
        strict: a withheld artifact fails the build.
        rebuild: reuse nothing from an earlier build into the same folder.
        debug: show tracebacks (also of an optional artifact's unexpected failure).
        argv: the command line that made this config (for rebuild commands in engine sidecars).
    """

    export: ExportConfig
    fp16: bool = True
    quantize: QuantizeOptions | None = None
    end2end: object | None = None
    engines: EngineOptions = EngineOptions()
    openvino: OpenVinoOptions = OpenVinoOptions()
    triton: TritonSettings | None = None
    strict: bool = False
    rebuild: bool = False
    debug: bool = False
    argv: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.quantize is None:
            object.__setattr__(self, "quantize", QuantizeOptions(False, None, None,
                                                                 self.export.out / f"{self.export.stem}.calib.json"))
