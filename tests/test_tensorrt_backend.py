"""The TensorRT backend: sidecar checks for real, and the run path on fake TensorRT + fake CUDA modules
(they prove our buffer, stream and thread logic, not TensorRT's; the real run is benchmarks.verify's)."""
from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest

from engine import Detector
from engine.backends import backend_for
from engine.backends.tensorrt import TensorRTBackend
from engine.backends.trt_engine import SharedEngine
from engine.backends.trt_sidecar import (
    EngineMismatchError,
    EngineSidecar,
    ProfileSpec,
    sidecar_path,
)
from engine.cuda import CudaUnavailableError
from engine.errors import (
    BackendUnavailableError,
    ConfigError,
    InputImageError,
    MetadataError,
)
from engine.metadata import Precision
from tests.fakes import install_fakes
from tests.fakes.engines import REBUILD
from tests.fakes.engines import fake_sidecar as _sidecar
from tests.fakes.engines import write_engine as _write_engine
from tests.fakes.tiny_onnx import tiny_metadata

# ---- sidecar checks (no GPU needed) ---------------------------------------------------------------

def test_registry_maps_engines_to_this_backend():
    assert backend_for("model.engine") is TensorRTBackend and backend_for("model.plan") is TensorRTBackend


def test_missing_sidecar_is_a_metadata_error(tmp_path):
    engine = tmp_path / "m.fp32.engine"
    engine.write_bytes(b"x")
    with pytest.raises(MetadataError, match="no sidecar m.fp32.json"):
        TensorRTBackend(engine)


def test_flavour_mismatch_names_both_and_the_rebuild_command(tmp_path, monkeypatch):
    install_fakes(monkeypatch, "1.7.1.116", module="tensorrt_rtx")
    engine = _write_engine(tmp_path / "m.fp32.engine", b"x", _sidecar("tensorrt_rtx", "1.6.0.2"))
    with pytest.raises(EngineMismatchError) as e:
        TensorRTBackend(engine)
    text = str(e.value)
    assert "TensorRT-RTX 1.6.0.2" in text and "TensorRT-RTX 1.7.1.116" in text and REBUILD in text


def test_engine_of_an_uninstalled_tensorrt_says_how_to_install_it(tmp_path, monkeypatch):
    install_fakes(monkeypatch, "1.7.1.116", module="tensorrt_rtx")
    engine = _write_engine(tmp_path / "m.fp32.engine", b"x", _sidecar("tensorrt", "10.9.0.34"))
    with pytest.raises(BackendUnavailableError, match=r"built with TensorRT 10.9.0.34") as e:
        TensorRTBackend(engine)
    assert ".[trt]" in e.value.fix and "10.9.0.34" in e.value.fix


def test_rtx_targets_exclude_this_gpu(tmp_path, monkeypatch):
    install_fakes(monkeypatch, "1.7.1.116", module="tensorrt_rtx", sm=(7, 5), name="FAKE RTX 2060")
    engine = _write_engine(tmp_path / "m.fp32.engine", b"x",
                           _sidecar("tensorrt_rtx", "1.7.1.116", targets=("sm80", "sm86", "sm89", "sm120")))
    with pytest.raises(EngineMismatchError, match="this GPU \\(FAKE RTX 2060\\) is sm75") as e:
        TensorRTBackend(engine)
    assert "--engine-targets 75" in e.value.fix


def test_trt_engine_built_on_another_gpu(tmp_path, monkeypatch):
    install_fakes(monkeypatch, "10.9.0.34", sm=(8, 9), name="FAKE RTX 4070")
    engine = _write_engine(tmp_path / "m.fp32.engine", b"x",
                           _sidecar(built_on={"gpu": "FAKE RTX 3050 Laptop GPU", "sm": "sm86"}))
    with pytest.raises(EngineMismatchError, match="built on FAKE RTX 3050 Laptop GPU \\(sm86\\)"):
        TensorRTBackend(engine)


