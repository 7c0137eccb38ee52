"""The benchmark harness: its arithmetic, its rounds, its worker processes, its output schema. Never timings."""
from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

import random
from collections import Counter

from benchmarks import report, stats
from benchmarks.artifacts import _cached, _save, form_of, form_rank
from benchmarks.candidates import OURS, PEER, Candidate
from benchmarks.harness import Group, Timing, group_ratios, measure, native_imgsz, summarize_group, to_16x9
from benchmarks.run import build_parser, main, resolve
from benchmarks.worker import CallTimes, FrameSet, batch_frames

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
    assert t.verdict(0.30) == {"target": "int8 vs pt", "limit": 0.35, "op": "<=", "ratio": 0.3, "met": True}
    missed = t.verdict(0.42)
    assert missed["met"] is False and missed["missed_by"] == pytest.approx(0.07) and missed["missed_by_pct"] == 20.0
    assert t.verdict(0.35)["met"] is True  # the limit itself meets it
    assert t.verdict(None)["met"] is None
    up = stats.Target("served vs local", "served", "local", 0.8, at_least=True)
    assert up.verdict(0.85)["met"] is True and up.verdict(0.8)["met"] is True
    low = up.verdict(0.6)
    assert low["met"] is False and low["op"] == ">=" and low["missed_by"] == pytest.approx(0.2) and low["missed_by_pct"] == 25.0


def test_median_of_round_medians_with_min_and_spread():
    rounds = [[10.0, 11.0, 30.0], [12.0, 12.0, 12.0], [9.0, 100.0, 8.0], [20.0, 21.0, 22.0]]
    s = stats.summarize_rounds(rounds)
    assert s["rounds"] == [11.0, 12.0, 9.0, 21.0]
    assert s["p50"] == 11.5  # the median of the four round medians, not of the 12 calls pooled
    assert s["p50_all"] == 12.0 and s["n"] == 12
    assert s["min"] == 9.0 and s["max"] == 21.0 and s["spread_pct"] == pytest.approx(12.0 / 11.5 * 100)
    assert s["p95"] == pytest.approx(float(np.percentile(sum(rounds, []), 95)))  # tails over every call
    with pytest.raises(ValueError):
        stats.summarize_rounds([[1.0], []])


@pytest.mark.parametrize("harness,alone,agrees,ratio", [(10.5, 10.0, True, 1.05), (9.0, 10.0, True, 0.9),
                                                        (11.01, 10.0, False, 1.101), (8.0, 10.0, False, 0.8)])
def test_selfcheck_agreement(harness, alone, agrees, ratio):
    a = stats.agreement(harness, alone, tolerance=0.10)
    assert a["agrees"] is agrees and a["ratio"] == pytest.approx(ratio)
    assert stats.agreement(1.0, 0.0)["agrees"] is None


def test_busy_is_load_above_the_cores():
    assert stats.busy([2.5, 1.0, 1.0], 2) and not stats.busy([2.0, 9.0, 9.0], 2)
    assert not stats.busy(None, 2) and not stats.busy([5.0], None)

# ---------------------------------------------------------------- harness (fake runners: no models, no clocks)


class _FakeWorker:
    """Stands for a worker process: fixed stage times, and a log of (name, start, n, settle) per turn."""

    def __init__(self, name, log, ms, size=(640, 640)):
        self.name, self.log, self.ms, self.size = name, log, ms, size

    def run(self, start, n, settle):
        self.log.append((self.name, start, n, settle))
        pre, inf, post = self.ms
        return [CallTimes(pre, inf, post, pre + inf + post + 1.0)] * n, {self.size: n}


def _group(batch=1, names=("ours a", "peer p")):
    frames = [np.full((4, 4, 3), i, np.uint8) for i in range(5)]
    cands = [Candidate(n, OURS if n.startswith("ours") else PEER, "fp32", Path(n), (640, 640)) for n in names]
    return Group("g", "g", "m", False, batch, frames, "five frames", cands)


def test_rounds_visit_everyone_once_in_a_shuffled_order_on_the_same_frames():
    log = []
    names = ["ours a", "ours b", "peer p", "peer q"]
    runners = {n: _FakeWorker(n, log, (1.0, 8.0, 1.0)) for n in names}
    timing = Timing(rounds=6, iters=3, warmup=0, settle=2, pause=0.0)
    times, sizes, orders = measure(runners, timing, random.Random(7))
    assert all(sorted(o) == sorted(names) for o in orders)  # every candidate once per round
    assert len({tuple(o) for o in orders}) > 1  # the order changes between rounds
    assert [n for n, *_ in log] == [n for o in orders for n in o]  # run in that order
    for r in range(6):  # round r: every candidate on the frames of calls r*3 .. r*3+2, after 2 untimed calls
        assert {(start, n, settle) for _, start, n, settle in log[r * 4:(r + 1) * 4]} == {(r * 3, 3, 2)}
    assert {k: [len(c) for c in v] for k, v in times.items()} == {n: [3] * 6 for n in names}
    assert sizes["ours a"] == Counter({(640, 640): 18})
    again = measure(runners, timing, random.Random(7))[2]
    assert again == orders  # the seed (recorded in the results) reproduces the orders


