"""Export configuration: a frozen dataclass the CLI fills and the build functions read."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO_ROOT / "assets" / "demo"
DEMO_WEIGHTS = DEMO_DIR / "demo.pt"
DEMO_DATA = DEMO_DIR / "data.yaml"


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

    @property
    def source(self) -> Path:
        """The input file: ``weights``, ``onnx``, or the bundled demo model."""
        return self.onnx or self.weights or DEMO_WEIGHTS

    @property
    def stem(self) -> str:
        return self.source.stem
