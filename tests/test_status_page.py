"""The live status page: routes, JSON, Prometheus metrics, read-only, and the page rendered by headless Chromium."""
from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.scene import make_scene
from engine.events import EventsProcessor
from engine.events.rules import parse_alerts
from engine.events.sinks import EventLog
from engine.status import StatusPage
from engine.stream import Stream, StreamConfig
from engine.stream.sources import CaptureConfig
from tests.services import chromium, wait_for

pytest.importorskip("trackers")
RULES = {"rules": [{"name": "disc-alert", "classes": ["disc"], "min_duration": 0.3, "end_after": 0.5},
                   {"name": "box-alert", "classes": ["box"], "min_duration": 0.3, "end_after": 0.5}]}
ARTIFACTS = Path(__file__).resolve().parents[1] / "runs" / "status-page"  # a copy of the screenshot to look at


@pytest.fixture(scope="module")
def live(demo_onnx, tmp_path_factory):
    """A stream of two looping sources with rules and the status page, running until the module's tests end."""
    tmp = tmp_path_factory.mktemp("live")
    scene = make_scene(tmp / "scene", seed=0, frames=90)
    log = EventLog()
    events = EventsProcessor(parse_alerts(RULES, "rules.yaml"), tmp / "save", sinks=[log])
    page = StatusPage(0, events=log, save_dir=tmp / "save", title="cameras <test>")
    cap = CaptureConfig(realtime=True, loop=True)  # like cameras: paced, endless
    stream = Stream(str(demo_onnx), [f"gate={scene.video}", f"yard={scene.video}"],
                    StreamConfig(capture=cap, log_interval=0, workers=1), tracker="bytetrack",
                    processors=[events, page])
    errors = []
    thread = threading.Thread(target=lambda: _run(stream, errors), daemon=True)
    thread.start()
    assert wait_for(lambda: page._server is not None, 60), errors
    base = f"http://127.0.0.1:{page.port}"
    assert wait_for(lambda: len(log.latest()) >= 2 and all(page.latest.get(s) for s in ("gate", "yard")), 90), errors
    yield base, page, tmp / "save"
    stream.stop()
    thread.join(30)
    assert not errors, errors


def _run(stream, errors) -> None:
    try:
        stream.run()
    except BaseException as e:  # noqa: BLE001 - reported by the fixture
        errors.append(e)


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def test_json_api(live):
    base, page, save = live
    code, ctype, body = get(base + "/api/streams")
    streams = json.loads(body)
    assert code == 200 and ctype == "application/json" and set(streams) == {"gate", "yard"}
    for s in streams.values():
        assert s["connected"] and s["frame"] >= 0 and {"fps", "latency", "dropped", "reconnects", "stages"} <= set(
            s["figures"])
        assert {"fps_out", "latency_p50_ms", "latency_p95_ms", "dropped", "reconnects"} <= set(s["metrics"])
    code, _, body = get(base + "/api/events?n=1")
    (ev,) = json.loads(body)
    assert ev["type"] in ("start", "update", "end") and ev["rule"] in ("disc-alert", "box-alert")


def test_frames_snapshots_and_mjpeg(live):
    base, page, save = live
    code, ctype, body = get(base + "/frame/gate.jpg")
    img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert code == 200 and ctype == "image/jpeg" and img.shape == (360, 640, 3)
    assert get(base + "/frame/nope.jpg")[0] == 404
    start = next(e for e in page.recent_events(None) if e["snapshot"])
    code, ctype, body = get(f"{base}/{start['snapshot']}")
    assert code == 200 and body == (save / start["snapshot"]).read_bytes()
    conn = http.client.HTTPConnection("127.0.0.1", page.port, timeout=10)
    conn.request("GET", "/mjpeg/yard")
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("Content-Type").startswith("multipart/x-mixed-replace")
    chunk = r.read(4096)
    assert b"--frame" in chunk and b"image/jpeg" in chunk
    conn.close()


