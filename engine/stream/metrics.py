"""Per-source stream metrics: fps in and out, latency p50/p95, dropped frames, reconnects, stage times.

:class:`StreamMetrics` holds one :class:`SourceMetrics` per source. Counters have one writer each
(the capture thread counts frames in and reconnects, the pipeline counts frames out), and the
windows behind rates and percentiles are bounded, so memory stays flat on an endless stream.
:class:`PrometheusExporter` serves them for Prometheus; ``prometheus-client`` (the ``stream`` extra)
is imported only when it is used.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable

import numpy as np

from ..errors import ConfigError


class SourceMetrics:
    """Counters and sliding windows of one source.

    Args:
        name: the source's name (the ``source`` label).
        rate_window_s: fps is measured over the last this many seconds.
        latency_window: percentiles are over the last this many frames.
    """

    def __init__(self, name: str, rate_window_s: float = 5.0, latency_window: int = 512) -> None:
        self.name = name
        self.frames_in = 0
        self.frames_out = 0
        self.reconnects = 0
        self.disconnects = 0
        self.connected = False
        self.dropped_fn: Callable[[], int] = lambda: 0  # the source's FrameSlot knows its drops
        self._rate_window = rate_window_s
        self._t_in: deque[float] = deque(maxlen=4096)
        self._t_out: deque[float] = deque(maxlen=4096)
        self._latency: deque[float] = deque(maxlen=latency_window)
        self._stages: dict[str, deque[float]] = {}  # seconds per frame of a processor (tracker, rules)
        self._lock = threading.Lock()

    @property
    def dropped(self) -> int:
        return self.dropped_fn()

    def record_in(self, t: float) -> None:
        """A frame was captured at ``t`` (``time.perf_counter()``)."""
        with self._lock:
            self.frames_in += 1
            self._t_in.append(t)

    def record_out(self, t: float, latency_s: float) -> None:
        """A frame's detections were ready at ``t``, ``latency_s`` after its capture."""
        with self._lock:
            self.frames_out += 1
            self._t_out.append(t)
            self._latency.append(latency_s)

    def record_stage(self, stage: str, seconds: float) -> None:
        """A processor stage (``track``, ``rules``) took ``seconds`` on one frame."""
        with self._lock:
            window = self._stages.get(stage)
            if window is None:
                window = self._stages[stage] = deque(maxlen=self._latency.maxlen)
            window.append(seconds)

    def _rate(self, stamps: deque[float], now: float) -> float:
        recent = [t for t in stamps if now - t <= self._rate_window]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-9)

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of every figure (latencies in milliseconds)."""
        now = time.perf_counter()
        with self._lock:
            lat = np.array(self._latency, dtype=np.float64)
            fps_in, fps_out = self._rate(self._t_in, now), self._rate(self._t_out, now)
            frames_in, frames_out = self.frames_in, self.frames_out
            stages = {k: np.array(v, dtype=np.float64) for k, v in self._stages.items()}
        p50, p95 = (np.percentile(lat, [50, 95]) * 1e3).tolist() if lat.size else (0.0, 0.0)
        snap = {"frames_in": frames_in, "frames_out": frames_out, "dropped": self.dropped,
                "reconnects": self.reconnects, "disconnects": self.disconnects, "connected": self.connected,
                "fps_in": round(fps_in, 2), "fps_out": round(fps_out, 2),
                "latency_p50_ms": round(p50, 1), "latency_p95_ms": round(p95, 1)}
        if stages:  # only with processors, so the plain stream's snapshot stays as it was
            snap["stages_ms"] = {k: dict(zip(("p50", "p95"), (np.percentile(v, [50, 95]) * 1e3).round(4).tolist()))
                                 for k, v in stages.items() if v.size}
        return snap


class StreamMetrics:
    """The metrics of every source of a stream, by name."""

    def __init__(self) -> None:
        self.sources: dict[str, SourceMetrics] = {}
        # more Prometheus families at each scrape: objects with collect(prefix) (e.g. the events' counters)
        self.collectors: list[Any] = []

    def add(self, name: str) -> SourceMetrics:
        self.sources[name] = SourceMetrics(name)
        return self.sources[name]

    def __getitem__(self, name: str) -> SourceMetrics:
        return self.sources[name]

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {name: m.snapshot() for name, m in self.sources.items()}

    @staticmethod
    def format(name: str, s: dict[str, Any]) -> str:
        """One log line for a source's snapshot."""
        state = "up" if s["connected"] else "down"
        return (f"{name} [{state}]: in {s['fps_in']:.1f} fps, out {s['fps_out']:.1f} fps, "
                f"latency p50 {s['latency_p50_ms']:.0f} ms p95 {s['latency_p95_ms']:.0f} ms, "
                f"frames {s['frames_out']}/{s['frames_in']}, dropped {s['dropped']}, reconnects {s['reconnects']}")


