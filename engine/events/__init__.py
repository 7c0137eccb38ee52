"""Incidents and alerts from tracked detections: rules, snapshots, delivery (JSON lines, webhook, MQTT).

:mod:`.rules` reads and checks ``rules.yaml``; :mod:`.incidents` turns each stream's tracks into
``start`` / ``update`` / ``end`` events in the source's own time; :mod:`.snapshots` writes the annotated
JPEGs; :mod:`.delivery` and :mod:`.sinks` get the events out behind bounded queues; :mod:`.processor`
plugs all of it into :class:`~engine.stream.Stream`. MQTT needs the ``alerts`` extra (paho-mqtt),
imported only when a broker is configured.
"""
from .incidents import Event, StreamRules
from .processor import EventsProcessor
from .rules import AlertsConfig, MqttConfig, Rule, SnapshotConfig, WebhookConfig, load_alerts

__all__ = ["EventsProcessor", "AlertsConfig", "Rule", "MqttConfig", "WebhookConfig", "SnapshotConfig",
           "load_alerts", "Event", "StreamRules"]
