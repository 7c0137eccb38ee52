"""Parity: the exported ONNX must reproduce its source's raw head outputs on real images."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from engine.errors import ConfigError, ParityError
from engine.preprocess import Letterbox

from .config import DEMO_DIR

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ParityReport:
    """Largest absolute differences between the artifact and its source, over ``n_images`` images."""

    max_abs_box: float
    max_abs_score: float
    n_images: int
    tol: float
    reference: str

    @property
    def max_abs(self) -> float:
        return max(self.max_abs_box, self.max_abs_score)

    @property
    def ok(self) -> bool:
        return self.max_abs <= self.tol

    def summary(self) -> str:
        return (f"parity vs {self.reference} over {self.n_images} images: max |diff| boxes {self.max_abs_box:.2e} px, "
                f"scores {self.max_abs_score:.2e} (tolerance {self.tol:.0e}) -> {'OK' if self.ok else 'FAIL'}")


def _read(path: Path) -> np.ndarray | None:
    """An image, or ``None`` when unreadable (not ``cv2.imread``: it cannot open a non-ASCII path on Windows)."""
    from engine.eval.datasets import DatasetError, read_image

    try:
        return read_image(path)
    except DatasetError:
        return None


def parity_inputs(imgsz: tuple[int, int], folder: Path | None, count: int) -> np.ndarray:
    """``count`` letterboxed images as one float32 NCHW array.

    From ``folder``, else the bundled demo's val images, else seeded noise frames (a user who passes
    no images on an install without the demo still gets a numeric check).
    """
    given = folder is not None
    folder = folder or (DEMO_DIR / "val" / "images")
    files = sorted(p for p in Path(folder).glob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"})[:count]
    frames = [f for f in map(_read, files) if f is not None]
    if given and not frames:
        raise ConfigError(f"--parity-images {folder}: no readable .jpg/.jpeg/.png/.bmp images in it",
                          "pass a folder of images like the deployment's, or drop the flag")
    rng = np.random.default_rng(0)
    while len(frames) < count:
        frames.append(rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8))
    buf, _ = Letterbox(imgsz, batch=count)(frames)
    return buf.copy()


def check_parity(reference: Runner, onnx_path: str | bytes, images: np.ndarray, batch: int | None, tol: float,
                 ref_name: str) -> ParityReport:
    """Run ``reference`` (per image) and the ONNX file (in its batch size) on ``images``; compare.

    A dynamic-batch model is run with batches of 2 so the dynamic path itself is exercised.

    Raises:
        ParityError: the largest absolute difference exceeds ``tol``.
    """
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])  # a path or the model's bytes
    name = sess.get_inputs()[0].name
    b = batch or 2
    ref = np.concatenate([reference(images[i : i + 1]) for i in range(len(images))])
    ours = []
    for i in range(0, len(images), b):
        chunk = images[i : i + b]
        if len(chunk) < b:  # pad the last static batch by repeating its first image
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], b - len(chunk), 0)])
        ours.append(sess.run(None, {name: chunk})[0][: len(images[i : i + b])])
    ours = np.concatenate(ours)
    if ours.shape != ref.shape:
        raise ParityError(f"output shape {ours.shape} of the ONNX differs from the source's {ref.shape}",
                          "report this with the model; rerun with --debug")
    diff = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
    report = ParityReport(float(diff[:, :4].max()), float(diff[:, 4:].max()), len(images), tol, ref_name)
    if not report.ok:
        raise ParityError(report.summary(), "the ONNX does not reproduce its source within the tolerance: try "
                                            "--no-simplify or another --opset (e.g. 18), or raise --parity-tol when "
                                            "the difference is expected (outputs that float rounding moves)")
    return report
