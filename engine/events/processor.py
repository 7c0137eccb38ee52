"""Incident rules inside :class:`~engine.stream.Stream`: tracked detections in, events out.

    from engine.events import EventsProcessor
    from engine.stream import Stream

    events = EventsProcessor("rules.yaml", save_dir="alerts/")
    Stream("model.onnx", ["gate=rtsp://…"], tracker="bytetrack", processors=[events]).run()

On the pipeline thread it only evaluates the rules (:class:`~engine.events.incidents.StreamRules`, one per
stream) and queues the events; snapshots and delivery run on the event bus's threads
(:mod:`engine.events.delivery`), so a slow disk, webhook or broker never holds up a frame.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..detections import Detections
from ..errors import ConfigError
from ..stream.processors import Processor, StreamContext
from ..stream.sinks import StreamResult, check_file_names, safe_filename
from .delivery import EventBus
from .incidents import Event, StreamRules
from .metrics import AlertMetrics
from .rules import AlertsConfig, load_alerts
from .snapshots import SNAPSHOT_DIR, SnapshotStore
from .sinks import JsonLinesEvents

log = logging.getLogger("engine.events")


def build_sinks(config: AlertsConfig, save_dir: Path) -> list[Any]:
    """``events.jsonl`` always; a webhook and an MQTT broker when the config has them."""
    network: list[Any] = []  # made first: they only check their settings, the file opens last
    if config.webhook is not None:
        from .sinks.webhook import WebhookSink

        network.append(WebhookSink(config.webhook, config.queue_size))
    if config.mqtt is not None:
        from .sinks.mqtt import MqttSink

        network.append(MqttSink(config.mqtt, config.queue_size))
    return [JsonLinesEvents(save_dir / "events.jsonl", config.queue_size), *network]


class EventsProcessor(Processor):
    """Evaluate ``rules.yaml`` on every result; write ``<save>/events.jsonl`` and snapshots, send alerts.

    Args:
        config: an :class:`~engine.events.rules.AlertsConfig` or the path of ``rules.yaml``.
        save_dir: where ``events.jsonl`` and ``snapshots/`` go (event snapshot paths are relative to it).
        sinks: more receivers (e.g. the status page's :class:`~engine.events.sinks.EventLog`).
        flush_timeout: seconds :meth:`close` gives the sinks to deliver what is queued.

    Needs track ids: use it with a tracker (``Stream(..., tracker="bytetrack")``).
    """

    def __init__(self, config: AlertsConfig | str | Path, save_dir: str | Path, sinks: Iterable[Any] = (),
                 flush_timeout: float = 5.0) -> None:
        self.config = config if isinstance(config, AlertsConfig) else load_alerts(config)
        self.save_dir = Path(save_dir)
        self.flush_timeout = flush_timeout
        self._extra = list(sinks)
        self.metrics = AlertMetrics()
        self.bus: EventBus | None = None
        self.rules: dict[str, StreamRules] = {}
        self._context: StreamContext | None = None

    def start(self, context: StreamContext) -> None:
        if not context.tracked:
            raise ConfigError("incident rules need track ids, and the stream has no tracker",
                              "pass tracker='bytetrack' to Stream (python -m engine.stream --track)")
        self.config.check(context.names, list(context.sources), context.model)
        check_file_names(context.sources, "/ snapshot folder")
        self._context, self.names = context, context.names
        self.snapshots = SnapshotStore(self.save_dir, self.config.snapshots)
        sinks = build_sinks(self.config, self.save_dir) + self._extra
        self.rules = {name: StreamRules(name, self.config.rules, context.names,
                                        f"{SNAPSHOT_DIR}/{safe_filename(name)}") for name in context.sources}
        context.metrics.collectors.append(self.metrics)
        self.bus = EventBus(sinks, self.metrics, self._write_snapshot, queue_size=self.config.queue_size)
        self.bus.start()
        log.info("events: %d rule(s) -> %s", len(self.config.rules),
                 ", ".join(getattr(s, "label", s.name) for s in sinks))

    def process(self, result: StreamResult) -> StreamResult:
        t0 = time.perf_counter()
        h, w = result.image.shape[:2]
        events = self.rules[result.source].update(self._context.source_time(result), result.index,
                                                  result.detections, (w, h), result.timestamp, result.image)
        for event in events:
            self._publish(event)
        self._context.metrics[result.source].record_stage("rules", time.perf_counter() - t0)
        return result

    def _publish(self, event: Event) -> None:
        counter = {"start": "incidents_started", "end": "incidents_ended"}.get(event.type)
        if counter:
            self.metrics.count(counter, event.rule, event.stream)
        self.bus.publish(event, event if event.image is not None else None)

    def _write_snapshot(self, event: Event) -> bool:
        """On the bus's thread: the event's frame with the incident's box, label and zone."""
        image = event.image
        names = self.names
        class_id = names.index(event.class_name) if event.class_name in names else -1
        one = Detections(np.array([event.box], np.float32), np.array([event.score], np.float32),
                         np.array([class_id], np.int32), names, track_id=np.array([event.track_id]))
        rule = next(r for r in self.config.rules if r.name == event.rule)
        h, w = image.shape[:2]
        zone = rule.zone.pixels(w, h) if rule.zone is not None else None
        return self.snapshots.write(event.snapshot, image, one, zone)

    def close(self) -> None:
        """End the incidents still open (at their last sighting), deliver what is queued, stop the threads."""
        if self.bus is None:
            return
        for rules in self.rules.values():
            for event in rules.finish():
                self._publish(event)
        self.bus.close(self.flush_timeout)
        self.bus = None
