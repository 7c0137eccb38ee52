"""The build's engine choice, on the project's FAKE TensorRT and CUDA (our logic, not TensorRT's): the fastest
engine is recommended in the report and the sidecars; without a GPU the choice is pending, with the command."""
from __future__ import annotations

from pathlib import Path

import pytest

from engine.backends.trt_sidecar import EngineSidecar, read_sidecar, sidecar_path
from exporters.build import BuildContext
from exporters.engine_choice import choose, recommend, time_engine
from exporters.tensorrt import BatchProfile, EngineConfig, build
from tests.fakes import install_fakes
from tests.fakes.tiny_onnx import tiny_metadata, write_tiny_onnx


def _engines(tmp_path: Path, monkeypatch, **cudart_kw) -> dict[str, Path]:
    install_fakes(monkeypatch, "10.9.0.34", **cudart_kw)
    onnx = write_tiny_onnx(tmp_path / "tiny.onnx")
    out = {}
    for precision in ("fp16", "int8"):
        built = build(onnx, EngineConfig(profile=BatchProfile(1, 1, 1)), log=lambda s: None)
        engine = tmp_path / f"tiny.{precision}.engine"
        engine.write_bytes(built.plan)
        sc = EngineSidecar(metadata=tiny_metadata(), tensorrt="tensorrt", tensorrt_version="10.9.0.34",
                           built_on={"gpu": "FAKE RTX 3050 Laptop GPU", "sm": "sm86"}, rebuild_command="x",
                           builder={"seconds": 1.0})
        sidecar_path(engine).write_text(sc.to_json())
        out[f"{precision}.engine"] = engine
    return out


def test_the_fastest_engine_is_recommended_in_the_report_and_the_sidecars(tmp_path, monkeypatch):
    artifacts = _engines(tmp_path, monkeypatch)
    ctx = BuildContext(log=lambda s: None)
    ctx.artifacts.update(artifacts)
    speed = {"tiny.fp16.engine": 1.8, "tiny.int8.engine": 1.2}
    choice = recommend(ctx, timer=lambda p: speed[p.name])
    assert choice.recommended == "int8" and choice.timings_ms == {"fp16": 1.8, "int8": 1.2}
    assert "FAKE RTX 3050" in choice.gpu and "recommended: int8" in choice.summary()
    assert ctx.info["engines"]["choice"]["recommended"] == "int8"
    int8, fp16 = read_sidecar(artifacts["int8.engine"]), read_sidecar(artifacts["fp16.engine"])
    assert int8.builder["recommended"] is True and fp16.builder["recommended"] is False
    assert fp16.builder["timing_ms"] == 1.8 and int8.builder["seconds"] == 1.0  # earlier builder fields kept
    speed["tiny.fp16.engine"] = 0.9  # the other way round on another GPU
    assert recommend(ctx, timer=lambda p: speed[p.name]).recommended == "fp16"
    assert read_sidecar(artifacts["fp16.engine"]).builder["recommended"] is True


def test_the_timer_runs_each_engine_through_the_runtime(tmp_path, monkeypatch):
    artifacts = _engines(tmp_path, monkeypatch)
    ms = time_engine(artifacts["fp16.engine"], runs=5, warmup=1)
    assert ms > 0
    assert choose({"fp16": artifacts["fp16.engine"]}).recommended == "fp16"


def test_without_a_gpu_the_choice_is_pending_and_says_how_to_make_it(tmp_path, monkeypatch):
    artifacts = _engines(tmp_path, monkeypatch, no_driver=True)
    ctx = BuildContext(log=lambda s: None)
    ctx.artifacts.update(artifacts)
    choice = recommend(ctx, timer=lambda p: pytest.fail("timed without a GPU"))
    assert choice.recommended is None and "no NVIDIA GPU" in choice.pending
    assert "python -m benchmarks.verify" in choice.summary() and ctx.info["engines"]["choice"]["how"]
    sc = read_sidecar(artifacts["int8.engine"])
    assert sc.builder["recommended"] is False and sc.builder["choice_pending"] == choice.pending
