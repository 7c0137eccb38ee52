"""``rules.yaml``: which detections make an incident, and where the events go.

    rules:
      - name: accident-alert
        classes: [accident]      # the model's class names (default: every class)
        min_confidence: 0.5      # score a box needs to count
        min_duration: 1.0        # seconds a track must persist before the incident starts (against flicker)
        end_after: 2.0           # seconds unseen before the incident ends
        cooldown: 30             # seconds before the same rule may start again on the same stream
        zone: [[0.1, 0.5], [0.9, 0.5], [0.9, 1.0], [0.1, 1.0]]   # optional polygon, fractions or pixels
    mqtt: {url: mqtt://broker:1883, topic_prefix: yolo}          # optional; --mqtt overrides
    webhook: {url: https://example.com/hook, token_env: HOOK_TOKEN}  # optional; --webhook overrides

Optional rule keys: ``streams`` (names of the sources it watches), ``anchor`` (``bottom_center``
(default) or ``center``: the point of a box tested against the zone and the line), ``line`` (two points:
a track counts once its anchor has crossed the segment) with ``direction`` (``any``, or the screen side
it crossed towards: ``left``, ``right``, ``up``, ``down``), ``units`` of the zone and line (``auto``:
fractions of the frame when no coordinate is above 1, else pixels; ``normalized``; ``pixels``),
``snapshot`` and ``updates`` (true: a JPEG at start, and an ``update`` event with a new one when the
score improves). Other sections: ``snapshots`` (``max_count``, ``max_megabytes``, ``quality``) and
``queue_size`` (events held per sink while it is down).

:func:`load_alerts` checks the file's form; :meth:`AlertsConfig.check` checks the class and stream
names against the model and the sources, before any camera opens. Every error names the file, the rule
and the fix.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError
from .geometry import ANCHORS, DIRECTIONS, Shape, direction_problem, polygon_problem
from .schema import (Field, choice, flag, fraction, names, non_negative, points, positive_int, positive_seconds,
                     quality, read_section, seconds, text)

RULE_FIELDS = {
    "name": Field(text, example="accident-alert"),
    "classes": Field(names, None, "[accident]"),
    "min_confidence": Field(fraction, 0.0, "0.5"),
    "min_duration": Field(seconds, 1.0, "1.0"),
    "end_after": Field(positive_seconds, 2.0, "2.0"),
    "cooldown": Field(seconds, 0.0, "30"),
    "zone": Field(points, None, "[[0.1, 0.5], [0.9, 0.5], [0.9, 1.0], [0.1, 1.0]]"),
    "units": Field(choice("auto", "normalized", "pixels"), "auto", "pixels"),
    "line": Field(points, None, "[[0.0, 0.6], [1.0, 0.6]]"),
    "direction": Field(choice(*DIRECTIONS), "any", "right"),
    "anchor": Field(choice(*ANCHORS), "bottom_center", "center"),
    "streams": Field(names, None, "[gate]"),
    "snapshot": Field(flag, True, "true"),
    "updates": Field(flag, True, "false"),
}


@dataclass(frozen=True)
class Rule:
    """One rule of ``rules.yaml`` (see the module docstring for the keys)."""

    name: str
    classes: tuple[str, ...] | None = None
    min_confidence: float = 0.0
    min_duration: float = 1.0
    end_after: float = 2.0
    cooldown: float = 0.0
    zone: Shape | None = None
    line: Shape | None = None
    direction: str = "any"
    anchor: str = "bottom_center"
    streams: tuple[str, ...] | None = None
    snapshot: bool = True
    updates: bool = True


@dataclass(frozen=True)
class MqttConfig:
    """MQTT delivery: ``url`` ``mqtt://[user@]host[:1883]`` or ``mqtts://`` (TLS, port 8883)."""

    url: str
    topic_prefix: str = "yolo"
    username: str | None = None
    password_env: str | None = None
    client_id: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_insecure: bool = False
    keepalive: int = 30
    retry_max: float = 30.0


@dataclass(frozen=True)
class WebhookConfig:
    """HTTP delivery: a JSON POST of each event to ``url``; ``token_env`` names the bearer token's variable."""

    url: str
    token_env: str | None = None
    timeout: float = 5.0
    retry_max: float = 30.0


