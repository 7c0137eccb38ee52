"""The lean runtime: ``from engine import Detector``.

Imports only NumPy and OpenCV at import time; each backend loads its library when first used, so this
package imports on a machine without torch, Ultralytics, TensorRT or CUDA.
"""
from ._version import __version__
from .detections import Detection, Detections
from .detector import Detector
from .errors import DeployError
from .metadata import ModelMetadata
from .pool import DetectorPool

__all__ = ["Detector", "DetectorPool", "Detections", "Detection", "ModelMetadata", "DeployError", "__version__"]
