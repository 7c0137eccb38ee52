"""The stream pipeline against a real RTSP server on loopback (GStreamer's, see tests/rtsp_server.py).

Cameras that drop and come back: the server is killed mid-stream and started again on the same port;
frozen (SIGSTOP) so reads stall; absent at start. Every wait is bounded.
Without GStreamer these tests skip locally and fail under CI (``CI=true``), where
``.ci/install_stream_deps.sh`` installs it.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from engine.detector import Detector
from engine.errors import SourceError
from engine.stream import CaptureConfig, EventKind, Stream, StreamConfig
from tests.rtsp_server import RtspServer, free_port, make_clip, unavailable_reason
from tests.test_stream import FakeDetector, Recorder, run_in_thread


@pytest.fixture(scope="module")
def rtsp_clip(tmp_path_factory) -> Path:
    reason = unavailable_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the RTSP tests: {reason} (run .ci/install_stream_deps.sh)")
        pytest.skip(reason)
    return make_clip(tmp_path_factory.mktemp("rtsp") / "clip.mp4", frames=900, fps=15.0)  # 60 s


@pytest.fixture(scope="module")
def detector(demo_onnx):
    with Detector(demo_onnx, intra_op_threads=1) as det:
        yield det


@pytest.fixture
def server(rtsp_clip):
    srv = RtspServer(rtsp_clip).start()
    yield srv
    srv.kill()


def _events(rec: Recorder, kind: EventKind, after: float = 0.0) -> list:
    return [e for e in list(rec.events) if e.kind is kind and e.timestamp >= after]


def _cfg(**capture) -> StreamConfig:
    return StreamConfig(capture=CaptureConfig(**capture), log_interval=0)


def test_rtsp_camera_detections(server, detector):
    rec = Recorder()
    stream = Stream(detector, [f"cam={server.url}"], _cfg(read_timeout=5), on_result=rec.on_result)
    thread, errors = run_in_thread(stream)
    try:
        assert rec.wait_for(lambda: rec.count() >= 15, 20), f"{rec.count()} results; server log {server.log[-5:]}"
    finally:
        stream.stop()
        thread.join(timeout=15)
    assert not errors and not thread.is_alive()
    assert sum(n > 0 for *_, n in rec.results) >= 10  # the demo model finds the clip's shapes
    indices = [i for _, _, i, _ in rec.results]
    assert indices == sorted(indices)


def test_server_killed_and_restarted_results_resume_within_3s(server, detector):
    rec = Recorder()
    stream = Stream(detector, [f"cam={server.url}"], _cfg(reconnect_max=1.0, read_timeout=3),
                    on_result=rec.on_result, on_event=rec.on_event)
    thread, errors = run_in_thread(stream)
    try:
        assert rec.wait_for(lambda: rec.count() >= 10, 20), f"no results before the kill: {server.log[-5:]}"
        t_kill = time.time()
        server.kill()
        assert rec.wait_for(lambda: _events(rec, EventKind.DISCONNECTED, t_kill), 5), "disconnect not noticed"
        time.sleep(2.0)  # down long enough for several backoff attempts (0.25, 0.5, 1, 1 s…)
        server.start()
        t_up = time.time()
        assert rec.wait_for(lambda: rec.count(after=t_up) > 0, 6), "no results after the server came back"
        first = min(t for t, *_ in rec.results if t > t_up)
        resumed_s = first - t_up
        time.sleep(2.0)
        later = rec.count(after=first + 0.5)
    finally:
        stream.stop()
        thread.join(timeout=15)
    print(f"\nkill-and-restart: results resumed {resumed_s:.2f}s after the server came back; "
          f"{later} results in the next 1.5 s")
    assert not errors
    assert resumed_s < 3.0
    assert later >= 5, "results did not keep coming"
    assert _events(rec, EventKind.RECONNECTED, t_up - 0.1)
    assert stream.metrics["cam"].reconnects == 1


@pytest.mark.skipif(sys.platform == "win32", reason="SIGSTOP is POSIX")
def test_stalled_server_is_noticed_by_the_read_timeout(server):
    rec = Recorder()
    stream = Stream(FakeDetector(), [f"cam={server.url}"], _cfg(reconnect_max=0.5, read_timeout=1.5),
                    on_result=rec.on_result, on_event=rec.on_event)
    thread, errors = run_in_thread(stream)
    try:
        assert rec.wait_for(lambda: rec.count() >= 10, 20)
        t_pause = time.time()
        server.pause()
        assert rec.wait_for(lambda: _events(rec, EventKind.DISCONNECTED, t_pause), 8), "stall not noticed"
        noticed = _events(rec, EventKind.DISCONNECTED, t_pause)[0]
        server.resume()
        t_resume = time.time()
        assert rec.wait_for(lambda: rec.count(after=t_resume) >= 5, 10), "no results after the stall ended"
    finally:
        server.resume()
        stream.stop()
        thread.join(timeout=15)
    assert not errors
    assert "stalled" in noticed.detail and 1.0 <= noticed.timestamp - t_pause <= 5.0


def test_dead_url_retries_as_configured_then_fails_clearly(rtsp_clip):
    url = f"rtsp://127.0.0.1:{free_port()}/nothing"
    rec = Recorder()
    stream = Stream(FakeDetector(), [url], _cfg(connect_attempts=3, reconnect_max=0.2, read_timeout=2),
                    on_event=rec.on_event)
    t0 = time.monotonic()
    with pytest.raises(SourceError) as e:
        stream.run()
    elapsed = time.monotonic() - t0
    msg = str(e.value)
    assert "after 3 attempts" in msg and url in msg and "--connect-attempts" in msg
    assert 0.4 <= elapsed < 10  # two backoff waits (0.2 s each), no endless retry
    assert [ev.kind for ev in rec.events] == [EventKind.FAILED]
    assert not any(t.is_alive() for t in stream._threads)


def test_four_sources_at_once(server, detector, rtsp_clip, tmp_path):
    import cv2

    folder = tmp_path / "imgs"
    folder.mkdir()
    cap = cv2.VideoCapture(str(rtsp_clip))
    for i in range(8):
        cv2.imwrite(str(folder / f"{i:02d}.jpg"), cap.read()[1])
    cap.release()
    second = RtspServer(rtsp_clip, mount="/second").start()
    rec = Recorder()
    sources = [f"cam1={server.url}", f"cam2={second.url}", f"clip={rtsp_clip}", f"imgs={folder}"]
    stream = Stream(detector, sources, _cfg(read_timeout=5, realtime=True, loop=True), on_result=rec.on_result)
    thread, errors = run_in_thread(stream)
    try:
        ok = rec.wait_for(lambda: all(rec.count(s.split("=")[0]) >= 5 for s in sources), 30)
    finally:
        stream.stop()
        thread.join(timeout=15)
        second.kill()
    counts = {s.split("=")[0]: rec.count(s.split("=")[0]) for s in sources}
    assert ok, f"results per source: {counts}"
    assert not errors and not thread.is_alive()
    assert len(stream._threads) == 4 and not any(t.is_alive() for t in stream._threads)
