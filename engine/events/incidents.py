"""Incidents from tracked detections: per stream, per rule, per track, in the source's own time.

For each rule, a track *qualifies* on a frame when its box has one of the rule's classes, a score of at
least ``min_confidence``, its anchor in the zone (if any) and, for a line rule, has crossed the line. Then:

* a qualifying track persists while it is never unseen for ``end_after`` seconds; once it has persisted
  ``min_duration`` seconds (and the rule's ``cooldown`` on this stream has passed since its last start),
  its incident starts: one ``start`` event with a snapshot. A box present every other frame persists, so
  flicker makes one incident;
* while it lasts, its best sighting scoring at least ``UPDATE_GAIN`` above the snapshot's gives an
  ``update`` event with a new snapshot of that frame, at most one per ``UPDATE_INTERVAL`` seconds
  (rule key ``updates``);
* unseen (not qualifying) for ``end_after`` seconds, it ends: one ``end`` event. :meth:`StreamRules.finish`
  ends every open incident when the stream stops.

Times are source time (:meth:`~engine.stream.processors.StreamContext.source_time`): capture time for a
camera, frame index / fps for a file, so a file processed faster than real time gives the same incidents.
"""
from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..detections import Detections
from .geometry import anchors, crossed, inside
from .rules import Rule

UPDATE_GAIN = 0.05  # a better snapshot needs a score this much higher
UPDATE_INTERVAL = 1.0  # and comes at most once a second per incident

_ids = itertools.count(1)


def new_event_id(wall: float) -> str:
    """Unique and sortable: the capture time, then a per-process counter and random bits."""
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(wall))}-{next(_ids)}-{os.urandom(2).hex()}"


@dataclass(frozen=True)
class Event:
    """One incident event, as written to ``events.jsonl`` and sent over MQTT and webhooks (:meth:`to_json`).

    Attributes:
        type: ``start``, ``update`` or ``end``.
        start_time / end_time: source seconds (Unix time for a camera, counted on a monotonic clock from
            the stream's start so a system-time step moves no incident; seconds into a file); ``end_time``
            is ``None`` until the ``end`` event.
        frame: index of the frame the event's ``box`` and ``score`` come from.
        snapshot: the incident's JPEG, relative to the save folder (``None``: no snapshot).
        timestamp: wall-clock capture time of that frame, Unix seconds.
        image: the frame to draw a new snapshot on (``None``: no new snapshot); not part of the JSON.
    """

    type: str
    event_id: str
    rule: str
    stream: str
    track_id: int
    class_name: str
    score: float
    max_score: float
    box: tuple[float, float, float, float]
    start_time: float
    end_time: float | None
    frame: int
    snapshot: str | None
    timestamp: float
    image: Any = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "event_id": self.event_id, "rule": self.rule, "stream": self.stream,
                "track_id": self.track_id, "class_name": self.class_name, "score": round(self.score, 4),
                "max_score": round(self.max_score, 4), "box": [round(v, 1) for v in self.box],
                "start_time": round(self.start_time, 3),
                "end_time": None if self.end_time is None else round(self.end_time, 3),
                "frame": self.frame, "snapshot": self.snapshot, "timestamp": round(self.timestamp, 3)}


@dataclass
class _Seen:
    """The latest qualifying sighting of a track."""

    time: float
    frame: int
    score: float
    box: tuple[float, float, float, float]
    class_name: str
    wall: float
    image: Any = None  # kept only for the best sighting waiting to become an update's snapshot


@dataclass
class _Track:
    first: float  # source time the track began to qualify (persistence start)
    last: _Seen
    event_id: str | None = None  # set while an incident runs
    max_score: float = 0.0
    snapshot: str | None = None
    snapshot_score: float = 0.0
    snapshot_time: float = 0.0
    better: _Seen | None = None  # the best sighting since the snapshot that beats it by UPDATE_GAIN


@dataclass
class _RuleState:
    rule: Rule
    class_ids: np.ndarray | None
    tracks: dict[int, _Track] = field(default_factory=dict)
    next_start: float = float("-inf")  # cooldown: no new incident before this source time
    last_anchor: dict[int, tuple[float, np.ndarray]] = field(default_factory=dict)  # line rules: (time, point)
    crossed: set[int] = field(default_factory=set)  # line rules: tracks that crossed (until they vanish)


