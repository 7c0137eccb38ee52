"""Alerts end to end: the demo model on a clip of moving shapes, tracked, through rules to events.jsonl, snapshots,
a real webhook and a real Mosquitto broker; and a pipeline that keeps going when both receivers are dead."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.scene import make_scene
from engine.detections import Detections
from engine.events import EventsProcessor
from engine.events.rules import parse_alerts
from engine.stream import Stream, StreamConfig
from engine.stream.processors import Processor
from engine.stream.sources import CaptureConfig
from tests.conftest import ROOT
from tests.rtsp_server import free_port
from tests.services import Broker, Subscriber, Webhook, mosquitto_missing, wait_for

pytest.importorskip("trackers")
FIELDS = {"type", "event_id", "rule", "stream", "track_id", "class_name", "score", "max_score", "box", "start_time",
          "end_time", "frame", "snapshot", "timestamp"}
RULES = """
rules:
  - name: disc-alert
    classes: [disc]
    min_confidence: 0.5
    min_duration: 0.5
    end_after: 0.5
  - name: right-half
    classes: [box, triangle]
    min_duration: 0.3
    end_after: 0.5
    zone: [[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]]
"""


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_scene(tmp_path_factory.mktemp("scene"), seed=0, frames=120)


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_incidents(events: list[dict], save: Path) -> None:
    """Every incident: one start first, one end last, the same snapshot, and the file exists."""
    assert events and all(set(e) == FIELDS for e in events)
    by_id: dict[str, list[dict]] = {}
    for e in events:
        by_id.setdefault(e["event_id"], []).append(e)
    for eid, evs in by_id.items():
        types = [e["type"] for e in evs]
        assert types[0] == "start" and types[-1] == "end" and types.count("start") == types.count("end") == 1, types
        assert len({(e["rule"], e["stream"], e["track_id"]) for e in evs}) == 1
        assert evs[0]["end_time"] is None and evs[-1]["end_time"] >= evs[0]["start_time"]
        assert (save / evs[0]["snapshot"]).is_file() and cv2.imread(str(save / evs[0]["snapshot"])) is not None


def test_stream_with_rules_writes_incidents_and_snapshots(demo_onnx, scene, tmp_path):
    config = parse_alerts(__import__("yaml").safe_load(RULES), "rules.yaml")
    events = EventsProcessor(config, tmp_path)
    tracked = []
    stream = Stream(str(demo_onnx), [f"cam={scene.video}"], StreamConfig(log_interval=0, workers=1),
                    tracker="bytetrack", processors=[events], on_result=lambda r: tracked.append(r.detections))
    stream.run()
    got = _events(tmp_path / "events.jsonl")
    check_incidents(got, tmp_path)
    assert {e["rule"] for e in got} == {"disc-alert", "right-half"}
    assert all(e["class_name"] == "disc" for e in got if e["rule"] == "disc-alert")
    assert all(e["box"][0] + e["box"][2] >= 0.5 * 640 * 2 for e in got if e["rule"] == "right-half")  # in the zone
    assert all(d.track_id is not None for d in tracked)
    snap = stream.metrics.snapshot()["cam"]["stages_ms"]
    assert set(snap) == {"track", "rules"}
    m = events.metrics.snapshot()
    starts = sum(e["type"] == "start" for e in got)
    assert sum(m["incidents_started"].values()) == starts == sum(m["incidents_ended"].values())
    assert m["sent"]["jsonl"] == len(got) and m["dropped"]["jsonl"] == 0


def test_sources_that_would_share_a_snapshot_folder_are_refused(tmp_path):
    """'Gate' and 'gate' wrote one snapshot folder on Windows and macOS (case-insensitive file systems)."""
    from engine.errors import ConfigError
    from engine.stream.metrics import StreamMetrics
    from engine.stream.processors import StreamContext
    from engine.stream.sources import SourceSpec

    config = parse_alerts({"rules": [{"name": "r", "classes": ["disc"]}]}, "rules.yaml")
    sources = {n: SourceSpec.parse(f"{n}=rtsp://127.0.0.1:1/x") for n in ("Gate", "gate")}
    with pytest.raises(ConfigError, match="'Gate' and 'gate' would write the same gate/ snapshot folder"):
        EventsProcessor(config, tmp_path).start(StreamContext(("disc",), sources, StreamMetrics(), True))


def test_the_rules_files_queue_size_sizes_the_event_bus(tmp_path):
    from engine.stream.metrics import StreamMetrics
    from engine.stream.processors import StreamContext
    from engine.stream.sources import SourceSpec

    config = parse_alerts({"rules": [{"name": "r", "classes": ["disc"]}], "queue_size": 7}, "rules.yaml")
    events, metrics = EventsProcessor(config, tmp_path), StreamMetrics()
    metrics.add("cam")
    events.start(StreamContext(("disc",), {"cam": SourceSpec.parse("cam=rtsp://127.0.0.1:1/x")},
                               metrics, True))
    try:
        assert events.bus.jobs.maxsize == 7
    finally:
        events.close()


@pytest.mark.parametrize("step", [0.0, -600.0, 3600.0])
def test_a_cameras_incidents_ignore_system_clock_steps(step):
    """NTP setting the clock back 10 minutes (or ahead an hour) mid-run: the same incidents as without.
    With the wall clock as rule time, the set-back camera raised no second incident and never ended the first."""
    from engine.events.incidents import StreamRules
    from engine.stream.metrics import StreamMetrics
    from engine.stream.processors import StreamContext
    from engine.stream.sinks import StreamResult
    from engine.stream.sources import SourceSpec

    names = ("disc", "box")
    cfg = parse_alerts({"rules": [{"name": "fall", "classes": ["disc"], "min_duration": 1.0, "end_after": 2.0}]},
                       "r.yaml")
    ctx = StreamContext(names, {"ward": SourceSpec.parse("ward=rtsp://127.0.0.1:1/x")}, StreamMetrics(),
                        clocks=(1_800_000_000.0, 100.0))
    rules, events = StreamRules("ward", cfg.rules, names, "snapshots/ward"), []
    for frame in range(100):  # 5 fps: track 1 for 3 s, then track 2
        wall = 1_800_000_000.0 + frame * 0.2 + (step if frame >= 15 else 0.0)
        d = Detections(np.array([[10, 10, 50, 50]], np.float32), np.array([0.9], np.float32),
                       np.array([0], np.int32), names, track_id=np.array([1 if frame < 15 else 2]))
        r = StreamResult("ward", frame, wall, np.zeros((64, 64, 3), np.uint8), d, 1.0, t_capture=100.0 + frame * 0.2)
        events += [(e.type, e.track_id) for e in rules.update(ctx.source_time(r), frame, d, (64, 64), wall)]
    assert events == [("start", 1), ("start", 2), ("end", 1)]


def test_the_same_file_gives_the_same_incidents_at_any_speed(demo_onnx, scene, tmp_path):
    """Source time: read as fast as possible, or paced at its frame rate, the incidents are the same."""
    config = parse_alerts(__import__("yaml").safe_load(RULES), "rules.yaml")
    runs = []
    for pace in (False, True):
        out = tmp_path / f"paced{pace}"
        # --realtime drops frames the model has no time for: pace the reader without dropping (queue)
        cap = CaptureConfig(realtime=False)
        stream = Stream(str(demo_onnx), [f"cam={scene.video}"], StreamConfig(capture=cap, log_interval=0, workers=1),
                        tracker="bytetrack", processors=[EventsProcessor(config, out)])
        if pace:
            stream.processors.insert(0, _Sleep(0.01))  # a slower pipeline: the wall clock moves on
        stream.run()
        runs.append([(e["type"], e["rule"], e["track_id"], e["start_time"], e["end_time"], e["frame"])
                     for e in _events(out / "events.jsonl")])
    assert runs[0] == runs[1] and runs[0]


class _Sleep(Processor):
    """A slower pipeline: the wall clock moves on more per frame."""

    def __init__(self, s: float) -> None:
        self.s = s

    def process(self, r):
        time.sleep(self.s)
        return r


@pytest.mark.skipif(mosquitto_missing() is not None, reason=str(mosquitto_missing()))
def test_cli_sends_the_same_json_to_jsonl_webhook_and_mqtt(demo_onnx, scene, tmp_path, monkeypatch):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    broker = Broker(tmp_path / "broker").start()
    hook = Webhook().start()
    sub = Subscriber(broker.port)
    try:
        env = {**__import__("os").environ, "HOOK_TOKEN": "tok-123"}
        save = tmp_path / "out"
        p = subprocess.run([sys.executable, "-m", "engine.stream", "--model", str(demo_onnx),
                            "--source", f"gate={scene.video}", "--save", str(save), "--no-video", "--track",
                            "--events", str(rules), "--webhook", hook.url, "--webhook-token-env", "HOOK_TOKEN",
                            "--mqtt", broker.url, "--mqtt-prefix", "site", "--workers", "1", "--log-interval", "0"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
        assert p.returncode == 0, p.stdout + p.stderr
        lines = (save / "events.jsonl").read_bytes().splitlines()
        assert wait_for(lambda: len(sub.raw) >= len(lines), 10)
    finally:
        sub.close()
        hook.stop()
        broker.kill()
    check_incidents([json.loads(x) for x in lines], save)
    assert hook.bodies == lines and sub.raw == lines  # byte for byte, in order
    assert {t for t, _ in sub.messages} == {"site/gate/events"}
    assert all(r["headers"]["Authorization"] == "Bearer tok-123" for r in hook.requests)
    assert not (save / "gate.mp4").exists()  # --no-video
    rows = [json.loads(x) for x in (save / "detections.jsonl").read_text().splitlines()]
    assert all("track_id" in d for r in rows for d in r["detections"])


class HangingServer:
    """Accepts TCP connections and never answers: a webhook that hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


