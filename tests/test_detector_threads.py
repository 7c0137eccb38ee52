"""A Detector (and its backend) shared by threads; a closed Detector; bounded buffers; unknown output dtypes."""
from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from engine import Detector
from engine.errors import ClosedError, ModelLoadError
from tests.conftest import DEMO
from tests.fakes.tiny_onnx import onnx_model

THREADS, CALLS = 4, 200


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    imgs = [cv2.imread(str(p)) for p in sorted((DEMO / "val" / "images").glob("*.jpg"))[:4]]
    # other sizes too: the letterbox caches a border per frame size, which a shared buffer would mix up
    return imgs + [np.ascontiguousarray(imgs[0][: imgs[0].shape[0] // 2]), cv2.resize(imgs[1], (200, 150))]


@pytest.fixture(scope="module")
def dynamic_onnx(demo_pt, export_dir):
    from exporters.config import ExportConfig
    from exporters.onnx_export import export_onnx

    return export_onnx(ExportConfig(weights=demo_pt, dynamic=True, out=export_dir / "dyn_threads"),
                       log=lambda s: None).path


def same(a, b) -> bool:
    return (len(a) == len(b) and np.array_equal(a.xyxy, b.xyxy) and np.array_equal(a.confidence, b.confidence)
            and np.array_equal(a.class_id, b.class_id))


@pytest.mark.parametrize("model", ["static", "dynamic"])
def test_a_detector_shared_by_threads_gives_each_call_the_single_threaded_result(demo_onnx, dynamic_onnx, frames,
                                                                                  model):
    path = demo_onnx if model == "static" else dynamic_onnx
    with Detector(path, device="cpu", intra_op_threads=1) as det:
        ref = [det(f) for f in frames]
        assert sum(len(r) for r in ref) > 0  # the demo frames have objects: the comparison means something
        bad: list[str] = []
        start = threading.Barrier(THREADS)
        calls = CALLS if model == "static" else CALLS // 4  # the 4 x 200 on the demo; fewer on its twin

        def worker(k: int) -> None:
            start.wait()
            for j in range(calls):
                i = (k + j) % len(frames)
                if j % 3 == 0:  # a list of frames: a batch on the dynamic model
                    idx = [i, (i + 1) % len(frames)]
                    got = det([frames[n] for n in idx])
                else:
                    idx, got = [i], [det(frames[i])]
                bad.extend(f"thread {k} call {j} frame {n}" for n, g in zip(idx, got) if not same(g, ref[n]))

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not any(t.is_alive() for t in threads)
        assert not bad, f"{len(bad)} of {THREADS * calls} calls differ from single-threaded ones, e.g. {bad[:3]}"
        assert len(det._letterboxes) <= THREADS  # a free list: one buffer per call that ran at once, no more


def test_a_closed_detector_raises_a_typed_error_from_every_method(demo_onnx, frames):
    det = Detector(demo_onnx)
    det.close()
    det.close()  # idempotent
    for call in (lambda: det(frames[0]), lambda: det([frames[0]]), lambda: det.predict([frames[0]]),
                 lambda: det.predict([]), lambda: det.__enter__(), lambda: det.backend.infer(np.zeros(1))):
        with pytest.raises(ClosedError, match="(?s)is closed.*create a new"):
            call()
    assert "closed" in repr(det) and det.names  # what it was stays readable


def test_close_waits_for_a_call_in_flight(demo_onnx, frames, monkeypatch):
    det = Detector(demo_onnx)
    real = type(det.backend).infer_impl
    entered = threading.Event()

    def slow(self, x):
        entered.set()
        time.sleep(0.5)
        return real(self, x)

    monkeypatch.setattr(type(det.backend), "infer_impl", slow)
    out = []
    t = threading.Thread(target=lambda: out.append(det(frames[0])))
    t.start()
    assert entered.wait(10)
    t0 = time.monotonic()
    det.close()  # must not free the session under the running call
    assert time.monotonic() - t0 > 0.2
    t.join(10)
    assert len(out) == 1 and len(out[0]) > 0
    with pytest.raises(ClosedError):
        det(frames[0])


def test_a_long_list_on_a_dynamic_model_runs_in_bounded_chunks(dynamic_onnx, frames):
    from engine.detector import MAX_DYNAMIC_BATCH

    with Detector(dynamic_onnx) as det:
        seen: list[int] = []
        real = det.backend.infer
        det.backend.infer = lambda x: (seen.append(x.shape[0]), real(x))[1]
        n = 2 * MAX_DYNAMIC_BATCH + 3
        out = det([frames[i % len(frames)] for i in range(n)])
        assert len(out) == n and seen == [MAX_DYNAMIC_BATCH, MAX_DYNAMIC_BATCH, 3]
        assert max(lb.buffer.shape[0] for lb in det._letterboxes) == MAX_DYNAMIC_BATCH  # not n frames
        assert all(same(a, det(frames[i % len(frames)])) for i, a in enumerate(out[:8]))


def test_an_output_of_a_dtype_the_runtime_does_not_read_is_a_clear_error(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])
    y = helper.make_tensor_value_info("scores64", TensorProto.DOUBLE, [1, 3, 32, 32])
    graph = helper.make_graph([helper.make_node("Cast", ["images"], ["scores64"], to=TensorProto.DOUBLE)], "g", [x], [y])
    path = tmp_path / "double.onnx"
    onnx.save(onnx_model(graph), path)
    with pytest.raises(ModelLoadError, match=r"(?s)output 'scores64' of .*double\.onnx has type tensor\(double\).*fix:"):
        Detector(path)
