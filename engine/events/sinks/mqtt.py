"""MQTT: each event published with QoS 1 to ``<prefix>/<stream>/events`` (paho-mqtt, the ``alerts`` extra).

paho's network thread connects, and reconnects with capped backoff when the broker goes away; a broker
down at start is a warning, then retried. Events wait in this sink's own bounded queue (paho's queue
refuses new messages when full; ours drops the oldest and counts it) and go one at a time: the next is
published once the broker acknowledged the last (PUBACK). QoS 1 is at-least-once: after a connection
lost mid-publish a receiver can see an event twice, with the same ``event_id``.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import urllib.parse
from pathlib import Path

from ...errors import ConfigError
from ...stream.sources import redact
from ..delivery import EventSink, Payload, Reject, Retry
from ..rules import MqttConfig

log = logging.getLogger("engine.events")
SCHEMES = {"mqtt": (1883, False), "tcp": (1883, False), "mqtts": (8883, True), "ssl": (8883, True)}
INSTALL = "pip install 'yolo-deploy[alerts]' (or pip install paho-mqtt)"


def _paho():
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise ConfigError("--mqtt needs paho-mqtt, which is not installed", INSTALL) from None
    return mqtt


class MqttSink(EventSink):
    """Publish events to an MQTT broker.

    Args:
        config: URL (``mqtt://[user[:password]@]host[:port]``, ``mqtts://`` for TLS), topic prefix,
            credentials (the password from the variable ``password_env``), TLS files, client id.
        queue_size: events held while the broker is away.
        backoff_max: cap of the reconnect and retry delays, seconds (default ``config.retry_max``).
        ack_timeout: seconds to wait for the broker's PUBACK while connected before publishing again.
    """

    def __init__(self, config: MqttConfig, queue_size: int = 1000, backoff_max: float | None = None,
                 ack_timeout: float = 10.0) -> None:
        super().__init__("mqtt", queue_size, config.retry_max if backoff_max is None else backoff_max)
        url = urllib.parse.urlsplit(config.url)
        if url.scheme not in SCHEMES or not url.hostname:
            raise ConfigError(f"MQTT URL '{redact(config.url)}' is not mqtt://host[:port] or mqtts://host[:port]",
                              "pass --mqtt mqtt://broker:1883 (mqtts:// for TLS)")
        port, tls = SCHEMES[url.scheme]
        if not config.topic_prefix or any(c in config.topic_prefix for c in "+#\0"):
            raise ConfigError(f"MQTT topic_prefix {config.topic_prefix!r} cannot be a publish topic (empty, or "
                              "holding the wildcards + or #)", "use a plain prefix such as 'site1/yolo'")
        self.host, self.port = url.hostname, url.port or port
        self.config, self.label, self.ack_timeout = config, f"{url.scheme}://{self.host}:{self.port}", ack_timeout
        username = config.username or (urllib.parse.unquote(url.username) if url.username else None)
        password = urllib.parse.unquote(url.password) if url.password else None
        if config.password_env:
            password = os.environ.get(config.password_env)
            if password is None:
                raise ConfigError(f"the MQTT password variable {config.password_env} is not set",
                                  f"export {config.password_env}=<password> before starting")
        for name in ("tls_ca", "tls_cert", "tls_key"):
            value = getattr(config, name)
            if value is not None and not Path(value).is_file():
                raise ConfigError(f"MQTT {name.replace('_', ' ')} file {value} not found", "check the path")
        mqtt = _paho()
        self._mqtt = mqtt
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=config.client_id or "",
                                  protocol=mqtt.MQTTv311, clean_session=True)
        self.client.max_inflight_messages_set(1)  # one at a time: the queue above keeps the order
        if username:
            self.client.username_pw_set(username, password)
        if tls or config.tls_ca or config.tls_cert:
            self.client.tls_set(ca_certs=config.tls_ca, certfile=config.tls_cert, keyfile=config.tls_key)
            self.client.tls_insecure_set(config.tls_insecure)
        self.client.reconnect_delay_set(1, max(int(self.backoff_max), 1))
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.connected = threading.Event()
        self._acked: set[int] = set()
        self._cond = threading.Condition()
        self._pending: tuple[Payload, int, float] | None = None  # published, waiting for its PUBACK
        self._down_logged = self._refused_logged = False

    # --- paho's thread ----------------------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:  # e.g. a wrong password: said once, then retried quietly
            (log.debug if self._refused_logged else log.error)(
                "mqtt: %s refused the connection: %s; retrying", self.label, reason_code)
            self._refused_logged = True
            return
        log.info("mqtt: connected to %s", self.label)
        self._down_logged = self._refused_logged = False
        self.connected.set()

    def _on_connect_fail(self, client, userdata) -> None:
        if not self._down_logged:
            log.warning("mqtt: cannot reach %s; retrying (events are queued)", self.label)
            self._down_logged = True

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        if was and not self._stop.is_set():
            log.warning("mqtt: lost %s (%s); reconnecting (events are queued)", self.label, reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._cond:
            self._acked.add(mid)
            self._cond.notify_all()

    # --- the sink's thread ------------------------------------------------------------------------
    def open(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=self.config.keepalive)
        self.client.loop_start()  # paho retries the first connection too

    def deliver(self, payload: Payload) -> None:
        deadline = time.monotonic() + self.backoff_max
        while not self.connected.wait(0.25):  # publish as soon as paho has reconnected
            if self._stop.is_set() or time.monotonic() > deadline:
                raise Retry(f"not connected to {self.label}")
        if self._pending is None or self._pending[0] is not payload:
            topic = f"{self.config.topic_prefix}/{payload.data['stream']}/events"
            try:
                info = self.client.publish(topic, payload.body, qos=1)
            except ValueError as e:  # paho refuses the topic (a stream name with + or #): never publishable
                raise Reject(f"topic {topic!r}: {e}") from None
            if info.rc == self._mqtt.MQTT_ERR_PAYLOAD_SIZE:
                raise Reject("payload too large for the broker")
            if info.rc not in (self._mqtt.MQTT_ERR_SUCCESS, self._mqtt.MQTT_ERR_NO_CONN):
                raise Retry(self._mqtt.error_string(info.rc))
            self._pending = (payload, info.mid, time.monotonic())  # NO_CONN: paho sends it after reconnecting
        _, mid, since = self._pending
        with self._cond:
            while mid not in self._acked:
                if self._stop.is_set() or not self.connected.is_set():
                    raise Retry(f"connection to {self.label} lost before its PUBACK (paho sends it again)")
                if time.monotonic() - since > self.ack_timeout:
                    self._pending = None  # publish it again: a duplicate at worst
                    raise Retry(f"no PUBACK from {self.label} within {self.ack_timeout:g}s")
                self._cond.wait(0.25)
            self._acked.discard(mid)
        self._pending = None

    def shutdown(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