@dataclass(frozen=True)
class SnapshotConfig:
    """Snapshot JPEGs kept under ``<save>/snapshots``: the oldest go beyond either limit."""

    max_count: int = 1000
    max_megabytes: float = 500.0
    quality: int = 85


SECTION_FIELDS = {
    "mqtt": {"url": Field(text, example="mqtt://127.0.0.1:1883"), "topic_prefix": Field(text, "yolo", "yolo"),
             "username": Field(text, None, "alerts"), "password_env": Field(text, None, "MQTT_PASSWORD"),
             "client_id": Field(text, None, "gate-box"), "tls_ca": Field(text, None, "ca.crt"),
             "tls_cert": Field(text, None, "client.crt"), "tls_key": Field(text, None, "client.key"),
             "tls_insecure": Field(flag, False, "false"), "keepalive": Field(positive_int, 30, "30"),
             "retry_max": Field(positive_seconds, 30.0, "30")},
    "webhook": {"url": Field(text, example="https://example.com/hook"), "token_env": Field(text, None, "HOOK_TOKEN"),
                "timeout": Field(positive_seconds, 5.0, "5"), "retry_max": Field(positive_seconds, 30.0, "30")},
    "snapshots": {"max_count": Field(positive_int, 1000, "1000"), "max_megabytes": Field(non_negative, 500.0, "500"),
                  "quality": Field(quality, 85, "85")},
}
TOP_FIELDS = ("rules", "mqtt", "webhook", "snapshots", "queue_size")


@dataclass(frozen=True)
class AlertsConfig:
    """Everything ``rules.yaml`` says; delivery flags of the CLI replace its sections (:meth:`with_delivery`)."""

    path: str
    rules: tuple[Rule, ...]
    mqtt: MqttConfig | None = None
    webhook: WebhookConfig | None = None
    snapshots: SnapshotConfig = field(default_factory=SnapshotConfig)
    queue_size: int = 1000

    def with_delivery(self, mqtt: dict[str, Any] | None = None,
                      webhook: dict[str, Any] | None = None) -> "AlertsConfig":
        """A copy whose ``mqtt`` / ``webhook`` take the given non-``None`` values over the file's."""
        from dataclasses import asdict, replace

        def merge(current: Any, cls: type, given: dict[str, Any] | None) -> Any:
            given = {k: v for k, v in (given or {}).items() if v is not None}
            if not given:
                return current
            base = asdict(current) if current is not None else {}
            if "url" not in {**base, **given}:
                raise ConfigError(f"{cls.__name__} options given without a URL", "also pass the URL flag")
            return cls(**{**base, **given})

        return replace(self, mqtt=merge(self.mqtt, MqttConfig, mqtt),
                       webhook=merge(self.webhook, WebhookConfig, webhook))

    def check(self, model_names: Sequence[str], streams: Sequence[str], model: str = "the model") -> None:
        """Refuse class names the model lacks and stream names no source has (before any camera opens)."""
        for rule in self.rules:
            where = f"{self.path}: rule '{rule.name}'"
            for cls in rule.classes or ():
                if cls not in model_names:
                    close = difflib.get_close_matches(cls, list(model_names), n=1)
                    hint = f"did you mean '{close[0]}'? " if close else ""
                    raise ConfigError(f"{where}: class '{cls}' is not a class of {model} "
                                      f"(its classes: {', '.join(model_names)})",
                                      f"{hint}use class names of the model, or a model trained on '{cls}'")
            for name in rule.streams or ():
                if name not in streams:
                    raise ConfigError(f"{where}: stream '{name}' is not a source of this run (sources: "
                                      f"{', '.join(streams)})", "name the sources with --source NAME=URI, or fix "
                                      "the rule's streams")