def test_no_gpu_is_a_typed_error(tmp_path, monkeypatch):
    """A driverless machine, faked: loading stops before TensorRT with an error that says so."""
    install_fakes(monkeypatch, "10.9.0.34", no_driver=True)
    engine = _write_engine(tmp_path / "m.fp32.engine", b"x", _sidecar())
    with pytest.raises(CudaUnavailableError, match="needs a CUDA GPU to run") as e:
        Detector(engine)
    assert isinstance(e.value, BackendUnavailableError) and "cudaErrorInsufficientDriver" in str(e.value)


def test_no_gpu_with_the_real_libraries(tmp_path):
    """The same with the real TensorRT-RTX and cuda-python, where no GPU answers (this CPU CI)."""
    from tests.gpu import cuda_unavailable_reason

    rtx = pytest.importorskip("tensorrt_rtx")
    if cuda_unavailable_reason() is None:
        pytest.skip("a GPU answers here: the no-GPU path cannot be shown")
    engine = _write_engine(tmp_path / "m.fp32.engine", b"x", _sidecar("tensorrt_rtx", rtx.__version__))
    with pytest.raises(CudaUnavailableError, match=r"needs a CUDA GPU to run.*cudaError"):
        Detector(engine)


def test_cpu_device_is_refused(tmp_path):
    engine = _write_engine(tmp_path / "m.fp32.engine", b"x", _sidecar())
    with pytest.raises(ConfigError, match="TensorRT runs on a GPU only"):
        TensorRTBackend(engine, device="cpu")


def test_sidecar_round_trip_and_newer_schema_refused():
    sc = _sidecar(targets=("sm86",), profiles=(ProfileSpec("images", (1, 3, 32, 32), (2, 3, 32, 32), (4, 3, 32, 32)),))
    import json

    assert EngineSidecar.from_dict(json.loads(sc.to_json())) == sc
    d = json.loads(sc.to_json())
    d["schema_version"] = 99
    with pytest.raises(MetadataError, match="schema 99"):
        EngineSidecar.from_dict(d)


# ---- the run path on fakes ---------------------------------------------------------------------

def _expected(x: np.ndarray) -> np.ndarray:
    means = x.reshape(x.shape[0], -1).mean(axis=1)
    return means[:, None, None] + np.arange(7, dtype=np.float32)[None, :, None] + np.zeros((1, 1, 16), np.float32)


def test_static_engine_runs_h2d_execute_d2h_then_one_sync(fake_engine):
    engine, trt, cudart = fake_engine()
    with TensorRTBackend(engine) as be:
        assert [s.name for s in be.inputs] == ["images"] and be.inputs[0].shape == (1, 3, 32, 32)
        assert be.metadata.names == tiny_metadata().names
        x = np.random.default_rng(1).random((1, 3, 32, 32), dtype=np.float32)
        cudart.calls.clear()
        (out,) = be.infer(x)
        np.testing.assert_allclose(out, _expected(x), rtol=1e-6)
        seq = [c for c in cudart.calls if c.startswith(("cudaMemcpyAsync", "cudaStreamSynchronize", "run:"))]
        assert seq == ["cudaMemcpyAsync", "cudaMemcpyAsync", "cudaStreamSynchronize",
                       "run:H2D", "run:execute", "run:D2H"]
        assert not [c for c in cudart.calls if c in ("cudaMalloc", "cudaMallocHost")]  # nothing allocated per call
    assert not cudart.host and not cudart.device and not cudart.streams  # close() freed everything


def test_dynamic_engine_batches_within_the_profile(fake_engine):
    engine, trt, cudart = fake_engine(dynamic=True)
    with TensorRTBackend(engine) as be:
        assert be.max_batch is None and be.batch_range == (1, 4)
        for batch in (3, 1, 4):
            x = np.random.default_rng(batch).random((batch, 3, 32, 32), dtype=np.float32)
            (out,) = be.infer(x)
            assert out.shape == (batch, 7, 16)
            np.testing.assert_allclose(out, _expected(x), rtol=1e-6)
        with pytest.raises(InputImageError, match="outside the engine's profile 1..4"):
            be.infer(np.zeros((5, 3, 32, 32), np.float32))


