"""The benchmark harness: its arithmetic, its round-robin, its output schema. Never timings."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks import report, stats
from benchmarks.artifacts import _cached, _save, form_of, form_rank
from benchmarks.candidates import OURS, PEER, CallTimes, Candidate
from benchmarks.harness import (
    Group,
    batch_frames,
    calls_per_candidate,
    group_ratios,
    measure,
    summarize_group,
    to_16x9,
    wide_imgsz,
)
from benchmarks.run import build_parser, main, resolve

# ---------------------------------------------------------------- stats


@pytest.mark.parametrize("samples", [[5.0], [3.0, 1.0], [1, 2, 3, 4], list(range(100, 0, -1)),
                                     [0.5, 9.0, 2.25, 7.0, 7.0]])
@pytest.mark.parametrize("q", [0, 1, 25, 50, 95, 99, 100])
def test_percentile_matches_numpy_linear(samples, q):
    assert stats.percentile(samples, q) == pytest.approx(float(np.percentile(samples, q)), abs=1e-12)


@pytest.mark.parametrize("samples,q,expected", [([10, 20], 50, 15.0), ([10, 20, 30, 40, 50], 95, 48.0),
                                                ([1] * 7 + [100], 50, 1.0), (list(range(1, 101)), 99, 99.01)])
def test_percentile_exact_values(samples, q, expected):
    assert stats.percentile(samples, q) == pytest.approx(expected)


@pytest.mark.parametrize("samples,q", [([], 50), ([1.0], -1), ([1.0], 100.5)])
def test_percentile_rejects_bad_input(samples, q):
    with pytest.raises(ValueError):
        stats.percentile(samples, q)


def test_summarize_and_per_frame():
    s = stats.summarize(stats.per_frame([40.0, 80.0, 120.0, 160.0], batch=4))
    assert s == {"p50": 25.0, "p95": pytest.approx(38.5), "p99": pytest.approx(39.7), "mean": 25.0, "n": 4}
    with pytest.raises(ValueError):
        stats.per_frame([1.0], 0)


@pytest.mark.parametrize("ours,peer,expected", [(20.0, 40.0, 0.5), (30.0, 20.0, 1.5), (1.0, 0.0, None),
                                                (1.0, None, None)])
def test_ratio(ours, peer, expected):
    assert stats.ratio(ours, peer) == expected


def test_fps():
    assert stats.fps(20.0) == 50.0 and stats.fps(0.0) == 0.0


def test_ratio_table_pairs_every_ours_with_every_peer():
    mk = lambda e2e, inf: {"end_to_end": {"p50": e2e}, "inference": {"p50": inf}}  # noqa: E731
    rows = stats.ratio_table({"a": mk(10, 8), "b": mk(30, 20)}, {"p": mk(40, 32), "q": mk(20, 10)})
    got = {(r["ours"], r["peer"]): (r["end_to_end"], r["inference"]) for r in rows}
    assert got == {("a", "p"): (0.25, 0.25), ("a", "q"): (0.5, 0.8), ("b", "p"): (0.75, 0.625), ("b", "q"): (1.5, 2.0)}


def test_target_verdicts():
    t = stats.Target("int8 vs pt", "ours int8-cpu", "ultralytics .pt", 0.35)
    assert t.verdict(0.30) == {"target": "int8 vs pt", "limit": 0.35, "ratio": 0.3, "met": True}
    missed = t.verdict(0.42)
    assert missed["met"] is False and missed["missed_by"] == pytest.approx(0.07) and missed["missed_by_pct"] == 20.0
    assert t.verdict(0.35)["met"] is True  # the limit itself meets it
    assert t.verdict(None)["met"] is None

# ---------------------------------------------------------------- harness (fake candidates: no models, no clocks)


class _Fake:
    """Returns fixed stage times per call and records the order of calls and the frames it got."""

    def __init__(self, name, log, ms):
        self.name, self.log, self.ms = name, log, ms

    def __call__(self, frames):
        self.log.append((self.name, [int(f[0, 0, 0]) for f in frames]))
        pre, inf, post = self.ms
        return CallTimes(pre, inf, post, pre + inf + post + 1.0)


def _group(batch, log, ms_a=(1.0, 8.0, 1.0), ms_p=(2.0, 16.0, 2.0)):
    frames = [np.full((4, 4, 3), i, np.uint8) for i in range(5)]
    cands = []
    for name, role, ms in (("ours a", OURS, ms_a), ("peer p", PEER, ms_p)):
        c = Candidate(name, role, "fp32", Path(name), (640, 640))
        c._runner = _Fake(name, log, ms)
        cands.append(c)
    return Group("g", "g", "m", False, batch, frames, "five frames", cands)


def test_round_robin_blocks_and_same_frames_for_every_candidate():
    log = []
    g = _group(batch=2, log=log)
    times = measure(g, warmup=1, iters=5, block=2, settle=0)
    assert {k: len(v) for k, v in times.items()} == {"ours a": 5, "peer p": 5}
    order = [name for name, _ in log[2:]]  # after one warm-up call each
    assert order == ["ours a"] * 2 + ["peer p"] * 2 + ["ours a"] * 2 + ["peer p"] * 2 + ["ours a", "peer p"]
    seen = {}
    for name, frames in log[2:]:
        seen.setdefault(name, []).append(frames)
    assert seen["ours a"] == seen["peer p"] == [[0, 1], [2, 3], [4, 0], [1, 2], [3, 4]]


def test_each_turn_starts_with_untimed_settle_calls():
    log = []
    g = _group(batch=1, log=log)
    times = measure(g, warmup=0, iters=5, block=2, settle=1)
    assert {k: len(v) for k, v in times.items()} == {"ours a": 5, "peer p": 5}
    # three turns each (2 + 2 + 1 timed calls), each turn one untimed call first: 8 calls per candidate
    assert [n for n, _ in log] == (["ours a"] * 3 + ["peer p"] * 3) * 2 + ["ours a"] * 2 + ["peer p"] * 2
    assert calls_per_candidate(warmup=0, iters=5, block=2, settle=1) == 8
    assert calls_per_candidate(warmup=3, iters=100, block=10, settle=1) == 113


def test_skipped_candidate_is_never_called():
    log = []
    g = _group(batch=1, log=log)
    g.candidates[1].skip = "no GPU"
    times = measure(g, warmup=0, iters=3, block=10, settle=0)
    assert list(times) == ["ours a"] and {n for n, _ in log} == {"ours a"}


def test_summary_is_per_frame_and_ratios_use_medians():
    g = _group(batch=4, log=[])
    summary = summarize_group(g, measure(g, warmup=0, iters=3, block=1, settle=0))
    a = summary["ours a"]["per_frame_ms"]
    assert a["inference"]["p50"] == 2.0 and a["end_to_end"]["p50"] == 2.75  # (1 + 8 + 1 + 1) / 4
    assert a["overhead"]["p50"] == 0.25  # the wall time outside the three stages, per frame
    assert summary["ours a"]["fps"] == pytest.approx(1000 / 2.75)
    (row,) = group_ratios(g, summary)
    assert row["ours"] == "ours a" and row["peer"] == "peer p"
    assert row["end_to_end"] == pytest.approx(11.0 / 21.0) and row["inference"] == 0.5


def test_batch_frames_cycles():
    frames = list(range(3))
    assert [batch_frames(frames, i, 2) for i in range(3)] == [[0, 1], [2, 0], [1, 2]]


@pytest.mark.parametrize("shape", [(480, 480, 3), (360, 640, 3), (100, 1000, 3), (1080, 1920, 3)])
def test_to_16x9(shape):
    assert to_16x9(np.zeros(shape, np.uint8)).shape == (720, 1280, 3)


@pytest.mark.parametrize("imgsz,wide", [((640, 640), (384, 640)), ((320, 320), (192, 320)),
                                        ((1280, 1280), (736, 1280))])
def test_wide_imgsz(imgsz, wide):
    assert wide_imgsz(imgsz) == wide


@pytest.mark.parametrize("name,form", [("demo.onnx", "fp32"), ("demo.int8-cpu.onnx", "int8-cpu"),
                                       ("m.int8.onnx", "int8"), ("m.fp16.onnx", "fp16"), ("m.end2end.onnx", "end2end"),
                                       ("m.fp16.engine", "trt-fp16"), ("m.plan", "trt")])
def test_form_of(name, form):
    assert form_of(name)[0] == form


def test_form_order():
    forms = ["trt-fp16", "int8-cpu", "fp32", "end2end", "int8", "fp16"]
    assert sorted(forms, key=form_rank) == ["fp32", "fp16", "int8", "int8-cpu", "end2end", "trt-fp16"]


def test_build_cache_manifest(tmp_path):
    f = tmp_path / "m.onnx"
    f.write_bytes(b"x")
    _save(tmp_path, {"k": 1}, [f], ["a note"])
    assert _cached(tmp_path, {"k": 1}) == [f]
    assert _cached(tmp_path, {"k": 2}) is None  # another model, size or version: build again
    f.unlink()
    assert _cached(tmp_path, {"k": 1}) is None  # a file gone: build again

def test_build_cache_key_follows_the_code(tmp_path):
    """Artifacts built by other code are not reused: the key hashes the packages' sources."""
    from benchmarks.artifacts import _code_digest, _code_roots

    pkg = tmp_path / "exporters"
    pkg.mkdir()
    (pkg / "a.py").write_text("x = 1\n")
    digest = _code_digest.__wrapped__  # uncached, to see the edit
    before = digest((pkg,))
    assert digest((pkg,)) == before
    (pkg / "a.py").write_text("x = 2\n")
    edited = digest((pkg,))
    assert edited != before
    (pkg / "b.py").write_text("")  # a new module
    assert digest((pkg,)) != edited
    roots = _code_roots()
    assert [r.name for r in roots] == ["engine", "exporters", "calibration"] and all(r.is_dir() for r in roots)