class StreamRules:
    """The rules of one stream and their incidents.

    Args:
        stream: the source's name.
        rules: the rules (those whose ``streams`` leave this one out are skipped).
        names: the model's class names.
        snapshot_dir: folder of this stream's snapshots, relative to the save folder.
    """

    def __init__(self, stream: str, rules: Sequence[Rule], names: Sequence[str], snapshot_dir: str) -> None:
        self.stream, self.snapshot_dir = stream, snapshot_dir
        index = {n: i for i, n in enumerate(names)}
        self.states = [_RuleState(r, None if r.classes is None else np.array([index[c] for c in r.classes]))
                       for r in rules if r.streams is None or stream in r.streams]

    def update(self, t: float, frame: int, detections: Detections, size: tuple[int, int], wall: float,
               image: Any = None) -> list[Event]:
        """The events of one frame at source time ``t`` (``detections`` must carry ``track_id``).

        ``image`` is the frame itself: events that bring a new snapshot carry the frame to draw it on.
        """
        events: list[Event] = []
        for state in self.states:
            self._update_rule(state, t, frame, detections, size, wall, image, events)
        return events

    def _qualifying(self, state: _RuleState, t: float, detections: Detections, size: tuple[int, int]) -> np.ndarray:
        rule, tid = state.rule, detections.track_id
        mask = (tid >= 0) & (detections.confidence >= rule.min_confidence)
        if state.class_ids is not None:
            mask &= np.isin(detections.class_id, state.class_ids)
        idx = np.flatnonzero(mask)
        if not len(idx) or (rule.zone is None and rule.line is None):
            return idx
        points = anchors(detections.xyxy[idx], rule.anchor)
        if rule.line is not None:
            for i, p in zip(idx.tolist(), points):
                track = int(tid[i])
                before = state.last_anchor.get(track)
                state.last_anchor[track] = (t, p)
                if before is not None and crossed(rule.line, before[1], p, rule.direction, *size):
                    state.crossed.add(track)
            keep = np.array([int(tid[i]) in state.crossed for i in idx.tolist()], dtype=bool)
            idx, points = idx[keep], points[keep]
        if rule.zone is not None and len(idx):
            idx = idx[inside(rule.zone, points, *size)]
        return idx

    def _update_rule(self, state: _RuleState, t: float, frame: int, d: Detections, size: tuple[int, int],
                     wall: float, image: Any, events: list[Event]) -> None:
        rule = state.rule
        for i in self._qualifying(state, t, d, size).tolist():
            track_id = int(d.track_id[i])
            seen = _Seen(t, frame, float(d.confidence[i]), tuple(d.xyxy[i].tolist()), d.names[d.class_id[i]]
                         if 0 <= d.class_id[i] < len(d.names) else str(d.class_id[i]), wall)
            track = state.tracks.get(track_id)
            if track is not None and t - track.last.time >= rule.end_after:  # unseen that long: it ended
                self._drop(state, track_id, events)
                track = None
            if track is None:
                track = state.tracks[track_id] = _Track(t, seen)
            track.last = seen
            if track.event_id is None:
                if t - track.first >= rule.min_duration and t >= state.next_start:
                    state.next_start = t + rule.cooldown
                    track.event_id, track.max_score = new_event_id(wall), seen.score
                    if rule.snapshot:
                        track.snapshot = f"{self.snapshot_dir}/{track.event_id}.jpg"
                        track.snapshot_score, track.snapshot_time = seen.score, t
                    events.append(self._event("start", rule, track_id, track, image if rule.snapshot else None))
                continue
            track.max_score = max(track.max_score, seen.score)
            if not (rule.updates and rule.snapshot):
                continue
            better = track.better
            if seen.score >= track.snapshot_score + UPDATE_GAIN and (better is None or seen.score > better.score):
                seen.image, track.better = image, seen
            if track.better is not None and t - track.snapshot_time >= UPDATE_INTERVAL:
                best, track.better = track.better, None
                track.snapshot_score, track.snapshot_time = best.score, t
                events.append(self._event("update", rule, track_id, track, best.image, seen=best))
        for track_id, track in list(state.tracks.items()):
            if track.last.time < t and t - track.last.time >= rule.end_after:
                self._drop(state, track_id, events)
        for track_id, (seen_at, _) in list(state.last_anchor.items()):  # line rules: forget vanished tracks
            if t - seen_at >= rule.end_after and track_id not in state.tracks:
                del state.last_anchor[track_id]
                state.crossed.discard(track_id)

    def _drop(self, state: _RuleState, track_id: int, events: list[Event]) -> None:
        """A track unseen for ``end_after``: its incident (if any) ends at its last sighting."""
        track = state.tracks.pop(track_id)
        if track.event_id is not None:
            events.append(self._event("end", state.rule, track_id, track, None, end=True))

    def finish(self) -> list[Event]:
        """End every open incident (the stream stopped); the end time is when each was last seen."""
        events = []
        for state in self.states:
            for track_id, track in state.tracks.items():
                if track.event_id is not None:
                    events.append(self._event("end", state.rule, track_id, track, None, end=True))
            state.tracks.clear()
        return events

    def _event(self, kind: str, rule: Rule, track_id: int, track: _Track, image: Any, end: bool = False,
               seen: _Seen | None = None) -> Event:
        s = seen or track.last
        return Event(kind, track.event_id, rule.name, self.stream, track_id, s.class_name, s.score,
                     track.max_score, s.box, track.first, track.last.time if end else None, s.frame, track.snapshot,
                     s.wall, image)
