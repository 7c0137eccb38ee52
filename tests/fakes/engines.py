"""FAKE engine files: the tiny graph "built" by the fake TensorRT, with its sidecar (a pytest fixture).

Import ``fake_engine`` into a test module to use it. The engine's "inference" writes
``output[b, c, a] = mean(input[b]) + c`` (see :mod:`tests.fakes.fake_tensorrt`).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from engine.backends.trt_sidecar import EngineSidecar, sidecar_path
from tests.fakes import install_fakes
from tests.fakes.tiny_onnx import tiny_metadata, write_tiny_onnx

REBUILD = "python -m exporters.build --weights best.pt --engine fp32"


def fake_sidecar(module="tensorrt", version="10.9.0.34", dynamic=False, **kw) -> EngineSidecar:
    return EngineSidecar(metadata=tiny_metadata(dynamic), tensorrt=module, tensorrt_version=version,
                         rebuild_command=REBUILD, **kw)


def write_engine(path: Path, plan: bytes, sc: EngineSidecar) -> Path:
    path.write_bytes(plan)
    sidecar_path(path).write_text(sc.to_json())
    return path


@pytest.fixture
def fake_engine(tmp_path, monkeypatch):
    """``make(version, module, dynamic, profile, **cudart_kw) -> (engine path, fake trt, fake cudart)``: the tiny
    graph built with a fake TensorRT (10.x unless told; batch profile 1,2,4 when dynamic, or ``profile``)."""
    from exporters.tensorrt import BatchProfile, EngineConfig, build

    def make(version="10.9.0.34", module="tensorrt", dynamic=False, profile=(1, 2, 4), **cudart_kw):
        trt, cudart = install_fakes(monkeypatch, version, module=module, **cudart_kw)
        onnx = write_tiny_onnx(tmp_path / "tiny.onnx", dynamic=dynamic)
        built = build(onnx, EngineConfig(profile=BatchProfile(*profile)), log=lambda s: None)
        targets = built.targets
        sc = fake_sidecar(module, version, dynamic, targets=targets, profiles=built.profiles,
                          built_on=None if targets else {"gpu": "FAKE RTX 3050 Laptop GPU", "sm": "sm86"})
        return write_engine(tmp_path / "tiny.fp32.engine", built.plan, sc), trt, cudart
    return make