def test_frames_from_a_video_and_from_the_demo(tmp_path):
    import cv2

    from benchmarks.plan import load_frames

    video = tmp_path / "v.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(5):
        w.write(np.full((48, 64, 3), i * 40, np.uint8))
    w.release()
    got = load_frames(_args("--video", str(video), "--max-frames", "3"))
    assert len(got.frames) == 3 and got.frames[0].shape == (48, 64, 3) and got.data is None
    demo = load_frames(_args("--max-frames", "2"))
    assert len(demo.frames) == 2 and demo.data.name == "data.yaml"

# ---------------------------------------------------------------- CLI


def _args(*argv):
    return resolve(build_parser().parse_args(list(argv)))


def test_resolve_defaults():
    a = _args()
    assert a.imgsz == (640, 640) and a.wide == (384, 640) and a.arch == ["yolo11n", "yolo11m"]
    assert a.peers == {"pt", "onnx"} and a.batch == [1] and a.demo is True


def test_resolve_user_weights_drop_the_random_archs(tmp_path):
    a = _args("--weights", str(tmp_path / "w.pt"), "--imgsz", "384,640", "--batch", "4,1", "--peers", "none")
    assert a.arch == [] and a.wide is None and a.batch == [1, 4] and a.peers == set() and a.demo is False
    b = _args("--no-demo", "--arch", "yolov8n", "--wide", "none")
    assert b.arch == ["yolov8n"] and b.demo is False