def _shape(values: dict[str, Any], key: str, where: str, path: str) -> Shape | None:
    pts = values[key]
    if pts is None:
        return None
    units = values["units"]
    normalized = all(x <= 1.0 and y <= 1.0 for x, y in pts) if units == "auto" else units == "normalized"
    if units == "normalized" and not all(x <= 1.0 and y <= 1.0 for x, y in pts):
        raise ConfigError(f"{path}: {where}: {key} has coordinates above 1 but units is normalized",
                          "give fractions 0-1 of the frame, or set units: pixels")
    problem = polygon_problem(pts) if key == "zone" else (
        direction_problem(pts, values["direction"]) if len(pts) == 2 and pts[0] != pts[1]
        else "a line needs exactly 2 different points")
    if problem:
        example = RULE_FIELDS[key].example
        raise ConfigError(f"{path}: {where}: bad {key}: {problem}: {list(map(list, pts))}",
                          f"list the corners in order around the area, e.g. {key}: {example}" if key == "zone"
                          else f"give two points, e.g. {key}: {example}")
    return Shape(pts, normalized)


def parse_rule(data: Any, index: int, path: str) -> Rule:
    """One rule from its YAML mapping (``index`` names it in messages until its name is known)."""
    label = f"rule {index + 1}"
    if isinstance(data, dict) and isinstance(data.get("name"), str):
        label = f"rule '{data['name']}'"
    v = read_section(data, RULE_FIELDS, label, path)
    if v["line"] is None and v["direction"] != "any":
        raise ConfigError(f"{path}: {label}: direction is set but the rule has no line",
                          "add line: [[x1, y1], [x2, y2]] or drop direction")
    return Rule(name=v["name"], classes=v["classes"], min_confidence=v["min_confidence"],
                min_duration=v["min_duration"], end_after=v["end_after"], cooldown=v["cooldown"],
                zone=_shape(v, "zone", label, path), line=_shape(v, "line", label, path), direction=v["direction"],
                anchor=v["anchor"], streams=v["streams"], snapshot=v["snapshot"], updates=v["updates"])


def parse_alerts(data: Any, path: str) -> AlertsConfig:
    """An :class:`AlertsConfig` from the parsed YAML document of ``path``."""
    if not isinstance(data, dict) or "rules" not in data:
        raise ConfigError(f"{path}: no 'rules:' list at the top of the file",
                          "start the file with 'rules:' and one '- name: ...' entry per rule (see README, Alerts)")
    for key in data:
        if key not in TOP_FIELDS:
            close = difflib.get_close_matches(str(key), TOP_FIELDS, n=1)
            raise ConfigError(f"{path}: unknown top-level key '{key}'",
                              (f"did you mean '{close[0]}'? " if close else "") + f"use {', '.join(TOP_FIELDS)}")
    if not isinstance(data["rules"], list) or not data["rules"]:
        raise ConfigError(f"{path}: 'rules' must be a list of at least one rule",
                          "write each rule as an item: '  - name: accident-alert' followed by its keys")
    rules = tuple(parse_rule(r, i, path) for i, r in enumerate(data["rules"]))
    seen = [r.name for r in rules]
    for name in seen:
        if seen.count(name) > 1:
            raise ConfigError(f"{path}: two rules are named '{name}'", "give each rule its own name")
    sections = {key: read_section(data[key], SECTION_FIELDS[key], f"section '{key}'", path)
                for key in SECTION_FIELDS if data.get(key) is not None}
    queue_size = data.get("queue_size", 1000)
    if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
        raise ConfigError(f"{path}: queue_size must be a whole number >= 1, got {queue_size!r}",
                          "e.g. queue_size: 1000")
    return AlertsConfig(path, rules, MqttConfig(**sections["mqtt"]) if "mqtt" in sections else None,
                        WebhookConfig(**sections["webhook"]) if "webhook" in sections else None,
                        SnapshotConfig(**sections.get("snapshots", {})), queue_size)


def load_alerts(path: str | Path) -> AlertsConfig:
    """Read and check ``rules.yaml``; a missing file or a YAML syntax error names the file and the line."""
    import yaml

    p = Path(path)
    try:
        text_ = p.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise ConfigError(f"cannot read rules file {p}: {e.strerror or e}", "check the --events path") from None
    except UnicodeDecodeError as e:  # e.g. saved as cp1252 by a Windows editor
        raise ConfigError(f"rules file {p} is not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r})",
                          "save it as UTF-8 (any editor's 'Save with encoding')") from None
    try:
        data = yaml.safe_load(text_)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{p}: not valid YAML{where}: {getattr(e, 'problem', None) or e}",
                          "fix the indentation or quoting there (rules is a list of '- name: ...' mappings)") from None
    return parse_alerts(data, str(p))
