"""The tracking, events and status-page flags of ``python -m engine.stream`` (a group of their own).

:func:`add_arguments` adds them to the stream's parser; :func:`build` turns them into the ``tracker``
and ``processors`` of :class:`~engine.stream.Stream`, reading and checking ``rules.yaml`` first, so a bad
rules file is an error before the model loads or any camera opens.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from ..errors import ConfigError


def add_arguments(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("tracking, events and alerts (extras: track, alerts)")
    g.add_argument("--track", nargs="?", const="bytetrack", choices=("bytetrack", "ocsort", "sort"), metavar="KIND",
                   help="give each detection a track_id, one tracker per source: bytetrack (the default when "
                        "--track is given alone), ocsort or sort")
    g.add_argument("--track-conf", type=float, metavar="X",
                   help="score a box needs to start a track (default 0.5; weaker boxes are still reported, with an "
                        "id when they continue a track); keep it at or under your rules' min_confidence")
    g.add_argument("--events", type=Path, metavar="RULES.yaml",
                   help="incident rules (README: Alerts); writes DIR/events.jsonl and DIR/snapshots/ (needs --save; "
                        "turns on --track)")
    g.add_argument("--webhook", metavar="URL", help="POST each event as JSON to this URL")
    g.add_argument("--webhook-token-env", metavar="VAR", help="send 'Authorization: Bearer $VAR' with each POST")
    g.add_argument("--mqtt", metavar="URL", help="publish events to mqtt://host[:1883] (mqtts:// for TLS), QoS 1, "
                                                 "topic PREFIX/<stream>/events")
    g.add_argument("--mqtt-prefix", metavar="PREFIX", help="MQTT topic prefix (default yolo)")
    g.add_argument("--mqtt-user", metavar="USER", help="MQTT user name")
    g.add_argument("--mqtt-password-env", metavar="VAR", help="read the MQTT password from this environment variable")
    g.add_argument("--mqtt-ca", metavar="FILE", help="CA certificate of the broker (turns on TLS)")
    g.add_argument("--mqtt-cert", metavar="FILE", help="client certificate for TLS")
    g.add_argument("--mqtt-key", metavar="FILE", help="client key for TLS")
    g.add_argument("--mqtt-insecure", action="store_true", default=None,
                   help="TLS without checking the broker's host name (test setups only)")
    g.add_argument("--http", type=int, metavar="PORT", help="serve the live status page (and /metrics) on this port")
    g.add_argument("--http-host", default="127.0.0.1", metavar="HOST",
                   help="address of the status page; 0.0.0.0 shows it (and the cameras) to the network")


def build(args: argparse.Namespace) -> tuple[Any, list[Any]]:
    """``(tracker, processors)`` for :class:`~engine.stream.Stream` from the parsed flags."""
    delivery = {"webhook": args.webhook, "mqtt": args.mqtt}
    if not args.events and any(delivery.values()):
        flag = "--webhook" if args.webhook else "--mqtt"
        raise ConfigError(f"{flag} without --events: no rules say what to send",
                          "add --events rules.yaml (README: Alerts)")
    if args.http is not None and not 0 <= args.http <= 65535:
        raise ConfigError(f"--http {args.http}", "use a TCP port from 1 to 65535 (0: any free port)")
    processors: list[Any] = []
    kind = args.track or ("bytetrack" if args.events or args.track_conf is not None else None)
    tracker = None
    if kind is not None:
        from ..track import TrackerConfig

        tracker = TrackerConfig(kind) if args.track_conf is None else TrackerConfig(kind, conf=args.track_conf)
    log_sink = None
    if args.events:
        if args.save is None:
            raise ConfigError("--events writes DIR/events.jsonl and DIR/snapshots/, and no --save DIR was given",
                              "add --save DIR (with --no-video if you want no annotated MP4s)")
        from .rules import load_alerts
        from .processor import EventsProcessor
        from .sinks import EventLog

        config = load_alerts(args.events).with_delivery(
            mqtt={"url": args.mqtt, "topic_prefix": args.mqtt_prefix, "username": args.mqtt_user,
                  "password_env": args.mqtt_password_env, "tls_ca": args.mqtt_ca, "tls_cert": args.mqtt_cert,
                  "tls_key": args.mqtt_key, "tls_insecure": args.mqtt_insecure},
            webhook={"url": args.webhook, "token_env": args.webhook_token_env})
        for rule in config.rules:
            if rule.min_confidence < tracker.conf:
                logging.getLogger("engine.events").warning(
                    "rule '%s': boxes scoring %.2f-%.2f count for it but never start a track (--track-conf %.2f); "
                    "lower --track-conf or raise its min_confidence", rule.name, rule.min_confidence, tracker.conf,
                    tracker.conf)
        log_sink = EventLog() if args.http is not None else None
        processors.append(EventsProcessor(config, args.save, sinks=[log_sink] if log_sink else []))
    if args.http is not None:
        from ..status import StatusPage

        processors.append(StatusPage(args.http, args.http_host, events=log_sink, save_dir=args.save))
    return tracker, processors