def test_bad_flags_exit_2(tmp_path, capsys):
    assert main(["--peers", "tensorflow", "--out", str(tmp_path)]) == 2
    assert "error: --peers" in capsys.readouterr().err
    assert main(["--models", str(tmp_path / "nope.onnx"), "--out", str(tmp_path), "--arch", "none"]) == 2
    err = capsys.readouterr().err
    assert "nope.onnx" in err and "fix:" in err

# ---------------------------------------------------------------- a tiny real run


def test_tiny_run_schema_ratios_and_outputs(demo_onnx, demo_pt, tmp_path, capsys):
    pytest.importorskip("ultralytics")
    engine = tmp_path / "demo.fp16.engine"
    engine.write_bytes(b"not an engine")
    out = tmp_path / "bench"
    argv = ["--models", f"{demo_onnx},{engine}", "--weights", str(demo_pt), "--peers", "pt,onnx", "--iters", "3",
            "--warmup", "1", "--block", "2", "--max-frames", "2", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "ours fp32" in stdout and "ultralytics .pt" in stdout and "ultralytics onnx" in stdout
    res = json.loads((out / "results.json").read_text())
    assert set(res) >= {"schema", "command", "env", "settings", "groups", "comparisons", "targets", "skipped"}
    assert res["command"].startswith("python -m benchmarks.run --models")
    assert {"cpu", "logical_cores", "gpus", "versions", "load_avg_start", "load_avg_end"} <= set(res["env"])
    assert "onnxruntime" in res["env"]["versions"]
    (g,) = res["groups"]
    assert len(g["load_avg"]) == 2  # the machine's load when the group's timing started and ended
    by = {c["name"]: c for c in g["candidates"]}
    assert by["ours trt-fp16"]["skipped"] and res["skipped"][0]["file"] == "demo.fp16.engine"
    assert by["ultralytics onnx"]["path"].startswith(str(out / "artifacts"))  # Ultralytics' own export, made here
    for name in ("ours fp32", "ultralytics .pt", "ultralytics onnx"):
        c = by[name]
        assert c["calls"] == 3 and c["fps"] > 0
        for stage in stats.STAGES:
            s = c["per_frame_ms"][stage]
            assert s["n"] == 3 and s["p50"] <= s["p95"] <= s["p99"]
    assert [(r["ours"], r["peer"]) for r in g["ratios"]] == [("ours fp32", "ultralytics .pt"),
                                                            ("ours fp32", "ultralytics onnx")]
    e2e = lambda n: by[n]["per_frame_ms"]["end_to_end"]["p50"]  # noqa: E731
    for r in g["ratios"]:
        assert math.isclose(r["end_to_end"], e2e("ours fp32") / e2e(r["peer"]))
    md = (out / "results.md").read_text()
    assert res["command"] in md and "| ours fp32 |" in md and "demo.fp16.engine" in md
    assert (out / "chart.png").read_bytes()[:4] == b"\x89PNG"


def test_ultralytics_onnx_is_reused(demo_pt, tmp_path, monkeypatch):
    pytest.importorskip("ultralytics")
    from benchmarks import artifacts

    src = artifacts.ModelSource("demo", demo_pt)
    first = artifacts.ultralytics_onnx(src, (320, 320), False, tmp_path, False, log=lambda m: None)
    assert first.is_file() and not (first.parent / demo_pt.name).exists()  # the copied weights are removed
    import ultralytics

    monkeypatch.setattr(ultralytics, "YOLO", None)  # a second export would fail
    assert artifacts.ultralytics_onnx(src, (320, 320), False, tmp_path, False, log=lambda m: None) == first


def test_random_checkpoint_is_an_exportable_detect_model(tmp_path):
    pytest.importorskip("ultralytics")
    from benchmarks.artifacts import random_checkpoint
    from exporters.checkpoint import inspect_checkpoint

    info = inspect_checkpoint(random_checkpoint("yolo11n", tmp_path))
    assert info.arch == "yolo11n.yaml" and len(info.names) == 80 and info.head == "Detect"


def test_markdown_reports_missed_targets():
    res = {"command": "python -m benchmarks.run", "env": {"cpu": "X", "logical_cores": 2, "versions": {}},
           "settings": {"batch": [1], "warmup": 1, "iters": 2, "block": 1, "conf": 0.25, "iou": 0.45,
                        "device": "cpu", "accuracy": False},
           "groups": [], "comparisons": [{"group": "g", "name": "fp32: 384x640 / 640x640", "ratio": 0.61}],
           "targets": [stats.Target("t", "a", "b", 0.5).verdict(0.6), stats.Target("u", "a", "b", 0.5).verdict(None)]}
    md = report.markdown(res)
    assert "| 0.600 | **missed** by 0.100 (+20.0 %) |" in md and "0.610×" in md and "not measured" in md


def test_int8_speed_times_each_model_in_its_own_process_and_prints_the_machine(demo_onnx, tmp_path, capsys):
    """Two forms (FP32 and a copy) run as two child processes of their own; the machine line comes first."""
    import json
    import os
    import shutil

    from benchmarks.int8_speed import main

    shutil.copy2(demo_onnx, tmp_path / "m.onnx")
    shutil.copy2(demo_onnx, tmp_path / "m.fp16.onnx")  # any second model will do for the harness
    out = tmp_path / "speed.json"
    assert main(["--deploy", str(tmp_path), "--stem", "m", "--rounds", "2", "--iters", "2", "--warmup", "1",
                 "--threads", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("machine: ") and "load average at start" in text and "its own process" in text
    d = json.loads(out.read_text())
    pids = d["env"]["pids"]
    assert set(pids) == {"fp32", "fp16"} and len(set(pids.values())) == 2 and os.getpid() not in pids.values()
    assert [r["model"] for r in d["rows"]] == ["fp32", "fp16"] and d["rows"][0]["speedup_vs_fp32"] == 1.0
    assert d["env"]["calls_per_model"] == 4 and d["env"]["machine"]["load_avg_end"] is not None


def test_thread_safety_benchmark_prints_each_candidate_against_the_shipped_design(demo_onnx, capsys):
    from benchmarks.thread_safety import CANDIDATES, main

    assert main(["--model", str(demo_onnx), "--calls", "3", "--threads", "2"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.split()[:1] and line.split()[0] in CANDIDATES]
    assert [r.split()[0] for r in rows] == list(CANDIDATES) and rows[0].count("1.000x") == 2
    assert "the gate alone:" in out and "load average before" in out
