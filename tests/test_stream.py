"""The stream pipeline on files, folders and fakes: sources, slots, batching, sinks, metrics.

The RTSP tests (a real server on loopback) are in test_stream_rtsp.py, the command line's in test_stream_cli.py.
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.detections import Detections
from engine.errors import ConfigError, OutputDirError, SourceError
from engine.stream import CaptureConfig, EventKind, Stream, StreamConfig
from engine.stream.metrics import StreamMetrics
from engine.stream.sinks import JsonLinesSink, StreamResult, VideoSink, annotate
from engine.stream.sources import (
    Frame,
    FrameSlot,
    SourceKind,
    SourceSpec,
    backoff,
    redact,
)
from tests.conftest import ROOT

NAMES = ("disc", "box", "triangle")


class FakeDetector:
    """Stands in for Detector where the model is beside the point: one box per frame, calls recorded."""

    def __init__(self, max_batch: int | None = 1, delay: float = 0.0) -> None:
        self.max_batch, self.delay, self.names = max_batch, delay, NAMES
        self.calls: list[list[tuple[str, int]]] = []

    def predict(self, frames: list[np.ndarray]) -> list[Detections]:
        if self.delay:
            time.sleep(self.delay)
        self.calls.append([f.shape for f in frames])
        return [Detections(np.array([[10, 10, 50, 50]], np.float32), np.array([0.9], np.float32),
                           np.array([1], np.int32), NAMES) for _ in frames]


class Recorder:
    """Collects results (arrival time, source, index, boxes) and events from a stream, thread-safely."""

    def __init__(self) -> None:
        self.results: list[tuple[float, str, int, int]] = []
        self.events = []
        self._lock = threading.Lock()

    def on_result(self, r: StreamResult) -> None:
        with self._lock:
            self.results.append((time.time(), r.source, r.index, len(r.detections)))

    def on_event(self, e) -> None:
        with self._lock:
            self.events.append(e)

    def count(self, source: str | None = None, after: float = 0.0) -> int:
        with self._lock:
            return sum(1 for t, s, _, _ in self.results if (source is None or s == source) and t > after)

    def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()


def run_in_thread(stream: Stream) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            stream.run()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, errors


# --- sources -------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, kind, name, uri", [
    ("0", SourceKind.WEBCAM, "s3", "0"),
    ("rtsp://cam.local:554/stream1", SourceKind.URL, "s3", "rtsp://cam.local:554/stream1"),
    ("HTTP://cam/video.mjpg", SourceKind.URL, "s3", "HTTP://cam/video.mjpg"),
    ("gate=rtsp://u:p@10.0.0.2/live?ch=1", SourceKind.URL, "gate", "rtsp://u:p@10.0.0.2/live?ch=1"),
    ("rtsp://cam/live?ch=1", SourceKind.URL, "s3", "rtsp://cam/live?ch=1"),
    ("door=1", SourceKind.WEBCAM, "door", "1"),
])
def test_source_spec_parse(text, kind, name, uri):
    spec = SourceSpec.parse(text, 3)
    assert (spec.kind, spec.name, spec.uri) == (kind, name, uri)


def test_source_spec_files_folders_and_missing(clip, folder, tmp_path):
    assert SourceSpec.parse(str(clip)).kind is SourceKind.FILE
    assert SourceSpec.parse(f"imgs={folder}").kind is SourceKind.FOLDER
    with pytest.raises(SourceError, match="not a file, folder, URL or webcam") as e:
        SourceSpec.parse(str(tmp_path / "nope.mp4"))
    assert "fix:" in str(e.value)


def test_redact_hides_credentials():
    assert redact("rtsp://admin:secret@10.0.0.2:554/s") == "rtsp://***@10.0.0.2:554/s"
    assert redact("rtsp://10.0.0.2/s") == "rtsp://10.0.0.2/s"
    assert redact("rtsp://admin:p@ss@10.0.0.1/s1") == "rtsp://***@10.0.0.1/s1"  # FFmpeg splits at the last '@'
    assert redact("http://cam/snap?next=a@b") == "http://cam/snap?next=a@b"  # an '@' after the path is no login


def test_backoff_doubles_then_caps():
    assert list(itertools.islice(backoff(0.25, 1.0), 6)) == [0.25, 0.5, 1.0, 1.0, 1.0, 1.0]
    assert list(itertools.islice(backoff(0.25, 8.0), 7)) == [0.25, 0.5, 1, 2, 4, 8, 8]


def _frame(i: int) -> Frame:
    return Frame("s0", i, np.zeros((2, 2, 3), np.uint8), time.time(), time.perf_counter())


def test_latest_only_slot_keeps_newest_and_counts_drops():
    ready, stop = threading.Event(), threading.Event()
    slot = FrameSlot(4, latest_only=True, ready=ready)
    for i in range(5):
        slot.put(_frame(i), stop)
    assert ready.is_set() and slot.dropped == 4
    assert slot.take().index == 4 and slot.take() is None


def test_queue_slot_waits_for_room_and_drops_nothing():
    ready, stop = threading.Event(), threading.Event()
    slot = FrameSlot(2, latest_only=False, ready=ready)
    slot.put(_frame(0), stop)
    slot.put(_frame(1), stop)
    t = threading.Thread(target=slot.put, args=(_frame(2), stop))
    t.start()
    time.sleep(0.2)
    assert t.is_alive() and len(slot) == 2  # blocked: the queue is full
    assert slot.take().index == 0
    t.join(timeout=2)
    assert [slot.take().index, slot.take().index] == [1, 2] and slot.dropped == 0
    slot.put(_frame(3), stop)
    slot.put(_frame(4), stop)
    stop.set()
    assert slot.put(_frame(5), stop) is False  # a stopped stream never blocks a capture thread


# --- files and folders ---------------------------------------------------------------------------
def test_file_and_folder_frame_by_frame(clip, folder):
    rec = Recorder()
    stream = Stream(FakeDetector(), [str(clip), f"imgs={folder}"], StreamConfig(log_interval=0),
                    on_result=rec.on_result, on_event=rec.on_event)
    snap = stream.run()
    by_source = {s: [i for _, src, i, _ in rec.results if src == s] for s in ("s0", "imgs")}
    assert by_source["s0"] == list(range(40)) and by_source["imgs"] == list(range(6))
    assert snap["s0"]["frames_out"] == 40 and snap["s0"]["dropped"] == 0 and snap["imgs"]["frames_out"] == 6
    kinds = [(e.source, e.kind) for e in rec.events]
    assert ("s0", EventKind.ENDED) in kinds and ("imgs", EventKind.ENDED) in kinds


def test_a_folder_under_a_non_ascii_path_is_read_without_cv2_imread(folder, tmp_path, monkeypatch):
    """cv2.imread cannot open a non-ASCII path on Windows (C:\\Users\\José\\...): every image was skipped as
    unreadable and the stream failed. Simulated here by an imread that fails as it does there."""
    import shutil

    import cv2

    d = tmp_path / "Jos\u00e9 \u6444\u50cf"
    shutil.copytree(folder, d)
    monkeypatch.setattr(cv2, "imread", lambda *a, **k: None)
    rec = Recorder()
    snap = Stream(FakeDetector(), [f"imgs={d}"], StreamConfig(log_interval=0), on_result=rec.on_result).run()
    assert snap["imgs"]["frames_out"] == 6 and [i for _, _, i, _ in rec.results] == list(range(6))


def test_realtime_file_keeps_only_latest_frame(clip):
    rec = Recorder()
    cfg = StreamConfig(capture=CaptureConfig(realtime=True), log_interval=0)
    snap = Stream(FakeDetector(delay=0.2), [str(clip)], cfg, on_result=rec.on_result).run()
    s = snap["s0"]
    assert s["frames_in"] == 40 and s["dropped"] > 0
    assert s["frames_out"] + s["dropped"] == 40
    indices = [i for _, _, i, _ in rec.results]
    assert indices == sorted(indices) and indices[-1] >= 35  # stale frames skipped, newest kept


@pytest.mark.parametrize("content", [b"", b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000)], ids=["empty", "garbage"])
def test_corrupt_video_is_a_clear_error(tmp_path, content):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(content)
    t0 = time.monotonic()
    with pytest.raises(SourceError) as e:
        Stream(FakeDetector(), [str(bad)], StreamConfig(log_interval=0)).run()
    assert "broken.mp4" in str(e.value) and "fix:" in str(e.value)
    assert time.monotonic() - t0 < 10


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="has no"):
        Stream(FakeDetector(), [str(tmp_path)], StreamConfig(log_interval=0)).run()


def test_missing_webcam_fails_after_its_attempts():
    cfg = StreamConfig(capture=CaptureConfig(connect_attempts=2, reconnect_max=0.05), log_interval=0)
    t0 = time.monotonic()
    with pytest.raises(SourceError, match="could not connect .* after 2 attempts"):
        Stream(FakeDetector(), ["97"], cfg).run()
    assert time.monotonic() - t0 < 30


def test_live_source_that_opens_but_sends_nothing_backs_off(monkeypatch):
    import engine.stream.sources as ss

    opens = []

    class Silent:
        fps = 0.0

        def read(self):
            return None

        def release(self):
            pass

    monkeypatch.setattr(ss, "open_reader", lambda spec, timeout: opens.append(1) or Silent())
    rec = Recorder()
    cfg = StreamConfig(capture=CaptureConfig(reconnect_max=0.2), duration=1.0, log_interval=0)
    stream = Stream(FakeDetector(), ["rtsp://127.0.0.1:9/silent"], cfg, on_event=rec.on_event)
    stream.run()
    assert 3 <= len(opens) <= 10  # 0.25→0.2 s capped waits, not a busy loop
    kinds = {e.kind for e in rec.events}
    assert {EventKind.CONNECTED, EventKind.DISCONNECTED, EventKind.RECONNECTED} <= kinds
    assert stream.metrics["s0"].reconnects == len(opens) - 1


def test_frames_of_several_sources_are_batched(clip):
    det = FakeDetector(max_batch=4)
    rec = Recorder()
    sources = [f"c{i}={clip}" for i in range(4)]
    snap = Stream(det, sources, StreamConfig(log_interval=0), on_result=rec.on_result).run()
    assert all(snap[f"c{i}"]["frames_out"] == 40 for i in range(4))
    assert max(len(c) for c in det.calls) == 4 and len(det.calls) < 160
    assert rec.count() == 160


def test_dynamic_batch_is_one_frame_per_source_and_config_caps_it(clip):
    stream = Stream(FakeDetector(max_batch=None), [f"a={clip}", f"b={clip}", f"c={clip}"], StreamConfig(log_interval=0))
    stream.start()
    assert stream.batch == 3
    stream.close()
    stream = Stream(FakeDetector(max_batch=None), [f"a={clip}", f"b={clip}"], StreamConfig(batch=1, log_interval=0))
    stream.start()
    assert stream.batch == 1
    stream.close()


def test_callbacks_per_source_and_bad_config(clip, folder):
    got: dict[str, int] = {"vid": 0, "imgs": 0}

    def count(name):
        def cb(r):
            assert r.source == name
            got[name] += 1
        return cb

    Stream(FakeDetector(), [f"vid={clip}", f"imgs={folder}"], StreamConfig(log_interval=0),
           on_result={"vid": count("vid"), "imgs": count("imgs")}).run()
    assert got == {"vid": 40, "imgs": 6}
    with pytest.raises(ConfigError, match="unknown source"):
        Stream(FakeDetector(), [str(clip)], on_result={"nope": print})
    with pytest.raises(ConfigError, match="repeat"):
        Stream(FakeDetector(), [f"a={clip}", f"a={folder}"])
    with pytest.raises(ConfigError, match="no source"):
        Stream(FakeDetector(), [])
    for bad in (dict(max_frames=0), dict(duration=0), dict(duration=-2.0)):
        with pytest.raises(ConfigError):
            StreamConfig(**bad)


def test_max_frames_and_loop_stop_an_endless_file(clip):
    cfg = StreamConfig(capture=CaptureConfig(loop=True), max_frames=100, log_interval=0)
    rec = Recorder()
    stream = Stream(FakeDetector(), [str(clip)], cfg, on_result=rec.on_result)
    stream.run()
    assert rec.count() == 100
    assert [i for _, _, i, _ in rec.results][:45] == list(range(45))  # indices go on across the loop
    assert not any(t.is_alive() for t in stream._threads)


def test_a_still_image_url_is_polled_with_backoff_not_in_a_tight_loop():
    """An HTTP snapshot URL gives one frame per connection: it was reconnected after every frame (578 requests
    in 4 s); a connection shorter than STABLE_S now backs off."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    data = cv2.imencode(".jpg", np.full((48, 64, 3), 128, np.uint8))[1].tobytes()
    hits = [0]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            hits[0] += 1
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        cfg = StreamConfig(capture=CaptureConfig(reconnect_max=2.0), log_interval=0, duration=3.0)
        Stream(FakeDetector(), [f"cam=http://127.0.0.1:{srv.server_address[1]}/snap.jpg"], cfg).run()
    finally:
        srv.shutdown()
        srv.server_close()
    assert 1 <= hits[0] <= 8, hits[0]  # backoff 0.5, 1, 2, 2 s...: a handful, not hundreds


