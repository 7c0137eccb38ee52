"""The backend protocol: load once, ``infer`` many times, ``close`` (or use as a context manager)."""
from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputImageError
from ..metadata import ModelMetadata


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: ``None`` in ``shape`` marks a dynamic dimension."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype


class Backend(abc.ABC):
    """Base of every backend.

    Subclasses load the model in ``__init__``, fill :attr:`inputs`, :attr:`outputs` and
    :attr:`metadata`, and implement :meth:`infer_impl`. The public :meth:`infer` checks the input
    against the spec first. Outputs may be views of buffers the backend reuses: consume or copy them
    before the next call.
    """

    name: str = "base"

    def __init__(self, path: str | Path, **options: Any) -> None:
        self.path = Path(path)
        self.options = options
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []
        self.metadata: ModelMetadata | None = None

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
        spec = self.inputs[0]
        if x.ndim != len(spec.shape) or any(s is not None and s != d for s, d in zip(spec.shape, x.shape)):
            raise InputImageError(f"input shape {x.shape} does not match the model's {spec.shape}",
                                  "letterbox frames to the model size (Detector does this for you)")
        if x.dtype != spec.dtype:
            raise InputImageError(f"input dtype {x.dtype} does not match the model's {spec.dtype}",
                                  "convert the input buffer to the model's dtype")
        return self.infer_impl(x)

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
