"""Counters of the events machinery, exported with the stream's Prometheus metrics.

Per rule and stream: incidents started and ended. Per sink (``jsonl``, ``webhook``, ``mqtt``, ``status``,
and ``bus`` for the snapshot stage): events sent, failed attempts, retries, refusals, queue drops and
queue length. The pipeline's own time per frame for tracking and rules is in
:meth:`~engine.stream.metrics.SourceMetrics.record_stage`.
"""
from __future__ import annotations

import threading
from collections import Counter
from typing import Any, Callable, Iterator

# (name, help, labels): one row per counter family; the key of a count is (name, *label values)
COUNTERS = {
    "incidents_started": ("incidents started", ("rule", "source")),
    "incidents_ended": ("incidents ended", ("rule", "source")),
    "sent": ("events delivered", ("sink",)),
    "failures": ("failed delivery attempts", ("sink",)),
    "retries": ("delivery retries after a failure", ("sink",)),
    "rejected": ("events the receiver refused for good (HTTP 4xx), not retried", ("sink",)),
    "snapshots": ("snapshot JPEGs written", ("sink",)),
    "snapshots_skipped": ("events sent without their snapshot: more frames were waiting than the bus holds", ("sink",)),
}


class AlertMetrics:
    """Thread-safe counters (events are rare, so one lock is no cost) plus queue readers per sink."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, ...]] = Counter()
        self._lock = threading.Lock()
        self.queue_fns: dict[str, Callable[[], int]] = {}  # sink -> events waiting
        self.dropped_fns: dict[str, Callable[[], int]] = {}  # sink -> events dropped from its full queue

    def count(self, name: str, *labels: str) -> None:
        with self._lock:
            self._counts[(name, *labels)] += 1

    def get(self, name: str, *labels: str) -> int:
        with self._lock:
            return self._counts[(name, *labels)]

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready: ``{"incidents_started": {"rule/source": n}, ..., "dropped": {sink: n}, "queued": {...}}``."""
        with self._lock:
            counts = dict(self._counts)
        out: dict[str, Any] = {name: {} for name in COUNTERS}
        for (name, *labels), n in counts.items():
            out[name]["/".join(labels)] = n
        out["dropped"] = {k: fn() for k, fn in self.dropped_fns.items()}
        out["queued"] = {k: fn() for k, fn in self.queue_fns.items()}
        return out

    def collect(self, prefix: str) -> Iterator[Any]:
        """Prometheus families (called at each scrape through :attr:`StreamMetrics.collectors`)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        with self._lock:
            counts = dict(self._counts)
        for name, (doc, labels) in COUNTERS.items():
            fam = CounterMetricFamily(f"{prefix}_events_{name}", doc, labels=list(labels))
            for (key, *values), n in counts.items():
                if key == name:
                    fam.add_metric(values, n)
            yield fam
        fam = CounterMetricFamily(f"{prefix}_events_dropped", "events dropped from a full queue (or at shutdown)",
                                  labels=["sink"])
        for sink, fn in self.dropped_fns.items():
            fam.add_metric([sink], fn())
        yield fam
        fam = GaugeMetricFamily(f"{prefix}_events_queued", "events waiting for delivery", labels=["sink"])
        for sink, fn in self.queue_fns.items():
            fam.add_metric([sink], fn())
        yield fam