def test_summary_is_per_frame_and_ratios_use_the_round_figure():
    g = _group(batch=4)
    runners = {"ours a": _FakeWorker("ours a", [], (1.0, 8.0, 1.0)), "peer p": _FakeWorker("peer p", [], (2.0, 16.0, 2.0))}
    times, _, _ = measure(runners, Timing(rounds=3, iters=2, warmup=0, settle=0, pause=0.0), random.Random(0))
    summary = summarize_group(g, times)
    a = summary["ours a"]["per_frame_ms"]
    assert a["inference"]["p50"] == 2.0 and a["end_to_end"]["p50"] == 2.75  # (1 + 8 + 1 + 1) / 4
    assert a["overhead"]["p50"] == 0.25  # the wall time outside the three stages, per frame
    assert summary["ours a"]["fps"] == pytest.approx(1000 / 2.75) and summary["ours a"]["calls"] == 6
    (row,) = group_ratios(g, summary)
    assert row["ours"] == "ours a" and row["peer"] == "peer p"
    assert row["end_to_end"] == pytest.approx(11.0 / 21.0) and row["inference"] == 0.5


def _group_run(g, sizes):
    from benchmarks.harness import GroupRun

    runners = {c.name: _FakeWorker(c.name, [], (1.0, 8.0, 1.0), sizes[c.name]) for c in g.running()}
    times, seen, orders = measure(runners, Timing(rounds=2, iters=2, warmup=0, settle=0, pause=0.0), random.Random(0))
    return GroupRun(times, seen, orders, [[0.5, 0.5, 0.5], [3.5, 1.0, 1.0]], {})


def test_group_result_states_the_size_each_candidate_ran_and_the_load(monkeypatch):
    from benchmarks.results import busy_warnings, group_result

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    g = _group(names=("ours a", "peer p"))
    g.imgsz = (384, 640)
    res = group_result(g, _group_run(g, {"ours a": (384, 640), "peer p": (640, 640)}))
    by = {c["name"]: c for c in res["candidates"]}
    assert by["ours a"]["input"] == "384x640" and by["peer p"]["input"] == "640x640"
    assert any("peer p ran at 640x640, not the group's 384x640" in n for n in res["notes"])
    assert res["busy"] is True  # the load after timing (3.5) was above the 2 cores
    warn = busy_warnings({"env": {"logical_cores": 2, "load_avg_start": [0.1], "load_avg_end": [0.2]},
                          "groups": [res]})
    assert len(warn) == 1 and "rerun on a quiet machine" in warn[0]


def test_batch_frames_cycles():
    frames = list(range(3))
    assert [batch_frames(frames, i, 2) for i in range(3)] == [[0, 1], [2, 0], [1, 2]]


def test_frame_set_round_trip_is_read_only_and_shared(tmp_path):
    frames = [np.random.default_rng(i).integers(0, 255, shape, np.uint8) for i, shape in
              enumerate([(48, 64, 3), (720, 1280, 3), (30, 30, 3)])]
    fs = FrameSet.write(frames, tmp_path / "f.npy", "three")
    back = fs.load()
    assert len(fs) == 3 and all(np.array_equal(a, b) for a, b in zip(frames, back))
    assert not back[1].flags.writeable  # a candidate cannot change the frames the others get


@pytest.mark.parametrize("shape", [(480, 480, 3), (360, 640, 3), (100, 1000, 3), (1080, 1920, 3)])
def test_to_16x9(shape):
    assert to_16x9(np.zeros(shape, np.uint8)).shape == (720, 1280, 3)


@pytest.mark.parametrize("frame,imgsz", [((720, 1280), (640, 640)), ((720, 1280), (320, 320)), ((480, 640), (640, 640)),
                                         ((1080, 1920), (640, 640)), ((384, 512), (640, 640)), ((500, 333), (640, 640)),
                                         ((720, 1280), (384, 640))])
def test_native_size_is_what_ultralytics_letterbox_makes(frame, imgsz):
    pytest.importorskip("ultralytics")
    from ultralytics.data.augment import LetterBox

    out = LetterBox(imgsz, auto=True, stride=32)(image=np.zeros((*frame, 3), np.uint8))
    assert native_imgsz(frame, imgsz) == out.shape[:2]


def test_native_size_examples():
    assert native_imgsz((720, 1280), (640, 640)) == (384, 640)
    assert native_imgsz((720, 1280), (320, 320)) == (192, 320)


@pytest.mark.parametrize("name,form", [("demo.onnx", "fp32"), ("demo.int8-cpu.onnx", "int8-cpu"),
                                       ("m.int8.onnx", "int8"), ("m.fp16.onnx", "fp16"), ("m.end2end.onnx", "end2end"),
                                       ("m.fp16.engine", "trt-fp16"), ("m.plan", "trt"), ("m_openvino", "ov-fp32"),
                                       ("m.int8_openvino", "ov-int8")])
def test_form_of(name, form):
    assert form_of(name)[0] == form


def test_form_order():
    forms = ["trt-fp16", "int8-cpu", "fp32", "end2end", "int8", "fp16"]
    assert sorted(forms, key=form_rank) == ["fp32", "fp16", "int8", "int8-cpu", "end2end", "trt-fp16"]


def test_artifacts_found_by_the_table(tmp_path):
    """A build folder's artifacts are the table's kinds at their paths (a folder kind too), nothing else."""
    from benchmarks.artifacts import _artifacts_in
    from engine.artifacts import FP32_ONNX, INT8_CPU

    for name in ("m.onnx", "m.int8-cpu.onnx", "m.calib.json", "m.accuracy.md", "other.onnx"):
        (tmp_path / name).write_bytes(b"x")
    assert _artifacts_in(tmp_path, "m") == [FP32_ONNX.path(tmp_path, "m"), INT8_CPU.path(tmp_path, "m")]


