"""What a served model does with a batch of requests, without Triton: decode, one ``Detector`` call, outputs.

:class:`DetectorModel` is used inside Triton's Python backend (:mod:`engine.serve.triton_model`) and can
be driven directly in tests. Bad requests are answered with :func:`~engine.serve.protocol.error_outputs`
and logged through a :class:`LogLimit`.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import DeployError
from .protocol import ENCODED_INPUT, error_outputs, frames_from_encoded_input, frames_from_image_input, one_line, \
    pack_outputs

log = logging.getLogger("engine.serve")

BAD_REQUEST_LOG_LINES, BAD_REQUEST_LOG_WINDOW_S = 10, 10.0


class LogLimit:
    """At most ``lines`` log lines per ``window_s`` seconds, then one line counting those left out.

    ``emit`` writes a line (default: a warning on the ``engine.serve`` logger; in Triton, its log).
    """

    def __init__(self, lines: int = BAD_REQUEST_LOG_LINES, window_s: float = BAD_REQUEST_LOG_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic, emit: Callable[[str], Any] | None = None) -> None:
        self.lines, self.window_s, self.clock = lines, window_s, clock
        self.emit = emit or (lambda message: log.warning("%s", message))
        self._lock = threading.Lock()
        self._start, self._count, self._dropped = clock(), 0, 0

    def warning(self, message: str) -> None:
        with self._lock:
            now = self.clock()
            if now - self._start >= self.window_s:
                if self._dropped:
                    self.emit(f"{self._dropped} more bad requests in the last {self.window_s:.0f} s were not logged")
                self._start, self._count, self._dropped = now, 0, 0
            if self._count < self.lines:
                self._count += 1
                self.emit(message)
            else:
                self._dropped += 1


def refusal(line: str, model: str, bad_requests: LogLimit) -> dict[str, np.ndarray]:
    """The answer to one bad request to ``model``: ``line`` (reason; fix) as a client error, logged once."""
    bad_requests.warning(f"bad request to '{model}': {line}")
    return error_outputs(line)


class DetectorModel:
    """A batch of requests' inputs in, one output dict per request out.

    All frames of all good requests go through one ``Detector.predict`` call (batched inference for a
    dynamic-batch model; frames one by one for a static one). A request whose input the Detector cannot
    take is answered with its own client error; the others are not affected.
    """

    def __init__(self, detector: Any, input_name: str, model: str = "yolo", bad_requests: LogLimit | None = None,
                 on_internal: Callable[[str], Any] | None = None) -> None:
        self.detector = detector  # thread-safe itself (engine/detector.py): no lock here
        self.input_name = input_name
        self.model = model
        self.bad_requests = bad_requests or LogLimit()
        self.on_internal = on_internal or (lambda message: log.error("%s", message))
        self._decode = frames_from_encoded_input if input_name == ENCODED_INPUT else frames_from_image_input

    def outputs(self, inputs: Sequence[np.ndarray], numbers: Sequence[int] | None = None) -> list[dict[str, np.ndarray]]:
        """One output dict per input array (each the ``input_name`` tensor of one request); ``numbers``: each
        request's place in Triton's batch, as error messages name it (default: its place in ``inputs``)."""
        out: list[dict[str, np.ndarray] | None] = [None] * len(inputs)
        good: list[tuple[int, list[np.ndarray]]] = []
        numbers = list(numbers) if numbers is not None else list(range(len(inputs)))
        for i, array in enumerate(inputs):
            try:
                good.append((i, self._decode(array, numbers[i])))
            except DeployError as e:
                out[i] = self._refuse(e)
        if good:
            try:
                dets = self.detector.predict([f for _, frames in good for f in frames])
            except DeployError as e:  # checked frames the Detector still refused: the whole batch's input
                dets, failed = None, [self._refuse(e) for _ in good]
            except Exception as e:  # noqa: BLE001 - a bug of ours: the traceback to our log, one line to clients
                import traceback

                self.on_internal(f"inference failed on {len(good)} request(s) to '{self.model}':\n"
                                 + traceback.format_exc())
                dets, failed = None, [error_outputs(f"engine.serve: internal error ({type(e).__name__}); see the "
                                                    "server log", server=True) for _ in good]
            start = 0
            for k, (i, frames) in enumerate(good):
                out[i] = pack_outputs(dets[start:start + len(frames)]) if dets is not None else failed[k]
                start += len(frames)
        return out

    def _refuse(self, err: DeployError) -> dict[str, np.ndarray]:
        return refusal(one_line(err), self.model, self.bad_requests)