# --- sinks ---------------------------------------------------------------------------------------
@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_full_disk_under_the_jsonl_sink_is_a_typed_error(clip):
    """/dev/full: every write fails with ENOSPC (an OSError traceback and exit 1, before)."""
    sink = JsonLinesSink("/dev/full")
    with pytest.raises(OutputDirError, match="No space left"):
        Stream(FakeDetector(), [str(clip)], StreamConfig(log_interval=0, max_frames=3), [sink]).run()


def test_a_folders_video_plays_at_the_rate_its_frames_are_timed(folder, tmp_path):
    """A folder has no frame rate: its MP4 and its source time (rules, events) both take DEFAULT_FPS (25);
    the video was written at 10 fps, so it ran 2.5x slow against the events' times."""
    from engine.stream.sources import DEFAULT_FPS

    Stream(FakeDetector(), [f"f={folder}"], StreamConfig(log_interval=0), [VideoSink(tmp_path / "out")]).run()
    cap = cv2.VideoCapture(str(tmp_path / "out" / "f.mp4"))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(DEFAULT_FPS, abs=0.5)
    cap.release()


def test_video_and_jsonl_sinks(clip, tmp_path):
    t0 = time.time()
    sinks = [VideoSink(tmp_path / "out"), JsonLinesSink(tmp_path / "out" / "det.jsonl")]
    Stream(FakeDetector(), [f"gate={clip}"], StreamConfig(log_interval=0), sinks).run()
    lines = [json.loads(x) for x in (tmp_path / "out" / "det.jsonl").read_text().splitlines()]
    assert len(lines) == 40 and [x["frame"] for x in lines] == list(range(40))
    first = lines[0]
    assert first["source"] == "gate" and t0 - 1 <= first["timestamp"] <= time.time()
    assert first["detections"][0]["class_name"] == "box" and first["latency_ms"] >= 0
    cap = cv2.VideoCapture(str(tmp_path / "out" / "gate.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 40 and cap.get(cv2.CAP_PROP_FPS) == pytest.approx(15, abs=0.5)


def test_video_sink_fills_gaps_of_dropped_frames(tmp_path):
    sink = VideoSink(tmp_path)
    img = np.zeros((48, 64, 3), np.uint8)
    for i in (0, 1, 4, 5):  # frames 2 and 3 were dropped
        sink.write(StreamResult("cam", i, time.time(), img, Detections.empty(), 1.0, fps=10))
    sink.close()
    cap = cv2.VideoCapture(str(tmp_path / "cam.mp4"))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 6


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the display check is for Linux")
def test_window_sink_refuses_a_headless_machine(monkeypatch):
    from engine.stream.sinks import WindowSink

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(ConfigError, match="needs a display"):
        WindowSink(lambda: None)
    # set but unreachable (a stale ssh -X session): Qt would abort the process mid-run, MP4 unfinished
    monkeypatch.setenv("DISPLAY", ":77")
    with pytest.raises(ConfigError, match="cannot open a window on :77"):
        WindowSink(lambda: None)


def test_annotate_draws_boxes_on_a_copy():
    img = np.full((100, 100, 3), 255, np.uint8)
    det = Detections(np.array([[10, 10, 60, 60]]), np.array([0.8]), np.array([2]), NAMES)
    out = annotate(img, det)
    assert (img == 255).all() and (out != 255).any() and out.shape == img.shape


# --- metrics -------------------------------------------------------------------------------------
def test_metrics_snapshot_rates_and_percentiles():
    m = StreamMetrics().add("cam")
    now = time.perf_counter()
    for i in range(11):
        m.record_in(now - 1.0 + i * 0.1)
        m.record_out(now - 1.0 + i * 0.1, 0.010 * (i + 1))
    s = m.snapshot()
    assert s["frames_in"] == 11 and s["fps_in"] == pytest.approx(10, rel=0.01)
    assert s["latency_p50_ms"] == pytest.approx(60, abs=0.1) and s["latency_p95_ms"] == pytest.approx(105, abs=0.1)
    assert "cam [down]" in StreamMetrics.format("cam", s)


def test_prometheus_metrics_served(clip):
    pytest.importorskip("prometheus_client")
    cfg = StreamConfig(capture=CaptureConfig(loop=True), log_interval=0)
    stream = Stream(FakeDetector(delay=0.01), [f"gate={clip}"], cfg, metrics_port=0)
    thread, errors = run_in_thread(stream)
    try:
        assert Recorder().wait_for(lambda: stream.frames_out > 20, 10)
        port = stream._exporter.port
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        stream.stop()
        thread.join(timeout=10)
    assert not errors
    for name in ("frames_in_total", "frames_out_total", "dropped_total", "reconnects_total", "fps_in", "fps_out",
                 "connected"):
        assert f'yolo_stream_{name}{{source="gate"}}' in text
    assert 'yolo_stream_latency_seconds{quantile="0.95",source="gate"}' in text
    with pytest.raises(OSError):  # the server was shut down
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_stream_imports_without_prometheus_and_says_how_to_get_it(clip):
    code = (
        "import importlib.abc, sys\n"
        "class B(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'prometheus_client': raise ImportError('blocked')\n"
        "sys.meta_path.insert(0, B())\n"
        "from engine.stream import Stream\n"
        "from engine.errors import ConfigError\n"
        "from tests.test_stream import FakeDetector\n"
        f"s = Stream(FakeDetector(), [r'{clip}'], metrics_port=0)\n"
        "try:\n    s.start()\nexcept ConfigError as e:\n    print('CONFIG', e)\nfinally:\n    s.close()\n"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "CONFIG" in p.stdout and "pip install" in p.stdout


def test_a_save_folder_that_refuses_files_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    """os.access says every folder is writable on Windows (and to root): a folder whose ACL refuses new files
    passed the early check and the stream failed at its first result. Simulated by os.access saying yes and the
    file system saying no, as there."""
    import tempfile

    from engine.stream.sinks import JsonLinesSink

    def refused(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "access", lambda *a, **k: True)
    monkeypatch.setattr(tempfile, "TemporaryFile", refused)
    with pytest.raises(OutputDirError, match="refuses new files") as e:
        JsonLinesSink(tmp_path / "out" / "detections.jsonl")
    assert str(tmp_path) in e.value.message and "--save" in e.value.fix
    assert not (tmp_path / "out").exists()


def test_sources_that_would_share_files_are_refused_and_device_names_are_kept_off(clip, tmp_path):
    """'Gate' and 'gate' (one file on Windows and macOS) or 'cam_' and 'cam' wrote the same MP4 and snapshot
    folder; a source named 'nul' or 'con' made files Windows cannot create (its device names)."""
    from engine.stream.sinks import safe_filename

    from engine.stream.sinks import VideoSink

    for a, b in (("Gate", "gate"), ("cam_", "cam"), ("cam-1", "cam-1.")):
        with pytest.raises(ConfigError, match="would write the same") as e:
            Stream(FakeDetector(), [f"{a}={clip}", f"{b}={clip}"], StreamConfig(log_interval=0),
                   sinks=[VideoSink(tmp_path / "v")])
        assert repr(a) in e.value.message and repr(b) in e.value.message
    Stream(FakeDetector(), [f"Gate={clip}", f"gate={clip}"], StreamConfig(log_interval=0))  # no files: fine
    assert [safe_filename(n) for n in ("nul", "CON", "com1", "lpt9.x", "aux cam", "console", "null")] == \
        ["nul_", "CON_", "com1_", "lpt9.x_", "aux_cam", "console", "null"]
