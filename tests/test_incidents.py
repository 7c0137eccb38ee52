"""The incident state machine, fed tracked detections directly: flicker, two objects, cooldown, end_after,
zones in normalized and pixel coordinates, line crossing, updates, source time."""
from __future__ import annotations

import numpy as np
import pytest

from engine.detections import Detections
from engine.events import StreamRules
from engine.events.rules import parse_alerts

NAMES = ("disc", "box", "triangle")
FPS = 30.0
SIZE = (640, 360)


def rules(**rule):
    return parse_alerts({"rules": [{"name": "r", **rule}]}, "<test>").rules


def dets(*objects) -> Detections:
    """``objects``: (track_id, class_id, score, (x1, y1, x2, y2))."""
    if not objects:
        return Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0), NAMES, track_id=np.zeros(0))
    tid, cls, score, box = zip(*objects)
    return Detections(np.array(box, np.float32), np.array(score), np.array(cls), NAMES, track_id=np.array(tid))


def run(stream_rules: StreamRules, frames, fps: float = FPS, wall0: float = 1000.0, image=None):
    """Feed ``frames`` (a list of Detections, one per frame index); return (frame index, event) pairs."""
    out = []
    for i, d in enumerate(frames):
        for e in stream_rules.update(i / fps, i, d, SIZE, wall0 + i / fps, image):
            out.append((i, e))
    return out


def kinds(events) -> list[tuple[str, int]]:
    return [(e.type, e.track_id) for _, e in events]


BOX = (100, 100, 150, 150)


def test_a_detection_that_flickers_every_other_frame_is_one_incident():
    sr = StreamRules("cam", rules(classes=["disc"], min_duration=1.0, end_after=2.0), NAMES, "snapshots/cam")
    frames = [dets((7, 0, 0.9, BOX)) if i % 2 == 0 else dets() for i in range(300)]
    frames += [dets()] * 90  # gone for 3 s
    events = run(sr, frames)
    assert kinds(events) == [("start", 7), ("end", 7)]
    (i_start, start), (i_end, end) = events
    assert i_start == 30 and start.start_time == 0.0 and start.end_time is None  # persisted 1.0 s at frame 30
    assert end.end_time == 298 / FPS and i_end == 298 + 60  # unseen 2.0 s after its last sighting
    assert start.event_id == end.event_id and start.snapshot == end.snapshot == f"snapshots/cam/{start.event_id}.jpg"


def test_two_objects_are_two_incidents_and_other_classes_none():
    sr = StreamRules("cam", rules(classes=["disc"], min_duration=0.5, end_after=1.0), NAMES, "snapshots/cam")
    both = dets((1, 0, 0.9, BOX), (2, 0, 0.8, (300, 100, 350, 150)), (3, 1, 0.95, (400, 10, 450, 60)))
    events = run(sr, [both] * 60 + [dets()] * 40)
    assert sorted(kinds(events)) == [("end", 1), ("end", 2), ("start", 1), ("start", 2)]
    assert len({e.event_id for _, e in events}) == 2


def test_short_detections_under_min_duration_make_no_incident():
    sr = StreamRules("cam", rules(min_duration=1.0, end_after=0.5), NAMES, "s")
    # 0.8 s present, 0.6 s gone (> end_after: persistence breaks), 0.8 s present again
    frames = [dets((1, 0, 0.9, BOX))] * 24 + [dets()] * 18 + [dets((1, 0, 0.9, BOX))] * 24
    assert run(sr, frames) == []


def test_cooldown_per_rule_and_stream():
    sr = StreamRules("cam", rules(min_duration=0.0, end_after=0.5, cooldown=10.0), NAMES, "s")
    visit = [dets((1, 0, 0.9, BOX))] * 15 + [dets()] * 30  # 0.5 s present, 1 s gone
    second = [dets((2, 0, 0.9, BOX))] * 15 + [dets()] * 30
    events = run(sr, visit + second + [dets()] * 300 + [dets((3, 0, 0.9, BOX))] * 15 + [dets()] * 30)
    assert kinds(events) == [("start", 1), ("end", 1), ("start", 3), ("end", 3)]  # track 2 came within 10 s
    # while one incident runs, a second object during the cooldown waits for it to pass
    sr = StreamRules("cam", rules(min_duration=0.0, end_after=0.5, cooldown=1.0), NAMES, "s")
    events = run(sr, [dets((1, 0, 0.9, BOX), (2, 0, 0.9, (300, 100, 350, 150)))] * 60)
    assert [(i, e.type, e.track_id) for i, e in events] == [(0, "start", 1), (30, "start", 2)]


def test_end_after_and_min_confidence():
    sr = StreamRules("cam", rules(min_duration=0.0, end_after=1.0, min_confidence=0.5), NAMES, "s")
    frames = [dets((1, 0, 0.9, BOX))] * 10 + [dets((1, 0, 0.3, BOX))] * 28 + [dets((1, 0, 0.9, BOX))] * 10
    assert kinds(run(sr, frames)) == [("start", 1)]  # unseen 29 frames (< 1 s): the same incident goes on
    sr = StreamRules("cam", rules(min_duration=0.0, end_after=1.0, min_confidence=0.5), NAMES, "s")
    frames = [dets((1, 0, 0.9, BOX))] * 10 + [dets((1, 0, 0.3, BOX))] * 31 + [dets((1, 0, 0.9, BOX))] * 10
    assert kinds(run(sr, frames)) == [("start", 1), ("end", 1), ("start", 1)]


