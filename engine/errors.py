"""Typed errors. Each names the file or flag at fault and says how to fix it.

The CLIs catch :class:`DeployError` and print ``str(err)`` without a traceback (``--debug`` shows it).
"""
from __future__ import annotations


class DeployError(Exception):
    """Base of every error this project raises on purpose.

    Args:
        message: what is wrong, naming the file, flag or value.
        fix: one sentence on what to do about it (printed on its own line).
    """

    def __init__(self, message: str, fix: str = "") -> None:
        self.message = message
        self.fix = fix
        super().__init__(f"{message}\n  fix: {fix}" if fix else message)


class ConfigError(DeployError):
    """A flag or config value is invalid (bad ``--imgsz``, conflicting options)."""


class ModelLoadError(DeployError):
    """A model file is missing, truncated, corrupt, or not what it claims to be."""


class UnsupportedModelError(ModelLoadError):
    """A readable model this tool does not handle yet (segmentation, pose, classification...)."""


class MetadataError(ModelLoadError):
    """An artifact's metadata is missing fields or was written by a newer schema."""


class OutputDirError(DeployError):
    """The output directory cannot be created or written."""


class ExportError(DeployError):
    """Exporting or post-processing a model failed."""


class ParityError(ExportError):
    """An exported artifact's outputs differ from its source beyond the tolerance."""


class InputImageError(DeployError):
    """A frame given to the runtime has an unsupported dtype, shape or is empty."""


class BackendUnavailableError(DeployError):
    """No backend is registered for a file, or its library is not installed."""


class CalibrationError(DeployError):
    """INT8 calibration data is missing, empty or unreadable."""


class EngineBuildError(DeployError):
    """A TensorRT engine build failed (parser errors list each failing node)."""


class DatasetError(DeployError):
    """A data.yaml, image folder or YOLO label file is missing, empty or malformed."""


class SourceError(DeployError):
    """A video source (file, RTSP/HTTP URL, webcam, image folder) is missing, corrupt or unreachable."""


class AccuracyGateError(ExportError):
    """An INT8 artifact lost more mAP than ``--max-map-drop`` allows, even with layers kept float; it was withheld."""


class ClosedError(DeployError):
    """A :class:`~engine.Detector`, pool or backend was used after ``close()`` (or its ``with`` block ended)."""
