"""The backend protocol: load once, ``infer`` many times, ``close`` (or use as a context manager).

Thread contract (every backend): ``infer`` may be called from several threads at once; each call's
outputs stay valid until the *same thread* calls again (backends keep per-thread buffers). ``close``
waits for calls in flight, and any later call raises :class:`~engine.errors.ClosedError`.
"""
from __future__ import annotations

import abc
import contextlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import ClosedError, InputImageError
from ..metadata import ModelMetadata


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: ``None`` in ``shape`` marks a dynamic dimension."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype


class CallGate:
    """Counts the calls in flight of an object that can be closed, and refuses calls once it is.

    ``with gate.call():`` around each call; ``gate.close()`` marks it closed and waits for the calls of
    other threads to finish (a call of the closing thread itself, e.g. a callback, is not waited for).
    Written so that a ``KeyboardInterrupt`` raised anywhere in the caller (Ctrl-C lands between any
    two bytecodes) cannot leave a call counted forever: the token is added inside the ``try`` and
    removed in its ``finally``, under a C lock whose ``with`` cannot be split.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.closed = False
        self._lock = threading.Lock()
        self._calls: set[tuple[int, object]] = set()

    def check(self) -> None:
        """Raise :class:`ClosedError` when closed."""
        if self.closed:
            raise ClosedError(f"{self.what} is closed", f"create a new {self.what.split('(')[0]}; "
                              "use it inside its `with` block, or call close() only when done with it")

    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        token = (threading.get_ident(), object())
        try:
            with self._lock:
                self.check()
                self._calls.add(token)
            yield
        finally:
            with self._lock:
                self._calls.discard(token)

    def close(self, poll_s: float = 0.002) -> bool:
        """Mark closed and wait for other threads' calls; ``True`` the first time (the caller then releases)."""
        with self._lock:
            if self.closed:
                return False
            self.closed = True
        me = threading.get_ident()
        while True:
            with self._lock:
                if all(ident == me for ident, _ in self._calls):
                    return True
            time.sleep(poll_s)  # polled, not a Condition: nothing here can be left half-held by Ctrl-C


class Backend(abc.ABC):
    """Base of every backend.

    Subclasses load the model in ``__init__``, fill :attr:`inputs`, :attr:`outputs` and
    :attr:`metadata`, and implement :meth:`infer_impl`. The public :meth:`infer` checks the input
    against the spec first. Outputs may be views of buffers the backend reuses per thread: consume or
    copy them before the same thread's next call. ``infer`` runs inside :attr:`gate` (see the module's
    thread contract); a subclass's ``close`` calls ``self.gate.close()`` first and releases only when it
    returns ``True``.
    """

    name: str = "base"

    def __init__(self, path: str | Path, **options: Any) -> None:
        self.path = Path(path)
        self.options = options
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []
        self.metadata: ModelMetadata | None = None
        self.gate = CallGate(f"{type(self).__name__}({self.path.name})")

    @property
    def max_batch(self) -> int | None:
        """The static batch size, or ``None`` when the batch dimension is dynamic."""
        return self.inputs[0].shape[0]

    @property
    def batch_range(self) -> tuple[int, int | None]:
        """Smallest and largest batch one call takes (``None``: no upper limit)."""
        b = self.max_batch
        return (b, b) if b else (1, None)

    def infer(self, x: np.ndarray) -> list[np.ndarray]:
        """Run the model on a batch matching ``inputs[0]`` (NCHW float, or NHWC uint8 BGR: see PixelFormat)."""
        with self.gate.call():
            self._check_input(x)
            return self.infer_impl(x)

    def _check_input(self, x: np.ndarray) -> None:
        spec = self.inputs[0]
        if x.ndim != len(spec.shape) or any(s is not None and s != d for s, d in zip(spec.shape, x.shape)):
            raise InputImageError(f"input shape {x.shape} does not match the model's {spec.shape}",
                                  "letterbox frames to the model size (Detector does this for you)")
        if x.dtype != spec.dtype:
            raise InputImageError(f"input dtype {x.dtype} does not match the model's {spec.dtype}",
                                  "convert the input buffer to the model's dtype")

    def input_buffer(self, batch: int) -> np.ndarray | None:
        """A buffer of this backend's own for ``batch`` inputs, or ``None`` (the default: any array will do).

        Writing the input into it (``Letterbox(..., out=backend.input_buffer(n))``) and passing it, or its
        first rows, to :meth:`infer` saves the copy into the backend's memory (TensorRT: the calling thread's
        pinned buffer, from which the input goes to the GPU).
        """
        return None

    @abc.abstractmethod
    def infer_impl(self, x: np.ndarray) -> list[np.ndarray]:
        """Backend-specific inference on a checked input."""

    def close(self) -> None:
        """Release the backend's resources (idempotent)."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