def test_build_cache_manifest(tmp_path):
    f = tmp_path / "m.onnx"
    f.write_bytes(b"x")
    d = tmp_path / "m_openvino_model"  # a folder artifact (an OpenVINO IR) is cached too
    d.mkdir()
    _save(tmp_path, {"k": 1}, [f, d], ["a note"])
    assert _cached(tmp_path, {"k": 1}) == [f, d]
    assert _cached(tmp_path, {"k": 2}) is None  # another model, size or version: build again
    f.unlink()
    assert _cached(tmp_path, {"k": 1}) is None  # a file gone: build again


def test_our_openvino_irs_are_candidates(tmp_path):
    from benchmarks.artifacts import _artifacts_in

    for name in ("m.onnx", "m.int8-cpu.onnx", "m.calib.json"):
        (tmp_path / name).write_bytes(b"x")
    for name in ("m_openvino", "m.int8_openvino", "other_openvino", "m_openvino_old"):
        (tmp_path / name).mkdir()
    got = [p.name for p in _artifacts_in(tmp_path, "m")]
    assert got == ["m.onnx", "m_openvino", "m.int8_openvino", "m.int8-cpu.onnx"]  # the artifact table's order
    _save(tmp_path, {"k": 1}, [tmp_path / "m_openvino"], [])
    assert _cached(tmp_path, {"k": 1}) == [tmp_path / "m_openvino"]  # a folder is an artifact too

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
    assert a.imgsz == (640, 640) and a.native == "auto" and a.arch == ["yolo11n", "yolo11m"]
    assert a.peers == {"pt", "onnx", "openvino", "openvino-int8"} and a.batch == [1] and a.demo is True
    assert a.streams == [1, 2, 4] and a.rounds == 5 and isinstance(a.seed, int)


def test_resolve_user_weights_drop_the_random_archs(tmp_path):
    a = _args("--weights", str(tmp_path / "w.pt"), "--imgsz", "384,640", "--batch", "4,1", "--peers", "none",
              "--streams", "none", "--seed", "3")
    assert a.arch == [] and a.native == "auto" and a.batch == [1, 4] and a.peers == set() and a.demo is False
    assert a.streams == [] and a.seed == 3
    b = _args("--no-demo", "--arch", "yolov8n", "--native", "none")
    assert b.arch == ["yolov8n"] and b.demo is False and b.native is None
    assert _args("--native", "384,640").native == (384, 640)


