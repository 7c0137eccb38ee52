"""The TensorRT backend's thread and lifetime contract (engine/backends/tensorrt.py's docstring), kept.

On the fake TensorRT and CUDA modules: this proves our locking, freeing and sharing, not TensorRT's or
CUDA's; none of it was run on a GPU.
"""
from __future__ import annotations

import gc
import threading
from contextlib import ExitStack

import numpy as np
import pytest

from engine import Detector
from engine.backends.tensorrt import TensorRTBackend
from engine.backends.trt_engine import SharedEngine
from engine.errors import ClosedError, InputImageError

X = np.full((1, 3, 32, 32), 0.5, np.float32)


def _count(calls, name) -> int:
    return sum(1 for c in calls if (c[0] if isinstance(c, tuple) else c) == name)


# ---- close() against a running call ----------------------------------------------------------------

def test_close_from_another_thread_waits_for_the_running_call(fake_engine):
    engine, trt, cudart = fake_engine()
    be = TensorRTBackend(engine)
    inside, release, order, result = threading.Event(), threading.Event(), [], {}
    real_sync = cudart.cudaStreamSynchronize

    def sync(stream):  # the caller's call blocks here, with its copies still queued
        if threading.current_thread().name == "caller" and not release.is_set():
            inside.set()
            release.wait(10)
        return real_sync(stream)

    cudart.cudaStreamSynchronize = sync

    def call():
        (out,) = be.infer(X)
        result["value"] = float(out[0, 3, 0])
        order.append("infer returned")

    def close():
        be.close()
        order.append("close returned")

    caller = threading.Thread(target=call, name="caller")
    closer = threading.Thread(target=close, name="closer")
    try:
        caller.start()
        assert inside.wait(10)
        closer.start()
        closer.join(0.5)
        assert closer.is_alive(), "close() returned while a call was still running"
        assert cudart.host and cudart.device  # nothing freed under the running call
    finally:
        release.set()
        caller.join(10)
        closer.join(10)
    assert order == ["infer returned", "close returned"]
    assert result["value"] == pytest.approx(3.5) and not cudart.use_after_free
    assert not cudart.host and not cudart.device and not cudart.streams  # then everything was freed


def test_calls_after_close_are_a_typed_error_and_close_is_idempotent(fake_engine):
    engine, _, _ = fake_engine(dynamic=True)
    be = TensorRTBackend(engine)
    be.close()
    be.close()
    assert be.closed
    for call in (lambda: be.infer(X), lambda: be.input_buffer(1), lambda: be.device_input(1),
                 lambda: be.infer_device(1)):
        with pytest.raises(ClosedError, match="closed") as e:
            call()
        assert "create a new" in e.value.fix


def test_close_frees_the_slots_of_threads_still_alive(fake_engine):
    engine, _, cudart = fake_engine()
    be = TensorRTBackend(engine)
    done, leave = threading.Event(), threading.Event()

    def worker():
        be.infer(X)
        done.set()
        leave.wait(10)

    t = threading.Thread(target=worker)
    t.start()
    try:
        assert done.wait(10) and len(cudart.streams) == 2
        be.close()
        assert not cudart.streams and not cudart.host and not cudart.device
    finally:
        leave.set()
        t.join(10)


# ---- no CUDA in the garbage collector --------------------------------------------------------------

def test_a_backend_dropped_unclosed_warns_and_frees_nothing(fake_engine, monkeypatch):
    monkeypatch.setattr(SharedEngine, "_loaded", {})  # the leaked engine stays out of other tests
    engine, _, cudart = fake_engine()
    be = TensorRTBackend(engine)
    be.infer(X)
    frees = _count(cudart.calls, "cudaFree") + _count(cudart.calls, "cudaFreeHost")
    with pytest.warns(ResourceWarning, match="never closed"):
        del be
        gc.collect()
    assert _count(cudart.calls, "cudaFree") + _count(cudart.calls, "cudaFreeHost") == frees == 0
    assert cudart.host and cudart.device and cudart.streams  # left for the process's end, as documented


def test_a_closed_backend_does_not_warn(fake_engine, recwarn):
    engine, _, _ = fake_engine()
    with TensorRTBackend(engine) as be:
        be.infer(X)
    del be
    gc.collect()
    assert not [w for w in recwarn if issubclass(w.category, ResourceWarning)]


# ---- one engine, many contexts ---------------------------------------------------------------------

