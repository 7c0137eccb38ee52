"""engine.cuda: checked calls, buffer ownership (fake runtime), and on a GPU real round trips."""
from __future__ import annotations

import numpy as np
import pytest

import engine.cuda.runtime as rt
from engine.cuda import (
    CudaError,
    CudaGraph,
    CudaUnavailableError,
    DeviceBuffer,
    Event,
    PinnedBuffer,
    Stream,
    check,
    device_info,
    unavailable_reason,
)
from engine.errors import BackendUnavailableError
from tests.fakes import make_fake_cudart


@pytest.fixture
def fake(monkeypatch):
    cudart = make_fake_cudart()
    monkeypatch.setattr(rt, "_CUDART", cudart)
    return cudart


# ---- checked calls ----------------------------------------------------------------------------

def test_check_unpacks_results(fake):
    E = fake.cudaError_t
    assert check((E.cudaSuccess,), "f") is None
    assert check((E.cudaSuccess, 7), "f") == 7
    assert check((E.cudaSuccess, 1, 2), "f") == (1, 2)


@pytest.mark.parametrize("code,kind,name", [(2, CudaError, "cudaErrorMemoryAllocation"),
                                            (35, CudaUnavailableError, "cudaErrorInsufficientDriver"),
                                            (100, CudaUnavailableError, "cudaErrorNoDevice")])
def test_check_names_the_call_and_the_cuda_error(fake, code, kind, name):
    with pytest.raises(kind) as e:
        check((fake.cudaError_t(code), None), "cudaMalloc(64)")
    assert e.value.call == "cudaMalloc(64)" and e.value.error_name == name
    assert name in str(e.value) and "cudaMalloc(64)" in str(e.value) and e.value.fix
    assert isinstance(e.value, BackendUnavailableError) == (kind is CudaUnavailableError)


def test_missing_cuda_python_is_a_typed_error(monkeypatch):
    import sys

    monkeypatch.setattr(rt, "_CUDART", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)
    monkeypatch.setitem(sys.modules, "cuda.cudart", None)
    with pytest.raises(CudaUnavailableError, match="cuda-python is not installed"):
        PinnedBuffer(16)
    assert "cuda-python" in unavailable_reason()


def test_real_cuda_python_without_a_gpu_names_the_error():
    """On this CPU machine the real cuda-python answers cudaErrorInsufficientDriver (not a crash)."""
    pytest.importorskip("cuda.bindings.runtime")
    if unavailable_reason() is None:
        pytest.skip("a GPU answers here")
    with pytest.raises(CudaUnavailableError, match=r"cudaMallocHost\(1024\) failed: cudaError"):
        PinnedBuffer(1024)
    with pytest.raises(CudaUnavailableError, match="cudaGetDeviceCount"):
        device_info(0)


# ---- ownership, on the fake runtime -----------------------------------------------------------

def test_pinned_buffer_grows_only_and_frees_once(fake):
    buf = PinnedBuffer(1024)
    ptr = buf.ptr
    buf.resize(512)
    assert buf.ptr == ptr and buf.nbytes == 1024
    buf.resize(4096)
    assert buf.nbytes == 4096 and len(fake.host) == 1
    a = buf.array((2, 8), np.float32)
    a[:] = 3.0
    assert buf.array((2, 8), np.float32)[1, 7] == 3.0  # a view, not a copy
    with pytest.raises(ValueError, match="needs 32768 bytes"):
        buf.array((64, 128), np.float32)
    buf.close()
    buf.close()
    assert not fake.host and fake.calls.count("cudaFreeHost") == 2  # the resize's and close's, not a double free


def test_round_trip_is_visible_only_after_synchronize(fake):
    with Stream() as s, PinnedBuffer(64) as src, PinnedBuffer(64) as dst, DeviceBuffer(64) as dev:
        src.array((16,), np.float32)[:] = np.arange(16)
        dev.copy_from_host(src, s)
        dev.copy_to_host(dst, s)
        assert dst.array((16,), np.float32).sum() == 0  # queued, not done: the host must not read yet
        s.synchronize()
        np.testing.assert_array_equal(dst.array((16,), np.float32), np.arange(16))
    assert not fake.host and not fake.device and not fake.streams


def test_event_waits_for_the_work_before_it(fake):
    with Stream() as s, PinnedBuffer(16) as src, PinnedBuffer(16) as dst, DeviceBuffer(16) as dev:
        src.array((4,), np.float32)[:] = 7
        start = Event().record(s)
        dev.copy_from_host(src, s)
        dev.copy_to_host(dst, s)
        end = Event().record(s)
        end.synchronize()
        assert dst.array((4,), np.float32).tolist() == [7, 7, 7, 7]
        assert start.elapsed_ms(end) >= 0
        start.close(), end.close()
    assert not fake.events


def test_copy_larger_than_the_buffer_is_refused(fake):
    with Stream() as s, PinnedBuffer(64) as host, DeviceBuffer(32) as dev:
        with pytest.raises(ValueError, match="exceeds"):
            dev.copy_from_host(host, s)


def _graph_replays_captured_copies(n: int, values: tuple[float, ...]) -> None:
    """Capture H2D + D2H of ``n`` floats once, replay it for each value: the host sees each one."""
    with Stream() as s, PinnedBuffer(4 * n) as src, PinnedBuffer(4 * n) as dst, DeviceBuffer(4 * n) as dev, \
            CudaGraph() as g:
        g.begin_capture(s)
        dev.copy_from_host(src, s)
        dev.copy_to_host(dst, s)
        g.end_capture(s)
        for value in values:
            src.array((n,), np.float32)[:] = value
            g.launch(s)
            s.synchronize()
            assert dst.array((n,), np.float32)[0] == value


def test_graph_replays_captured_copies(fake):
    _graph_replays_captured_copies(4, (1.0, 2.0))
    assert not fake.graphs


# ---- real GPU ---------------------------------------------------------------------------------

@pytest.mark.gpu
def test_gpu_pinned_and_pageable_round_trips():
    n = 1 << 20
    data = np.random.default_rng(0).random(n, dtype=np.float32)
    with Stream() as s, PinnedBuffer(data.nbytes) as src, PinnedBuffer(data.nbytes) as dst, DeviceBuffer(data.nbytes) as dev:
        src.array(data.shape, data.dtype)[:] = data
        dev.copy_from_host(src, s)
        dev.copy_to_host(dst, s)
        s.synchronize()
        np.testing.assert_array_equal(dst.array(data.shape, data.dtype), data)
        back = np.zeros_like(data)
        dev.copy_from_host(data, s)  # pageable source
        dev.copy_to_host(back, s)
        s.synchronize()
        np.testing.assert_array_equal(back, data)


@pytest.mark.gpu
def test_gpu_event_ordering_and_timing():
    n = 16 << 20
    with Stream() as s, PinnedBuffer(n) as host, DeviceBuffer(n) as dev, Event() as a, Event() as b:
        host.array((n,), np.uint8)[:] = 5
        a.record(s)
        dev.copy_from_host(host, s)
        host2 = np.zeros(n, np.uint8)
        dev.copy_to_host(host2, s)
        b.record(s)
        b.synchronize()
        assert host2[-1] == 5 and a.elapsed_ms(b) > 0


@pytest.mark.gpu
def test_gpu_graph_capture_and_replay():
    _graph_replays_captured_copies(16, (3.0, 4.0))