def test_a_profile_whose_minimum_is_above_one_still_takes_any_number_of_frames(fake_engine):
    """--engine-batch 2,4,8: one frame, or the 1-frame remainder of 9, were refused ('rebuild with a larger
    --engine-batch', the wrong way); Detector now pads a short call up to the profile's minimum."""
    engine, _, _ = fake_engine(dynamic=True, profile=(2, 4, 8))
    frames = [np.random.default_rng(i).integers(0, 255, (40, 48, 3), dtype=np.uint8) for i in range(9)]
    with Detector(engine) as det:
        assert det.backend.batch_range == (2, 8)
        together = det(frames)
        assert len(together) == 9 and [len(det(f)) for f in frames] == [len(r) for r in together]
        assert all(np.array_equal(det(f).xyxy, r.xyxy) for f, r in zip(frames, together))


def test_pinned_input_view_skips_the_host_copy(fake_engine, monkeypatch):
    engine, _, cudart = fake_engine()
    copies = []
    real_copyto = np.copyto
    monkeypatch.setattr(np, "copyto", lambda dst, src, **kw: (copies.append(dst.shape), real_copyto(dst, src, **kw)))
    with TensorRTBackend(engine) as be:
        view = be.input_buffer(1)
        view[:] = 0.5
        (out,) = be.infer(view)
        assert out[0, 0, 0] == pytest.approx(0.5) and copies == []  # the pinned buffer went to the GPU as it was
        (out,) = be.infer(np.full((1, 3, 32, 32), 0.25, np.float32))  # any other array: one copy into it
        assert out[0, 0, 0] == pytest.approx(0.25) and copies == [(1, 3, 32, 32)]


def _contexts(trt) -> int:
    return sum(1 for c in trt.calls if c[0] == "create_execution_context")


def test_one_context_and_stream_per_live_thread_reused_after_it_ends(fake_engine):
    engine, trt, cudart = fake_engine(dynamic=True)
    results, errors = {}, []
    with TensorRTBackend(engine) as be:
        def wave(values):
            together = threading.Barrier(len(values))

            def work(i):
                try:
                    x = np.full((2, 3, 32, 32), float(i), np.float32)
                    for _ in range(3):
                        (out,) = be.infer(x)
                        results[i] = float(out[0, 0, 0])
                    together.wait(10)  # all alive at once: each needs its own context
                except Exception as e:  # surfaced below
                    errors.append(e)
            threads = [threading.Thread(target=work, args=(i,)) for i in values]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        wave([0, 1, 2])
        assert not errors and results == {0: 0.0, 1: 1.0, 2: 2.0}
        # the loading thread's context (made at load) and one per live worker thread
        assert _contexts(trt) == 4 and len(cudart.streams) == 4
        wave([3, 4, 5])  # new threads after the first ended: their slots, not new ones
        assert not errors and results == {0: 0.0, 1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0, 5: 5.0}
        assert _contexts(trt) == 4 and len(cudart.streams) == 4
    assert not cudart.streams and not cudart.host and not cudart.device


def test_cuda_graph_captured_once_then_replayed(fake_engine):
    engine, trt, cudart = fake_engine()
    with TensorRTBackend(engine, cuda_graph=True) as be:
        for value in (1.0, 2.0, 3.0):
            (out,) = be.infer(np.full((1, 3, 32, 32), value, np.float32))
            assert out[0, 0, 0] == pytest.approx(value)
        assert cudart.calls.count("cudaStreamBeginCapture") == 1
        assert cudart.calls.count("cudaGraphLaunch") == 2
    assert not cudart.graphs


