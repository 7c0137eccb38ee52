"""Getting events out: bounded queues, snapshots, events.jsonl, a real webhook server and a real Mosquitto broker,
outages at start and mid-run, and a pipeline that never waits for any of them."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.detections import Detections
from engine.errors import ConfigError
from engine.events.delivery import DropOldestQueue, EventBus, EventSink, Payload, Reject, Retry
from engine.events.incidents import Event
from engine.events.metrics import AlertMetrics
from engine.events.rules import MqttConfig, SnapshotConfig, WebhookConfig
from engine.events.sinks import EventLog, JsonLinesEvents
from engine.events.snapshots import SnapshotStore
from tests.services import Broker, Subscriber, Webhook, make_tls, mosquitto_missing, wait_for

NAMES = ("disc", "box", "triangle")


def event(i: int, stream: str = "cam", kind: str = "start") -> Event:
    return Event(kind, f"ev{i}", "accident-alert", stream, i, "disc", 0.9, 0.95, (1.0, 2.0, 30.0, 40.0), 10.0 + i,
                 None if kind != "end" else 12.0 + i, 100 + i, None, 1.7e9 + i)


def payload(i: int) -> Payload:
    data = event(i).to_json()
    return Payload(data, json.dumps(data, separators=(",", ":")))


def start_bus(sinks, tmp_path: Path | None = None) -> tuple[EventBus, AlertMetrics]:
    metrics = AlertMetrics()
    bus = EventBus(sinks, metrics)
    bus.start()
    return bus, metrics


# --- the queue -----------------------------------------------------------------------------------
def test_queue_drops_the_oldest_waiting_never_the_one_in_flight():
    q: DropOldestQueue[int] = DropOldestQueue(3)
    assert all(q.put(i) for i in range(3)) and q.dropped == 0
    assert q.get(0.1) == 0  # in flight: it counts towards the 3
    assert not q.put(3) and q.dropped == 1  # 1 (the oldest waiting) goes
    assert [q.get(0.1) for _ in range(2)] == [2, 3] and len(q) == 3
    q.done(), q.done(), q.done()
    assert len(q) == 0 and q.wait_idle(0.1) and q.get(0.05) is None
    one: DropOldestQueue[int] = DropOldestQueue(1)
    one.put(1), one.get(0.1)
    assert not one.put(2) and one.dropped == 1  # only the in-flight item fits: the new one is dropped


def test_put_never_blocks_even_when_nobody_consumes():
    q: DropOldestQueue[int] = DropOldestQueue(10)
    t0 = time.perf_counter()
    for i in range(10_000):
        q.put(i)
    assert q.dropped == 9_990 and [q.get(0.1) for _ in range(10)] == list(range(9_990, 10_000))
    assert time.perf_counter() - t0 < 5  # generous: it is a deque append


# --- snapshots -----------------------------------------------------------------------------------
def _frame(value: int = 90) -> np.ndarray:
    return np.full((120, 160, 3), value, np.uint8)


def _one(box=(20, 30, 60, 80), tid: int = 7) -> Detections:
    return Detections(np.array([box], np.float32), [0.91], [0], NAMES, track_id=[tid])


def test_snapshot_is_an_annotated_jpeg_written_atomically(tmp_path):
    (tmp_path / "snapshots" / "cam").mkdir(parents=True)
    (tmp_path / "snapshots" / "cam" / "old.jpg.tmp").write_bytes(b"half")  # left by a killed run
    store = SnapshotStore(tmp_path)
    assert not list(tmp_path.rglob("*.tmp"))
    zone = np.array([[0, 60], [159, 60], [159, 119], [0, 119]], np.float32)
    assert store.write("snapshots/cam/e1.jpg", _frame(), _one(), zone)
    img = cv2.imread(str(tmp_path / "snapshots" / "cam" / "e1.jpg"))
    assert img.shape == (120, 160, 3)
    assert np.abs(img[30, 40].astype(int) - 90).max() > 40  # the label was drawn at the box's top
    assert np.abs(img[60, 5].astype(int) - 90).max() > 40  # the zone's edge
    assert np.abs(img[100, 140].astype(int) - 90).max() < 15  # elsewhere the frame itself
    assert store.written == 1 and not list(tmp_path.rglob("*.tmp"))


def test_snapshots_pruned_by_count_and_by_size(tmp_path):
    store = SnapshotStore(tmp_path, SnapshotConfig(max_count=3, max_megabytes=100))
    for i in range(5):
        store.write(f"snapshots/cam/e{i}.jpg", _frame(), _one())
    assert sorted(p.name for p in (tmp_path / "snapshots" / "cam").iterdir()) == ["e2.jpg", "e3.jpg", "e4.jpg"]
    assert store.pruned == 2
    size = (tmp_path / "snapshots" / "cam" / "e4.jpg").stat().st_size
    noisy = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    store2 = SnapshotStore(tmp_path, SnapshotConfig(max_count=100, max_megabytes=(2.5 * size) / 1e6))
    assert store2.count <= 2  # the three left were read back, oldest pruned to fit
    store2.write("snapshots/yard/big.jpg", noisy, _one())  # larger than the limit alone: kept, the rest go
    assert [p.name for p in tmp_path.rglob("*.jpg")] == ["big.jpg"]
    store2.write("snapshots/yard/big.jpg", noisy, _one())  # rewriting one file replaces it, not adds
    assert store2.count == 1


# --- the bus and events.jsonl ---------------------------------------------------------------------
def test_bus_writes_snapshot_then_the_same_json_to_every_sink(tmp_path):
    store = SnapshotStore(tmp_path)
    jsonl, log = JsonLinesEvents(tmp_path / "events.jsonl"), EventLog()
    metrics = AlertMetrics()
    seen_files = []

    def write(ev: Event) -> bool:
        ok = store.write(ev.snapshot, ev.image, _one())
        seen_files.append((tmp_path / ev.snapshot).is_file())
        return ok

    bus = EventBus([jsonl, log], metrics, write)
    bus.start()
    first = Event("start", "e1", "r", "cam", 1, "disc", 0.9, 0.9, (1, 2, 3, 4), 0.0, None, 5, "snapshots/cam/e1.jpg",
                  1.0, _frame())
    bus.publish(first, first)
    for i in range(2, 6):
        bus.publish(event(i))
    bus.close(5)
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert [json.loads(x)["event_id"] for x in lines] == ["e1", "ev2", "ev3", "ev4", "ev5"]
    assert json.loads(lines[0])["snapshot"] == "snapshots/cam/e1.jpg" and seen_files == [True]
    assert [e["event_id"] for e in log.latest()] == ["ev5", "ev4", "ev3", "ev2", "e1"]  # newest first
    assert metrics.get("sent", "jsonl") == 5 and metrics.get("snapshots", "bus") == 1
    assert "image" not in json.loads(lines[0])


def test_a_snapshot_that_cannot_be_written_is_null_in_its_start_event(tmp_path):
    jsonl = JsonLinesEvents(tmp_path / "events.jsonl")
    bus = EventBus([jsonl], AlertMetrics(), lambda ev: False)
    bus.start()
    ev = Event("start", "e1", "r", "cam", 1, "disc", 0.9, 0.9, (1, 2, 3, 4), 0.0, None, 5, "snapshots/x.jpg", 1.0,
               _frame())
    bus.publish(ev, ev)
    bus.close(5)
    assert json.loads((tmp_path / "events.jsonl").read_text())["snapshot"] is None


def test_a_burst_of_incidents_loses_snapshots_never_events(tmp_path):
    """80 incidents start on one frame (a parking lot at stream start) while the bus is busy: every event is
    delivered; only the frames beyond the bus's budget go without a snapshot, and say so."""
    import threading

    jsonl, metrics, gate = JsonLinesEvents(tmp_path / "events.jsonl"), AlertMetrics(), threading.Event()

    def write(ev: Event) -> bool:
        gate.wait(5)  # the first snapshot takes long: everything else queues behind it
        return True

    bus = EventBus([jsonl], metrics, write, queue_size=1000, frames=8)
    bus.start()
    frame = _frame()
    for i in range(80):
        ev = Event("start", f"e{i}", "r", "cam", i, "disc", 0.9, 0.9, (1, 2, 3, 4), 0.0, None, 5,
                   f"snapshots/cam/e{i}.jpg", 1.0, frame)
        bus.publish(ev, ev)
    assert bus._frames_waiting == 8  # the queue holds 80 events but only 8 frames
    gate.set()
    bus.close(5)
    lines = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [x["event_id"] for x in lines] == [f"e{i}" for i in range(80)]
    assert [x["snapshot"] is not None for x in lines] == [True] * 8 + [False] * 72
    assert metrics.get("snapshots", "bus") == 8 and metrics.get("snapshots_skipped", "bus") == 72
    assert bus._frames_waiting == 0 and bus.jobs.dropped == 0


