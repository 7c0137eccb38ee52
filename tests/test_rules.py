"""rules.yaml: what it accepts, and errors that name the file, the rule and the fix, before a camera opens."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine.errors import ConfigError
from engine.events.geometry import Shape, anchors, crossed, inside, polygon_problem
from engine.events.rules import AlertsConfig, load_alerts, parse_alerts
from tests.conftest import ROOT

NAMES = ("disc", "box", "triangle")
GOOD = """
rules:
  - name: accident-alert
    classes: [disc]
    min_confidence: 0.5
    min_duration: 1.0
    end_after: 2.0
    cooldown: 30
    zone: [[0.1, 0.5], [0.9, 0.5], [0.9, 1.0], [0.1, 1.0]]
  - name: crossing
    classes: [box, triangle]
    line: [[320, 0], [320, 360]]
    direction: right
    streams: [gate]
mqtt: {url: "mqtt://127.0.0.1:1883", topic_prefix: site}
webhook: {url: "http://127.0.0.1:9/hook", token_env: HOOK_TOKEN}
snapshots: {max_count: 10, max_megabytes: 5, quality: 70}
queue_size: 50
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "rules.yaml"
    p.write_text(text)
    return p


def test_a_complete_rules_file_loads(tmp_path):
    cfg = load_alerts(_write(tmp_path, GOOD))
    a, c = cfg.rules
    assert (a.name, a.classes, a.min_confidence, a.min_duration, a.end_after, a.cooldown) == \
        ("accident-alert", ("disc",), 0.5, 1.0, 2.0, 30.0)
    assert a.zone.normalized and len(a.zone.points) == 4 and a.anchor == "bottom_center"
    assert not c.line.normalized and c.direction == "right" and c.streams == ("gate",)
    assert (c.min_duration, c.end_after, c.cooldown, c.snapshot) == (1.0, 2.0, 0.0, True)  # defaults
    assert cfg.mqtt.topic_prefix == "site" and cfg.webhook.token_env == "HOOK_TOKEN"
    assert (cfg.snapshots.max_count, cfg.queue_size) == (10, 50)
    cfg.check(NAMES, ["gate", "s1"])


@pytest.mark.parametrize("rule, says, fix", [
    ("  - name: r\n    classes: [disc]\n    min_confidnce: 0.5\n", "rule 'r': unknown key 'min_confidnce'",
     "did you mean 'min_confidence'"),
    ("  - name: r\n    min_duration: one second\n", "rule 'r': min_duration must be a number of seconds",
     "min_duration: 1.0"),
    ("  - name: r\n    min_confidence: 1.5\n", "min_confidence must be a number from 0 to 1", "min_confidence: 0.5"),
    ("  - name: r\n    classes: disc, box\n", None, None),  # a plain string is one class name: caught by check()
    ("  - name: r\n    end_after: 0\n", "end_after must be a number of seconds > 0", "end_after: 2.0"),
    ("  - name: r\n    cooldown: true\n", "cooldown must be a number of seconds", "cooldown: 30"),
    ("  - name: r\n    zone: [[0.1, 0.1], [0.9, 0.1]]\n", "bad zone: a zone needs at least 3 corners", "in order"),
    ("  - name: r\n    zone: [[0, 0], [1, 1], [1, 0], [0, 1]]\n", "bad zone: the zone's edges cross", "in order"),
    ("  - name: r\n    zone: [[0, 0], [0.5, 0.5], [1, 1]]\n", "enclose no area", "in order"),
    ("  - name: r\n    zone: [[0, 0], [1, 0], [x, 1]]\n", "zone must be a list of [x, y] points", "zone: [["),
    ("  - name: r\n    zone: [0.1, 0.5, 0.9]\n", "zone must be a list of [x, y] points", "zone: [["),
    ("  - name: r\n    zone: [[0, 0], [2, 0], [2, 2]]\n    units: normalized\n", "coordinates above 1",
     "units: pixels"),
    ("  - name: r\n    line: [[0, 0], [0, 0]]\n", "bad line: a line needs exactly 2 different points", "line: [["),
    ("  - name: r\n    direction: right\n", "direction is set but the rule has no line", "add line"),
    ("  - name: r\n    line: [[0, 10], [100, 10]]\n    direction: left\n", "a horizontal line is crossed up or down",
     "line: [["),
    ("  - name: r\n    anchor: top\n", "anchor must be one of bottom_center, center", "anchor: center"),
    ("  - classes: [disc]\n", "rule 1: 'name' is missing", "name: accident-alert"),
    ("  - name: r\n  - name: r\n", "two rules are named 'r'", "its own name"),
])
def test_bad_rules_name_the_file_the_rule_and_the_fix(tmp_path, rule, says, fix):
    path = _write(tmp_path, "rules:\n" + rule)
    if says is None:
        with pytest.raises(ConfigError, match="class 'disc, box' is not a class"):
            load_alerts(path).check(NAMES, ["s0"])
        return
    with pytest.raises(ConfigError) as e:
        load_alerts(path)
    assert str(path) in e.value.message and says in e.value.message, e.value.message
    assert fix in e.value.fix, e.value.fix


