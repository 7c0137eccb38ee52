"""``<stem>.fp16.onnx``: the whole graph in FP16, its input and output kept FP32.

Strongly typed TensorRT (11, and TensorRT-RTX) ignores builder precision flags and builds each layer
in its ONNX type, so FP16 has to be in the graph. The conversion is ONNX Runtime's own float16 tool
(``onnxruntime.transformers.float16``: no extra dependency); ``keep_io_types`` leaves casts at the
two ends so callers still feed and read float32.

Tolerance, checked on real images against the FP32 model: boxes within :data:`BOX_TOL_FRACTION` of the
larger input side (1.6 px at 320, 3.2 px at 640: FP16's spacing is 0.25-0.5 px in that range, and
the error of ~90 FP16 convolutions adds up), class scores within :data:`SCORE_TOL`. Measured on the
demo: 0.78 px and 0.0016.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import ExportError, ParityError

BOX_TOL_FRACTION = 0.005
SCORE_TOL = 0.01


@dataclass(frozen=True)
class Fp16Check:
    """Largest absolute differences of the FP16 graph's raw outputs from the FP32 graph's."""

    max_abs_box: float
    max_abs_score: float
    box_tol: float
    score_tol: float
    n_images: int

    @property
    def ok(self) -> bool:
        return self.max_abs_box <= self.box_tol and self.max_abs_score <= self.score_tol

    def summary(self) -> str:
        return (f"fp16 vs fp32 over {self.n_images} images: max |diff| boxes {self.max_abs_box:.3f} px "
                f"(tolerance {self.box_tol:.2f}), scores {self.max_abs_score:.4f} (tolerance {self.score_tol}) "
                f"-> {'OK' if self.ok else 'FAIL'}")


def convert_fp16(model):
    """An FP16 copy of ``model`` (an ONNX ``ModelProto``) with FP32 input and output."""
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as e:
        raise ExportError(f"the FP16 conversion needs onnxruntime's float16 tool ({e})",
                          "pip install -U onnxruntime packaging") from None
    try:
        return convert_float_to_float16(model, keep_io_types=True)
    except Exception as e:  # shape inference or an operator the tool cannot type
        raise ExportError(f"FP16 conversion failed ({type(e).__name__}: {e})",
                          "rerun with --debug, or pass --no-fp16 to skip the FP16 graph") from e


def check_fp16(fp32: Path, fp16: Path, images: np.ndarray, imgsz: tuple[int, int], batch: int | None) -> Fp16Check:
    """Compare ``fp16`` with ``fp32`` on ``images`` (NCHW float32); raise :class:`ParityError` past tolerance."""
    import onnxruntime as ort

    outs = []
    for path in (fp32, fp16):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        b = batch or 1
        res = []
        for i in range(0, len(images), b):
            chunk = images[i : i + b]
            n = len(chunk)
            if n < b:
                chunk = np.concatenate([chunk, np.repeat(chunk[:1], b - n, 0)])
            res.append(sess.run(None, {name: chunk})[0][:n].astype(np.float64))
        outs.append(np.concatenate(res))
    diff = np.abs(outs[0] - outs[1])
    check = Fp16Check(float(diff[:, :4].max()), float(diff[:, 4:].max()), BOX_TOL_FRACTION * max(imgsz), SCORE_TOL,
                      len(images))
    if not check.ok:
        raise ParityError(check.summary(), "the FP16 graph is numerically off for this model: pass --no-fp16, "
                                           "or use the FP32 or INT8 artifacts")
    return check