def test_an_incident_whose_snapshot_was_not_written_names_none_until_one_is(tmp_path):
    """Its start went out with "snapshot": null, and its end named the JPEG that was never written."""
    jsonl = JsonLinesEvents(tmp_path / "events.jsonl")
    results = iter([False, True])
    bus = EventBus([jsonl], AlertMetrics(), lambda ev: next(results))
    bus.start()
    kw = dict(rule="r", stream="cam", track_id=1, class_name="disc", score=0.9, max_score=0.9, box=(1, 2, 3, 4),
              start_time=0.0, frame=5, snapshot="snapshots/cam/e1.jpg", timestamp=1.0)
    for kind, image in (("start", _frame()), ("end", None)):
        ev = Event(kind, "e1", end_time=None if kind == "start" else 2.0, image=image, **kw)
        bus.publish(ev, ev if image is not None else None)
    bus.close(5)
    assert [json.loads(x)["snapshot"] for x in (tmp_path / "events.jsonl").read_text().splitlines()] == [None, None]
    # the start itself dropped from a full queue (the bus not yet running): its end names no file either
    jsonl = JsonLinesEvents(tmp_path / "events2.jsonl")
    bus = EventBus([jsonl], AlertMetrics(), lambda ev: True, queue_size=1)
    for kind, image in (("start", _frame()), ("end", None)):
        ev = Event(kind, "e2", end_time=None if kind == "start" else 2.0, image=image, **kw)
        bus.publish(ev, ev if image is not None else None)
    bus.start()
    bus.close(5)
    lines = [json.loads(x) for x in (tmp_path / "events2.jsonl").read_text().splitlines()]
    assert [(x["type"], x["snapshot"]) for x in lines] == [("end", None)] and bus.jobs.dropped == 1


