"""Every artifact kind the build can write, declared once.

``python -m exporters.build`` builds the kinds in :data:`ARTIFACTS` order, the Triton writer and
``benchmarks`` name and pick files by them, and the runtime chooses a backend from them
(:func:`kind_of` a path → its :class:`ArtifactKind` → ``backends[0]``). Adding a precision or a
format is one entry here plus its build function.

A kind's file is ``<stem><suffix>`` in the output folder: ``demo.onnx``, ``demo.int8-cpu.onnx``,
``demo.fp16.engine``. Its :attr:`ArtifactKind.key` is the suffix without the leading dot (``onnx``,
``int8-cpu.onnx``, ``fp16.engine``); that key is what build reports and Triton model names use.
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
    """

    suffix: str
    label: str
    form: str
    precision: Precision | None
    built_from: str | None
    backends: tuple[str, ...]
    required: bool = False
    cpu_only: bool = False

    @property
    def key(self) -> str:
        """``onnx``, ``fp16.onnx``, ``int8-cpu.onnx``, ``fp32.engine``: the suffix without its dot."""
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


FP32_ONNX = ArtifactKind(".onnx", "FP32 ONNX", "fp32", Precision.FP32, None, ("onnxruntime",), required=True)
FP16_ONNX = ArtifactKind(".fp16.onnx", "FP16 ONNX", "fp16", Precision.FP16, "onnx", ("onnxruntime",))
INT8_TENSORRT = ArtifactKind(".int8.onnx", "INT8 TensorRT form (S8S8)", "int8", Precision.INT8, "onnx",
                             ("onnxruntime",))
INT8_CPU = ArtifactKind(".int8-cpu.onnx", "INT8 CPU form (U8S8)", "int8-cpu", Precision.INT8, "onnx",
                        ("onnxruntime",), cpu_only=True)
END2END_ONNX = ArtifactKind(".end2end.onnx", "FP32 end-to-end graph", "end2end", Precision.FP32, "onnx",
                            ("onnxruntime",))
# Engines: which graph each is built from depends on the TensorRT flavor (see exporters.engine_stage);
# ``built_from`` names the graph of strongly typed TensorRT (TensorRT-RTX, 11).
FP32_ENGINE = _engine(Precision.FP32, "onnx")
FP16_ENGINE = _engine(Precision.FP16, "fp16.onnx")
INT8_ENGINE = _engine(Precision.INT8, "int8.onnx")

#: Every kind, in build order.
ARTIFACTS: tuple[ArtifactKind, ...] = (FP32_ONNX, FP16_ONNX, INT8_TENSORRT, INT8_CPU, END2END_ONNX,
                                       FP32_ENGINE, FP16_ENGINE, INT8_ENGINE)
#: An engine whose name does not say its precision (``model.plan`` as Triton names it): the runtime takes it.
ANY_ENGINE = ArtifactKind(".engine", "TensorRT engine", "trt", None, None, ("tensorrt",))
#: File endings that name no kind of :data:`ARTIFACTS` by themselves: a user's ``best.onnx``, ``model.plan``.
GENERIC_SUFFIXES: dict[str, ArtifactKind] = {".onnx": FP32_ONNX, ".engine": ANY_ENGINE, ".plan": ANY_ENGINE}

_BY_KEY = {a.key: a for a in ARTIFACTS}


def kind(key: str) -> ArtifactKind:
    """The kind whose key is ``key`` (``"int8-cpu.onnx"``); ``KeyError`` naming the known keys."""
    try:
        return _BY_KEY[key]
    except KeyError:
        raise KeyError(f"unknown artifact kind {key!r}; known: {', '.join(_BY_KEY)}") from None


def kind_of(path: str | Path) -> ArtifactKind | None:
    """The kind of a file by its name: the longest matching suffix wins (``x.int8-cpu.onnx`` is not
    ``x.onnx``); a plain ``best.onnx`` is an FP32 ONNX, ``model.plan`` an engine. ``None``: no kind."""
    name = Path(path).name.lower()
    hits = [a for a in ARTIFACTS if name.endswith(a.suffix) and len(name) > len(a.suffix)]
    if hits:
        return max(hits, key=lambda a: len(a.suffix))
    return GENERIC_SUFFIXES.get(Path(name).suffix)


def runtime_suffixes() -> tuple[str, ...]:
    """The file endings the runtime loads, for error messages."""
    return tuple(sorted({"." + a.suffix.rsplit(".", 1)[-1] for a in ARTIFACTS} | set(GENERIC_SUFFIXES)))