@pytest.mark.parametrize("text, says", [
    ("rules: []\n", "'rules' must be a list of at least one rule"),
    ("alerts:\n  - name: r\n", "no 'rules:' list"),
    ("rules:\n  - name: r\nmqt: {url: x}\n", "unknown top-level key 'mqt'"),
    ("rules:\n  - name: r\nmqtt: {topic_prefix: x}\n", "section 'mqtt': 'url' is missing"),
    ("rules:\n  - name: r\nsnapshots: {quality: 0}\n", "quality must be a whole number from 1 to 100"),
    ("rules:\n  - name: r\nqueue_size: -1\n", "queue_size must be a whole number >= 1"),
    ("rules:\n  - name: r\n   classes: [disc]\n", "not valid YAML at line 3"),
    ("rules:\n  - just a string\n", "rule 1 must be a mapping"),
])
def test_bad_files_and_sections(tmp_path, text, says):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_alerts(path)
    assert str(path) in e.value.message and says in e.value.message, e.value.message
    assert e.value.fix


def test_a_rules_file_that_is_not_utf8_is_a_config_error(tmp_path):
    """A Windows editor's cp1252 'é' (a UnicodeDecodeError traceback, exit 1, before); a BOM is read."""
    path = tmp_path / "rules.yaml"
    path.write_bytes("rules:\n  - name: café\n".encode("cp1252"))
    with pytest.raises(ConfigError, match="is not UTF-8 text") as e:
        load_alerts(path)
    assert "UTF-8" in e.value.fix
    path.write_bytes("\ufeffrules:\n  - name: café\n".encode("utf-8"))
    assert load_alerts(path).rules[0].name == "café"


def test_unknown_class_and_stream_are_refused_with_the_models_names(tmp_path):
    cfg = load_alerts(_write(tmp_path, "rules:\n  - name: crash\n    classes: [acident]\n"))
    with pytest.raises(ConfigError) as e:
        cfg.check(("accident", "car"), ["s0"], model="m.onnx")
    assert "rule 'crash'" in e.value.message and "class 'acident' is not a class of m.onnx" in e.value.message
    assert "accident, car" in e.value.message and "did you mean 'accident'" in e.value.fix
    cfg = load_alerts(_write(tmp_path, "rules:\n  - name: r\n    streams: [gat]\n"))
    with pytest.raises(ConfigError, match="stream 'gat' is not a source"):
        cfg.check(NAMES, ["gate"])


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read rules file"):
        load_alerts(tmp_path / "nope.yaml")


def test_cli_flags_override_the_files_delivery(tmp_path):
    cfg = load_alerts(_write(tmp_path, GOOD))
    out = cfg.with_delivery(mqtt={"url": "mqtt://other:1884", "username": None}, webhook={"url": None})
    assert out.mqtt.url == "mqtt://other:1884" and out.mqtt.topic_prefix == "site"  # the file's prefix kept
    assert out.webhook == cfg.webhook
    bare = AlertsConfig("x.yaml", cfg.rules)
    with pytest.raises(ConfigError, match="without a URL"):
        bare.with_delivery(mqtt={"username": "u"})


# --- geometry ------------------------------------------------------------------------------------
def test_zone_in_normalized_and_pixel_coordinates_agree():
    norm = Shape(((0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)), normalized=True)
    pix = Shape(((320, 0), (640, 0), (640, 360), (320, 360)), normalized=False)
    boxes = np.array([[10, 10, 50, 50], [400, 100, 460, 200], [300, 300, 360, 340]], np.float32)
    bottom, centre = anchors(boxes, "bottom_center"), anchors(boxes, "center")
    assert bottom.tolist()[1] == [430, 200] and centre.tolist()[1] == [430, 150]
    for zone in (norm, pix):
        assert inside(zone, bottom, 640, 360).tolist() == [False, True, True]  # x 330 is right of 320
    assert inside(norm, bottom, 1280, 720).tolist() == [False, False, False]  # normalized scales with the frame