def test_a_job_dropped_from_the_full_queue_frees_its_frame():
    q: DropOldestQueue[tuple] = DropOldestQueue(2, on_drop=lambda job: freed.append(job))
    freed: list = []
    for i in range(4):
        q.put((i, "frame"))
    assert freed == [(0, "frame"), (1, "frame")] and q.dropped == 2


class Flaky(EventSink):
    """Fails the first ``fail`` attempts (Retry), refuses ids in ``refuse``, records what it delivered."""

    def __init__(self, fail: int = 0, refuse=(), queue_size: int = 100) -> None:
        super().__init__("flaky", queue_size, backoff_max=0.05)
        self.fail, self.refuse, self.got = fail, set(refuse), []

    def deliver(self, p: Payload) -> None:
        if p.data["event_id"] in self.refuse:
            raise Reject("no")
        if self.fail:
            self.fail -= 1
            raise Retry("not yet")
        self.got.append(p.data["event_id"])


def test_sink_retries_with_backoff_and_skips_refused_events(caplog):
    sink = Flaky(fail=3, refuse={"ev2"})
    bus, metrics = start_bus([sink])
    with caplog.at_level(logging.WARNING, logger="engine.events"):
        for i in range(1, 5):
            bus.publish(event(i))
        bus.close(5)
    assert sink.got == ["ev1", "ev3", "ev4"]
    assert (metrics.get("failures", "flaky"), metrics.get("retries", "flaky"), metrics.get("rejected", "flaky")) == \
        (3, 3, 1)
    assert sum("delivery failed" in r.message for r in caplog.records) == 1  # one warning per outage, not per try