def test_bad_flags_exit_2(tmp_path, capsys):
    assert main(["--peers", "tensorflow", "--out", str(tmp_path)]) == 2
    assert "error: --peers" in capsys.readouterr().err
    assert main(["--rounds", "0", "--out", str(tmp_path)]) == 2
    assert "--rounds" in capsys.readouterr().err
    assert main(["--models", str(tmp_path / "nope.onnx"), "--out", str(tmp_path), "--arch", "none"]) == 2
    err = capsys.readouterr().err
    assert "nope.onnx" in err and "fix:" in err
    assert main(["--conf", "1.5", "--out", str(tmp_path)]) == 2  # ran every worker and exited 0 before
    assert "--conf 1.5" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert main(["--out", str(tmp_path / "afile")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_the_speed_and_verify_clis_check_their_flags_first(tmp_path, capsys):
    """int8_speed --rounds 0 loaded and warmed every model, then a traceback; verify --engine X.onnx an
    AttributeError traceback."""
    from benchmarks import int8_speed, verify

    assert int8_speed.main(["--deploy", str(tmp_path), "--rounds", "0"]) == 2
    assert "--rounds 0" in capsys.readouterr().err
    assert verify.main(["--out", str(tmp_path / "v"), "--engine", str(tmp_path / "m.onnx")]) == 2
    assert "is not a TensorRT engine" in capsys.readouterr().err and not (tmp_path / "v").exists()


def test_the_tracking_benchmark_checks_its_flags_first(tmp_path, capsys):
    """A missing --onnx ended in a bare SystemExit message (exit 1), no fix line."""
    from benchmarks import tracking

    model = tmp_path / "m.onnx"
    assert tracking.main(["--onnx", str(model), "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "m.onnx not found" in err and "fix:" in err
    model.write_bytes(b"x")
    for argv, says in ((["--frames", "0"], "--frames 0"), (["--seeds", "1,a"], "--seeds '1,a'"),
                       (["--weights", str(tmp_path / "w.pt")], "w.pt not found")):
        assert tracking.main(["--onnx", str(model), "--out", str(tmp_path / "t"), *argv]) == 2
        assert says in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_plan_square_and_native_groups(tmp_path, monkeypatch):
    """The square group runs everyone at --imgsz (the .pt with rect=False); the native group everyone at the size
    Ultralytics' .pt picks for 16:9 frames (ours through a build at that size, the .pt by its own letterbox)."""
    from benchmarks import plan as planner
    from benchmarks.artifacts import Built

    def fake_build(src, imgsz, dynamic, root, rebuild, log):
        d = tmp_path / f"{imgsz[0]}x{imgsz[1]}"
        d.mkdir(exist_ok=True)
        files = [d / "demo.onnx", d / "demo.int8-cpu.onnx", d / "demo.fp16.onnx"]
        for f in files:
            f.write_bytes(b"x")
        return Built(files, [], False)

    exported = []
    monkeypatch.setattr(planner, "build_ours", fake_build)
    monkeypatch.setattr(planner, "ultralytics_export",
                        lambda src, peer, imgsz, *a: exported.append((peer.key, tuple(imgsz))) or tmp_path / peer.key)
    monkeypatch.setattr("benchmarks.candidates.PeerKind.missing", lambda self: None)
    args = _args("--arch", "none", "--out", str(tmp_path))
    frames = planner.Frames([np.zeros((480, 640, 3), np.uint8), np.zeros((384, 512, 3), np.uint8)], "two", None)
    square, native = planner.plan(args, frames, lambda m: None)
    assert square.kind == "square" and square.imgsz == (640, 640)
    assert {c.name: (c.imgsz, c.rect) for c in square.candidates if c.role == PEER} == {
        "ultralytics .pt": ((640, 640), False), "ultralytics onnx": ((640, 640), False),
        "ultralytics openvino": ((640, 640), False), "ultralytics openvino int8": ((640, 640), False)}
    assert native.kind == "native" and native.imgsz == (384, 640)
    assert all(f.shape == (720, 1280, 3) for f in native.frames)
    by = {c.name: c for c in native.candidates}
    assert by["ultralytics .pt"].imgsz == (640, 640) and by["ultralytics .pt"].rect is None  # as a .pt user runs it
    assert by["ultralytics openvino int8"].imgsz == (384, 640) and by["ultralytics openvino int8"].rect is False
    assert by["ours fp32"].imgsz == (384, 640) and not by["ours fp32"].reference
    assert by["ours fp32 640x640"].reference and by["ours int8-cpu 640x640"].reference
    assert "ours fp16 640x640" not in by  # the square builds join only as the comparison's reference rows
    assert ("openvino-int8", (384, 640)) in exported and ("onnx", (640, 640)) in exported


def _result_group(kind, e2e, batch=1):
    cands = []
    for name, (role, form, ms, ref) in e2e.items():
        cands.append({"name": name, "role": role, "form": form, "reference": ref, "skipped": None,
                      "per_frame_ms": {"end_to_end": {"p50": ms}}, "backend": "onnxruntime"})
    return {"id": kind, "kind": kind, "batch": batch, "candidates": cands}


def test_targets_are_ratios_to_peers_and_misses_show():
    from benchmarks.targets import verdicts

    g = _result_group("square", {"ours int8-cpu": ("ours", "int8-cpu", 10.0, False),
                                 "ours fp32": ("ours", "fp32", 20.0, False),
                                 "ultralytics .pt": ("peer", "pt", 40.0, False),
                                 "ultralytics openvino int8": ("peer", "openvino-int8", 8.0, False)})
    v = {t["target"]: t for t in verdicts(g)}
    assert v["INT8 CPU form vs Ultralytics .pt"]["ratio"] == 0.25 and v["INT8 CPU form vs Ultralytics .pt"]["met"]
    miss = v["INT8 CPU form vs Ultralytics OpenVINO INT8"]
    assert miss["met"] is False and miss["ratio"] == 1.25 and miss["missed_by_pct"] == 25.0
    assert v["INT8 CPU form vs Ultralytics ONNX"]["met"] is None  # no ONNX peer: printed as not measured
    assert "rect model vs square model on the same frames (FP32)" not in v  # a native-group goal
    native = _result_group("native", {"ours fp32": ("ours", "fp32", 6.0, False),
                                      "ours fp32 640x640": ("ours", "fp32", 10.0, True)})
    rect = {t["target"]: t for t in verdicts(native)}["rect model vs square model on the same frames (FP32)"]
    assert rect["ratio"] == 0.6 and rect["met"] is True
    assert verdicts(_result_group("square", {}, batch=4)) == []
    head, rows = report.target_rows(verdicts(g))
    assert any("**missed** by 0.250 (25.0 %)" in r for r in rows) and any("not measured" in r[4] for r in rows)


def test_worker_is_spawned_and_loads_before_timing(demo_onnx, tmp_path):
    """One process per candidate, started by spawn (a fresh interpreter), never fork (a copy of this one)."""
    import os

    import psutil

    from benchmarks.worker import Worker, WorkerError, WorkerSpec

    frames = FrameSet.write([np.full((360, 640, 3), 90, np.uint8)] * 3, tmp_path / "f.npy", "three")
    with Worker(WorkerSpec("ours fp32", OURS, demo_onnx, (320, 320), frames, warmup=1)) as w:
        pid = w.info["pid"]
        assert pid != os.getpid() and w.info["backend"] == "onnxruntime"
        assert "spawn_main" in " ".join(psutil.Process(pid).cmdline())  # a forked child runs this test's command line
        times, sizes = w.run(start=5, n=3, settle=1)
        assert len(times) == 3 and all(t.end_to_end >= t.inference > 0 for t in times)
        assert sizes == {(320, 320): 3}
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    with pytest.raises(WorkerError, match="(?s)ours x.*not-a-model"):
        with Worker(WorkerSpec("ours x", OURS, tmp_path / "not-a-model.onnx", (320, 320), frames)):
            pass


def test_time_alone_in_a_fresh_process(demo_onnx, tmp_path):
    from benchmarks.worker import WorkerSpec, in_fresh_process, time_alone

    frames = FrameSet.write([np.zeros((100, 120, 3), np.uint8)], tmp_path / "f.npy", "one")
    times = in_fresh_process(time_alone, WorkerSpec("ours fp32", OURS, demo_onnx, (320, 320), frames, warmup=0), 4)
    assert len(times) == 4 and all(isinstance(t, CallTimes) for t in times)


# ---------------------------------------------------------------- a tiny real run


def test_tiny_run_schema_ratios_and_outputs(demo_onnx, demo_pt, tmp_path, capsys):
    pytest.importorskip("ultralytics")
    engine = tmp_path / "demo.fp16.engine"
    engine.write_bytes(b"not an engine")
    out = tmp_path / "bench"
    argv = ["--models", f"{demo_onnx},{engine}", "--weights", str(demo_pt), "--peers", "pt,onnx", "--rounds", "2",
            "--iters", "2", "--warmup", "1", "--settle", "1", "--pause", "0", "--max-frames", "2", "--streams", "none",
            "--seed", "5", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "ours fp32" in stdout and "ultralytics .pt" in stdout and "ultralytics onnx" in stdout
    res = json.loads((out / "results.json").read_text())
    assert set(res) >= {"schema", "command", "env", "settings", "groups", "streams", "targets", "skipped", "warnings"}
    assert res["command"].startswith("python -m benchmarks.run --models") and res["settings"]["seed"] == 5
    assert {"cpu", "logical_cores", "gpus", "versions", "load_avg_start", "load_avg_end"} <= set(res["env"])
    assert "onnxruntime" in res["env"]["versions"]
    (g,) = res["groups"]
    assert len(g["load_avg"]) == 2 and isinstance(g["busy"], bool)  # the load before and after its timing
    assert len(g["orders"]) == 2 and all(sorted(o) == sorted(["ours fp32", "ultralytics .pt", "ultralytics onnx"])
                                         for o in g["orders"])
    by = {c["name"]: c for c in g["candidates"]}
    assert by["ours trt-fp16"]["skipped"] and res["skipped"][0]["file"] == "demo.fp16.engine"
    assert by["ultralytics onnx"]["path"].startswith(str(out / "artifacts"))  # Ultralytics' own export, made here
    pids = {by[n]["worker"]["pid"] for n in ("ours fp32", "ultralytics .pt", "ultralytics onnx")}
    assert len(pids) == 3  # one process each
    for name in ("ours fp32", "ultralytics .pt", "ultralytics onnx"):
        c = by[name]
        assert c["calls"] == 4 and c["fps"] > 0 and c["input"] == "320x320" and c["ran"] == {"320x320": 4}
        for stage in stats.STAGES:
            s = c["per_frame_ms"][stage]
            assert s["n"] == 4 and len(s["rounds"]) == 2 and s["min"] <= s["p50"] <= s["max"]
    assert [(r["ours"], r["peer"]) for r in g["ratios"]] == [("ours fp32", "ultralytics .pt"),
                                                            ("ours fp32", "ultralytics onnx")]
    e2e = lambda n: by[n]["per_frame_ms"]["end_to_end"]["p50"]  # noqa: E731
    for r in g["ratios"]:
        assert math.isclose(r["end_to_end"], e2e("ours fp32") / e2e(r["peer"]))
    goal = {t["target"]: t for t in res["targets"]}["our FP32 vs Ultralytics ONNX"]
    assert goal["ratio"] == pytest.approx(e2e("ours fp32") / e2e("ultralytics onnx"), abs=1e-4)
    raw = json.loads((out / "raw.json").read_text())
    assert len(raw["groups"][g["id"]]["ours fp32"]) == 2  # every call of both rounds, beside the summary
    md = (out / "results.md").read_text()
    assert res["command"] in md and "| ours fp32 |" in md and "demo.fp16.engine" in md and "| 320x320 |" in md
    assert (out / "chart.png").read_bytes()[:4] == b"\x89PNG"


def test_ultralytics_export_is_reused(demo_pt, tmp_path, monkeypatch):
    pytest.importorskip("ultralytics")
    from benchmarks import artifacts, worker
    from benchmarks.candidates import PEER_BY_KEY

    src = artifacts.ModelSource("demo", demo_pt)
    onnx = PEER_BY_KEY["onnx"]
    first = artifacts.ultralytics_export(src, onnx, (320, 320), False, tmp_path, False, log=lambda m: None)
    assert first.is_file() and not (first.parent / demo_pt.name).exists()  # the copied weights are removed
    monkeypatch.setattr(worker, "in_fresh_process", None)  # a second export would fail
    assert artifacts.ultralytics_export(src, onnx, (320, 320), False, tmp_path, False, log=lambda m: None) == first


def test_random_checkpoint_is_an_exportable_detect_model(tmp_path):
    pytest.importorskip("ultralytics")
    from benchmarks.artifacts import random_checkpoint
    from exporters.checkpoint import inspect_checkpoint

    info = inspect_checkpoint(random_checkpoint("yolo11n", tmp_path))
    assert info.arch == "yolo11n.yaml" and len(info.names) == 80 and info.head == "Detect"


def test_a_random_weight_model_gets_its_cpu_int8_forms_for_timing(tmp_path):
    """The build's gate withholds the INT8 forms of a model that detects nothing; the benchmark makes them
    without it (timing only), so the random-weight groups still time our CPU's INT8 forms."""
    pytest.importorskip("ultralytics")
    from benchmarks.artifacts import _timing_only_int8, random_checkpoint
    from benchmarks.plan import RANDOM_FORMS
    from engine import Detector
    from engine.artifacts import INT8_CPU, INT8_IR, kind_of
    from exporters.config import ExportConfig
    from exporters.onnx_export import export_onnx

    onnx_path = export_onnx(ExportConfig(weights=random_checkpoint("yolo11n", tmp_path), imgsz=(160, 160),
                                         out=tmp_path / "b"), log=lambda m: None).path
    made = _timing_only_int8(onnx_path, log=lambda m: None)
    cpu = INT8_CPU.path(onnx_path.parent, onnx_path.stem)
    assert made[0] == cpu.name and cpu.is_file() and kind_of(cpu).form in RANDOM_FORMS
    want = [cpu]
    if all(importlib.util.find_spec(m) for m in ("openvino", "nncf")):
        ir = INT8_IR.path(onnx_path.parent, onnx_path.stem)
        assert made[1] == ir.name and kind_of(ir).form in RANDOM_FORMS
        want.append(ir)
    frame = np.full((120, 160, 3), 90, np.uint8)
    for path in want:
        with Detector(path, device="cpu") as d:
            assert d.metadata.precision.value == "int8" and len(d(frame)) == 0  # runs; random weights find nothing
    assert _timing_only_int8(onnx_path, log=lambda m: None) == []  # what exists is kept


def test_markdown_reports_missed_targets_and_busy_runs():
    res = {"command": "python -m benchmarks.run", "env": {"cpu": "X", "logical_cores": 2, "versions": {}},
           "settings": {"batch": [1], "warmup": 1, "iters": 2, "rounds": 3, "settle": 1, "pause": 0.2, "seed": 1,
                        "conf": 0.25, "iou": 0.45, "device": "cpu", "accuracy": False},
           "groups": [], "warnings": ["the machine's load average was 3.10 at the start of the run"],
           "targets": [stats.Target("t", "a", "b", 0.5).verdict(0.6), stats.Target("u", "a", "b", 0.5).verdict(None)]}
    md = report.markdown(res)
    assert "| 0.600 | **missed** by 0.100 (20.0 %) |" in md and "not measured" in md
    assert "**Warning: the machine's load average was 3.10" in md


def test_selfcheck_times_each_candidate_alone_too(demo_onnx, tmp_path, capsys):
    from benchmarks import selfcheck

    out = tmp_path / "sc"
    rc = selfcheck.main(["--models", str(demo_onnx), "--peers", "none", "--rounds", "2", "--iters", "2", "--warmup", "1",
                         "--pause", "0", "--max-frames", "2", "--out", str(out), "--no-progress", "--standalone-runs", "3"])
    res = json.loads((out / "selfcheck.json").read_text())
    (row,) = res["rows"]
    assert rc == (0 if row["agrees"] else 1)  # a disagreement is the command's failure
    assert row["name"] == "ours fp32" and res["standalone_calls"] == 4 and row["tolerance"] == 0.1
    assert row["ratio"] == pytest.approx(row["harness_ms"] / row["standalone_ms"], abs=1e-4)
    assert selfcheck.parser().parse_args([]).standalone_runs == 5  # the default: it takes three slow runs to mislead
    runs = row["standalone_runs_ms"]  # three fresh processes alone (as asked), the figure their median
    assert res["standalone_runs"] == 3 and len(runs) == 3 and row["standalone_ms"] == sorted(runs)[1]
    assert res["standalone_calls_per_run"] == [2, 1, 1]  # the harness's 4 calls, split
    assert len(row["load_avg"]) == 6 and isinstance(row["busy"], bool)
    md = (out / "selfcheck.md").read_text()
    assert "| ours fp32 |" in md and "harness / alone" in md and res["command"] in md
    assert f"{row['standalone_ms']:.2f} ({', '.join(f'{x:.2f}' for x in runs)})" in md


def test_selfcheck_splits_its_calls_and_refuses_impossible_runs_before_any_work(tmp_path, capsys):
    from benchmarks import selfcheck

    assert selfcheck.split_calls(270, 3) == [90, 90, 90] and selfcheck.split_calls(10, 3) == [4, 3, 3]
    out = tmp_path / "sc"
    assert selfcheck.main(["--standalone-runs", "0", "--out", str(out), "--no-progress"]) == 2
    assert "--standalone-runs 0" in capsys.readouterr().err and not out.exists()

# ---------------------------------------------------------------- the multi-stream group


def test_stream_figures_per_camera():
    from benchmarks.streams import _per_camera

    stamps = {"cam0": [10.0, 10.5, 11.0, 12.0], "cam1": [10.2, 11.2, 12.0]}
    lat = {"cam0": [500.0, 40.0, 30.0, 20.0], "cam1": [400.0, 50.0, 60.0]}
    out = _per_camera(stamps, lat, {"cam0": 3, "cam1": 0})
    assert out["seconds"] == 2.0 and out["fps_total"] == 3.0  # 7 results: 6 intervals in 2 s
    assert [c["fps"] for c in out["per_camera"]] == [2.0, 1.5] and [c["dropped"] for c in out["per_camera"]] == [3, 0]
    assert out["latency_p50_ms"] == 40.0  # of 30, 20, 50, 60: the first second's results (the model's first calls) left out


def test_cameras_through_engine_stream_and_ultralytics(demo_onnx, demo_pt, tmp_path):
    pytest.importorskip("ultralytics")
    from benchmarks.streams import StreamSpec, _ours, _ultralytics, write_clip
    from benchmarks.worker import in_fresh_process

    frames = [np.full((720, 1280, 3), v, np.uint8) for v in (40, 120, 200)]
    clip = write_clip(frames, tmp_path / "cam0.mp4", seconds=1.0, fps=12)
    clips = (clip, write_clip(frames, tmp_path / "cam1.mp4", seconds=1.0, fps=12))
    fast = in_fresh_process(_ours, StreamSpec("ours fp32", OURS, demo_onnx, (320, 320), clips, False, 60))
    assert fast["workers"] == 2 and fast["input"] == "320x320"  # files at max rate: the automatic choice is a pool
    assert [c["frames"] for c in fast["per_camera"]] == [12, 12] and [c["dropped"] for c in fast["per_camera"]] == [0, 0]
    paced = in_fresh_process(_ours, StreamSpec("ours fp32", OURS, demo_onnx, (320, 320), clips, True, 60))
    assert all(0 < c["frames"] <= 12 and c["dropped"] >= 0 for c in paced["per_camera"])  # a camera drops what is late
    assert paced["seconds"] > 0.5  # read at the clip's 12 fps: about a second, not as fast as it decodes
    peer = in_fresh_process(_ultralytics, StreamSpec("ultralytics .pt", PEER, demo_pt, (320, 320), clips[:1], False, 60))
    assert peer["per_camera"][0]["camera"] == "cam0" and peer["per_camera"][0]["frames"] >= 10
    assert peer["fps_total"] > 0 and peer["input"] == "192x320"  # a .pt letterboxes 16:9 frames to 192x320 at 320

# ---------------------------------------------------------------- RESULTS.md refresh


def test_every_refresh_section_has_its_block_in_results_md():
    from benchmarks.refresh import RESULTS, SECTIONS

    text = RESULTS.read_text(encoding="utf-8")
    for s in SECTIONS:
        assert text.count(f"<!-- refresh:{s.key} begin -->") == 1 and text.count(f"<!-- refresh:{s.key} end -->") == 1


def test_refresh_writes_a_block_with_command_machine_and_load(tmp_path, monkeypatch):
    from benchmarks import refresh

    results = tmp_path / "RESULTS.md"
    results.write_text("# R\n\nanalysis\n\n<!-- refresh:ok begin -->\nold figures\n<!-- refresh:ok end -->\n\n"
                       "<!-- refresh:bad begin -->\nold\n<!-- refresh:bad end -->\nmore analysis\n")
    ok = refresh.Section("ok", "prints", (("-c", "print('| a | 1.5 |')"),))
    bad = refresh.Section("bad", "fails", (("-c", "import sys; sys.exit(3)"),))
    monkeypatch.setattr(refresh, "settle", lambda: None)  # no wait for the machine to quiet down
    monkeypatch.setattr(refresh, "SECTIONS", (ok, bad))
    assert refresh.main(["--results", str(results), "--out", str(tmp_path / "runs")]) == 1  # one section failed
    text = results.read_text()
    assert "old figures" not in text and "| a | 1.5 |" in text and "analysis" in text and "more analysis" in text
    ok_block = text[text.index("refresh:ok begin"):text.index("refresh:ok end")]
    assert "python -c" in ok_block and "load average" in ok_block and "Versions:" in ok_block and "(UTC)" in ok_block
    from benchmarks.env import source_commit

    commit = source_commit()  # the code that measured: this checkout's commit, + when edited
    assert commit and re.fullmatch(r"[0-9a-f]{10}\+?", commit) and f"commit {commit}" in ok_block
    bad_block = text[text.index("refresh:bad begin"):text.index("refresh:bad end")]
    assert "**Not measured:" in bad_block and "exited with 3" in bad_block and "old" not in bad_block.split("-->")[1]
    with pytest.raises(KeyError):
        refresh.replace_block(text, "missing", "x")
    assert refresh.demote("# T\n\n## G\ntext\n### H") == "#### G\ntext\n##### H"


def test_refresh_waits_for_the_previous_sections_load_to_decay():
    from benchmarks import refresh

    loads = iter([[3.0], [2.0], [0.4], [0.1]])
    slept: list[float] = []
    assert refresh.settle(60, slept.append, lambda: next(loads)) == [0.4] and len(slept) == 2
    slept.clear()
    assert refresh.settle(10, slept.append, lambda: [5.0]) == [5.0] and sum(slept) == 10  # never past max_s


def test_refresh_reads_a_resource_whose_build_withheld_an_artifact(tmp_path, monkeypatch):
    """The demo's build exits 3 (its INT8 TensorRT form withheld on 100 val images): the sections that read it
    still run; a build that failed (2) fails them."""
    from benchmarks import refresh

    results = tmp_path / "RESULTS.md"
    results.write_text("<!-- refresh:a begin -->\nold\n<!-- refresh:a end -->\n<!-- refresh:b begin -->\nold\n"
                       "<!-- refresh:b end -->\n<!-- refresh:c begin -->\nold\n<!-- refresh:c end -->\n")
    monkeypatch.setattr(refresh, "RESOURCES", {"withheld": ("-c", "import sys; sys.exit(3)"),
                                               "failed": ("-c", "import sys; sys.exit(2)")})
    monkeypatch.setattr(refresh, "settle", lambda: None)  # no wait for the machine to quiet down
    monkeypatch.setattr(refresh, "SECTIONS", (refresh.Section("a", "reads", (("-c", "print('measured')"),),
                                                              uses=("withheld",)),
                                              refresh.Section("b", "reads", (("-c", "print('measured')"),),
                                                              uses=("failed",)),
                                              refresh.Section("c", "misses", (("-c", "print('| x | 1.2 |'); exit(1)"),),
                                                              missed_rc=1)))
    assert refresh.main(["--results", str(results), "--out", str(tmp_path / "runs")]) == 1
    text = results.read_text()
    text, c = text.split("refresh:c begin")
    assert "| x | 1.2 |" in c and "**Target missed:" in c and "Not measured" not in c  # a miss keeps its figures
    a, b = text.split("refresh:b begin")
    assert "measured" in a and "Not measured" not in a
    assert "**Not measured:" in b and "exited with 2" in b and "measured\n" not in b


def test_a_build_with_withheld_artifacts_names_each_with_its_reason(tmp_path, monkeypatch):
    """Exit code 3: the build finished, and its report says what was withheld and why."""
    import subprocess as sp

    from benchmarks import artifacts
    from exporters.records import ArtifactRecord, Status, write_report

    def fake_build(cmd, **kw):
        write_report(tmp_path / "build_report.json", [
            ArtifactRecord("onnx", "FP32 ONNX", Status.DELIVERED, tmp_path / "best.onnx"),
            ArtifactRecord("int8.onnx", "INT8 TensorRT form", Status.WITHHELD, reason="upper end 1.08 > bar 1"),
            ArtifactRecord("triton", "Triton model repository", Status.SKIPPED, reason="not asked for")],
            {"stem": "best"})
        return sp.CompletedProcess(cmd, 3)

    monkeypatch.setattr(artifacts.subprocess, "run", fake_build)
    rc, text = artifacts._build_cli(["--weights", str(tmp_path / "best.pt")], tmp_path, log=lambda m: None)
    assert (rc, text) == (3, "INT8 TensorRT form withheld: upper end 1.08 > bar 1")


def test_a_build_that_stops_part_way_still_benchmarks_what_it_delivered(tmp_path, monkeypatch, demo_pt):
    """A user's model whose optional artifact fails its check: the FP32 ONNX and the rest are benchmarked, with why."""
    from benchmarks import artifacts

    def cli(argv, folder, log):
        (folder / "best.onnx").write_bytes(b"x")
        (folder / "best.int8-cpu.onnx").write_bytes(b"x")
        return 2, "fp16 vs fp32 max |diff| boxes 4.716 px (tol 3.20) fix: build at 320"

    monkeypatch.setattr(artifacts, "_build_cli", cli)
    best = tmp_path / "best.pt"
    best.write_bytes(demo_pt.read_bytes())
    src = artifacts.ModelSource("best", best, tmp_path / "data.yaml")
    built = artifacts.build_ours(src, (640, 640), False, tmp_path / "cache", False, log=lambda m: None)
    assert [p.name for p in built.files] == ["best.onnx", "best.int8-cpu.onnx"]
    assert "exit code 2" in built.notes[0] and "4.716 px" in built.notes[0]

    monkeypatch.setattr(artifacts, "_build_cli", lambda argv, folder, log: (2, "cannot read best.pt"))
    with pytest.raises(artifacts.DeployError, match="did not write the FP32 ONNX.*cannot read best.pt"):
        artifacts.build_ours(src, (320, 320), False, tmp_path / "cache", False, log=lambda m: None)


def test_a_worker_that_dies_while_timed_takes_out_its_candidate_not_the_group(monkeypatch):
    from benchmarks import harness
    from benchmarks.worker import WorkerError

    class Dies(_FakeWorker):
        def run(self, start, n, settle):
            if start >= 2:
                raise WorkerError("its worker process ended (exit code -9)", "out of memory?")
            return super().run(start, n, settle)

    g = _group(names=("ours a", "peer p"))
    fakes = {"ours a": _FakeWorker("ours a", [], (1.0, 8.0, 1.0)), "peer p": Dies("peer p", [], (2.0, 16.0, 2.0))}

    class FakeWorkerCM:
        def __init__(self, spec):
            self.w = fakes[spec.name]
            self.info = {"pid": 1}

        def __enter__(self):
            return self

        def __exit__(self, *a):
            pass

        def run(self, *a):
            return self.w.run(*a)

    monkeypatch.setattr(harness, "Worker", FakeWorkerCM)
    logged = []
    opts = {"conf": 0.25, "iou": 0.45, "device": "cpu"}
    run = harness.run_group(g, None, Timing(rounds=3, iters=2, warmup=0, settle=0, pause=0.0), opts, logged.append)
    assert list(run.times) == ["ours a"] and len(run.times["ours a"]) == 3
    assert g.candidates[1].skip.startswith("failed while timed: its worker process ended")
    assert any("peer p failed while timed" in m for m in logged)


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


def test_int8_speed_with_workers_times_a_detector_pool_per_model(demo_onnx, tmp_path, capsys):
    """--workers 2: each model's process runs a DetectorPool of two one-thread detectors, two frames a call."""
    import json
    import shutil

    from benchmarks.int8_speed import main

    shutil.copy2(demo_onnx, tmp_path / "m.onnx")
    out = tmp_path / "speed.json"
    assert main(["--deploy", str(tmp_path), "--stem", "m", "--rounds", "1", "--iters", "2", "--warmup", "1",
                 "--threads", "1", "--workers", "2", "--json", str(out)]) == 0
    assert "2 detectors per model side by side (1 threads each)" in capsys.readouterr().out
    d = json.loads(out.read_text())
    assert d["env"]["workers"] == 2 and [r["model"] for r in d["rows"]] == ["fp32"]


def test_thread_safety_benchmark_prints_each_candidate_against_the_shipped_design(demo_onnx, capsys):
    from benchmarks.thread_safety import CANDIDATES, main

    assert main(["--model", str(demo_onnx), "--calls", "3", "--threads", "2"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.split()[:1] and line.split()[0] in CANDIDATES]
    assert [r.split()[0] for r in rows] == list(CANDIDATES) and rows[0].count("1.000x") == 2
    assert "the gate alone:" in out and "load average before" in out


def test_triton_load_starts_a_server_again_when_its_first_start_fails(monkeypatch, tmp_path):
    """A server start has failed under load before (pytriton's stub handshake): one retry, with its own log; a
    second failure raises."""
    from types import SimpleNamespace

    from scripts import triton_load as tl

    logs: list[Path] = []

    class Fake:
        def __init__(self, python, model, flags, log):
            logs.append(log)
            self.fails = len(logs) in fail_on

        def wait_ready(self):
            if self.fails:
                raise RuntimeError("engine.serve exited with 1")

        def stop(self):
            pass

    monkeypatch.setattr(tl, "Server", Fake)
    monkeypatch.setattr(tl, "_mode_flags", lambda job, args: [])
    args = SimpleNamespace(server_python=None, model=None, log_dir=tmp_path)
    fail_on = {1}
    assert isinstance(tl._started("off", args), Fake)
    assert [p.name for p in logs] == ["triton_load_off.log", "triton_load_off.try2.log"]
    logs.clear()
    fail_on = {1, 2}
    with pytest.raises(RuntimeError, match="exited"):
        tl._started("off", args)