def test_rtx_runtime_cache_saved_and_graph_strategy_set(fake_engine):
    engine, trt, cudart = fake_engine("1.7.1.116", module="tensorrt_rtx")
    cache = engine.with_suffix(".rtxcache")
    cache.write_bytes(b"prev")
    with TensorRTBackend(engine, cuda_graph=True) as be:
        be.infer(np.zeros((1, 3, 32, 32), np.float32))
        config = be._slot().config
        assert config.cuda_graph_strategy == trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
        assert "cudaStreamBeginCapture" not in cudart.calls  # RTX captures by itself
    assert ("runtime_cache.deserialize", b"prev") in trt.calls
    assert cache.read_bytes() == b"prev+kernels"


def test_detector_runs_an_engine_on_device_n(fake_engine):
    from engine.preprocess import LetterboxGeometry

    engine, trt, cudart = fake_engine(devices=2)
    devices, set_device = [], cudart.cudaSetDevice
    cudart.cudaSetDevice = lambda i: (devices.append(i), set_device(i))[1]
    frame = np.full((48, 64, 3), 114, np.uint8)
    with Detector(engine, device=1, conf=0.25) as det:
        assert det.backend.device == 1 and det.names == tiny_metadata().names
        dets = det(frame)
    assert devices and set(devices) == {1}
    # the fake engine answers mean(input) + row for every anchor: all 16 anchors are one box (cx, cy, w, h) =
    # m + (0, 1, 2, 3) with class scores m + (4, 5, 6), m the letterboxed frame's value; NMS keeps one, class 2
    m = float(np.float32(114) * np.float32(1 / 255))
    cx, cy, w, h = m, m + 1, m + 2, m + 3
    box = np.array([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]], np.float32)
    want = LetterboxGeometry.fit((48, 64), (32, 32)).boxes_to_source(box)
    assert dets.class_id.tolist() == [2] and dets.confidence.tolist() == pytest.approx([m + 6])
    np.testing.assert_allclose(dets.xyxy, want, atol=1e-5)
    with pytest.raises(BackendUnavailableError, match="device 5 does not exist"):
        Detector(engine, device=5)


def test_corrupt_engine_is_a_model_load_error(fake_engine):
    from engine.errors import ModelLoadError

    engine, _, _ = fake_engine()
    engine.write_bytes(b"\x00garbage")
    with pytest.raises(ModelLoadError, match="could not deserialize") as e:
        TensorRTBackend(engine)
    assert REBUILD in e.value.fix


def test_precision_is_read_from_the_sidecar(tmp_path, fake_engine):
    engine, _, _ = fake_engine()
    sc = EngineSidecar.from_dict(__import__("json").loads(sidecar_path(engine).read_text()))
    sidecar_path(engine).write_text(dataclasses.replace(sc, metadata=sc.metadata.replace(precision=Precision.FP16)).to_json())
    with TensorRTBackend(engine) as be:
        assert be.metadata.precision is Precision.FP16


# ---- the self-check ----------------------------------------------------------------------------

def _images(folder: Path, n: int = 2) -> Path:
    import cv2

    folder.mkdir()
    for i in range(n):
        cv2.imwrite(str(folder / f"{i}.png"), np.random.default_rng(i).integers(0, 255, (40, 48, 3), np.uint8))
    return folder


def test_verify_runs_every_step_on_fakes(fake_engine, tmp_path):
    """The report logic end to end; parity fails on purpose (the fake engine is not the model)."""
    import json

    from benchmarks import verify

    engine, _, _ = fake_engine()
    rc = verify.main(["--engine", str(engine), "--onnx", str(tmp_path / "tiny.onnx"), "--images",
                      str(_images(tmp_path / "imgs")), "--runs", "5", "--out", str(tmp_path / "rep")])
    report = json.loads((tmp_path / "rep" / "verify-report.json").read_text())
    assert rc == 1 and report["verdict"] == "parity failed" and not report["could_not"]
    assert report["environment"]["gpu"].startswith("FAKE RTX 3050") and report["environment"]["tensorrt"] == "TensorRT 10.9.0.34"
    assert {"engine_infer_ms", "engine_detector_ms", "onnxruntime_cpu_detector_ms"} <= set(report["timing_ms"])
    assert report["parity"]["images"] == 2 and "raw_max_abs_score" in report["parity"]
    assert report["h2d_bandwidth"]["pinned_gb_s"] > 0 and report["h2d_bandwidth"]["pageable_gb_s"] > 0
    assert "# TensorRT self-check: parity failed" in (tmp_path / "rep" / "verify-report.md").read_text()


