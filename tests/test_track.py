"""Tracking: the Tracker over roboflow's trackers, one tracker per stream source, resets, the CLI's track ids."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from engine.detections import Detections
from engine.errors import BackendUnavailableError, ConfigError
from engine.stream import Stream, StreamConfig
from engine.stream.sources import EventKind, StreamEvent
from engine.track import KINDS, Tracker, TrackerConfig, TrackingProcessor
from tests.conftest import ROOT
from tests.rtsp_server import make_clip

pytest.importorskip("trackers")
NAMES = ("disc", "box", "triangle")


def frame_dets(i: int, scores=(0.9, 0.8), extra: list | None = None) -> Detections:
    """Two boxes moving apart 3 px a frame (plus ``extra`` rows of (box, score))."""
    boxes = [[100 + 3 * i, 100, 150 + 3 * i, 150], [400 - 3 * i, 200, 450 - 3 * i, 250]]
    conf = list(scores)
    for box, score in extra or []:
        boxes.append(box)
        conf.append(score)
    return Detections(np.array(boxes, np.float32), np.array(conf), np.zeros(len(conf)), NAMES)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_keeps_one_id_per_object_in_input_order(kind):
    tracker = Tracker(kind, fps=30)
    outs = [tracker.update(frame_dets(i), i / 30) for i in range(20)]
    assert all(o.track_id is not None and len(o) == 2 for o in outs)
    ids = np.array([o.track_id for o in outs[5:]])
    assert (ids > 0).all() and len(set(ids[:, 0])) == 1 and len(set(ids[:, 1])) == 1 and ids[0, 0] != ids[0, 1]
    assert outs[-1].xyxy[0, 0] == 100 + 3 * 19  # same order as the input, boxes untouched


def test_ids_start_at_1_and_weak_boxes_need_a_track():
    tracker = Tracker(TrackerConfig(conf=0.5), fps=30, report_conf=0.25)
    first = tracker.update(frame_dets(0), 0.0)
    assert first.track_id.tolist() == [-1, -1]  # ByteTrack gives an id on the second sighting
    second = tracker.update(frame_dets(1), 1 / 30)
    assert sorted(second.track_id.tolist()) == [1, 2]
    # a weak box far from any track is dropped; a weak box on a track continues it (ByteTrack's second stage)
    out = tracker.update(frame_dets(2, scores=(0.9, 0.15), extra=[([10, 300, 40, 330], 0.15)]), 2 / 30)
    assert len(out) == 2 and sorted(out.track_id.tolist()) == [1, 2] and out.confidence.min() == pytest.approx(0.15)
    # a box between report_conf and conf is reported, without an id
    out = tracker.update(frame_dets(3, extra=[([10, 300, 40, 330], 0.3)]), 3 / 30)
    assert out.track_id.tolist()[-1] == -1 and len(out) == 3


def test_flicker_every_other_frame_still_gets_one_id():
    tracker = Tracker("bytetrack", fps=30)
    ids = set()
    for i in range(60):
        d = frame_dets(i) if i % 2 == 0 else Detections.empty(NAMES)
        ids |= {t for t in tracker.update(d, i / 30).track_id.tolist() if t > 0}
    assert ids == {1, 2}


def test_reset_keeps_ids_unique():
    tracker = Tracker("bytetrack")
    for i in range(5):
        before = tracker.update(frame_dets(i), i / 30)
    tracker.reset()
    for i in range(5):
        after = tracker.update(frame_dets(i), 10 + i / 30)
    assert set(after.track_id.tolist()).isdisjoint(before.track_id.tolist()) and after.track_id.min() > 2


def test_a_clock_that_steps_back_does_not_stall_tracking():
    tracker = Tracker("bytetrack")
    for i in range(5):
        tracker.update(frame_dets(i), 1000.0 + i / 30)
    out = tracker.update(frame_dets(5), 999.0)  # a camera's clock set back by NTP
    assert sorted(out.track_id.tolist()) == [1, 2]


def test_bad_config():
    with pytest.raises(ConfigError, match="unknown tracker 'deepsort'.*"):
        TrackerConfig("deepsort")
    with pytest.raises(ConfigError, match="conf=1.5"):
        TrackerConfig(conf=1.5)
    assert TrackerConfig.of(True).kind == "bytetrack" and TrackerConfig.of("sort").kind == "sort"


class MovingDetector:
    """Stands in for a Detector: the two moving boxes of the frame index written in the frame's first pixel."""

    max_batch, names = 1, NAMES

    def predict(self, frames):
        return [frame_dets(int(f[0, 0, 0])) for f in frames]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=30)


