"""The engine builder: real TensorRT-RTX builds (it needs no GPU), and the TensorRT 10/11 branches on
fake modules that record calls (they prove our logic, not TensorRT's)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.backends.trt_flavor import TrtFlavor, flavor_of, import_tensorrt
from engine.backends.trt_sidecar import EngineSidecar, read_sidecar
from engine.errors import BackendUnavailableError, ConfigError, EngineBuildError
from engine.metadata import Precision
from exporters import engine_stage
from exporters.config import EngineOptions
from exporters.tensorrt import (
    RTX_TARGETS,
    BatchProfile,
    EngineConfig,
    build,
    build_engine,
    normalize_target,
)
from tests.build_helpers import stage_build
from tests.conftest import ROOT
from tests.fakes import install_fakes
from tests.fakes.tiny_onnx import tiny_metadata, write_int8_qdq, write_tiny_onnx

try:
    import tensorrt_rtx  # noqa: F401

    HAVE_RTX = True
except ImportError:
    HAVE_RTX = False
needs_rtx = pytest.mark.skipif(not HAVE_RTX, reason="tensorrt-rtx is not installed (pip install -e .[rtx])")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tiny")
    out = {"onnx": write_tiny_onnx(d / "tiny.onnx"), "dynamic": write_tiny_onnx(d / "tiny_dyn.onnx", dynamic=True),
           "fp16.onnx": write_tiny_onnx(d / "tiny.fp16.onnx", fp16=True),
           "broken": write_tiny_onnx(d / "broken.onnx", bad_nodes=2)}
    out["int8.onnx"] = write_int8_qdq(out["onnx"], d / "tiny.int8.onnx")
    truncated = d / "truncated.onnx"
    truncated.write_bytes(out["onnx"].read_bytes()[:300])
    out["truncated"] = truncated
    return out


def _stage(argv: list[str], artifacts: dict[str, Path], dynamic: bool = False, meta=None, log=lambda s: None):
    """Run the engine stage of a build of ``argv`` whose earlier stages delivered ``artifacts``."""
    b = stage_build(["--onnx", str(artifacts["onnx"]), *argv], artifacts, meta or tiny_metadata(dynamic), log)
    engine_stage.run(b)
    return b


# ---- the real TensorRT-RTX builder --------------------------------------------------------------

@needs_rtx
@pytest.mark.parametrize("key,precision", [("onnx", Precision.FP32), ("fp16.onnx", Precision.FP16),
                                           ("int8.onnx", Precision.INT8)])
def test_rtx_builds_each_precision_for_every_rtx_generation(tiny, key, precision):
    built = build(tiny[key], EngineConfig(precision=precision), log=lambda s: None)
    assert len(built.plan) > 10_000
    assert built.flavor.is_rtx and built.targets == RTX_TARGETS and not built.profiles


@needs_rtx
def test_rtx_dynamic_batch_profile(tiny):
    built = build(tiny["dynamic"], EngineConfig(profile=BatchProfile(1, 2, 6), targets=("86",)), log=lambda s: None)
    assert built.targets == ("sm86",)
    (p,) = built.profiles
    assert (p.input, p.min, p.opt, p.max) == ("images", (1, 3, 32, 32), (2, 3, 32, 32), (6, 3, 32, 32))
    assert isinstance(build_engine(tiny["dynamic"], EngineConfig(targets=("sm86",))), bytes)


@needs_rtx
def test_rtx_parser_error_lists_each_failing_node(tiny):
    with pytest.raises(EngineBuildError) as e:
        build(tiny["broken"], EngineConfig(), log=lambda s: None)
    text = str(e.value)
    assert "(2 errors)" in text and str(tiny["broken"]) in text
    assert "node #1 'bad_node_0' (NotARealOp0)" in text and "node #2 'bad_node_1' (NotARealOp1)" in text
    assert "fix:" in text and "NotARealOp0, NotARealOp1" in text


@needs_rtx
def test_rtx_truncated_onnx_is_a_typed_error(tiny):
    with pytest.raises(EngineBuildError, match="whole model"):
        build(tiny["truncated"], EngineConfig(), log=lambda s: None)


@pytest.fixture(scope="module")
def demo_engines(demo_pt, tmp_path_factory):
    """The demo exported with a dynamic batch, its FP16 graph (the project's converter) and a Q/DQ INT8
    stand-in, built into fp32/fp16/int8 engines by the engine stage with the real TensorRT-RTX builder."""
    pytest.importorskip("ultralytics")
    if not HAVE_RTX:
        pytest.skip("tensorrt-rtx is not installed (pip install -e .[rtx])")
    import onnx

    from exporters.config import ExportConfig
    from exporters.fp16 import convert_fp16
    from exporters.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("demo_engines")
    art = export_onnx(ExportConfig(weights=demo_pt, dynamic=True, out=out), log=lambda s: None)
    fp16 = out / f"{art.path.stem}.fp16.onnx"
    onnx.save(convert_fp16(onnx.load(str(art.path))), str(fp16))
    int8 = write_int8_qdq(art.path, out / f"{art.path.stem}.int8.onnx")
    logs: list[str] = []
    b = _stage(["--dynamic", "--out", str(out), "--engine", "fp32,fp16,int8", "--engine-batch", "1,4,8",
                "--int8", "--data", str(ROOT / "assets" / "demo" / "data.yaml")],
               {"onnx": art.path, "fp16.onnx": fp16, "int8.onnx": int8}, meta=art.metadata, log=logs.append)
    return b, logs


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_demo_engines_build_with_a_dynamic_batch(demo_engines, precision):
    b, logs = demo_engines
    engine = b.path(f"{precision}.engine")
    sc = read_sidecar(engine)
    assert engine.stat().st_size > 1_000_000 and sc.precision.value == precision
    assert sc.profiles[0].min[0] == 1 and sc.profiles[0].max[0] == 8 and sc.metadata.batch is None
    assert sc.metadata.names == b.metadata.names
    # Turing only where asked for or on a Turing machine (none here): every target costs engine bytes
    assert sc.targets == RTX_TARGETS and "sm75" not in sc.targets
    assert sc.builder["weights_bytes"] > 1_000_000  # the builder's own figure, from its log


@needs_rtx
def test_default_turing_target_is_dropped_with_a_fresh_builder(demo_engines, monkeypatch):
    """On a Turing machine the default targets add SM75; an FP32 YOLO11 cannot build for it (no FP32 GEMM
    on Turing), so the build is retried without it, on a fresh builder and network: the engine is the
    size of a direct build (retrying on the used builder and network wrote 26.3 MB against 14.3)."""
    import exporters.tensorrt as trt_builder

    b, _ = demo_engines
    monkeypatch.setattr(trt_builder, "local_sm", lambda: "sm75")
    logs: list[str] = []
    retried = build(b.path("onnx"), EngineConfig(), log=logs.append)
    assert retried.targets == RTX_TARGETS and "dropped sm75" in retried.notes[0] and any("dropped sm75" in x for x in logs)
    direct = build(b.path("onnx"), EngineConfig(targets=RTX_TARGETS), log=lambda s: None)
    assert abs(len(retried.plan) - len(direct.plan)) < 0.02 * len(direct.plan)


@needs_rtx
def test_explicit_turing_target_fails_loudly_for_an_fp32_yolo11(demo_engines):
    b, _ = demo_engines
    with pytest.raises(EngineBuildError, match="Turing") as e:
        build(b.path("onnx"), EngineConfig(targets=("75",)), log=lambda s: None)
    assert "fp16" in e.value.fix and "INT8 + FP16" in e.value.fix


@needs_rtx
def test_stage_writes_engine_and_sidecar(tiny, tmp_path):
    onnx = tmp_path / "tiny.onnx"
    onnx.write_bytes(tiny["dynamic"].read_bytes())
    fp16 = tmp_path / "tiny.fp16.onnx"
    fp16.write_bytes(write_tiny_onnx(tmp_path / "x.onnx", dynamic=True, fp16=True).read_bytes())
    b = _stage(["--dynamic", "--engine", "fp32,fp16", "--engine-batch", "1,2,4", "--out", str(tmp_path)],
               {"onnx": onnx, "fp16.onnx": fp16}, dynamic=True)
    for precision in ("fp32", "fp16"):
        engine = tmp_path / f"tiny.{precision}.engine"
        assert b.path(f"{precision}.engine") == engine and engine.stat().st_size > 10_000
        sc = read_sidecar(engine)
        assert sc.precision.value == precision and sc.metadata.names == tiny_metadata().names
        assert sc.tensorrt == "tensorrt_rtx" and sc.tensorrt_version == tensorrt_rtx.__version__
        assert sc.targets == RTX_TARGETS and sc.built_on is None
        assert sc.profiles[0].max == (4, 3, 32, 32) and sc.metadata.batch is None
        assert sc.source_onnx == (onnx.name if precision == "fp32" else fp16.name) and len(sc.source_onnx_sha256) == 64
        assert "--engine" in sc.rebuild_command and precision in sc.rebuild_command
        assert EngineSidecar.from_dict(json.loads(sc.to_json())) == sc
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes left nothing behind


def test_stage_without_tensorrt_skips_and_says_which_extra(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)
    b = _stage(["--engine", "fp32"], {"onnx": tiny["onnx"]})
    rec = b.records["fp32.engine"]
    assert rec.status.value == "skipped" and b.path("fp32.engine") is None
    assert "no TensorRT" in rec.reason and ".[rtx]" in rec.fix and ".[trt]" in rec.fix
    with pytest.raises(BackendUnavailableError, match="no TensorRT is installed"):
        _stage(["--engine", "fp32", "--require-engine"], {"onnx": tiny["onnx"]})


def test_stage_explicit_precision_without_its_graph_names_the_flag(tiny, monkeypatch):
    install_fakes(monkeypatch, "11.1.0.1")
    with pytest.raises(ConfigError, match="FP16 graph") as e:
        _stage(["--engine", "fp32,fp16", "--no-fp16"], {"onnx": tiny["onnx"]}, log=print)
    assert engine_stage.PRODUCERS["fp16.onnx"] in str(e.value)


def test_stage_auto_builds_only_what_the_run_produced(tiny, monkeypatch, tmp_path):
    install_fakes(monkeypatch, "11.1.0.1")
    onnx = tmp_path / "tiny.onnx"
    onnx.write_bytes(tiny["onnx"].read_bytes())
    b = _stage(["--out", str(tmp_path), "--no-fp16", "--no-int8"], {"onnx": onnx})
    assert sorted(k for k, r in b.records.items() if k.endswith(".engine") and r.delivered) == ["fp32.engine"]
    b = _stage(["--out", str(tmp_path), "--engine", "none"], {"onnx": onnx})
    assert b.path("fp32.engine") is None and b.records["fp32.engine"].not_asked


@pytest.mark.parametrize("text", ["fp64", "fp32,", ""])
def test_engine_flag_validation(text):
    if text == "fp32,":
        assert EngineOptions.parse(text, batch=None, targets=None, dynamic=False).wanted == ("fp32",)
        return
    with pytest.raises(ConfigError):
        EngineOptions.parse(text or ",", batch=None, targets=None, dynamic=False)


def test_config_validation():
    with pytest.raises(ConfigError):
        BatchProfile(4, 2, 8)
    with pytest.raises(ConfigError):
        EngineConfig(opt_level=7)
    with pytest.raises(ConfigError):
        normalize_target("ampere")
    assert [normalize_target(t) for t in ("86", "8.6", "sm_120", "SM89", "current")] == \
        ["sm86", "sm86", "sm120", "sm89", "current"]


# ---- TensorRT 10 / 11 branches on fake modules ---------------------------------------------------

def test_fake_trt10_sets_precision_flags_on_a_weakly_typed_network(tiny, monkeypatch):
    trt, _ = install_fakes(monkeypatch, "10.9.0.34")
    for precision, flags in [(Precision.FP32, ()), (Precision.FP16, ("FP16",)), (Precision.INT8, ("FP16", "INT8"))]:
        trt.calls.clear()
        src = tiny["int8.onnx" if precision is Precision.INT8 else "onnx"]
        built = build(src, EngineConfig(precision=precision, workspace_mib=512, opt_level=4), log=lambda s: None)
        assert ("create_network", 0) in trt.calls
        assert ("build", 4, flags, ()) in trt.calls
        assert ("set_memory_pool_limit", "WORKSPACE", 512 << 20) in trt.calls
        assert built.flavor == TrtFlavor("tensorrt", "10.9.0.34") and built.targets == ()
    assert engine_stage.source_key("fp16", built.flavor) == "onnx"  # FP32 graph + FP16 flag
    trt.calls.clear()  # --int8-float fp32: the float layers stay FP32, as the gate judged them (no FP16 flag)
    build(tiny["int8.onnx"], EngineConfig(precision=Precision.INT8, opt_level=4, int8_float="fp32"), log=lambda s: None)
    assert ("build", 4, ("INT8",), ()) in trt.calls


def test_fake_trt11_is_strongly_typed_and_sets_no_precision_flag(tiny, monkeypatch):
    trt, _ = install_fakes(monkeypatch, "11.1.0.1")
    built = build(tiny["fp16.onnx"], EngineConfig(precision=Precision.FP16), log=lambda s: None)
    assert ("create_network", 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)) in trt.calls
    assert ("build", 3, (), ()) in trt.calls  # fake 11.x has no FP16/INT8 flag: setting one would raise
    assert engine_stage.source_key("fp16", built.flavor) == "fp16.onnx"
    assert engine_stage.source_key("int8", built.flavor) == "int8.onnx"


@pytest.mark.parametrize("version", ["10.9.0.34", "11.1.0.1"])
def test_fake_timing_cache_is_read_and_updated(tiny, monkeypatch, tmp_path, version):
    trt, _ = install_fakes(monkeypatch, version)
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    build(tiny["onnx"], EngineConfig(timing_cache=cache), log=lambda s: None)
    assert ("create_timing_cache", b"old") in trt.calls and ("set_timing_cache", False) in trt.calls
    assert cache.read_bytes() == b"old+timings"


@pytest.mark.parametrize("version,key,precision,found", [
    ("11.1.0.1", "onnx", Precision.FP16, "fp32"), ("11.1.0.1", "fp16.onnx", Precision.FP32, "fp16"),
    ("10.9.0.34", "onnx", Precision.INT8, "fp32"), ("1.7.1.116", "int8.onnx", Precision.FP16, "int8")])
def test_graph_must_match_the_precision(tiny, monkeypatch, version, key, precision, found):
    install_fakes(monkeypatch, version, module="tensorrt_rtx" if version.startswith("1.") else "tensorrt")
    with pytest.raises(EngineBuildError, match=f"a {precision.value} engine was asked from .*, whose graph is {found}"):
        build(tiny[key], EngineConfig(precision=precision), log=lambda s: None)


@needs_rtx
def test_rtx_sees_the_graph_precision(tiny):
    with pytest.raises(EngineBuildError, match="strongly typed and would build it as fp32") as e:
        build(tiny["onnx"], EngineConfig(precision=Precision.INT8), log=lambda s: None)
    assert "int8.onnx" in e.value.fix


def test_fake_trt_refuses_rtx_targets_and_dynamic_profile_is_set(tiny, monkeypatch):
    trt, _ = install_fakes(monkeypatch, "10.9.0.34")
    with pytest.raises(ConfigError, match="TensorRT-RTX setting"):
        build(tiny["onnx"], EngineConfig(targets=("86",)), log=lambda s: None)
    build(tiny["dynamic"], EngineConfig(profile=BatchProfile(1, 4, 8)), log=lambda s: None)
    assert ("profile.set_shape", "images", (1, 3, 32, 32), (4, 3, 32, 32), (8, 3, 32, 32)) in trt.calls


def test_fake_rtx_sets_targets_and_ignores_timing_cache(tiny, monkeypatch, tmp_path):
    trt, _ = install_fakes(monkeypatch, "1.7.1.116", module="tensorrt_rtx")
    notes = []
    build(tiny["onnx"], EngineConfig(targets=("86", "120"), timing_cache=tmp_path / "t.cache"), log=notes.append)
    assert [c for c in trt.calls if c[0] == "set_compute_capability"] == \
        [("set_compute_capability", "SM86", 0), ("set_compute_capability", "SM120", 1)]
    assert any("no timing cache" in n for n in notes) and not (tmp_path / "t.cache").exists()


def test_fake_build_failure_carries_tensorrt_log(tiny, monkeypatch):
    import tests.fakes as fakes

    cudart = fakes.make_fake_cudart()
    trt = fakes.make_fake_tensorrt("11.1.0.1", cudart=cudart, fail_build="Error Code 4: out of workspace")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)
    with pytest.raises(EngineBuildError, match="out of workspace"):
        build(tiny["onnx"], EngineConfig(), log=lambda s: None)


def test_fake_parser_errors_list_nodes(tiny, monkeypatch):
    install_fakes(monkeypatch, "11.1.0.1")
    with pytest.raises(EngineBuildError, match=r"node #1 'bad_node_0' \(NotARealOp0\)"):
        build(tiny["broken"], EngineConfig(), log=lambda s: None)


@pytest.mark.parametrize("module,version", [("tensorrt", "8.6.1"), ("tensorrt", "12.0.0"), ("tensorrt_rtx", "2.0.0")])
def test_version_gate_refuses_unsupported(monkeypatch, module, version):
    install_fakes(monkeypatch, version, module=module)
    with pytest.raises(BackendUnavailableError, match="supports TensorRT 10.x, TensorRT 11.x, TensorRT-RTX 1.x"):
        import_tensorrt("auto")


def test_version_gate_flavours():
    import types

    rtx, t10, t11 = (TrtFlavor(n, v) for n, v in [("tensorrt_rtx", "1.7.1.116"), ("tensorrt", "10.9.0.34"),
                                                   ("tensorrt", "11.1.0")])
    module = types.ModuleType("tensorrt")
    module.__version__ = "10.9.0.34"
    assert flavor_of(module) == t10
    assert (rtx.strongly_typed, rtx.timing_cache, rtx.compute_targets) == (True, False, True)
    assert (t10.strongly_typed, t10.precision_flags, t10.timing_cache) == (False, True, True)
    assert (t11.strongly_typed, t11.precision_flags, t11.compute_targets) == (True, False, False)


def test_tensorrt_modules_import_without_tensorrt_or_cuda():
    code = textwrap.dedent('''
        import importlib, importlib.abc, sys
        BLOCKED = {"tensorrt", "tensorrt_rtx", "cuda", "pycuda"}
        class _Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked in this test: {name}")
        sys.meta_path.insert(0, _Block())
        for n in ["engine.cuda", "engine.cuda.memory", "engine.cuda.stream", "engine.backends.tensorrt",
                  "engine.backends.trt_flavor", "engine.backends.trt_sidecar", "exporters.tensorrt",
                  "exporters.engine_stage", "benchmarks.verify"]:
            importlib.import_module(n)
        print("heavy", sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
    ''')
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "heavy []" in p.stdout