class EveryFrame:
    """A detector that sees a new object every 10 frames (so events keep coming), whatever the frame."""

    max_batch, names = 1, ("disc",)

    def __init__(self) -> None:
        self.n = 0

    def predict(self, frames):
        out = []
        for _ in frames:
            k = self.n // 10
            x = 10 + (self.n % 10) * 2
            out.append(Detections(np.array([[x, 10 + 5 * (k % 20), x + 20, 30 + 5 * (k % 20)]], np.float32), [0.9], [0],
                                  self.names))
            self.n += 1
        return out


def test_dead_receivers_never_slow_the_pipeline(tmp_path):
    """A webhook that accepts and never answers, and a broker that is not there: every frame still goes through,
    at once, and what could not be delivered is counted."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(300):
        cv2.imwrite(str(folder / f"{i:04d}.png"), np.zeros((48, 64, 3), np.uint8))
    hang = HangingServer()
    rules = {"rules": [{"name": "r", "min_duration": 0.0, "end_after": 0.1}],
             "webhook": {"url": f"http://127.0.0.1:{hang.port}/x", "timeout": 2},
             "queue_size": 5}
    if mosquitto_missing() is None:
        rules["mqtt"] = {"url": f"mqtt://127.0.0.1:{free_port()}"}
    events = EventsProcessor(parse_alerts(rules, "rules.yaml"), tmp_path / "out", flush_timeout=0.5)
    done = []
    stream = Stream(EveryFrame(), [f"cam={folder}"], StreamConfig(log_interval=0), tracker="bytetrack",
                    processors=[events], on_result=lambda r: done.append(r.index))
    try:
        stream.run()
    finally:
        hang.close()
    assert len(done) == 300
    m = events.metrics.snapshot()
    started = sum(m["incidents_started"].values())
    assert started >= 25 and m["sent"]["jsonl"] == len(_events(tmp_path / "out" / "events.jsonl")) >= 2 * started - 1
    assert m["sent"].get("webhook", 0) == 0 and m["dropped"]["webhook"] >= 2 * started - 6  # at most 5 queued + 1
    if "mqtt" in rules:
        assert m["sent"].get("mqtt", 0) == 0 and m["dropped"]["mqtt"] >= 2 * started - 6
    rules_ms = stream.metrics.snapshot()["cam"]["stages_ms"]["rules"]
    assert rules_ms["p95"] < 50  # queueing only (a send on this thread would wait out the 2 s timeout)
