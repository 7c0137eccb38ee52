"""Tracking inside :class:`~engine.stream.Stream`: one :class:`~engine.track.Tracker` per source.

Ids never cross sources (Ultralytics' ``track()`` keeps one tracker for every stream of a call, so ids
mix across cameras: ultralytics#13107). A source that reconnects gets its tracker reset, with later ids
still unique; the other sources keep theirs. Trackers run on the pipeline thread in each source's frame
order and read the source's own clock (:meth:`~engine.stream.processors.StreamContext.source_time`).
"""
from __future__ import annotations

import threading
import time
from typing import Any

from ..stream.processors import Processor, StreamContext
from ..stream.sinks import StreamResult
from ..stream.sources import EventKind, StreamEvent
from .tracker import Tracker, TrackerConfig


class TrackingProcessor(Processor):
    """Adds ``track_id`` to every result's detections (``Stream(..., tracker="bytetrack")``).

    Args:
        config: a :class:`~engine.track.TrackerConfig` or a kind name.
    """

    adds_track_ids = True

    def __init__(self, config: TrackerConfig | str = "bytetrack") -> None:
        self.config = TrackerConfig.of(config)
        self.trackers: dict[str, Tracker] = {}
        self._report_conf = 0.25  # the stream's conf: weaker boxes only where they continue a track
        self._context: StreamContext | None = None
        self._reset: set[str] = set()  # sources that reconnected; reset on the pipeline thread
        self._lock = threading.Lock()

    def detector_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """ByteTrack's second association needs the weak boxes too: run the detector down to ``low_conf``."""
        conf = options.get("conf")
        self._report_conf = 0.25 if conf is None else conf
        if not self.config.uses_low_boxes or self.config.low_conf >= self._report_conf:
            return options
        return {**options, "conf": self.config.low_conf}

    def start(self, context: StreamContext) -> None:
        from .tracker import _library

        _library()  # a missing package is an error now, before any camera opens
        self._context = context

    def on_event(self, event: StreamEvent) -> None:
        if event.kind is EventKind.RECONNECTED:
            with self._lock:
                self._reset.add(event.source)

    def _tracker(self, result: StreamResult) -> Tracker:
        tracker = self.trackers.get(result.source)
        if tracker is None:
            tracker = self.trackers[result.source] = Tracker(self.config, result.fps, self._report_conf)
        elif self._reset:
            with self._lock:
                reset = result.source in self._reset
                self._reset.discard(result.source)
            if reset:
                tracker.reset()
        return tracker

    def process(self, result: StreamResult) -> StreamResult:
        t0 = time.perf_counter()
        tracker = self._tracker(result)
        result.detections = tracker.update(result.detections, self._context.source_time(result))
        self._context.metrics[result.source].record_stage("track", time.perf_counter() - t0)
        return result