@pytest.fixture(scope="module")
def numbered(tmp_path_factory):
    """30 lossless frames whose first pixel holds the frame index."""
    import cv2

    d = tmp_path_factory.mktemp("numbered")
    for i in range(30):
        cv2.imwrite(str(d / f"{i:03d}.png"), np.full((48, 64, 3), i, np.uint8))
    return d


def test_each_source_has_its_own_tracker_and_reconnects_reset_only_their_own(numbered):
    seen: dict[str, list[list[int]]] = {"a": [], "b": []}
    stream = Stream(MovingDetector(), [f"a={numbered}", f"b={numbered}"], StreamConfig(log_interval=0),
                    on_result=lambda r: seen[r.source].append(r.detections.track_id.tolist()), tracker="bytetrack")
    stream.run()
    for name in ("a", "b"):  # ids per stream: both start at 1 (a shared tracker would hand b ids 3 and 4)
        assert sorted(seen[name][-1]) == [1, 2], seen[name][-5:]
    proc = stream.processors[0]
    assert isinstance(proc, TrackingProcessor) and set(proc.trackers) == {"a", "b"}
    a, b = proc.trackers["a"], proc.trackers["b"]
    stream._event(StreamEvent("a", EventKind.RECONNECTED, 0.0))  # as a capture thread reports it
    from engine.stream.sinks import StreamResult

    def result(source: str, index: int) -> StreamResult:
        return StreamResult(source, index, 0.0, np.zeros((8, 8, 3), np.uint8), frame_dets(index), 0.0)

    out = {s: [proc.process(result(s, 30 + i)).detections.track_id.tolist() for i in range(3)] for s in ("a", "b")}
    assert proc.trackers["a"] is a and proc.trackers["b"] is b
    assert min(t for t in out["a"][-1] if t > 0) > 2  # a started over, with new ids
    assert sorted(out["b"][-1]) == [1, 2]  # b kept its tracks


def test_stream_runs_a_bytetrack_detector_at_low_conf_and_reports_from_conf(demo_onnx, clip):
    kept = []
    stream = Stream(str(demo_onnx), [str(clip)], StreamConfig(log_interval=0, workers=1), tracker="bytetrack",
                    on_result=lambda r: kept.append(r.detections), conf=0.3)
    stream.run()
    assert stream.detector is not None
    det_conf = 0.1  # TrackerConfig.low_conf
    assert any(len(d) for d in kept)
    for d in kept:
        assert ((d.confidence >= 0.3) | (d.track_id >= 0)).all() and (d.confidence >= det_conf).all()
    assert TrackingProcessor("sort").detector_options({"conf": 0.3}) == {"conf": 0.3}  # no second stage
    assert TrackingProcessor().detector_options({"conf": 0.3}) == {"conf": 0.1}


def test_cli_track_writes_integer_track_ids(demo_onnx, clip, tmp_path):
    p = subprocess.run([sys.executable, "-m", "engine.stream", "--model", str(demo_onnx), "--source", str(clip),
                        "--jsonl", str(tmp_path / "d.jsonl"), "--track", "--workers", "1", "--log-interval", "0"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    dets = [d for r in rows for d in r["detections"]]
    assert dets and all(isinstance(d["track_id"], int) for d in dets)
    assert max(d["track_id"] for d in dets) >= 1


def test_missing_trackers_package_is_a_clear_error_before_any_source_opens(clip):
    code = (
        "import importlib.abc, sys\n"
        "class B(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('trackers', 'supervision'): raise ImportError('blocked')\n"
        "sys.meta_path.insert(0, B())\n"
        "from engine.stream import Stream\n"
        "from engine.errors import DeployError\n"
        "class D:\n    max_batch, names = 1, ('disc',)\n"
        f"s = Stream(D(), [r'{clip}'], tracker='bytetrack')\n"
        "try:\n    s.start()\nexcept DeployError as e:\n    print('ERR', type(e).__name__, e, s._threads)\n"
        "finally:\n    s.close()\n"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "ERR BackendUnavailableError" in p.stdout and "pip install 'yolo-deploy[track]'" in p.stdout
    assert p.stdout.rstrip().endswith("[]")  # no capture thread was made
    assert BackendUnavailableError  # the type named above


def test_alert_modules_import_without_their_extras():
    """The lean runtime stays lean: engine.track, engine.events and engine.status import with the trackers
    package, supervision, paho-mqtt and prometheus-client blocked (they are imported when used)."""
    code = (
        "import importlib, importlib.abc, pkgutil, sys\n"
        "BLOCKED = {'trackers', 'supervision', 'paho', 'prometheus_client', 'scipy'}\n"
        "class B(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED: raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, B())\n"
        "import engine.track, engine.events, engine.status, engine.stream.cli\n"
        "for pkg in (engine.track, engine.events, engine.status):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
        "engine.stream.cli.build_parser()\n"
        "print('ok', sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "ok []"
