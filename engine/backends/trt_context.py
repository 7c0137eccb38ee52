"""One execution context of a shared TensorRT engine, with everything one inference at a time needs.

A :class:`ContextSlot` owns an execution context, a CUDA stream, pinned host and device buffers for every
input and output, sized once for the largest batch of the engine's profile (so buffers never grow), and
the CUDA graphs captured on it. A call queues H2D → ``execute_async_v3`` → D2H on the slot's stream and
synchronizes once, after the last copy, before the host reads the outputs. A slot is used by one thread
at a time (:class:`~engine.backends.tensorrt.TensorRTBackend` hands them out) and freed only by
:meth:`ContextSlot.close`.

Not run on a GPU here: proved with the fake TensorRT and CUDA modules of ``tests/fakes``.
"""
from __future__ import annotations

import warnings

import numpy as np

from .. import cuda
from ..errors import DeployError, EngineRunError
from .trt_engine import SharedEngine


class ContextSlot:
    """An execution context of ``shared`` with its own stream, buffers and (optionally) CUDA graphs.

    Args:
        shared: the engine.
        cuda_graph: replay each batch size's H2D → execute → D2H as one CUDA graph (TensorRT 10/11,
            captured here after a warm-up call; TensorRT-RTX captures by itself through its runtime config).
    """

    def __init__(self, shared: SharedEngine, cuda_graph: bool) -> None:
        self.shared = shared
        self.cuda_graph = cuda_graph
        self.input = next(t for t in shared.io if t.is_input)
        self.outputs_io = [t for t in shared.io if not t.is_input]
        self.graphs: dict[tuple[int, bool], cuda.CudaGraph] = {}
        self.views: dict[int, list[np.ndarray]] = {}
        self.batch = -1
        self.host: dict[str, cuda.PinnedBuffer] = {}
        self.device: dict[str, cuda.DeviceBuffer] = {}
        self.context = self.config = None
        self.stream = cuda.Stream()
        try:
            self._allocate()
        except BaseException:
            self.close()  # nothing half-made stays allocated
            raise

    def _allocate(self) -> None:
        self.context, self.config = self.shared.new_context(self.cuda_graph)
        if self.context is None:
            raise EngineRunError(f"TensorRT could not create an execution context for {self.shared.path}: "
                                 f"{self.shared.logged()}", "free GPU memory (other processes), or use a smaller batch")
        max_in = self.input.max_shape
        self._set_shape(max_in)
        for t in self.shared.io:  # sized for the profile's largest batch, once
            shape = max_in if t.is_input else tuple(self.context.get_tensor_shape(t.name))
            nbytes = int(np.prod(shape)) * t.dtype.itemsize
            self.host[t.name] = cuda.PinnedBuffer(nbytes)
            self.device[t.name] = cuda.DeviceBuffer(nbytes)
            self.context.set_tensor_address(t.name, self.device[t.name].ptr)

    def _set_shape(self, shape: tuple[int, ...]) -> None:
        t = self.input
        if -1 in t.shape and not self.context.set_input_shape(t.name, shape):
            raise EngineRunError(f"TensorRT refused input shape {shape} for {t.name} of {self.shared.path}: "
                                 f"{self.shared.logged()}", f"use shapes between {t.min_shape} and {t.max_shape}")
        self.batch = shape[0]

    def input_view(self, shape: tuple[int, ...]) -> np.ndarray:
        """A view of the pinned input buffer (the profile's max batch at most)."""
        return self.host[self.input.name].array(shape, self.input.dtype)

    def outputs(self, batch: int) -> list[np.ndarray]:
        """Host views of the outputs for ``batch`` (made once per batch size)."""
        views = self.views.get(batch)
        if views is None:
            if self.batch != batch:
                self._set_shape((batch, *self.input.max_shape[1:]))
            views = self.views[batch] = [self.host[t.name].array(tuple(self.context.get_tensor_shape(t.name)), t.dtype)
                                         for t in self.outputs_io]
        return views

    def enqueue(self, batch: int, in_bytes: int, h2d: bool = True) -> None:
        """Queue H2D → execute → D2H (no synchronize: the caller does it once)."""
        if h2d:
            self.device[self.input.name].copy_from_host(self.host[self.input.name], self.stream, in_bytes)
        if not self.context.execute_async_v3(int(self.stream.handle)):
            raise EngineRunError(f"execute_async_v3 failed for {self.shared.path}: {self.shared.logged()}",
                                 "run python -m benchmarks.verify --engine ... and share its report")
        for view, t in zip(self.views[batch], self.outputs_io):
            self.device[t.name].copy_to_host(self.host[t.name], self.stream, view.nbytes)

    def run(self, batch: int, in_bytes: int, h2d: bool = True) -> None:
        """One inference on what the input buffer holds; the output views are readable on return."""
        if self.batch != batch:
            self._set_shape((batch, *self.input.max_shape[1:]))
        graph = self.graphs.get((batch, h2d))
        if graph is not None:
            graph.launch(self.stream)
        else:
            self.enqueue(batch, in_bytes, h2d)
            if self.cuda_graph and not self.shared.flavor.is_rtx:
                self.stream.synchronize()  # the first enqueue does shape work that must not be captured
                self._capture(batch, in_bytes, h2d)
        self.stream.synchronize()  # after the last D2H copy: the host reads the outputs next

    def _capture(self, batch: int, in_bytes: int, h2d: bool) -> None:
        graph = cuda.CudaGraph()
        try:
            graph.begin_capture(self.stream)
            try:
                self.enqueue(batch, in_bytes, h2d)
            finally:
                graph.end_capture(self.stream)
        except DeployError as e:
            graph.close()
            self.cuda_graph = False
            warnings.warn(f"CUDA graph capture failed ({e.message}); running without graphs", RuntimeWarning)
            return
        self.graphs[(batch, h2d)] = graph

    def close(self) -> None:
        """Wait for the work queued on the stream, then free graphs, context, buffers and stream."""
        try:
            if self.context is not None:
                self.stream.synchronize()  # a failed call may have left copies in flight into these buffers
        finally:
            for g in self.graphs.values():
                g.close()
            self.graphs.clear()
            self.views.clear()
            self.context = self.config = None  # TensorRT frees the context when its Python object goes
            for buf in [*self.device.values(), *self.host.values()]:
                buf.close()
            self.device.clear()
            self.host.clear()
            self.stream.close()
