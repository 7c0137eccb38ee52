"""Where events go: one module per receiver, each an :class:`~engine.events.delivery.EventSink`.

``jsonl`` (``<save>/events.jsonl``), ``webhook`` (HTTP POST, stdlib only), ``mqtt`` (paho-mqtt, the
``alerts`` extra, imported when used) and :class:`EventLog` (the last events in memory, for the status
page). Every sink sends the same JSON text for an event.
"""
from .jsonl import JsonLinesEvents
from .log import EventLog

__all__ = ["JsonLinesEvents", "EventLog"]
