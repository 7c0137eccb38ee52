"""The engine sidecar ``<stem>.<precision>.json``: what an engine was built with, checked before loading.

A TensorRT engine runs only on the TensorRT version that built it, and (standard TensorRT) only on the
GPU generation it was built on; TensorRT-RTX engines run on the compute capabilities they target. The
sidecar records that, plus the model's :class:`ModelMetadata`, so a mismatch is a clear error naming
both sides and the command that rebuilds the engine, instead of a failed deserialization.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import EngineMismatchError, MetadataError
from ..metadata import ModelMetadata, Precision
from .trt_flavor import INSTALL, TrtFlavor

SIDECAR_SCHEMA = 1


@dataclass(frozen=True)
class ProfileSpec:
    """One input's optimization profile: the smallest, tuned-for and largest shapes."""

    input: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class EngineSidecar:
    """Everything a runtime needs to know about an engine before deserializing it.

    Attributes:
        metadata: the model's metadata (names, imgsz, batch...), precision set to the engine's.
        tensorrt: the module that built it: ``"tensorrt_rtx"`` or ``"tensorrt"``.
        tensorrt_version: that module's ``__version__``.
        targets: compute capabilities an RTX engine runs on (``"sm86"``...); empty for TensorRT 10/11.
        built_on: ``{"gpu": name, "sm": "sm86"}`` of the GPU it was built on, ``None`` for a GPU-less build.
        cuda: CUDA versions at build time (``runtime``, ``driver``, ``tensorrt_cuda``).
        profiles: optimization profiles (dynamic batch); empty for static shapes.
        source_onnx, source_onnx_sha256: the ONNX file it was built from.
        builder: build settings and notes (workspace, optimization level, seconds, dropped targets).
        rebuild_command: the command that builds this engine again.
    """

    metadata: ModelMetadata
    tensorrt: str
    tensorrt_version: str
    targets: tuple[str, ...] = ()
    built_on: dict[str, str] | None = None
    cuda: dict[str, str] = field(default_factory=dict)
    profiles: tuple[ProfileSpec, ...] = ()
    source_onnx: str = ""
    source_onnx_sha256: str = ""
    builder: dict[str, Any] = field(default_factory=dict)
    rebuild_command: str = ""
    schema_version: int = SIDECAR_SCHEMA

    @property
    def precision(self) -> Precision:
        return self.metadata.precision

    @property
    def flavor(self) -> TrtFlavor:
        return TrtFlavor(self.tensorrt, self.tensorrt_version)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version, "precision": self.precision.value,
            "tensorrt": self.tensorrt, "tensorrt_version": self.tensorrt_version, "targets": list(self.targets),
            "built_on": self.built_on, "cuda": dict(self.cuda),
            "profiles": [{"input": p.input, "min": list(p.min), "opt": list(p.opt), "max": list(p.max)}
                         for p in self.profiles],
            # the image input's profile alone, for readers that want one (Triton's max_batch_size)
            "profile": ({"min": list(self.profiles[0].min), "opt": list(self.profiles[0].opt),
                         "max": list(self.profiles[0].max)} if self.profiles else None),
            "source_onnx": self.source_onnx, "source_onnx_sha256": self.source_onnx_sha256,
            "builder": dict(self.builder), "rebuild_command": self.rebuild_command,
            "metadata": self.metadata.to_dict(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EngineSidecar":
        version = int(d.get("schema_version", 0))
        if not 1 <= version <= SIDECAR_SCHEMA:
            raise MetadataError(f"engine sidecar schema {version} is not one this tool reads (1..{SIDECAR_SCHEMA})",
                                "rebuild the engine with this version of the tool")
        try:
            return cls(
                metadata=ModelMetadata.from_dict(d["metadata"]), tensorrt=str(d["tensorrt"]),
                tensorrt_version=str(d["tensorrt_version"]), targets=tuple(d.get("targets") or ()),
                built_on=d.get("built_on"), cuda=dict(d.get("cuda") or {}),
                profiles=tuple(ProfileSpec(str(p["input"]), tuple(p["min"]), tuple(p["opt"]), tuple(p["max"]))
                               for p in d.get("profiles") or ()),
                source_onnx=str(d.get("source_onnx", "")), source_onnx_sha256=str(d.get("source_onnx_sha256", "")),
                builder=dict(d.get("builder") or {}), rebuild_command=str(d.get("rebuild_command", "")),
                schema_version=version)
        except (KeyError, TypeError, ValueError) as e:
            raise MetadataError(f"engine sidecar is malformed ({type(e).__name__}: {e})",
                                "rebuild the engine with python -m exporters.build --engine ...") from None


def sidecar_path(engine: str | Path) -> Path:
    """``model.fp16.engine`` → ``model.fp16.json``."""
    return Path(engine).with_suffix(".json")


def read_sidecar(engine: str | Path) -> EngineSidecar:
    """The sidecar beside ``engine``; a typed error naming the file when missing or unreadable."""
    path = sidecar_path(engine)
    if not path.is_file():
        raise MetadataError(f"{engine} has no sidecar {path.name} (it says which TensorRT and GPU built it, "
                            "and the model's class names)",
                            "build engines with python -m exporters.build --engine ..., which writes both files")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise MetadataError(f"engine sidecar {path} is unreadable ({e})", "rebuild the engine") from None
    if not isinstance(data, dict):
        raise MetadataError(f"engine sidecar {path} is not a JSON object", "rebuild the engine")
    return EngineSidecar.from_dict(data)


def _rebuild(sc: EngineSidecar, engine: Path) -> str:
    return sc.rebuild_command or f"python -m exporters.build --onnx <the .onnx> --engine {sc.precision.value}"


def check_flavor(sc: EngineSidecar, running: TrtFlavor, engine: Path) -> None:
    """Refuse an engine built by another TensorRT flavour or version than ``running``."""
    built = sc.flavor
    if built.module != running.module or built.version != running.version:
        raise EngineMismatchError(
            f"{engine} was built with {built.label} ({built.module}), but this machine runs {running.label} "
            f"({running.module}); a TensorRT engine runs only on the TensorRT version that built it",
            f"rebuild it here: {_rebuild(sc, engine)}   (or install {built.module}=={built.version})")


def check_gpu(sc: EngineSidecar, sm_tag: str, gpu_name: str, engine: Path) -> None:
    """Refuse an engine whose compute-capability targets (RTX) or build GPU (TensorRT) exclude this GPU."""
    if sc.targets and "current" not in sc.targets:
        if sm_tag not in sc.targets:
            raise EngineMismatchError(
                f"{engine} targets {', '.join(sc.targets)}, but this GPU ({gpu_name}) is {sm_tag}",
                f"rebuild it for this GPU: {_rebuild(sc, engine)} --engine-targets {sm_tag[2:]}")
        return
    built = (sc.built_on or {}).get("sm")
    if built and built != sm_tag:
        raise EngineMismatchError(
            f"{engine} was built on {sc.built_on.get('gpu', '?')} ({built}); this GPU ({gpu_name}) is {sm_tag}, "
            "and a TensorRT engine runs only on the GPU generation that built it",
            f"rebuild it on this machine: {_rebuild(sc, engine)}")


def missing_flavor_hint(sc: EngineSidecar) -> str:
    """How to install the TensorRT that built this engine."""
    return f"{INSTALL[sc.tensorrt]}, version {sc.tensorrt_version}" if sc.tensorrt in INSTALL else "install TensorRT"
