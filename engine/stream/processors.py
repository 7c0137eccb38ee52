"""Stages between the detector and the sinks: tracking, incident rules, the status page.

A :class:`Processor` sees every :class:`~engine.stream.sinks.StreamResult` on the pipeline thread,
in frame order per source, before any sink: it may replace the result's detections (a tracker adds
track ids) or read it (rules, the status page). :meth:`Processor.start` runs once the model is loaded
and before any source opens, so a processor can refuse bad settings (an unknown class name in a rule)
before a camera is touched. The heavy parts (the tracker library, MQTT) live in the processors' own
packages (:mod:`engine.track`, :mod:`engine.events`, :mod:`engine.status`), imported only when used.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from .metrics import StreamMetrics
from .sinks import StreamResult
from .sources import DEFAULT_FPS, SourceSpec, StreamEvent


@dataclass(frozen=True)
class StreamContext:
    """What a processor learns at start.

    Attributes:
        names: the model's class names.
        sources: every source, by name.
        metrics: the stream's metrics (a processor adds its figures there).
        tracked: a processor of the stream adds track ids to the detections (a tracker).
        model: the model's file, for messages.
    """

    names: tuple[str, ...]
    sources: Mapping[str, SourceSpec]
    metrics: StreamMetrics
    tracked: bool = False
    model: str = "the model"
    # the wall clock and the monotonic clock read together at start: a live source's time is the first
    # plus what the second counted since, so a system-time step (NTP at boot, `date -s`) moves no rule
    clocks: tuple[float, float] = field(default_factory=lambda: (time.time(), time.perf_counter()))

    def source_time(self, result: StreamResult) -> float:
        """Seconds in the source's own clock: capture time for a live source (Unix seconds, counted on a
        monotonic clock from the stream's start), frame index / fps for a file.

        A file processed faster than real time therefore gives the same durations as played at its rate;
        a camera's incidents neither freeze when the system clock is set back nor all end when it jumps ahead.
        """
        spec = self.sources.get(result.source)
        if spec is not None and spec.kind.live:
            if not result.t_capture:  # a result made outside the pipeline: its wall-clock time
                return result.timestamp
            wall0, mono0 = self.clocks
            return wall0 + (result.t_capture - mono0)
        return result.index / (result.fps or DEFAULT_FPS)


class Processor:
    """Base processor: override what you need. The stream calls, on its pipeline thread unless noted:

    * :meth:`detector_options` before the stream loads its model (only when it loads it);
    * :meth:`start` once, after the model loaded and before any source opens;
    * :meth:`process` for every result, in frame order per source; return the result (changed or not);
    * :meth:`on_event` for each source event (connected, reconnected, ended ...), from capture threads;
    * :meth:`close` once, after the last result (also after a failure or Ctrl-C).
    """

    adds_track_ids = False  # a tracker sets this: later processors may rely on Detections.track_id

    def detector_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The options the stream's own detector is loaded with (a new dict when changed)."""
        return options

    def start(self, context: StreamContext) -> None:
        pass

    def process(self, result: StreamResult) -> StreamResult:
        return result

    def on_event(self, event: StreamEvent) -> None:
        pass

    def close(self) -> None:
        pass
