"""The build's engine choice, on the project's FAKE TensorRT and CUDA (our logic, not TensorRT's): the fastest
engine is recommended in the report and the sidecars; without a GPU the choice is pending, with the command."""
from __future__ import annotations

from pathlib import Path

import pytest

from engine.backends.trt_sidecar import EngineSidecar, read_sidecar, sidecar_path
from exporters.engine_choice import choose, recommend, time_engine
from exporters.tensorrt import BatchProfile, EngineConfig, build
from tests.build_helpers import stage_build
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
    b = stage_build(["--out", str(tmp_path), "--no-int8"], artifacts)
    engines = {k.split(".")[0]: p for k, p in artifacts.items()}
    speed = {"tiny.fp16.engine": 1.8, "tiny.int8.engine": 1.2}
    choice = recommend(b, engines, timer=lambda p: speed[p.name])
    assert choice.recommended == "int8" and choice.timings_ms == {"fp16": 1.8, "int8": 1.2}
    assert "FAKE RTX 3050" in choice.gpu and "recommended: int8" in choice.summary()
    assert b.shared["engine_choice"]["recommended"] == "int8"
    assert b.records["int8.engine"].figures["recommended"] == "yes"  # in build_report.json
    assert b.records["fp16.engine"].figures["recommended"] == "no"
    assert b.records["fp16.engine"].figures["timing_ms"] == 1.8
    int8, fp16 = read_sidecar(artifacts["int8.engine"]), read_sidecar(artifacts["fp16.engine"])
    assert int8.builder["recommended"] is True and fp16.builder["recommended"] is False
    assert fp16.builder["timing_ms"] == 1.8 and int8.builder["seconds"] == 1.0  # earlier builder fields kept
    speed["tiny.fp16.engine"] = 0.9  # the other way round on another GPU
    assert recommend(b, engines, timer=lambda p: speed[p.name]).recommended == "fp16"
    assert read_sidecar(artifacts["fp16.engine"]).builder["recommended"] is True


def test_an_engine_left_from_an_earlier_build_loses_its_old_verdict(tmp_path, monkeypatch):
    """Run 1 recommended int8; run 2 built and timed only fp16: both sidecars said recommended."""
    artifacts = _engines(tmp_path, monkeypatch)
    b = stage_build(["--onnx", str(tmp_path / "tiny.onnx"), "--out", str(tmp_path), "--no-int8"], artifacts)
    engines = {k.split(".")[0]: p for k, p in artifacts.items()}
    recommend(b, engines, timer=lambda p: {"tiny.fp16.engine": 1.8, "tiny.int8.engine": 1.2}[p.name])
    assert read_sidecar(artifacts["int8.engine"]).builder["recommended"] is True
    recommend(b, {"fp16": engines["fp16"]}, timer=lambda p: 1.8)
    flags = [read_sidecar(artifacts[k]).builder["recommended"] for k in ("fp16.engine", "int8.engine")]
    assert flags == [True, False]


def test_the_timer_runs_each_engine_through_the_runtime(tmp_path, monkeypatch):
    artifacts = _engines(tmp_path, monkeypatch)
    ms = time_engine(artifacts["fp16.engine"], runs=5, warmup=1)
    assert ms > 0
    assert choose({"fp16": artifacts["fp16.engine"]}).recommended == "fp16"


def test_the_timer_runs_an_engine_at_its_smallest_batch(fake_engine):
    """A dynamic engine whose profile starts at 2 (and a static batch-N one) was timed at batch 1 and refused,
    so the choice stayed pending on a GPU."""
    engine, _, _ = fake_engine(dynamic=True, profile=(2, 4, 8))
    assert time_engine(engine, runs=3, warmup=1) > 0


def test_without_a_gpu_the_choice_is_pending_and_says_how_to_make_it(tmp_path, monkeypatch):
    artifacts = _engines(tmp_path, monkeypatch, no_driver=True)
    b = stage_build(["--out", str(tmp_path), "--no-int8"], artifacts)
    engines = {k.split(".")[0]: p for k, p in artifacts.items()}
    choice = recommend(b, engines, timer=lambda p: pytest.fail("timed without a GPU"))
    assert choice.recommended is None and "no NVIDIA GPU" in choice.pending
    assert "python -m benchmarks.verify" in choice.summary() and b.shared["engine_choice"]["how"]
    assert b.records["int8.engine"].figures["recommended"] == "pending"
    sc = read_sidecar(artifacts["int8.engine"])
    assert sc.builder["recommended"] is False and sc.builder["choice_pending"] == choice.pending
