"""Every typed error of the project, in this one module, under one base (:class:`DeployError`).

Each names the file or flag at fault and says how to fix it. Every command line handles them the same
way (:func:`engine.cli.run_cli`): ``error: ...`` and ``fix: ...`` on stderr, exit code 2, no traceback
(``--debug`` shows it). Modules that raise an error also re-export it where it used to live
(``engine.cuda.CudaError``, ``engine.backends.trt_sidecar.EngineMismatchError`` ...).
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


class ServeError(DeployError):
    """Triton failed to start, to load the served models, or stopped on its own (``engine.serve``)."""


class CalibrationError(DeployError):
    """INT8 calibration data is missing, empty or unreadable."""


class EngineBuildError(DeployError):
    """A TensorRT engine build failed (parser errors list each failing node)."""


class DatasetError(DeployError):
    """A data.yaml, image folder or YOLO label file is missing, empty or malformed."""


class SourceError(DeployError):
    """A video source (file, RTSP/HTTP URL, webcam, image folder) is missing, corrupt or unreachable."""


class ArtifactWithheld(ExportError):
    """An optional artifact failed its check and was not delivered (the build goes on without it).

    ``checks`` and ``figures`` carry the evidence (``exporters.records.Check`` objects and numbers) into
    the build report.
    """

    def __init__(self, message: str, fix: str = "", checks: tuple = (), figures: dict | None = None) -> None:
        super().__init__(message, fix)
        self.checks = tuple(checks)
        self.figures = dict(figures or {})


class AccuracyGateError(ExportError):
    """An INT8 artifact lost more mAP than ``--max-map-drop`` allows, even with layers kept float; it was withheld."""


class EngineMismatchError(ModelLoadError):
    """An engine was built for another TensorRT version or GPU than the one here."""


class EngineRunError(DeployError):
    """TensorRT refused to run an engine (shape outside its profile, enqueue failure, a closed backend...)."""


class CudaError(DeployError):
    """A CUDA runtime call failed; ``call`` and ``error_name`` say which and why."""

    def __init__(self, message: str, fix: str = "", call: str = "", error_name: str = "") -> None:
        super().__init__(message, fix)
        self.call = call
        self.error_name = error_name


class CudaUnavailableError(CudaError, BackendUnavailableError):
    """No usable CUDA: cuda-python missing, no NVIDIA driver, or no such device."""


class KernelCompileError(DeployError):
    """NVRTC refused a kernel source; :attr:`log` holds its full log."""

    def __init__(self, message: str, log: str = "", fix: str = "") -> None:
        self.log = log
        super().__init__(f"{message}\n{log.strip()}" if log.strip() else message, fix)


class ClosedError(DeployError):
    """A :class:`~engine.Detector`, pool or backend was used after ``close()`` (or its ``with`` block ended)."""