def test_close_gives_up_after_its_timeout_and_counts_what_is_left():
    sink = Flaky(fail=10**9, queue_size=4)
    bus, metrics = start_bus([sink])
    for i in range(6):
        bus.publish(event(i))
    t0 = time.monotonic()
    bus.close(0.5)
    assert time.monotonic() - t0 < 15
    assert sink.got == [] and sink.queue.dropped == 6  # 2 dropped when full, 4 left at shutdown


# --- webhook (a real HTTP server on 127.0.0.1) ------------------------------------------------------
def webhook_sink(url: str, **kw):
    from engine.events.sinks.webhook import WebhookSink

    return WebhookSink(WebhookConfig(url, timeout=2.0, token_env=kw.pop("token_env", None)), backoff_max=0.2, **kw)


def test_webhook_posts_the_jsonl_line_with_a_bearer_token(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_HOOK_TOKEN", "s3cret")
    hook = Webhook().start()
    try:
        jsonl = JsonLinesEvents(tmp_path / "events.jsonl")
        bus, metrics = start_bus([jsonl, webhook_sink(hook.url, token_env="TEST_HOOK_TOKEN")])
        for i in range(3):
            bus.publish(event(i))
        bus.close(10)
    finally:
        hook.stop()
    lines = (tmp_path / "events.jsonl").read_bytes().splitlines()
    assert hook.bodies == lines  # byte for byte the same JSON
    assert all(r["headers"]["Authorization"] == "Bearer s3cret" for r in hook.requests)
    assert hook.requests[0]["headers"]["Content-Type"] == "application/json" and metrics.get("sent", "webhook") == 3


def test_webhook_retries_5xx_and_drops_4xx():
    hook = Webhook(status=503).start()
    try:
        sink = webhook_sink(hook.url)
        bus, metrics = start_bus([sink])
        bus.publish(event(1))
        assert wait_for(lambda: len(hook.requests) >= 3, 10)
        hook.status = 200
        assert wait_for(lambda: len(hook.bodies) == 1, 10)
        hook.status = 404
        bus.publish(event(2))
        assert wait_for(lambda: metrics.get("rejected", "webhook") == 1, 10)
        hook.status = 200
        bus.publish(event(3))
        bus.close(10)
    finally:
        hook.stop()
    assert [e["event_id"] for e in hook.events()] == ["ev1", "ev3"]
    assert metrics.get("retries", "webhook") >= 2 and sum(r["status"] == 404 for r in hook.requests) == 1


def test_webhook_down_at_start_then_dying_mid_run(caplog):
    """Queued events arrive once it is back, up to the queue size; the rest are counted as dropped."""
    hook = Webhook()  # not started: nothing listens on its port
    sink = webhook_sink(hook.url, queue_size=3)
    with caplog.at_level(logging.WARNING, logger="engine.events"):
        bus, metrics = start_bus([sink])
        bus.publish(event(0))
        assert wait_for(lambda: metrics.get("failures", "webhook") >= 1, 10)  # ev0 is in flight
        for i in range(1, 5):
            bus.publish(event(i))
        assert wait_for(lambda: sink.queue.dropped == 2, 10)
        assert any("cannot reach" in r.message for r in caplog.records)  # a warning, not an exit
        hook.start()
        try:
            assert wait_for(lambda: len(hook.bodies) == 3, 15), hook.events()
            assert [e["event_id"] for e in hook.events()] == ["ev0", "ev3", "ev4"]  # ev0 was in flight
            assert sink.queue.dropped == 2
            hook.stop()  # dies mid-run
            failed = metrics.get("failures", "webhook")
            bus.publish(event(5))
            assert wait_for(lambda: metrics.get("failures", "webhook") > failed, 10)  # ev5 is in flight
            for i in range(6, 10):
                bus.publish(event(i))
            assert wait_for(lambda: sink.queue.dropped == 4, 10)
            hook.start()  # back on the same port
            assert wait_for(lambda: len(hook.bodies) == 6, 15), hook.events()
        finally:
            bus.close(5)
            hook.stop()
    assert [e["event_id"] for e in hook.events()][3:] == ["ev5", "ev8", "ev9"] and sink.queue.dropped == 4


def test_webhook_redirect_is_refused_not_followed_and_url_credentials_go_as_basic_auth():
    import base64

    hook = Webhook(status=302).start()  # a redirect: urllib would resend it as a GET, token and all
    try:
        hook.location = f"http://127.0.0.1:{hook.port}/moved"
        bus, metrics = start_bus([webhook_sink(hook.url)])
        bus.publish(event(1))
        assert wait_for(lambda: metrics.get("rejected", "webhook") == 1, 10)
        bus.close(2)
        assert [r["method"] for r in hook.requests] == ["POST"] and metrics.get("sent", "webhook") == 0
        hook.status, hook.location = 200, None
        sink = webhook_sink(hook.url.replace("http://", "http://alarm:p%40ss@w0rd@"))
        assert "p%40ss" not in sink.label and "w0rd" not in sink.label
        bus, metrics = start_bus([sink])
        bus.publish(event(2))
        assert wait_for(lambda: metrics.get("sent", "webhook") == 1, 10)
        bus.close(2)
        assert hook.requests[-1]["headers"]["Authorization"] == "Basic " + base64.b64encode(b"alarm:p@ss@w0rd").decode()
    finally:
        hook.stop()
    with pytest.raises(ConfigError, match="a token is set too"):
        webhook_sink("http://u:p@127.0.0.1:9/x", token_env="HOME")


def test_webhook_config_errors():
    with pytest.raises(ConfigError, match="not an http"):
        webhook_sink("ftp://example.com/x")
    with pytest.raises(ConfigError, match="NOPE_NOT_SET is not set"):
        webhook_sink("http://127.0.0.1:9/x", token_env="NOPE_NOT_SET")


# --- MQTT (a real Mosquitto broker on 127.0.0.1) -----------------------------------------------------
needs_broker = pytest.mark.skipif(mosquitto_missing() is not None, reason=str(mosquitto_missing()))


def mqtt_sink(port: int, scheme: str = "mqtt", **kw):
    from engine.events.sinks.mqtt import MqttSink

    queue_size = kw.pop("queue_size", 1000)
    return MqttSink(MqttConfig(f"{scheme}://127.0.0.1:{port}", topic_prefix="site", **kw), queue_size=queue_size,
                    backoff_max=1.0)


@needs_broker
def test_mqtt_publishes_the_jsonl_line_qos1_per_stream_topic(tmp_path):
    broker = Broker(tmp_path / "b").start()
    try:
        sub = Subscriber(broker.port)
        jsonl = JsonLinesEvents(tmp_path / "events.jsonl")
        bus, metrics = start_bus([jsonl, mqtt_sink(broker.port)])
        bus.publish(event(1, "gate"))
        bus.publish(event(2, "yard"))
        assert wait_for(lambda: len(sub.messages) == 2, 10)
        bus.close(5)
        sub.close()
    finally:
        broker.kill()
    assert [t for t, _ in sub.messages] == ["site/gate/events", "site/yard/events"]
    assert sub.raw == (tmp_path / "events.jsonl").read_bytes().splitlines()
    assert metrics.get("sent", "mqtt") == 2


@needs_broker
def test_mqtt_user_password_from_the_environment(tmp_path, monkeypatch, caplog):
    broker = Broker(tmp_path / "b", users={"alerts": "pw1", "watcher": "pw2"}).start()
    try:
        import paho.mqtt.client as mqtt

        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        sub.username_pw_set("watcher", "pw2")
        got = []
        sub.on_connect = lambda c, u, f, rc, p: c.subscribe("#", 1)
        sub.on_message = lambda c, u, m: got.append(m.payload)
        sub.connect("127.0.0.1", broker.port)
        sub.loop_start()
        monkeypatch.setenv("TEST_MQTT_PW", "pw1")
        bus, metrics = start_bus([mqtt_sink(broker.port, username="alerts", password_env="TEST_MQTT_PW")])
        time.sleep(0.5)
        bus.publish(event(1))
        assert wait_for(lambda: len(got) == 1, 10)
        bus.close(5)
        monkeypatch.setenv("TEST_MQTT_PW", "wrong")
        with caplog.at_level(logging.ERROR, logger="engine.events"):
            bus, metrics = start_bus([mqtt_sink(broker.port, username="alerts", password_env="TEST_MQTT_PW")])
            bus.publish(event(2))
            assert wait_for(lambda: any("refused" in r.message for r in caplog.records), 10)
            bus.close(0.5)
        assert len(got) == 1 and metrics.get("sent", "mqtt") == 0
        sub.loop_stop()
    finally:
        broker.kill()
    with pytest.raises(ConfigError, match="NOT_SET_PW is not set"):
        mqtt_sink(1, username="u", password_env="NOT_SET_PW")


@pytest.mark.parametrize("prefix", ["site/+", "site/#", ""])
def test_an_mqtt_prefix_that_cannot_be_published_to_is_a_config_error(prefix):
    """paho refuses wildcards in a publish topic: a stream that starts with one would never deliver."""
    from engine.events.sinks.mqtt import MqttSink

    with pytest.raises(ConfigError, match="cannot be a publish topic"):
        MqttSink(MqttConfig("mqtt://127.0.0.1:1883", topic_prefix=prefix))


@needs_broker
def test_mqtt_over_tls_with_a_private_ca(tmp_path):
    try:
        tls = make_tls(tmp_path / "tls")
    except (OSError, Exception) as e:  # noqa: BLE001 - no openssl here
        pytest.skip(f"openssl cannot make certificates: {e}")
    broker = Broker(tmp_path / "b", tls=tls).start()
    try:
        bus, metrics = start_bus([mqtt_sink(broker.port, scheme="mqtts", tls_ca=str(tls["ca"]))])
        bus.publish(event(1))
        assert wait_for(lambda: metrics.get("sent", "mqtt") == 1, 15)
        bus.close(2)
    finally:
        broker.kill()


@needs_broker
def test_mqtt_broker_down_at_start_then_dying_mid_run(tmp_path, caplog):
    broker = Broker(tmp_path / "b").start()
    sub = Subscriber(broker.port)  # a durable subscription: the broker keeps QoS 1 messages for it
    broker.kill()
    sink = mqtt_sink(broker.port, queue_size=3)
    try:
        with caplog.at_level(logging.WARNING, logger="engine.events"):
            bus, metrics = start_bus([sink])  # the broker is down at start
            bus.publish(event(0))
            assert wait_for(lambda: len(sink.queue) == 1 and not sink.queue._q, 10)  # ev0 is in flight
            for i in range(1, 5):
                bus.publish(event(i))
            assert wait_for(lambda: sink.queue.dropped == 2, 10)
            assert wait_for(lambda: any("cannot reach" in r.message for r in caplog.records), 10)  # a warning
        broker.start()
        assert wait_for(lambda: len(sub.messages) == 3, 20), sub.ids()
        assert [m["event_id"] for _, m in sub.messages] == ["ev0", "ev3", "ev4"] and sink.queue.dropped == 2
        broker.kill()  # dies mid-run
        assert wait_for(lambda: not sink.connected.is_set(), 10)
        bus.publish(event(5))
        assert wait_for(lambda: len(sink.queue) == 1 and not sink.queue._q, 10)  # ev5 is in flight
        for i in range(6, 10):
            bus.publish(event(i))
        assert wait_for(lambda: sink.queue.dropped == 4, 10)
        broker.start()  # back on the same port
        assert wait_for(lambda: len({m["event_id"] for _, m in sub.messages}) >= 6, 20), sub.ids()
    finally:
        bus.close(2)
        sub.close()
        broker.kill()
    ids = [m["event_id"] for _, m in sub.messages]
    assert list(dict.fromkeys(ids))[3:] == ["ev5", "ev8", "ev9"] and sink.queue.dropped == 4  # QoS 1: maybe twice


def test_mqtt_bad_url_and_missing_tls_file():
    pytest.importorskip("paho.mqtt")
    with pytest.raises(ConfigError, match="is not mqtt://host"):
        mqtt_sink(1, scheme="http")
    with pytest.raises(ConfigError, match="tls ca file /nonexistent/ca.pem not found"):
        mqtt_sink(1, tls_ca="/nonexistent/ca.pem")
