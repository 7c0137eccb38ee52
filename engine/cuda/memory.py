"""Pinned host and device buffers, allocated once and grown (never shrunk) by ``resize``."""
from __future__ import annotations

import ctypes
import math
from typing import Any

import numpy as np

from .runtime import check, cudart


class _Buffer:
    """Shared bookkeeping: a raw pointer, its size, and idempotent ``close``."""

    _alloc = ""
    _free = ""

    def __init__(self, nbytes: int = 0) -> None:
        self.ptr = 0
        self.nbytes = 0
        self.resize(nbytes)

    def resize(self, nbytes: int) -> None:
        """Make room for ``nbytes``; grows only (a smaller request keeps the buffer), contents are lost."""
        nbytes = int(nbytes)
        if nbytes <= self.nbytes:
            return
        self.close()
        self.ptr = int(check(getattr(cudart(), self._alloc)(nbytes), f"{self._alloc}({nbytes})"))
        self.nbytes = nbytes

    def close(self) -> None:
        """Free the memory (idempotent); views of a pinned buffer are invalid afterwards."""
        if self.ptr:
            ptr, self.ptr, self.nbytes = self.ptr, 0, 0
            check(getattr(cudart(), self._free)(ptr), f"{self._free}(0x{ptr:x})")

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(nbytes={self.nbytes}, ptr=0x{self.ptr:x})"


class PinnedBuffer(_Buffer):
    """Page-locked host memory (``cudaMallocHost``): the source and target of fast async copies.

    :meth:`array` gives a NumPy view over it; write inputs into that view and read outputs from it,
    but only after the stream that copies into it was synchronized.
    """

    _alloc = "cudaMallocHost"
    _free = "cudaFreeHost"

    def array(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A NumPy view of the first ``prod(shape) * itemsize`` bytes (no copy)."""
        dtype = np.dtype(dtype)
        count = math.prod(shape)
        need = count * dtype.itemsize
        if need > self.nbytes:
            raise ValueError(f"a {shape} {dtype} view needs {need} bytes; this buffer has {self.nbytes}")
        if need == 0:
            return np.empty(shape, dtype)
        raw = (ctypes.c_ubyte * need).from_address(self.ptr)
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)


class DeviceBuffer(_Buffer):
    """Device memory (``cudaMalloc``) with async copies from and to host memory on a stream."""

    _alloc = "cudaMalloc"
    _free = "cudaFree"

    def _span(self, host: Any, nbytes: int | None) -> tuple[int, int]:
        ptr = host.ptr if isinstance(host, PinnedBuffer) else host.ctypes.data
        size = host.nbytes if nbytes is None else int(nbytes)
        if size > self.nbytes or size > host.nbytes:
            raise ValueError(f"copy of {size} bytes exceeds a buffer ({self.nbytes} device, {host.nbytes} host)")
        return ptr, size

    def copy_from_host(self, host: "PinnedBuffer | np.ndarray", stream: Any, nbytes: int | None = None) -> None:
        """Queue host → device on ``stream`` (async only when ``host`` is pinned)."""
        ptr, size = self._span(host, nbytes)
        rt = cudart()
        check(rt.cudaMemcpyAsync(self.ptr, ptr, size, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.handle),
              f"cudaMemcpyAsync(H2D, {size} bytes)")

    def copy_to_host(self, host: "PinnedBuffer | np.ndarray", stream: Any, nbytes: int | None = None) -> None:
        """Queue device → host on ``stream``; the host may read only after the stream is synchronized."""
        ptr, size = self._span(host, nbytes)
        rt = cudart()
        check(rt.cudaMemcpyAsync(ptr, self.ptr, size, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream.handle),
              f"cudaMemcpyAsync(D2H, {size} bytes)")
