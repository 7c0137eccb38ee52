"""The one place that knows which TensorRT is installed and what its API allows.

Three flavours are supported:

* TensorRT-RTX 1.x (``tensorrt_rtx``): strongly typed only; ahead-of-time builds for a list of
  compute capabilities without a GPU; no timing cache; a runtime cache of JIT-compiled kernels.
* TensorRT 11.x (``tensorrt``): strongly typed only (the precision builder flags were removed).
* TensorRT 10.x (``tensorrt``): weakly typed by default; FP16/INT8 are builder flags.

Everything else (the builder, the runtime backend, the sidecar check) asks a :class:`TrtFlavor` instead
of comparing version strings itself.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from types import ModuleType

from ..errors import BackendUnavailableError

RTX_MODULE = "tensorrt_rtx"
TRT_MODULE = "tensorrt"
ENV_CHOICE = "YOLODEPLOY_TENSORRT"  # "rtx" or "tensorrt": which one "auto" picks when both are installed
INSTALL = {RTX_MODULE: "pip install -e .[rtx]   (TensorRT-RTX, from PyPI: GeForce RTX, builds without a GPU)",
           TRT_MODULE: "pip install -e .[trt]   (TensorRT 10/11, from NVIDIA's index: needs a GPU to build)"}
SUPPORTED = "TensorRT 10.x, TensorRT 11.x, TensorRT-RTX 1.x"


@dataclass(frozen=True)
class TrtFlavor:
    """Which TensorRT, and the API differences that follow from it."""

    module: str
    version: str

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def is_rtx(self) -> bool:
        return self.module == RTX_MODULE

    @property
    def strongly_typed(self) -> bool:
        """Precision comes from the graph (FP16 graph, Q/DQ INT8), never from builder flags."""
        return self.is_rtx or self.major >= 11

    @property
    def precision_flags(self) -> bool:
        """TensorRT 10's weak typing: FP16/INT8 are builder flags on an FP32 (or Q/DQ) graph."""
        return not self.strongly_typed

    @property
    def timing_cache(self) -> bool:
        return not self.is_rtx

    @property
    def compute_targets(self) -> bool:
        """Can build for a list of compute capabilities ahead of time (and without a GPU)."""
        return self.is_rtx

    @property
    def label(self) -> str:
        return f"{'TensorRT-RTX' if self.is_rtx else 'TensorRT'} {self.version}"


def flavor_of(module: ModuleType) -> TrtFlavor:
    """The flavour of an imported ``tensorrt`` / ``tensorrt_rtx`` module; unsupported versions are refused."""
    name = module.__name__.split(".")[0]
    version = str(getattr(module, "__version__", "0"))
    flavor = TrtFlavor(name, version)
    try:
        major = flavor.major
    except ValueError:
        major = -1
    ok = major == 1 if flavor.is_rtx else major in (10, 11)
    if not ok:
        raise BackendUnavailableError(f"{flavor.label} ({name}) is installed; this tool supports {SUPPORTED}",
                                      f"install a supported version: {INSTALL[RTX_MODULE]} or {INSTALL[TRT_MODULE]}")
    return flavor


def _order(prefer: str) -> list[str]:
    prefer = (os.environ.get(ENV_CHOICE, "auto") if prefer == "auto" else prefer).lower()
    if prefer in ("rtx", RTX_MODULE):
        return [RTX_MODULE]
    if prefer in ("trt", TRT_MODULE):
        return [TRT_MODULE]
    if prefer != "auto":
        raise BackendUnavailableError(f"unknown TensorRT choice '{prefer}'", "use auto, rtx or tensorrt")
    # RTX first: its engines are portable across RTX GPUs and it builds without a GPU.
    return [RTX_MODULE, TRT_MODULE]


def import_tensorrt(prefer: str = "auto") -> tuple[ModuleType, TrtFlavor]:
    """Import a TensorRT (``prefer``: ``auto``, ``rtx`` or ``tensorrt``) and return it with its flavour.

    Raises:
        BackendUnavailableError: none of the wanted modules is installed (the message says which extra
            installs one), or the installed version is unsupported.
    """
    tried = []
    for name in _order(prefer):
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            tried.append(f"{name} ({e})")
            continue
        return module, flavor_of(module)
    wanted = _order(prefer)
    raise BackendUnavailableError(f"no TensorRT is installed (tried {', '.join(tried)})",
                                  " or ".join(INSTALL[n] for n in wanted))


def capturing_logger(trt: ModuleType, echo=None, verbose: bool = False):
    """A ``trt.ILogger`` that keeps errors and warnings (for typed error messages) and can echo them.

    The class derives from a TensorRT type, so it is made here, inside a function: this module still
    imports without TensorRT.
    """

    class CapturingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.warnings: list[str] = []
            self.infos: list[str] = []  # the builder's figures (weights memory, ...) arrive at INFO

        def log(self, severity, msg) -> None:  # called by TensorRT, possibly from its threads
            level = str(getattr(severity, "name", None) or severity).rsplit(".", 1)[-1]
            if level in ("INTERNAL_ERROR", "ERROR"):
                self.errors.append(str(msg))
            elif level == "WARNING":
                self.warnings.append(str(msg))
            elif level == "INFO":
                self.infos.append(str(msg))
                if not verbose:
                    return
            elif not verbose:
                return
            if echo is not None:
                echo(f"[{flavor_label}] {level}: {msg}")

        def clear(self) -> None:
            self.errors.clear()
            self.warnings.clear()
            self.infos.clear()

    flavor_label = "TensorRT-RTX" if trt.__name__.split(".")[0] == RTX_MODULE else "TensorRT"
    return CapturingLogger()
