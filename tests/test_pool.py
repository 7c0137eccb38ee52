"""DetectorPool: same detections as one Detector, in order; bad arguments; failures; Stream(workers=N)."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from engine import Detector, DetectorPool
from engine.backends.onnxruntime import OnnxRuntimeBackend
from engine.errors import BackendUnavailableError, ConfigError, InputImageError
from engine.eval.datasets import list_images, read_image
from engine.pool import auto_workers, default_threads
from engine.stream import CaptureConfig, Stream, StreamConfig
from tests.conftest import DEMO
from tests.rtsp_server import make_clip


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return [read_image(p) for p in list_images(DEMO / "val" / "images")[:7]]


def same(a, b) -> bool:
    return (len(a) == len(b) and np.array_equal(a.xyxy, b.xyxy) and np.array_equal(a.confidence, b.confidence)
            and np.array_equal(a.class_id, b.class_id))


def test_pool_gives_one_detectors_results_in_order(demo_onnx, frames):
    with Detector(demo_onnx, device="cpu") as det, DetectorPool(demo_onnx, workers=3, threads=1) as pool:
        ref = det.predict(frames)
        assert sum(len(d) for d in ref) > 0  # the demo frames have objects: the comparison means something
        got = pool.predict(frames)  # 7 frames over 3 workers: chunks of 3, 3, 1
        assert len(got) == len(frames) and all(same(a, b) for a, b in zip(ref, got))
        assert all(same(a, b) for a, b in zip(ref[:2], pool.predict(frames[:2])))  # fewer frames than workers
        assert same(pool(frames[4]), ref[4]) and len(pool(frames[:3])) == 3 and pool.predict([]) == []
        assert pool.names == det.names and pool.imgsz == det.imgsz
        assert pool.max_batch == 3  # the demo is static batch 1: a Stream hands the pool 3 frames a call
        assert set(pool.last_timings) == {"preprocess", "inference", "postprocess"}


def test_calls_from_several_threads_are_served_one_at_a_time(demo_onnx, frames):
    with Detector(demo_onnx, device="cpu") as det, DetectorPool(demo_onnx, workers=2) as pool:
        ref = det.predict(frames)
        out: dict[int, list] = {}

        def call(k: int) -> None:
            order = frames[k:] + frames[:k]
            out[k] = [pool.predict(order) for _ in range(3)]

        threads = [threading.Thread(target=call, args=(k,)) for k in range(3)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        for k, runs in out.items():
            want = ref[k:] + ref[:k]
            assert all(same(a, b) for run in runs for a, b in zip(want, run))


def test_a_bad_frame_in_one_chunk_is_a_clear_error_and_the_pool_goes_on(demo_onnx, frames):
    with DetectorPool(demo_onnx, workers=2) as pool:
        with pytest.raises(InputImageError):
            pool.predict(frames[:2] + ["not an image"])  # the second worker's chunk fails
        with pytest.raises(InputImageError):
            pool.predict([np.zeros((8, 8, 3), np.float32)] + frames[:3])  # the caller's own chunk fails
        assert len(pool.predict(frames[:4])) == 4


@pytest.mark.parametrize("kwargs, match", [
    ({"workers": 0}, "workers=0"),
    ({"workers": 2, "threads": 0}, "threads=0"),
    ({"workers": 2, "device": "cuda"}, "device='cuda'"),
    ({"workers": 2, "intra_op_threads": 1}, "intra_op_threads"),
    ({"workers": 2, "threads": "2"}, "threads='2'"),  # a TypeError before
    ({"workers": 2, "threads": 1.5}, "threads=1.5"),  # a TypeError inside ONNX Runtime before
    ({"workers": True}, "workers=True"),
])
def test_bad_arguments_are_config_errors(demo_onnx, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DetectorPool(demo_onnx, **kwargs)


def test_a_gpu_engine_or_unknown_file_is_refused_before_loading(tmp_path):
    with pytest.raises(ConfigError, match="tensorrt"):
        DetectorPool(tmp_path / "model.engine")  # refused by suffix: no file or TensorRT needed
    with pytest.raises(BackendUnavailableError, match=".tflite"):
        DetectorPool(tmp_path / "model.tflite")


def test_a_model_that_fails_to_load_leaves_nothing_open(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(Exception) as e:
        DetectorPool(bad, workers=2)
    assert str(bad) in str(e.value) or bad.name in str(e.value)


def test_default_threads_share_the_cores():
    assert default_threads(2, cores=2) == 1
    assert default_threads(3, cores=2) == 1  # never 0
    assert default_threads(2, cores=16) == 8
    assert default_threads(1, cores=4) == 4


def test_auto_workers_two_only_where_a_cpu_pool_pays(demo_onnx):
    assert auto_workers(demo_onnx, None, cores=2) == 2  # a file on a 2-core CPU
    assert auto_workers(demo_onnx, 2, cores=8) == 2  # two cameras
    assert auto_workers(demo_onnx, 1, cores=8) == 1  # one camera: a pool would idle
    assert auto_workers(demo_onnx, None, cores=1) == 1
    assert auto_workers(demo_onnx, None, device="cuda", cores=2) == 1
    assert auto_workers(Path("m.engine"), None, cores=2) == 1  # TensorRT: a batch, not a pool
    assert auto_workers(Path("m.xyz"), None, cores=2) == 1  # the Detector reports the bad suffix


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=12)


def test_stream_with_workers_runs_a_pool_over_its_sources(demo_onnx, clip):
    got = []
    stream = Stream(demo_onnx, [f"a={clip}", f"b={clip}"], StreamConfig(log_interval=0, workers=2),
                    on_result=lambda r: got.append((r.source, r.index)), device="cpu")
    snap = stream.run()
    assert isinstance(stream.detector, DetectorPool) and "closed" in repr(stream.detector)  # the stream closed it
    assert snap["a"]["frames_out"] == 12 and snap["b"]["frames_out"] == 12
    assert [i for s, i in got if s == "a"] == list(range(12)) == [i for s, i in got if s == "b"]
    assert stream.batch == 2  # two static-batch-1 workers: two frames a call


def test_a_dynamic_model_gives_each_worker_a_frame_from_one_file(demo_pt, export_dir, clip, monkeypatch):
    from exporters.config import ExportConfig
    from exporters.onnx_export import export_onnx

    path = export_onnx(ExportConfig(weights=demo_pt, dynamic=True, out=export_dir / "dyn_pool"), log=lambda s: None).path
    calls, got, real = [], [], DetectorPool.predict
    monkeypatch.setattr(DetectorPool, "predict", lambda self, frames: (calls.append(len(frames)), real(self, frames))[1])
    stream = Stream(path, [f"a={clip}"], StreamConfig(log_interval=0, workers=2),
                    on_result=lambda r: got.append(r.index), device="cpu")
    stream.run()
    assert stream.batch == 2  # not one frame a call from the only source, which would idle a worker
    assert got == list(range(12)) and max(calls) == 2


def test_stream_picks_a_pool_for_a_file_on_two_cores_and_one_detector_for_one_camera(demo_onnx, clip, monkeypatch):
    monkeypatch.setattr("engine.pool.os.cpu_count", lambda: 2)
    with Stream(demo_onnx, [str(clip)], StreamConfig(log_interval=0), device="cpu") as s:
        assert s.workers == 2 and isinstance(s.detector, DetectorPool) and s.batch == 2
    on_cuda = OnnxRuntimeBackend.uses_cuda("auto")  # onnxruntime-gpu on a GPU machine: one detector, batched
    with Stream(demo_onnx, [str(clip)], StreamConfig(log_interval=0), device="auto") as s:
        assert s.workers == (1 if on_cuda else 2) and isinstance(s.detector, Detector if on_cuda else DetectorPool)
    camera = StreamConfig(log_interval=0, capture=CaptureConfig(realtime=True))  # a file read like a camera
    with Stream(demo_onnx, [str(clip)], camera, device="cpu") as s:
        assert s.workers == 1 and isinstance(s.detector, Detector)
    with Stream(demo_onnx, [str(clip)], StreamConfig(log_interval=0, workers=1), device="cpu") as s:
        assert s.workers == 1 and isinstance(s.detector, Detector)  # asked for: kept
    with Stream(demo_onnx, [str(clip)], StreamConfig(log_interval=0), device="cpu", intra_op_threads=2) as s:
        assert s.workers == 1 and isinstance(s.detector, Detector)  # one detector's threads given: no pool


def test_stream_workers_config_errors(demo_onnx, clip):
    with pytest.raises(ConfigError, match="workers=0"):
        Stream(demo_onnx, [str(clip)], StreamConfig(workers=0))
    with Detector(demo_onnx, device="cpu") as det:
        stream = Stream(det, [str(clip)], StreamConfig(workers=2, log_interval=0))
        with pytest.raises(ConfigError, match="ready detector"):
            stream.start()


def test_more_workers_than_live_sources_is_warned(demo_onnx, clip, caplog):
    live = StreamConfig(workers=2, log_interval=0, capture=CaptureConfig(realtime=True))  # a file read like a camera
    with caplog.at_level("WARNING", logger="engine.stream"):
        Stream(demo_onnx, [str(clip)], live).start().close()
    assert "workers=2 with 1 live source" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="engine.stream"):
        Stream(demo_onnx, [str(clip)], StreamConfig(workers=2, log_interval=0)).start().close()  # frame by frame
    assert "live source" not in caplog.text


def test_a_closed_pool_raises_a_typed_error(demo_onnx, frames):
    from engine.errors import ClosedError

    pool = DetectorPool(demo_onnx, workers=2)
    pool.close()
    pool.close()  # idempotent
    for call in (lambda: pool(frames[0]), lambda: pool.predict(frames[:2]), lambda: pool.__enter__()):
        with pytest.raises(ClosedError, match="(?s)DetectorPool.*is closed.*create a new"):
            call()
    assert pool.names == ("disc", "box", "triangle") and "closed" in repr(pool)


INTERRUPT_EVERYWHERE = r'''
import sys
import numpy as np
from engine.pool import DetectorPool

class Interrupt:
    """A profile function that raises KeyboardInterrupt at the calling thread's n-th place where CPython
    runs signal handlers: entering a Python function and returning from a C function (its eval-breaker
    checks; lock.acquire returning is one). Ctrl-C can land at each of these, and only there."""
    def __init__(self, at):
        self.at, self.n = at, 0
    def __call__(self, frame, event, arg):
        if event in ("call", "c_return"):
            self.n += 1
            if self.n == self.at:
                raise KeyboardInterrupt

pool = DetectorPool(sys.argv[1], workers=int(sys.argv[2]), threads=1)
frames = [np.zeros((48, 64, 3), np.uint8), np.full((40, 30, 3), 200, np.uint8), np.zeros((20, 20, 3), np.uint8)]
want = pool.predict(frames)
count = Interrupt(0)
sys.setprofile(count)
pool.predict(frames)
sys.setprofile(None)
for at in range(1, count.n + 1):  # one interrupt at each such place of a call, one by one
    sys.setprofile(Interrupt(at))
    try:
        pool.predict(frames)
    except KeyboardInterrupt:
        pass
    finally:
        sys.setprofile(None)
    got = pool.predict(frames)  # the next call works, and is right
    assert all(np.array_equal(a.xyxy, b.xyxy) and np.array_equal(a.confidence, b.confidence) for a, b in zip(got, want)), at
pool.close()
print("places", count.n, "closed", flush=True)
'''


@pytest.mark.parametrize("workers", [2, 3])
def test_ctrl_c_at_any_line_of_a_call_leaves_the_pool_working_and_closable(tmp_path, workers):
    """The root of the engine.stream Ctrl-C hang: a KeyboardInterrupt inside concurrent.futures' locks (after
    ``wait`` acquired a future's condition) left a worker blocked forever and close() joined it forever. Here
    Ctrl-C is raised at every place the caller can take it during one call, in turn; each time the next call
    must work and be right, and close() must return (the old pool hung after a few dozen places)."""
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.fakes.tiny_onnx import write_tiny_onnx

    model = write_tiny_onnx(tmp_path / "tiny.onnx")  # fast, so the test is about the pool, not the model
    p = subprocess.run([sys.executable, "-c", INTERRUPT_EVERYWHERE, str(model), str(workers)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "closed" in p.stdout, p.stdout + p.stderr[-2000:]
    assert int(p.stdout.split()[1]) > 50  # it interrupted the call at many places