class _Collector:
    """Reads a snapshot at each scrape, so the hot path never touches prometheus-client."""

    def __init__(self, metrics: StreamMetrics, prefix: str) -> None:
        self.metrics, self.prefix = metrics, prefix

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        p = self.prefix
        snap = self.metrics.snapshot()
        counters = {"frames_in": "frames captured", "frames_out": "frames with detections",
                    "dropped": "stale live frames dropped", "reconnects": "successful reconnects"}
        for key, doc in counters.items():
            fam = CounterMetricFamily(f"{p}_{key}", f"{doc}, per source", labels=["source"])
            for name, s in snap.items():
                fam.add_metric([name], s[key])
            yield fam
        gauges = {"fps_in": "capture rate, frames/s", "fps_out": "detection rate, frames/s",
                  "connected": "1 while the source delivers frames"}
        for key, doc in gauges.items():
            fam = GaugeMetricFamily(f"{p}_{key}", f"{doc}, per source", labels=["source"])
            for name, s in snap.items():
                fam.add_metric([name], float(s[key]))
            yield fam
        fam = GaugeMetricFamily(f"{p}_latency_seconds", "capture to detections, recent frames",
                                labels=["source", "quantile"])
        for name, s in snap.items():
            fam.add_metric([name, "0.5"], s["latency_p50_ms"] / 1e3)
            fam.add_metric([name, "0.95"], s["latency_p95_ms"] / 1e3)
        yield fam
        if any("stages_ms" in s for s in snap.values()):
            fam = GaugeMetricFamily(f"{p}_stage_seconds", "time of a processor stage (tracker, rules) per frame, "
                                    "recent frames", labels=["source", "stage", "quantile"])
            for name, s in snap.items():
                for stage, q in s.get("stages_ms", {}).items():
                    fam.add_metric([name, stage, "0.5"], q["p50"] / 1e3)
                    fam.add_metric([name, stage, "0.95"], q["p95"] / 1e3)
            yield fam
        for extra in self.metrics.collectors:
            yield from extra.collect(p)


def registry(metrics: StreamMetrics, prefix: str = "yolo_stream"):
    """A prometheus-client registry that reads ``metrics`` at each scrape (a clear error without the library)."""
    try:
        from prometheus_client import CollectorRegistry
    except ImportError:
        raise ConfigError("Prometheus metrics need prometheus-client, which is not installed",
                          "pip install 'yolo-deploy[stream]' (or pip install prometheus-client)") from None
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Collector(metrics, prefix))
    return reg


class PrometheusExporter:
    """Serve ``metrics`` at ``http://HOST:PORT/metrics`` (a thread of prometheus-client's own).

    Args:
        metrics: what to export.
        port: TCP port (0 picks a free one; see :attr:`port`).
        host: address to bind; ``127.0.0.1`` by default, ``0.0.0.0`` to let another machine scrape.
        prefix: metric name prefix.
    """

    def __init__(self, metrics: StreamMetrics, port: int, host: str = "127.0.0.1", prefix: str = "yolo_stream") -> None:
        reg = registry(metrics, prefix)
        from prometheus_client import start_http_server

        from ..ports import refuse_held_port

        try:
            refuse_held_port(host, port)
            self._server, self._thread = start_http_server(port, addr=host, registry=reg)
        except (OSError, OverflowError) as e:  # OverflowError: a port outside 0-65535
            raise ConfigError(f"cannot serve metrics on {host}:{port}: {e}",
                              "pick a free port with --metrics-port") from None
        self.host, self.port = host, self._server.server_address[1]

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None
