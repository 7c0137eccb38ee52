"""engine.stream under signals and failures: every stop is prompt and complete, a failed start leaves nothing."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_fifty_signals_at_random_moments_under_load_each_stop_within_5s(demo_onnx, clip, folder, tmp_path):
    """SIGINT or SIGTERM at random moments (model loading, sources opening, mid-batch), 1-3 workers, files,
    folders, a real-time file, a refused and a hung camera, with every core kept busy: no hang, each stop
    within 5 s, each partial video finalized with one frame per result (tests/stream_signal_driver.py)."""
    # its own session: a driver killed by the timeout takes its CPU-load processes and streams with it
    p = subprocess.Popen([sys.executable, "-m", "tests.stream_signal_driver", str(demo_onnx), str(clip), str(folder),
                          str(tmp_path), "50", "7"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        stdout, stderr = p.communicate(timeout=400)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)  # nothing of the run outlives the test, whatever ended it
        p.wait()
    runs = re.findall(r"^run \d+ .* stop ([\d.]+)s", stdout, re.M)
    assert p.returncode == 0 and len(runs) == 50, stdout[-3000:] + stderr[-3000:]
    assert max(float(s) for s in runs) < 5.0, stdout
    assert {"SIGINT", "SIGTERM"} <= set(re.findall(r"SIG\w+", stdout))


@pytest.mark.parametrize("events", [False, True])
def test_sources_that_all_fail_at_start_leave_no_result_files(demo_onnx, tmp_path, events):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(os.urandom(2048))
    out = tmp_path / "out"
    extra = []
    if events:  # incidents: events.jsonl and snapshots/ under --save, created with the first event
        pytest.importorskip("trackers")
        (tmp_path / "rules.yaml").write_text("rules:\n  - name: any\n    classes: [disc]\n")
        extra = ["--events", str(tmp_path / "rules.yaml")]
    p = subprocess.run([sys.executable, "-m", "engine.stream", "--model", str(demo_onnx), "--source", str(bad),
                        "--save", str(out), "--jsonl", str(tmp_path / "extra" / "d.jsonl"), *extra], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "bad.mp4" in p.stderr, p.stderr
    assert not out.exists() and not (tmp_path / "extra").exists()  # no empty folder, video or detections.jsonl


def test_an_unwritable_save_path_is_refused_before_the_model_loads(demo_onnx, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    p = subprocess.run([sys.executable, "-m", "engine.stream", "--model", str(demo_onnx), "--source", "0",
                        "--save", str(blocker / "out")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "is a file, not a folder" in p.stderr and "fix:" in p.stderr, p.stderr