def test_read_only_and_no_path_escapes(live):
    base, page, save = live
    (save / "secret.jpg").write_bytes(b"not for the page")
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        conn = http.client.HTTPConnection("127.0.0.1", page.port, timeout=10)
        conn.request(method, "/api/events", body=b"{}")
        r = conn.getresponse()
        assert r.status == 405 and r.getheader("Allow") == "GET, HEAD"
        conn.close()
    for path in ("/snapshots/../secret.jpg", "/snapshots/%2e%2e/secret.jpg", "/snapshots/../../etc/passwd",
                 "/snapshots/gate", "/../secret.jpg", "/snapshots/%00.jpg", "/snapshots/" + "a" * 300 + ".jpg"):
        conn = http.client.HTTPConnection("127.0.0.1", page.port, timeout=10)
        conn.request("GET", path)
        assert conn.getresponse().status == 404, path  # a NUL or an over-long name: 404, not a dropped connection
        conn.close()
    # names that are a network share on Windows (resolve() there opens \\\\host\\share: an SMB connection
    # carrying the user's NTLM hash): refused before the file system is touched, even where such a file exists
    root = page.snapshot_root
    root.mkdir(exist_ok=True)
    (root / "\\\\attacker\\s\\x.jpg").write_bytes(b"a file with that literal name (legal on Linux)")
    (root / "c:x.jpg").write_bytes(b"a drive-relative name on Windows")
    for path in ("/snapshots/%5C%5Cattacker%5Cs%5Cx.jpg", "/snapshots///attacker/s/x.jpg", "/snapshots/c:x.jpg",
                 "/snapshots/./c:x.jpg"):
        conn = http.client.HTTPConnection("127.0.0.1", page.port, timeout=10)
        conn.request("GET", path)
        assert conn.getresponse().status == 404, path
        conn.close()
    code, _, body = get(base + "/api/events?n=%C2%B2")  # '²' passes str.isdigit() but not int()
    assert code == 200 and isinstance(json.loads(body), list)


def test_metrics_on_the_same_server(live):
    base, page, save = live
    pytest.importorskip("prometheus_client")
    code, ctype, body = get(base + "/metrics")
    text = body.decode()
    assert code == 200 and ctype.startswith("text/plain")
    for name in ('yolo_stream_frames_out_total{source="gate"}',
                 'yolo_stream_stage_seconds{quantile="0.95",source="yard",stage="track"}',
                 'yolo_stream_stage_seconds{quantile="0.5",source="gate",stage="rules"}',
                 "yolo_stream_events_incidents_started_total{", "yolo_stream_events_sent_total{sink=\"jsonl\"}",
                 "yolo_stream_events_dropped_total{sink=\"jsonl\"}", "yolo_stream_events_queued{sink=\"jsonl\"}"):
        assert name in text, name
    for family in ("incidents_ended", "failures", "retries"):  # declared even before the first count
        assert f"# TYPE yolo_stream_events_{family}_total counter" in text or \
               f"# TYPE yolo_stream_events_{family} counter" in text, family


def test_page_renders_streams_and_events_in_headless_chromium(live, tmp_path):
    base, page, save = live
    browser = chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/install_alert_deps.sh)")
    assert wait_for(lambda: any(e["snapshot"] for e in page.recent_events(20)), 30)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=3000",
             "--window-size=1280,1100"]
    shot = tmp_path / "status-page.png"
    dom = subprocess.run([browser, *flags, "--dump-dom", base + "/"], capture_output=True, text=True, timeout=120)
    subprocess.run([browser, *flags, f"--screenshot={shot}", base + "/"], capture_output=True, timeout=120)
    html = dom.stdout
    assert "cameras &lt;test&gt;" in html  # escaped
    for name in ("gate", "yard"):
        assert f'id="figs-{name}"' in html and f'src="/frame/{name}.jpg' in html
    assert "disc-alert" in html or "box-alert" in html
    assert '<img alt="snapshot" src="/snapshots/' in html or 'src="/snapshots/' in html
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (1100, 1280)
    assert img.std() > 20  # pictures, not a blank page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "status-page.png")
