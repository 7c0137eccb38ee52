"""The last events in memory, newest first: what the status page shows (no thread, no queue)."""
from __future__ import annotations

import threading
from collections import deque
from typing import Any

from ..delivery import Payload
from ..metrics import AlertMetrics


class EventLog:
    """Keeps the latest ``size`` events (as dicts); :meth:`latest` is safe from any thread."""

    name = "status"

    def __init__(self, size: int = 100) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=size)
        self._lock = threading.Lock()
        self.metrics: AlertMetrics | None = None

    def start(self, metrics: AlertMetrics) -> None:
        self.metrics = metrics

    def put(self, payload: Payload) -> None:
        with self._lock:
            self._events.appendleft(payload.data)
        if self.metrics is not None:
            self.metrics.count("sent", self.name)

    def latest(self, n: int | None = None) -> list[dict[str, Any]]:
        with self._lock:
            items = list(self._events)
        return items if n is None else items[:n]

    def close(self, timeout: float) -> None:
        pass
