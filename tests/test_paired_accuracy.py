"""benchmarks.paired_accuracy: any models on one labelled split, drops and differences with paired intervals."""
from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import paired_accuracy as pa
from engine.errors import ConfigError, ModelLoadError


def test_an_entry_is_name_equals_an_existing_path(tmp_path):
    f = tmp_path / "m.onnx"
    f.write_bytes(b"x")
    assert pa.entry(f"cpu={f}") == pa.Entry("cpu", f, False)
    assert pa.entry(f"ov={f}", peer=True).peer
    with pytest.raises(ConfigError, match="NAME=PATH"):
        pa.entry(str(f))
    with pytest.raises(ConfigError, match="NAME=PATH"):
        pa.entry(f"a b={f}")
    with pytest.raises(ModelLoadError, match="gone.onnx not found .model 'cpu'"):
        pa.entry(f"cpu={tmp_path / 'gone.onnx'}")


def test_pairs_name_two_different_models():
    assert pa.pairs(["cpu:ov", "trt:ov"], ["fp32", "cpu", "trt", "ov"]) == [("cpu", "ov"), ("trt", "ov")]
    for bad in ("cpu", "cpu:nope", "cpu:cpu"):
        with pytest.raises(ConfigError, match="two different model names"):
            pa.pairs([bad], ["fp32", "cpu", "ov"])


def test_interval_is_the_central_share_of_the_resamples():
    iv = pa.interval(1.5, np.arange(101, dtype=float))
    assert iv.value == 1.5
    assert iv.bounds == {90: (5.0, 95.0), 95: (2.5, 97.5)}
    assert iv.text() == "+1.50 [+5.00, +95.00] [+2.50, +97.50]"