def test_verify_says_what_it_could_not_do_without_a_gpu(fake_engine, tmp_path, monkeypatch):
    import json

    import engine.cuda.runtime as rt
    from benchmarks import verify
    from tests.fakes import make_fake_cudart

    engine, _, _ = fake_engine()
    monkeypatch.setattr(rt, "_CUDART", make_fake_cudart(no_driver=True))
    rc = verify.main(["--engine", str(engine), "--onnx", str(tmp_path / "tiny.onnx"), "--images",
                      str(_images(tmp_path / "imgs")), "--out", str(tmp_path / "rep")])
    report = json.loads((tmp_path / "rep" / "verify-report.json").read_text())
    assert rc == 3 and report["verdict"] == "incomplete"
    whats = [c["what"] for c in report["could_not"]]
    assert whats == ["measure pinned vs pageable H2D bandwidth", "load and run the engine",
                     "compare the engine's detections with ONNX Runtime's", "time the engine"]
    assert all("cudaErrorInsufficientDriver" in c["why"] for c in report["could_not"][:2])
    assert "onnxruntime_cpu_detector_ms" in report["timing_ms"]  # what could run, ran


def test_rtx_engine_validity_check_names_the_reason(fake_engine):
    engine, trt, _ = fake_engine("1.7.1.116", module="tensorrt_rtx")
    trt.validity = (trt.EngineValidity.INVALID, int(trt.EngineInvalidityDiagnostics.OLD_CUDA_DRIVER))
    with pytest.raises(EngineMismatchError, match="cannot run on this machine \\(old_cuda_driver\\)") as e:
        TensorRTBackend(engine)
    assert "driver" in e.value.fix
    trt.validity = (trt.EngineValidity.SUBOPTIMAL, int(trt.EngineInvalidityDiagnostics.UNSUPPORTED_CC))
    with pytest.warns(RuntimeWarning, match="suboptimally \\(unsupported_cc\\)"):
        TensorRTBackend(engine).close()


def test_device_input_then_infer_device_skips_the_h2d_copy(fake_engine):
    """What Detector(preprocess="gpu") uses: a kernel writes the device input on the backend's stream."""
    import ctypes

    engine, _, cudart = fake_engine(dynamic=True)
    with TensorRTBackend(engine) as be:
        ptr, stream = be.device_input(2)
        x = np.full((2, 3, 32, 32), 0.75, np.float32)
        cudart.enqueue(stream.handle, lambda: ctypes.memmove(ptr, x.ctypes.data, x.nbytes), "kernel")
        cudart.calls.clear()
        (out,) = be.infer_device(2)
        assert out.shape == (2, 7, 16) and out[1, 0, 0] == pytest.approx(0.75)
        assert "run:H2D" not in cudart.calls and cudart.calls.index("run:kernel") < cudart.calls.index("run:execute")
        with pytest.raises(InputImageError):
            be.device_input(9)


def test_failed_context_leaves_nothing_allocated(fake_engine, monkeypatch):
    from engine.backends.tensorrt import EngineRunError

    engine, _, cudart = fake_engine()
    monkeypatch.setattr(SharedEngine, "new_context", lambda self, cuda_graph: (None, None))
    with pytest.raises(EngineRunError, match="could not create an execution context"):
        TensorRTBackend(engine)
    assert not cudart.streams and not cudart.host and not cudart.device
