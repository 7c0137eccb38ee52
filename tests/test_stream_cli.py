"""``python -m engine.stream`` as a user runs it: --help, bad sources (exit 2), signals (130 / 0, files finalized)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import cv2
import pytest

from tests.conftest import ROOT
from tests.test_stream import Recorder


def _cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine.stream", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def test_cli_help_and_readme_document_every_flag():
    from engine.stream.cli import build_parser
    from tests.cli_help import options_without_help

    p = subprocess.run([sys.executable, "-m", "engine.stream", "--help"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0
    flags = {o for a in build_parser()._actions for o in a.option_strings if o.startswith("--") and o != "--help"}
    assert {"--model", "--source", "--save", "--metrics-port", "--reconnect-max", "--read-timeout",
            "--connect-attempts", "--show", "--jsonl"} <= flags and all(f in p.stdout for f in flags)
    assert not options_without_help(p.stdout), "flags without a help line"
    readme = (ROOT / "README.md").read_text()
    assert not sorted(f for f in flags if f"`{f}" not in readme), "flags the README's engine.stream table lacks"


def test_cli_corrupt_file_exits_2_with_message(demo_onnx, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(os.urandom(2048))
    p = _cli("--model", str(demo_onnx), "--source", str(bad))
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 2, out
    assert "error:" in out and "bad.mp4" in out and "fix:" in out and "Traceback" not in out


@pytest.mark.parametrize("flag, value", [("--metrics-port", "70000"), ("--duration", "0"), ("--duration", "-1"),
                                         ("--max-frames", "0"), ("--read-timeout", "inf"), ("--reconnect-max", "nan")])
def test_cli_out_of_range_numbers_exit_2_with_message(demo_onnx, tmp_path, flag, value):
    """--duration 0 ran forever, a negative one stopped after one batch, --metrics-port 70000 was a traceback."""
    p = _cli("--model", str(demo_onnx), "--source", str(tmp_path), flag, value)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 2 and "error:" in out and "fix:" in out and "Traceback" not in out, out


def test_cli_max_frames_is_never_overshot(demo_onnx, clip, tmp_path):
    """Two workers take a file two frames a call: the call that reaches --max-frames takes only what is wanted
    (it wrote 3 lines for --max-frames 2, 5 for 4)."""
    for n in (2, 4):
        out = tmp_path / f"d{n}.jsonl"
        p = _cli("--model", str(demo_onnx), "--source", str(clip), "--jsonl", str(out), "--max-frames", str(n),
                 "--workers", "2", "--log-interval", "0")
        log, _ = p.communicate(timeout=120)
        assert p.returncode == 0 and "batch 2, 2 worker(s)" in log, log
        assert len(out.read_text().splitlines()) == n


def test_cli_dead_url_exits_2_after_its_attempts(demo_onnx):
    from tests.rtsp_server import free_port

    url = f"rtsp://user:secret@127.0.0.1:{free_port()}/cam"
    p = _cli("--model", str(demo_onnx), "--source", url, "--connect-attempts", "2", "--reconnect-max", "0.1")
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 2, out
    assert "could not connect" in out and "after 2 attempts" in out and "--connect-attempts" in out
    assert "secret" not in out  # credentials never reach the log


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 0), (signal.SIGINT, 130)], ids=["sigterm", "ctrl-c"])
def test_cli_signal_stops_cleanly_and_the_partial_video_plays(demo_onnx, clip, tmp_path, sig, code):
    out_dir = tmp_path / "out"
    p = _cli("--model", str(demo_onnx), "--source", f"cam={clip}", "--loop", "--save", str(out_dir),
             "--log-interval", "0")
    jsonl = out_dir / "detections.jsonl"
    try:
        assert Recorder().wait_for(lambda: jsonl.is_file() and len(jsonl.read_text().splitlines()) >= 20, 90)
    finally:
        p.send_signal(sig)
        out, _ = p.communicate(timeout=60)
    assert p.returncode == code, out
    lines = jsonl.read_text().splitlines()
    assert all(json.loads(x)["source"] == "cam" for x in lines)
    assert any(json.loads(x)["detections"] for x in lines)  # the demo model finds the clip's shapes
    cap = cv2.VideoCapture(str(out_dir / "cam.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == len(lines)  # finalized: every processed frame plays (a signal only sets a flag: never between sinks)