def test_the_same_model_twice_differs_by_exactly_nothing(demo_onnx, small_data, tmp_path, capsys):
    """Paired: one model under two names has a zero drop and a zero-width interval on every resample (an
    unpaired bootstrap would give each its own resamples and a spread around zero)."""
    out = tmp_path / "r" / "report.json"
    rc = pa.main(["--data", str(small_data), "--imgsz", "320", "--ref", f"a={demo_onnx}", "--model", f"b={demo_onnx}",
                  "--vs", "b:a", "--vs", "b:a", "--bootstrap", "100", "--out", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["images"] == 12 and report["reference"] == "a"
    assert report["models"]["a"]["map50_95"] == report["models"]["b"]["map50_95"] > 0.5
    drop = report["models"]["b"]["drop"]
    assert drop["points"] == 0 and all(v == [0.0, 0.0] for v in drop["intervals"].values())
    assert report["differences"] == [{"a": "b", "b": "a", "points": 0.0,
                                      "intervals": {"90": [0.0, 0.0], "95": [0.0, 0.0]}}]
    printed = capsys.readouterr().out
    assert "| b | ours |" in printed and printed.count("b minus a (positive: b ahead): +0.00 [+0.00, +0.00]") == 1
    assert not list(out.parent.glob("*.tmp"))


def test_a_worse_model_shows_a_positive_drop(demo_onnx, small_data, tmp_path):
    """A model that finds nothing loses all of the reference's mAP, and the difference says who is ahead."""
    pytest.importorskip("onnx")
    import onnx
    from onnx import helper

    m = onnx.load(str(demo_onnx))
    out_name = m.graph.output[0].name
    for n in m.graph.node:  # the class scores (rows 4:) times zero: every score 0, nothing detected
        for k, o in enumerate(n.output):
            if o == out_name:
                n.output[k] = out_name + "_raw"
    m.graph.initializer.append(helper.make_tensor("mask", onnx.TensorProto.FLOAT, [1, 7, 1],
                                                  [1, 1, 1, 1, 0, 0, 0]))
    m.graph.node.append(helper.make_node("Mul", [out_name + "_raw", "mask"], [out_name]))
    blind = tmp_path / "blind.onnx"
    onnx.save(m, str(blind))
    report = pa.measure(small_data, 320, [pa.Entry("ref", demo_onnx), pa.Entry("blind", blind)],
                        [("ref", "blind")], rounds=20, log=lambda s: None)
    drop = report["models"]["blind"]["drop"]
    assert report["models"]["blind"]["map50_95"] == 0
    assert drop["points"] == pytest.approx(100 * report["models"]["ref"]["map50_95"])
    assert drop["intervals"]["95"][0] > 0
    assert report["differences"][0]["points"] == pytest.approx(drop["points"])


def test_bad_arguments_are_one_line_errors(demo_onnx, small_data, capsys):
    base = ["--data", str(small_data), "--imgsz", "320", "--ref", f"a={demo_onnx}"]
    assert pa.main(base + ["--model", f"a={demo_onnx}"]) != 0
    assert "model names repeat" in capsys.readouterr().err
    assert pa.main(base + ["--vs", "a:zz"]) != 0
    assert "--vs 'a:zz'" in capsys.readouterr().err
    assert pa.main(base + ["--bootstrap", "3"]) != 0
    assert "too few resamples" in capsys.readouterr().err
    assert pa.main(["--data", str(small_data), "--ref", "=x"]) != 0
    assert "--ref '=x' is not NAME=PATH" in capsys.readouterr().err


def _fails_before_scoring(capsys, argv: list[str], message: str) -> None:
    """The run stops with ``message`` on stderr before any model is scored (nothing printed per model)."""
    assert pa.main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "mAP50-95" not in captured.out and "Traceback" not in captured.err


def test_files_that_cannot_be_scored_fail_before_any_scoring(demo_onnx, demo_pt, small_data, tmp_path, capsys):
    base = ["--data", str(small_data), "--ref", f"a={demo_onnx}"]
    _fails_before_scoring(capsys, base + ["--imgsz", "640"], "runs at 320x320, not --imgsz 640")
    _fails_before_scoring(capsys, base + ["--model", f"p={demo_pt}"], "a .pt runs only through Ultralytics")
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model")
    _fails_before_scoring(capsys, base + ["--peer", f"u={junk}"], "Ultralytics cannot run")
    _fails_before_scoring(capsys, base + ["--out", str(tmp_path)], "is a folder")
    import yaml

    other = tmp_path / "four.yaml"
    cfg = yaml.safe_load(small_data.read_text())
    cfg.update(path=str(small_data.parent), names=["a", "b", "c", "d"])
    other.write_text(yaml.safe_dump(cfg))
    _fails_before_scoring(capsys, ["--data", str(other), "--ref", f"a={demo_onnx}"], "knows 3 classes, the data 4")


def test_a_split_without_labels_fails_before_inference(demo_onnx, small_data, tmp_path, capsys):
    import shutil

    import yaml

    root = tmp_path / "d"
    shutil.copytree(small_data.parent / "val" / "images", root / "val" / "images")
    cfg = yaml.safe_load(small_data.read_text())
    (root / "data.yaml").write_text(yaml.safe_dump({**cfg, "path": str(root)}))
    _fails_before_scoring(capsys, ["--data", str(root / "data.yaml"), "--ref", f"a={demo_onnx}"],
                          "has no labelled object in its 12 images")


def test_the_table_reads_right():
    report = {"images": 3, "data": "d.yaml", "split": "val", "imgsz": 320, "bootstrap": 100, "reference": "a",
              "models": {"a": {"file": "x|y.onnx", "runner": "ours", "map50": 0.9, "map50_95": 0.8},
                         "b": {"file": "b.onnx", "runner": "ours", "map50": 0.9, "map50_95": 0.8,
                               "drop": {"points": -0.001, "intervals": {"90": [-0.004, 0.2], "95": [-0.3, 0.3]}}}},
              "differences": []}
    text = pa.table(report)
    assert "| a | ours | x\\|y.onnx |" in text
    assert "| +0.00 [+0.00, +0.20] [-0.30, +0.30] |" in text
