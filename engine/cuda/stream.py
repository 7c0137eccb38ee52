"""CUDA streams, events and graphs as owned objects (``close()`` or a ``with`` block frees them)."""
from __future__ import annotations

from typing import Any

from .runtime import check, cudart


class Stream:
    """A non-blocking CUDA stream; pass :attr:`handle` to TensorRT's ``execute_async_v3``."""

    def __init__(self) -> None:
        rt = cudart()
        self._stream = check(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags")

    @property
    def handle(self) -> Any:
        """The ``cudaStream_t`` (``int(stream.handle)`` is the raw pointer TensorRT takes)."""
        if self._stream is None:
            raise ValueError("stream used after close()")
        return self._stream

    def synchronize(self) -> None:
        """Block the host until all work queued on this stream is done."""
        check(cudart().cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def close(self) -> None:
        if self._stream is not None:
            s, self._stream = self._stream, None
            check(cudart().cudaStreamDestroy(s), "cudaStreamDestroy")

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Event:
    """A CUDA event: mark a point on a stream, wait for it, or time the span between two events."""

    def __init__(self) -> None:
        self._event = check(cudart().cudaEventCreate(), "cudaEventCreate")

    @property
    def handle(self) -> Any:
        if self._event is None:
            raise ValueError("event used after close()")
        return self._event

    def record(self, stream: Stream) -> "Event":
        check(cudart().cudaEventRecord(self.handle, stream.handle), "cudaEventRecord")
        return self

    def synchronize(self) -> None:
        """Block the host until the work before :meth:`record` is done."""
        check(cudart().cudaEventSynchronize(self.handle), "cudaEventSynchronize")

    def elapsed_ms(self, end: "Event") -> float:
        """Milliseconds from this event to ``end`` (both recorded, ``end`` completed)."""
        return float(check(cudart().cudaEventElapsedTime(self.handle, end.handle), "cudaEventElapsedTime"))

    def close(self) -> None:
        if self._event is not None:
            e, self._event = self._event, None
            check(cudart().cudaEventDestroy(e), "cudaEventDestroy")

    def __enter__(self) -> "Event":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CudaGraph:
    """Work captured once from a stream and replayed with one launch (static shapes only).

    ``with graph.capture(stream): ...queue work...`` records instead of running; :meth:`launch` replays it.
    """

    def __init__(self) -> None:
        self._graph = None
        self._exec = None

    def begin_capture(self, stream: Stream) -> None:
        rt = cudart()
        check(rt.cudaStreamBeginCapture(stream.handle, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
              "cudaStreamBeginCapture")

    def end_capture(self, stream: Stream) -> None:
        rt = cudart()
        self._graph = check(rt.cudaStreamEndCapture(stream.handle), "cudaStreamEndCapture")
        self._exec = check(rt.cudaGraphInstantiate(self._graph, 0), "cudaGraphInstantiate")

    @property
    def ready(self) -> bool:
        return self._exec is not None

    def launch(self, stream: Stream) -> None:
        check(cudart().cudaGraphLaunch(self._exec, stream.handle), "cudaGraphLaunch")

    def close(self) -> None:
        rt = cudart() if (self._exec is not None or self._graph is not None) else None
        if self._exec is not None:
            e, self._exec = self._exec, None
            check(rt.cudaGraphExecDestroy(e), "cudaGraphExecDestroy")
        if self._graph is not None:
            g, self._graph = self._graph, None
            check(rt.cudaGraphDestroy(g), "cudaGraphDestroy")

    def __enter__(self) -> "CudaGraph":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
