"""Every artifact kind the build can write, declared once.

``python -m exporters.build`` builds the kinds in :data:`ARTIFACTS` order, the Triton writer and
``benchmarks`` name and pick files by them, and the runtime chooses a backend from them
(:func:`kind_of` a path → its :class:`ArtifactKind` → ``backends[0]``). Adding a precision or a
format is one entry here plus its build function.

A kind's file is ``<stem><suffix>`` in the output folder: ``demo.onnx``, ``demo.int8-cpu.onnx``,
``demo.fp16.engine``; an OpenVINO IR is a folder, ``demo_openvino/`` or ``demo.int8_openvino/``, holding
``demo.xml`` and ``demo.bin``. Its :attr:`ArtifactKind.key` is the suffix without the leading dot or
underscore (``onnx``, ``int8-cpu.onnx``, ``fp16.engine``, ``openvino``, ``int8_openvino``); that key is what
build reports and Triton model names use.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .metadata import Precision


@dataclass(frozen=True)
class ArtifactKind:
    """One kind of artifact.

    Attributes:
        suffix: what follows the model's stem in the file name (``.int8.onnx``).
        label: the name people read in reports (``INT8 TensorRT form``).
        form: the short name benchmarks print (``int8``, ``trt-fp16``).
        precision: the precision of its compute (``None``: not known from the name).
        built_from: the key of the artifact it is made from (``None``: from the source checkpoint).
        backends: the runtime backends that load it, the default first (engines are *built* from ONNX
            kinds: see ``built_from``).
        required: the build fails when this kind fails (only the FP32 ONNX); any other kind is
            withheld with its reason and the build goes on.
        cpu_only: it runs on CPUs only (Triton places it on CPU instances).
        folder: the artifact is a folder (an OpenVINO IR: ``.xml`` + ``.bin``), not one file.
        misread_by: backends that load it without an error yet compute it wrongly: named explicitly for it,
            they are refused (OpenVINO on the TensorRT INT8 form's Q/DQ graph: mAP50-95 0.56 -> 0.24).
    """

    suffix: str
    label: str
    form: str
    precision: Precision | None
    built_from: str | None
    backends: tuple[str, ...]
    required: bool = False
    cpu_only: bool = False
    folder: bool = False
    misread_by: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """``onnx``, ``fp16.onnx``, ``int8-cpu.onnx``, ``fp32.engine``, ``openvino``: the suffix without its dot."""
        return self.suffix[1:]

    @property
    def is_engine(self) -> bool:
        return "tensorrt" in self.backends

    def path(self, out: str | Path, stem: str) -> Path:
        """Where a build with output folder ``out`` writes this kind for model ``stem``."""
        return Path(out) / f"{stem}{self.suffix}"


def _engine(precision: Precision, built_from: str) -> ArtifactKind:
    return ArtifactKind(f".{precision.value}.engine", f"TensorRT engine ({precision.value.upper()})",
                        f"trt-{precision.value}", precision, built_from, ("tensorrt",))


# OpenVINO reads ONNX too: device="auto" runs an FP32 ONNX on it on a CPU (engine.backends.pick_backend)
FP32_ONNX = ArtifactKind(".onnx", "FP32 ONNX", "fp32", Precision.FP32, None, ("onnxruntime", "openvino"),
                         required=True)
FP16_ONNX = ArtifactKind(".fp16.onnx", "FP16 ONNX", "fp16", Precision.FP16, "onnx", ("onnxruntime",))
INT8_TENSORRT = ArtifactKind(".int8.onnx", "INT8 TensorRT form (S8S8)", "int8", Precision.INT8, "onnx",
                             ("onnxruntime",), misread_by=("openvino",))
INT8_CPU = ArtifactKind(".int8-cpu.onnx", "INT8 CPU form (U8S8)", "int8-cpu", Precision.INT8, "onnx",
                        ("onnxruntime",), cpu_only=True)
END2END_ONNX = ArtifactKind(".end2end.onnx", "FP32 end-to-end graph", "end2end", Precision.FP32, "onnx",
                            ("onnxruntime",))
# OpenVINO IRs, converted by OpenVINO from the FP32 ONNX; INT8 quantized by NNCF (exporters.openvino)
FP32_IR = ArtifactKind("_openvino", "OpenVINO IR (FP32)", "ov-fp32", Precision.FP32, "onnx", ("openvino",),
                       folder=True)
INT8_IR = ArtifactKind(".int8_openvino", "OpenVINO IR INT8 (NNCF)", "ov-int8", Precision.INT8, "onnx",
                       ("openvino",), folder=True)
# Engines: which graph each is built from depends on the TensorRT flavor (see exporters.engine_stage);
# ``built_from`` names the graph of strongly typed TensorRT (TensorRT-RTX, 11).
FP32_ENGINE = _engine(Precision.FP32, "onnx")
FP16_ENGINE = _engine(Precision.FP16, "fp16.onnx")
INT8_ENGINE = _engine(Precision.INT8, "int8.onnx")

#: Every kind, in build order.
ARTIFACTS: tuple[ArtifactKind, ...] = (FP32_ONNX, FP16_ONNX, FP32_IR, INT8_IR, INT8_TENSORRT, INT8_CPU,
                                       END2END_ONNX, FP32_ENGINE, FP16_ENGINE, INT8_ENGINE)
#: An engine whose name does not say its precision (``model.plan`` as Triton names it): the runtime takes it.
ANY_ENGINE = ArtifactKind(".engine", "TensorRT engine", "trt", None, None, ("tensorrt",))
#: An OpenVINO IR whose name does not say its form: a user's ``model.xml``, Ultralytics' ``best_openvino_model/``.
ANY_IR = ArtifactKind(".xml", "OpenVINO IR", "ov", None, None, ("openvino",))
#: File endings that name no kind of :data:`ARTIFACTS` by themselves: a user's ``best.onnx``, ``model.plan``.
GENERIC_SUFFIXES: dict[str, ArtifactKind] = {".onnx": FP32_ONNX, ".engine": ANY_ENGINE, ".plan": ANY_ENGINE,
                                             ".xml": ANY_IR, "_openvino_model": ANY_IR}

_BY_KEY = {a.key: a for a in ARTIFACTS}


def kind(key: str) -> ArtifactKind:
    """The kind whose key is ``key`` (``"int8-cpu.onnx"``); ``KeyError`` naming the known keys."""
    try:
        return _BY_KEY[key]
    except KeyError:
        raise KeyError(f"unknown artifact kind {key!r}; known: {', '.join(_BY_KEY)}") from None


def kind_of(path: str | Path) -> ArtifactKind | None:
    """The kind of a file or IR folder by its name: the longest matching suffix wins (``x.int8-cpu.onnx``
    is not ``x.onnx``); a plain ``best.onnx`` is an FP32 ONNX, ``model.plan`` an engine. An IR's ``.xml``
    has the kind of its folder (``demo.int8_openvino/demo.xml`` is the INT8 IR). ``None``: no kind."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".xml"):
        folder = kind_of(path.parent) if path.parent.name else None
        return folder if folder is not None and "openvino" in folder.backends else ANY_IR
    hits = [a for a in ARTIFACTS if name.endswith(a.suffix) and len(name) > len(a.suffix)]
    if hits:
        return max(hits, key=lambda a: len(a.suffix))
    return next((k for s, k in GENERIC_SUFFIXES.items() if name.endswith(s) and len(name) > len(s)), None)


def runtime_suffixes() -> tuple[str, ...]:
    """The file endings (and IR folder endings, with a slash) the runtime loads, for error messages."""
    ends = {a.suffix + "/" if a.folder else "." + a.suffix.rsplit(".", 1)[-1] for a in ARTIFACTS}
    return tuple(sorted(ends | {s if s.startswith(".") else s + "/" for s in GENERIC_SUFFIXES}))
