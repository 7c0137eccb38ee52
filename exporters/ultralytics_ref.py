"""The reference predictor: Ultralytics' own inference, wrapped to return our :class:`Detections`.

Exported artifacts and the runtime are checked against it (parity, mAP). It needs the ``ultralytics``
package (and torch for a ``.pt``); both are imported only when a predictor is made.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np

from engine.detections import Detections
from engine.errors import BackendUnavailableError, ModelLoadError


class UltralyticsPredictor:
    """Run ``YOLO(model_path).predict`` on one BGR frame at a time.

    Args:
        model_path: an Ultralytics detection ``.pt``, or an ``.onnx`` or OpenVINO folder Ultralytics
            exported (Ultralytics loads it with its runtime and reads the class names from its metadata).
        imgsz: inference size (an int or ``(h, w)``), normally the size the model was trained or
            exported at.
        conf: confidence threshold (use 0.001 for mAP, as ``val`` does).
        iou: NMS IoU threshold.
        max_det: boxes kept per image.
        device: ``"cpu"``, ``"0"``, ``"cuda:0"``...
        **predict_options: more ``predict`` arguments, e.g. ``rect=False`` (a ``.pt`` letterboxes square).

    Calling it with a BGR uint8 image returns its :class:`Detections` in source pixels, with the
    model's class names.
    """

    def __init__(self, model_path: Union[str, Path], imgsz: Union[int, tuple[int, int]], conf: float = 0.25,
                 iou: float = 0.7, max_det: int = 300, device: str = "cpu", **predict_options) -> None:
        path = Path(model_path)
        if not path.exists():
            raise ModelLoadError(f"model not found: {path}", "pass the path of a YOLO .pt or .onnx file")
        # No update checks, hub pings or font downloads: runs on offline machines (and in CI).
        os.environ.setdefault("YOLO_OFFLINE", "1")
        try:
            from ultralytics import YOLO
        except ImportError as err:
            raise BackendUnavailableError("the Ultralytics reference predictor needs the 'ultralytics' package",
                                          "pip install ultralytics") from err
        try:
            self.model = YOLO(str(path), task="detect")
        except Exception as err:  # Ultralytics raises many types for unreadable or foreign files
            raise ModelLoadError(f"Ultralytics cannot load {path}: {err}",
                                 "pass an Ultralytics detection model (.pt or Ultralytics-exported .onnx)") from err
        self.names = tuple(str(self.model.names[i]) for i in sorted(self.model.names))
        self.imgsz = imgsz
        self.kwargs = dict(imgsz=imgsz, conf=conf, iou=iou, max_det=max_det, device=device, verbose=False,
                           **predict_options)

    def __call__(self, frame: np.ndarray) -> Detections:
        """Detect objects in one BGR uint8 image."""
        result = self.model.predict(frame, **self.kwargs)[0]
        boxes = result.boxes
        if boxes is None or len(boxes) == 0:
            return Detections.empty(self.names)
        return Detections(boxes.xyxy.cpu().numpy(), boxes.conf.cpu().numpy(), boxes.cls.cpu().numpy(), self.names)