def test_polygon_problems():
    assert polygon_problem([(0, 0), (1, 0), (1, 1), (0, 1)]) is None
    assert "cross" in polygon_problem([(0, 0), (1, 1), (1, 0), (0, 1)])
    assert "3 corners" in polygon_problem([(0, 0), (1, 1)])


def test_line_crossing_directions():
    vertical = Shape(((100, 0), (100, 200)), normalized=False)
    a, b = np.array([80.0, 50.0]), np.array([120.0, 60.0])  # moving right across x = 100
    assert crossed(vertical, a, b, "any", 640, 360) and crossed(vertical, a, b, "right", 640, 360)
    assert not crossed(vertical, a, b, "left", 640, 360) and crossed(vertical, b, a, "left", 640, 360)
    assert not crossed(vertical, np.array([80.0, 250.0]), np.array([120.0, 250.0]), "any", 640, 360)  # past its end
    assert not crossed(vertical, a, np.array([90.0, 80.0]), "any", 640, 360)  # same side
    slanted = Shape(((0.0, 1.0), (1.0, 0.0)), normalized=True)  # bottom-left to top-right
    above, below = np.array([100.0, 100.0]), np.array([400.0, 300.0])
    for d in ("any", "down", "right"):
        assert crossed(slanted, above, below, d, 640, 360)
    assert not crossed(slanted, above, below, "up", 640, 360) and crossed(slanted, below, above, "up", 640, 360)


# --- before any camera opens ---------------------------------------------------------------------
def test_cli_bad_rules_exit_2_before_the_model_or_a_camera_opens(tmp_path):
    """A URL that would take seconds per connect attempt: the rules error comes at once, and no connect."""
    rules = _write(tmp_path, "rules:\n  - name: crash\n    classes: [accident]\n    min_duration: soon\n")
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "engine.stream", "--model", str(tmp_path / "missing.onnx"),
                        "--source", "cam=rtsp://127.0.0.1:9/x", "--events", str(rules), "--save", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stdout + p.stderr
    out = p.stdout + p.stderr
    assert "rule 'crash': min_duration must be a number of seconds" in out and str(rules) in out and "fix:" in out
    assert "connect" not in out and time.monotonic() - t0 < 30


def test_cli_unknown_class_exits_2_before_a_camera_opens(demo_onnx, tmp_path):
    rules = _write(tmp_path, "rules:\n  - name: crash\n    classes: [accident]\n")
    p = subprocess.run([sys.executable, "-m", "engine.stream", "--model", str(demo_onnx),
                        "--source", "cam=rtsp://127.0.0.1:9/x", "--events", str(rules), "--save", str(tmp_path / "o")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    assert p.returncode == 2, out
    assert f"rule 'crash': class 'accident' is not a class of {demo_onnx} (its classes: disc, box, triangle)" in out
    assert "cam connect" not in out and "connect attempt" not in out


def test_cli_events_need_save_and_delivery_needs_events(tmp_path, demo_onnx):
    rules = _write(tmp_path, "rules:\n  - name: r\n")
    for extra, says in ((["--events", str(rules)], "--events writes DIR/events.jsonl"),
                        (["--mqtt", "mqtt://127.0.0.1:1"], "--mqtt without --events")):
        p = subprocess.run([sys.executable, "-m", "engine.stream", "--model", str(demo_onnx), "--source", str(rules),
                            *extra], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and says in p.stdout + p.stderr, p.stdout + p.stderr


def test_parse_alerts_accepts_a_mapping_from_python():
    cfg = parse_alerts({"rules": [{"name": "r", "classes": ["disc"]}]}, "<python>")
    assert cfg.rules[0].classes == ("disc",) and cfg.mqtt is None


def test_readme_rules_examples_load():
    import re

    import yaml

    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) >= 2
    for block in blocks:
        cfg = parse_alerts(yaml.safe_load(block), "README.md")
        cfg.check(("accident", "fall"), ["crossing", "bridge", "ward-1", "ward-2", "stairs"])
    assert any(c.mqtt and c.webhook for c in (parse_alerts(yaml.safe_load(b), "R") for b in blocks))