def test_untracked_boxes_never_count():
    sr = StreamRules("cam", rules(min_duration=0.0), NAMES, "s")
    assert run(sr, [dets((-1, 0, 0.99, BOX))] * 60) == []


def test_zone_normalized_and_pixels_and_anchor():
    inside_box = (400, 200, 460, 300)  # bottom centre (430, 300): in the right half
    straddling = (280, 250, 340, 350)  # bottom centre (310, 350): left of x=320, centre (310, 300)
    for zone in ([[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]], [[320, 0], [640, 0], [640, 360], [320, 360]]):
        sr = StreamRules("cam", rules(min_duration=0.0, zone=zone), NAMES, "s")
        events = run(sr, [dets((1, 0, 0.9, inside_box), (2, 0, 0.9, straddling), (3, 0, 0.9, (10, 10, 60, 60)))] * 3)
        assert kinds(events) == [("start", 1)]
    sr = StreamRules("cam", rules(min_duration=0.0, zone=[[0, 0], [0.49, 0], [0.49, 0.9], [0, 0.9]],
                                  anchor="center"), NAMES, "s")
    assert kinds(run(sr, [dets((2, 0, 0.9, straddling))] * 3)) == [("start", 2)]  # its centre y 300 < 324


def test_line_crossing_rule():
    rule = rules(min_duration=0.0, end_after=1.0, line=[[320, 0], [320, 360]], direction="right")
    moving_right = [dets((1, 0, 0.9, (250 + 5 * i, 100, 300 + 5 * i, 150))) for i in range(30)]
    moving_left = [dets((2, 0, 0.9, (400 - 5 * i, 200, 450 - 5 * i, 250))) for i in range(30)]
    events = run(StreamRules("cam", rule, NAMES, "s"), moving_right)
    assert kinds(events) == [("start", 1)] and events[0][0] == 10  # its bottom centre, 275 + 5i, passes 320 at i = 9
    assert run(StreamRules("cam", rule, NAMES, "s"), moving_left) == []
    either = rules(min_duration=0.0, line=[[320, 0], [320, 360]])
    assert kinds(run(StreamRules("cam", either, NAMES, "s"), moving_left)) == [("start", 2)]


def test_better_snapshot_gives_an_update_at_most_once_a_second():
    sr = StreamRules("cam", rules(min_duration=0.0, end_after=1.0), NAMES, "s")
    scores = [0.6] * 5 + [0.62] * 5 + [0.7, 0.9, 0.8] + [0.95] * 40
    image = np.zeros((360, 640, 3), np.uint8)
    events = run(sr, [dets((1, 0, s, BOX)) for s in scores], image=image)
    assert [(i, e.type) for i, e in events] == [(0, "start"), (30, "update")]
    update = events[1][1]
    assert update.score == pytest.approx(0.95) and update.frame == 13 and update.image is image  # the best so far
    assert update.max_score == pytest.approx(0.95) and events[0][1].image is image
    off = StreamRules("cam", rules(min_duration=0.0, updates=False), NAMES, "s")
    assert kinds(run(off, [dets((1, 0, s, BOX)) for s in scores])) == [("start", 1)]


def test_source_time_not_wall_time_decides():
    """The same frames give the same incidents whatever the wall clock did (a file faster than real time)."""
    frames = [dets((1, 0, 0.9, BOX)) if i % 3 else dets() for i in range(200)] + [dets()] * 80
    a = run(StreamRules("cam", rules(min_duration=1.0, end_after=1.5), NAMES, "s"), frames, wall0=0)
    b = run(StreamRules("cam", rules(min_duration=1.0, end_after=1.5), NAMES, "s"), frames, wall0=5e6)
    assert [(i, e.type, e.start_time, e.end_time) for i, e in a] == [(i, e.type, e.start_time, e.end_time)
                                                                      for i, e in b]
    assert kinds(a) == [("start", 1), ("end", 1)]


def test_finish_ends_open_incidents_and_rules_skip_other_streams():
    sr = StreamRules("cam", rules(min_duration=0.0, end_after=5.0), NAMES, "s")
    run(sr, [dets((1, 0, 0.9, BOX))] * 10)
    (end,) = sr.finish()
    assert end.type == "end" and end.end_time == 9 / FPS and sr.finish() == []
    other = StreamRules("yard", rules(min_duration=0.0, streams=["cam"]), NAMES, "s")
    assert other.states == [] and run(other, [dets((1, 0, 0.9, BOX))] * 5) == []


def test_event_json_has_every_field():
    sr = StreamRules("cam", rules(min_duration=0.0), NAMES, "snapshots/cam")
    (_, start), = run(sr, [dets((4, 2, 0.87654, (1.04, 2, 30, 40.06)))])
    j = start.to_json()
    assert set(j) == {"type", "event_id", "rule", "stream", "track_id", "class_name", "score", "max_score", "box",
                      "start_time", "end_time", "frame", "snapshot", "timestamp"}
    assert (j["type"], j["rule"], j["stream"], j["track_id"], j["class_name"], j["score"], j["box"]) == \
        ("start", "r", "cam", 4, "triangle", 0.8765, [1.0, 2.0, 30.0, 40.1])
