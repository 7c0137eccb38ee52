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
                  "--vs", "b:a", "--bootstrap", "50", "--out", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["images"] == 12 and report["reference"] == "a"
    assert report["models"]["a"]["map50_95"] == report["models"]["b"]["map50_95"] > 0.5
    drop = report["models"]["b"]["drop"]
    assert drop["points"] == 0 and all(v == [0.0, 0.0] for v in drop["intervals"].values())
    assert report["differences"] == [{"a": "b", "b": "a", "points": 0.0,
                                      "intervals": {"90": [0.0, 0.0], "95": [0.0, 0.0]}}]
    printed = capsys.readouterr().out
    assert "| b | ours |" in printed and "b minus a (positive: b ahead): +0.00" in printed
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
