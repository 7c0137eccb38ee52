"""Listening ports of the status page and the metrics endpoint: one another socket holds is a typed error,
on Windows too (engine/ports.py)."""
from __future__ import annotations

import socket
import sys

import pytest

from engine.errors import ConfigError
from engine.stream.metrics import StreamMetrics
from engine.stream.processors import StreamContext


def _context() -> StreamContext:
    return StreamContext(("thing",), {}, StreamMetrics(), False, "m.onnx")


@pytest.fixture()
def held():
    """A port another socket listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_the_probe_refuses_a_held_port_where_it_runs_and_leaves_a_free_one(held, monkeypatch):
    from engine.ports import refuse_held_port

    refuse_held_port("127.0.0.1", held)  # off Windows the server's own bind is the check
    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(OSError):
        refuse_held_port("127.0.0.1", held)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    refuse_held_port("127.0.0.1", free)
    refuse_held_port("127.0.0.1", 0)


def test_status_page_and_metrics_consult_the_probe(monkeypatch):
    """On Windows SO_REUSEADDR let a second listener bind a port in use: a second stream with the same --http
    or --metrics-port started and the two shared it. Simulated by the probe failing as it does there."""
    pytest.importorskip("prometheus_client")
    import engine.ports
    from engine.status.server import StatusPage
    from engine.stream.metrics import PrometheusExporter

    def held_elsewhere(host, port):
        raise OSError(10048, "Only one usage of each socket address is normally permitted")

    monkeypatch.setattr(engine.ports, "refuse_held_port", held_elsewhere)
    monkeypatch.setattr("engine.status.server.refuse_held_port", held_elsewhere)
    page = StatusPage(port=18080)
    with pytest.raises(ConfigError, match="cannot serve the status page on 127.0.0.1:18080") as e:
        page.start(_context())
    assert "--http" in e.value.fix
    with pytest.raises(ConfigError, match="cannot serve metrics on 127.0.0.1:18081"):
        PrometheusExporter(StreamMetrics(), 18081)


def test_a_held_or_impossible_port_is_a_typed_error(held):
    from engine.status.server import StatusPage

    for port in (held, 70000):  # 70000: an OverflowError from bind, which escaped as a traceback
        with pytest.raises(ConfigError, match=f"cannot serve the status page on 127.0.0.1:{port}"):
            StatusPage(port=port).start(_context())
