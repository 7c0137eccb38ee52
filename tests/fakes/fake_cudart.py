"""FAKE ``cuda.bindings.runtime`` for tests on machines without a GPU.

It proves OUR logic (every call checked, buffers freed, copies queued on a stream and only visible to
the host after a synchronize), not CUDA's. "Device" memory is host memory; async operations are
queued per stream and run on ``cudaStreamSynchronize`` / ``cudaEventSynchronize``, so code that
reads outputs before synchronizing sees stale data, as it would on a GPU. Freed memory is kept (not
reused) and a queued copy that touches it is recorded in ``use_after_free`` instead of crashing the tests.
"""
from __future__ import annotations

import ctypes
import enum
import itertools
from dataclasses import dataclass, field
from types import ModuleType
from typing import Callable


class cudaError_t(enum.IntEnum):  # noqa: N801 (CUDA's names)
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorStreamCaptureUnsupported = 900


class cudaMemcpyKind(enum.IntEnum):  # noqa: N801
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3


class cudaStreamCaptureMode(enum.IntEnum):  # noqa: N801
    cudaStreamCaptureModeGlobal = 0
    cudaStreamCaptureModeThreadLocal = 1


@dataclass
class FakeStream:
    id: int
    queue: list = field(default_factory=list)
    capturing: list | None = None

    def __int__(self) -> int:
        return self.id


@dataclass
class FakeProps:
    name: bytes
    major: int
    minor: int
    totalGlobalMem: int = 4 << 30


OK = cudaError_t.cudaSuccess


def make_fake_cudart(devices: int = 1, sm: tuple[int, int] = (8, 6), name: str = "FAKE RTX 3050 Laptop GPU",
                     no_driver: bool = False) -> ModuleType:
    """A fresh fake module. ``calls`` logs every call; ``host``/``device`` hold live allocations."""
    m = ModuleType("fake_cuda_bindings_runtime")
    m.cudaError_t, m.cudaMemcpyKind, m.cudaStreamCaptureMode = cudaError_t, cudaMemcpyKind, cudaStreamCaptureMode
    m.cudaStreamNonBlocking = 1
    m.calls, m.host, m.device, m.streams, m.events, m.graphs = [], {}, {}, {}, {}, {}
    m.freed, m.use_after_free = {}, []  # freed address -> its buffer (kept alive); copies that touched one
    ids = itertools.count(1)
    fail = cudaError_t.cudaErrorInsufficientDriver

    def api(fn: Callable) -> Callable:
        def wrapper(*args):
            m.calls.append(fn.__name__)
            if no_driver and fn.__name__ not in ("cudaGetErrorName", "cudaGetErrorString",
                                                 "cudaRuntimeGetVersion", "cudaDriverGetVersion"):
                return (fail, None)
            return fn(*args)
        wrapper.__name__ = fn.__name__
        setattr(m, fn.__name__, wrapper)
        return wrapper

    def alloc(table, n):
        buf = ctypes.create_string_buffer(max(int(n), 1))
        table[ctypes.addressof(buf)] = buf
        return (OK, ctypes.addressof(buf))

    def free(table, ptr):
        buf = table.pop(int(ptr), None)
        if buf is None:
            return (cudaError_t.cudaErrorInvalidValue,)
        m.freed[int(ptr)] = buf
        return (OK,)

    def freed_at(ptr: int) -> bool:
        return any(a <= ptr < a + len(b) for a, b in m.freed.items())

    def enqueue(stream, op, label):
        target = stream.capturing if stream.capturing is not None else stream.queue
        target.append((label, op))

    def drain(stream):
        while stream.queue:
            label, op = stream.queue.pop(0)
            m.calls.append(f"run:{label}")
            op()

    @api
    def cudaGetErrorName(err):
        return (OK, cudaError_t(int(err)).name.encode())

    @api
    def cudaGetErrorString(err):
        return (OK, f"fake error {int(err)}".encode())

    @api
    def cudaGetDeviceCount():
        return (OK, devices) if devices else (cudaError_t.cudaErrorNoDevice, 0)

    @api
    def cudaGetDeviceProperties(index):
        return (OK, FakeProps(name.encode(), *sm)) if index < devices else (cudaError_t.cudaErrorInvalidValue, None)

    @api
    def cudaSetDevice(index):
        return (OK,) if index < devices else (cudaError_t.cudaErrorInvalidValue,)

    @api
    def cudaDriverGetVersion():
        return (OK, 0 if no_driver else 13000)

    @api
    def cudaRuntimeGetVersion():
        return (OK, 13000)

    @api
    def cudaMallocHost(n):
        return alloc(m.host, n)

    @api
    def cudaFreeHost(ptr):
        return free(m.host, ptr)

    @api
    def cudaMalloc(n):
        return alloc(m.device, n)

    @api
    def cudaFree(ptr):
        return free(m.device, ptr)

    @api
    def cudaMemcpyAsync(dst, src, n, kind, stream):
        label = {1: "H2D", 2: "D2H"}.get(int(kind), "copy")
        def copy():
            if freed_at(int(dst)) or freed_at(int(src)):
                m.use_after_free.append(label)
            ctypes.memmove(int(dst), int(src), int(n))
        enqueue(stream, copy, label)
        return (OK,)

    @api
    def cudaStreamCreateWithFlags(flags):
        s = FakeStream(next(ids))
        m.streams[s.id] = s
        return (OK, s)

    @api
    def cudaStreamSynchronize(stream):
        drain(stream)
        return (OK,)

    @api
    def cudaStreamDestroy(stream):
        return (OK,) if m.streams.pop(stream.id, None) is not None else (cudaError_t.cudaErrorInvalidValue,)

    @api
    def cudaEventCreate():
        e = next(ids)
        m.events[e] = None
        return (OK, e)

    @api
    def cudaEventRecord(event, stream):
        m.events[event] = stream
        return (OK,)

    @api
    def cudaEventSynchronize(event):
        if m.events.get(event) is not None:
            drain(m.events[event])
        return (OK,)

    @api
    def cudaEventElapsedTime(start, end):
        return (OK, 0.25)

    @api
    def cudaEventDestroy(event):
        return (OK,) if m.events.pop(event, "x") != "x" else (cudaError_t.cudaErrorInvalidValue,)

    @api
    def cudaStreamBeginCapture(stream, mode):
        stream.capturing = []
        return (OK,)

    @api
    def cudaStreamEndCapture(stream):
        ops, stream.capturing = stream.capturing, None
        g = next(ids)
        m.graphs[g] = ops
        return (OK, g)

    @api
    def cudaGraphInstantiate(graph, flags):
        e = next(ids)
        m.graphs[e] = m.graphs[graph]
        return (OK, e)

    @api
    def cudaGraphLaunch(graph_exec, stream):
        for label, op in m.graphs[graph_exec]:
            enqueue(stream, op, f"graph:{label}")
        return (OK,)

    @api
    def cudaGraphExecDestroy(graph_exec):
        return (OK,) if m.graphs.pop(graph_exec, None) is not None else (cudaError_t.cudaErrorInvalidValue,)

    @api
    def cudaGraphDestroy(graph):
        return (OK,) if m.graphs.pop(graph, None) is not None else (cudaError_t.cudaErrorInvalidValue,)

    m.enqueue = enqueue
    return m