def test_backends_of_one_engine_share_it_until_the_last_closes(fake_engine):
    engine, trt, cudart = fake_engine("1.7.1.116", module="tensorrt_rtx")
    cache = engine.with_suffix(".rtxcache")
    a, b = TensorRTBackend(engine), TensorRTBackend(engine)
    assert a._shared is b._shared
    assert _count(trt.calls, "deserialize_cuda_engine") == 1 and _count(trt.calls, "create_execution_context") == 2
    a.close()
    assert not cache.exists()  # the runtime cache is the engine's: saved when its last user closes
    (out,) = b.infer(X)
    assert out[0, 0, 0] == pytest.approx(0.5)
    b.close()
    assert cache.read_bytes() == b"+kernels" and not SharedEngine._loaded
    with TensorRTBackend(engine):  # all closed: loaded afresh
        assert _count(trt.calls, "deserialize_cuda_engine") == 2


def test_a_rebuilt_engine_file_is_loaded_anew(fake_engine):
    import os

    engine, trt, _ = fake_engine()
    with TensorRTBackend(engine) as old:
        st = engine.stat()
        os.utime(engine, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # rebuilt in place
        with TensorRTBackend(engine) as new:
            assert new._shared is not old._shared and _count(trt.calls, "deserialize_cuda_engine") == 2


def test_detectors_loaded_on_one_thread_and_run_on_others_share_one_engine(fake_engine):
    """Three Detectors of one engine in one process (a pool of cameras): one engine, three contexts, even
    though they were loaded and warmed up on another thread than the threads that run them."""
    from concurrent.futures import ThreadPoolExecutor

    engine, trt, cudart = fake_engine()
    frame = np.full((48, 64, 3), 114, np.uint8)

    def load():
        det = Detector(engine)
        det(frame)  # warm-up on the loading thread
        return det

    with ExitStack() as stack:
        with ThreadPoolExecutor(1) as loader:
            dets = [loader.submit(load).result() for _ in range(3)]
        for det in dets:
            stack.callback(det.close)
        assert len({id(d.backend._shared) for d in dets}) == 1
        together, results = threading.Barrier(3), []

        def instance(det):  # each camera's thread
            together.wait(10)
            results.append(det(frame))

        threads = [threading.Thread(target=instance, args=(d,)) for d in dets]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(results) == 3 and all(r == results[0] and len(r) == 1 for r in results)
        assert _count(trt.calls, "deserialize_cuda_engine") == 1
        assert _count(trt.calls, "create_execution_context") == 3
    assert not cudart.host and not cudart.device and not SharedEngine._loaded


# ---- memory bounded by the profile ------------------------------------------------------------------

def test_dynamic_batch_buffers_are_the_profiles_and_never_grow(fake_engine):
    engine, trt, cudart = fake_engine(dynamic=True)  # profile 1..4
    frames = [np.full((48, 64, 3), 20 * i, np.uint8) for i in range(10)]
    with Detector(engine) as det:
        be = det.backend
        (slot,) = be._slots
        assert slot.host["images"].nbytes == 4 * 3 * 32 * 32 * 4  # the profile's max batch, from the start
        allocs = _count(cudart.calls, "cudaMalloc") + _count(cudart.calls, "cudaMallocHost")
        results = det(frames)  # 10 frames: calls of at most 4
        assert len(results) == 10
        assert _count(cudart.calls, "cudaMalloc") + _count(cudart.calls, "cudaMallocHost") == allocs
        assert {c[2][0] for c in trt.calls if c[0] == "set_input_shape"} <= {1, 2, 3, 4}
        with pytest.raises(InputImageError, match="outside the engine's profile 1..4"):
            be.input_buffer(5)
        with pytest.raises(InputImageError, match="outside the engine's profile 1..4"):
            be.infer(np.zeros((5, 3, 32, 32), np.float32))


def test_the_detector_letterboxes_into_the_pinned_input(fake_engine, monkeypatch):
    """No host copy per call: the letterbox writes the engine's pinned input buffer, which goes to the GPU."""
    engine, _, _ = fake_engine(dynamic=True)
    frames = [np.full((48, 64, 3), 40 * i, np.uint8) for i in range(3)]
    copies, real_copyto = [], np.copyto
    with Detector(engine) as det:
        np.copyto = lambda dst, src, **kw: (copies.append(dst.shape), real_copyto(dst, src, **kw))
        try:
            got = det(frames)
        finally:
            np.copyto = real_copyto
    assert copies == [] and len(got) == 3
    monkeypatch.setattr(TensorRTBackend, "input_buffer", lambda self, batch: None)  # letterbox into its own buffer
    with Detector(engine) as det:
        assert det(frames) == got
