"""python -m exporters.build runs to the end on any detector: every artifact delivered, withheld with its
reason, or skipped; one failing artifact never stops the others; reruns reuse what did not change."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ultralytics")
onnx = pytest.importorskip("onnx")

from exporters.build import EXIT_FAILED, EXIT_OK, EXIT_WITHHELD, main  # noqa: E402

try:
    import tensorrt_rtx  # noqa: F401

    HAVE_RTX = True
except ImportError:
    HAVE_RTX = False
IR_KEYS = ("openvino", "int8_openvino")  # the OpenVINO stage's rows (skipped where openvino is not installed)
HAVE_OV = importlib.util.find_spec("openvino") is not None


def _report(out: Path) -> dict[str, dict]:
    doc = json.loads((out / "build_report.json").read_text())
    return {r["key"]: r for r in doc["artifacts"]}


@pytest.fixture(scope="module")
def perturbed_pt(demo_pt, tmp_path_factory) -> Path:
    """The demo with its box-branch logits scaled x3: FP16 rounding then moves a low-score anchor's raw box by
    4.8 px at 640 (over the old 3.2 px bar), while every detection a user sees still agrees."""
    import torch
    from ultralytics import YOLO

    y = YOLO(str(demo_pt))
    with torch.no_grad():
        for seq in y.model.model[-1].cv2:
            seq[-1].weight.mul_(3.0)
            seq[-1].bias.mul_(3.0)
    ckpt = torch.load(demo_pt, weights_only=False)
    ckpt["model"], ckpt["ema"] = y.model, None
    path = tmp_path_factory.mktemp("perturbed") / "user.pt"
    torch.save(ckpt, path)
    return path


def _random_pt(arch: str, root: Path, nc: int | None = None) -> Path:
    """A checkpoint of ``<arch>.yaml`` with seeded random weights (YOLOv8 and YOLO11 heads alike)."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel(f"{arch}.yaml", nc=nc, verbose=False)
    if nc == 3:
        model.names = {0: "disc", 1: "box", 2: "triangle"}
    path = root / f"{arch}-random.pt"
    torch.save({"model": model}, path)
    return path


def test_fp16_raw_anchor_drift_over_the_old_bar_still_delivers_fp16(perturbed_pt, tmp_path):
    out = tmp_path / "o"
    assert main(["--weights", str(perturbed_pt), "--imgsz", "640", "--no-int8", "--engine", "none", "--no-end2end",
                 "--out", str(out)]) == EXIT_OK
    rec = _report(out)["fp16.onnx"]
    assert rec["status"] == "delivered" and rec["figures"]["agreement"] >= 0.98
    # the raw-output check this replaced (largest difference over every anchor, 0.5 % of the side) fails it
    from exporters.agreement import onnx_runner, run_batched
    from exporters.parity import parity_inputs

    images = parity_inputs((640, 640), None, 32)
    diff = np.abs(run_batched(onnx_runner(out / "user.onnx"), images, 1)
                  - run_batched(onnx_runner(out / "user.fp16.onnx"), images, 1))
    assert diff[:, :4].max() > 0.005 * 640


def _scaled_boxes(convert):
    """A FP16 converter whose graph multiplies the box rows of the output by 1.1: a real fault."""
    from onnx import helper, numpy_helper

    def broken(model):
        m = convert(model)
        out = m.graph.output[0]
        rows = out.type.tensor_type.shape.dim[1].dim_value
        scale = np.ones((1, rows, 1), np.float32)
        scale[0, :4] = 1.1
        m.graph.initializer.append(numpy_helper.from_array(scale, "box_scale"))
        for node in m.graph.node:
            node.output[:] = [o if o != out.name else "pre_scale" for o in node.output]
        m.graph.node.append(helper.make_node("Mul", ["pre_scale", "box_scale"], [out.name], name="break_boxes"))
        return m

    return broken


def test_a_broken_fp16_graph_is_withheld_and_int8_and_engines_still_delivered(demo_pt, small_data, tmp_path,
                                                                             monkeypatch, capsys):
    import exporters.fp16 as fp16

    monkeypatch.setattr(fp16, "convert_fp16", _scaled_boxes(fp16.convert_fp16))
    out = tmp_path / "o"
    code = main(["--weights", str(demo_pt), "--int8", "--data", str(small_data), "--max-map-drop", "100",
                 "--out", str(out)])
    assert code == EXIT_WITHHELD
    recs = _report(out)
    assert recs["fp16.onnx"]["status"] == "withheld" and "detections" in recs["fp16.onnx"]["reason"]
    assert recs["fp16.onnx"]["checks"][0]["figures"]["agreement"] < 0.5
    assert not (out / "demo.fp16.onnx").exists() and not list(out.glob(".*"))
    assert recs["int8.onnx"]["status"] == recs["int8-cpu.onnx"]["status"] == "delivered"
    assert recs["end2end.onnx"]["status"] == "delivered"
    if HAVE_RTX:
        assert recs["fp16.engine"]["status"] == "skipped" and "FP16 ONNX was withheld" in recs["fp16.engine"]["reason"]
        assert recs["fp32.engine"]["status"] == recs["int8.engine"]["status"] == "delivered"
    text = capsys.readouterr().out
    assert "withheld" in text and "fixes to try" in text


def test_an_engine_build_that_raises_is_withheld_and_the_others_built(demo_pt, tmp_path, monkeypatch):
    pytest.importorskip("tensorrt_rtx")
    import exporters.tensorrt as trt_build
    from engine.errors import EngineBuildError
    from engine.metadata import Precision

    real = trt_build.build

    def flaky(onnx_path, cfg, log=print):
        if cfg.precision is Precision.FP32:
            raise EngineBuildError("simulated builder failure", "nothing to do")
        return real(onnx_path, cfg, log)

    monkeypatch.setattr(trt_build, "build", flaky)
    argv = ["--weights", str(demo_pt), "--no-int8", "--no-end2end", "--out", str(tmp_path)]
    assert main(argv) == EXIT_WITHHELD
    recs = _report(tmp_path)
    assert recs["fp32.engine"]["status"] == "withheld" and "simulated" in recs["fp32.engine"]["reason"]
    assert recs["fp16.engine"]["status"] == "delivered" and (tmp_path / "demo.fp16.engine").is_file()
    assert not (tmp_path / "demo.fp32.engine").exists() and not (tmp_path / "demo.fp32.json").exists()
    assert main([*argv, "--strict"]) == EXIT_FAILED
    assert json.loads((tmp_path / "build_report.json").read_text())["exit_code"] == EXIT_FAILED  # as the run exits


def test_reruns_reuse_what_did_not_change(demo_pt, tmp_path, capsys):
    argv = ["--weights", str(demo_pt), "--no-int8", "--engine", "none", "--out", str(tmp_path)]
    assert main(argv) == EXIT_OK
    first = _report(tmp_path)
    assert main(argv) == EXIT_OK
    again = _report(tmp_path)
    delivered = [k for k, r in first.items() if r["status"] == "delivered"]
    assert delivered == ["onnx", "fp16.onnx", *(["openvino"] if HAVE_OV else []), "end2end.onnx"]
    assert all(again[k]["reused"] for k in delivered)
    assert main([*argv, "--e2e-conf", "0.3"]) == EXIT_OK  # only the end-to-end graph's inputs changed
    third = _report(tmp_path)
    assert third["onnx"]["reused"] and third["fp16.onnx"]["reused"] and not third["end2end.onnx"]["reused"]
    (tmp_path / "demo.fp16.onnx").write_bytes(b"damaged")  # a file that is no longer what was built
    if HAVE_OV:  # an IR folder whose weights went: its folder alone used to count as reusable
        (tmp_path / "demo_openvino" / "demo.bin").unlink()
    assert main([*argv, "--e2e-conf", "0.3"]) == EXIT_OK
    assert not _report(tmp_path)["fp16.onnx"]["reused"]
    if HAVE_OV:
        assert not _report(tmp_path)["openvino"]["reused"] and (tmp_path / "demo_openvino" / "demo.bin").is_file()
    assert main([*argv, "--e2e-conf", "0.3", "--rebuild"]) == EXIT_OK
    assert not any(r["reused"] for r in _report(tmp_path).values())


@pytest.mark.parametrize("arch,imgsz,int8", [("yolov8n", "320", True), ("yolo11n", "384,640", True),
                                             ("yolov8n", "640", False), ("yolo26n", "320", True),
                                             ("yolo12n", "320", True), ("yolov10n", "320", False)])
def test_any_checkpoint_runs_to_the_end(arch, imgsz, int8, small_data, tmp_path):
    """Random weights from the YAML (80 classes against a 3-class data set): nothing to detect, everything to build."""
    pt = _random_pt(arch, tmp_path)
    out = tmp_path / "o"
    argv = ["--weights", str(pt), "--imgsz", imgsz, "--out", str(out)]
    code = main([*argv, "--int8", "--data", str(small_data)] if int8 else argv)
    recs = _report(out)
    assert code in (EXIT_OK, EXIT_WITHHELD) and recs["onnx"]["status"] == "delivered"
    assert set(recs) == {"onnx", "fp16.onnx", "int8.onnx", "int8-cpu.onnx", "end2end.onnx", "fp32.engine",
                         "fp16.engine", "int8.engine", "triton", *IR_KEYS}
    for key, r in recs.items():
        assert r["status"] in ("delivered", "withheld", "skipped")
        assert (r["path"] is not None and Path(r["path"]).exists()) == (r["status"] == "delivered"), key
        assert r["status"] == "delivered" or r["reason"], key
    assert (code == EXIT_WITHHELD) == any(r["status"] == "withheld" for r in recs.values())
    if int8:
        assert recs["int8.onnx"]["status"] != "skipped" and recs["int8-cpu.onnx"]["status"] != "skipped"
    if HAVE_OV:
        assert recs["openvino"]["status"] != "skipped" and (recs["int8_openvino"]["status"] != "skipped") == int8


def _nms_free_pt(tmp_path: Path, fused: bool, arch: str = "yolo26n") -> Path:
    """A checkpoint saved with its NMS-free (one-to-one) branch selected; ``fused``: one-to-many removed."""
    import torch

    pt = _random_pt(arch, tmp_path)
    ckpt = torch.load(pt, weights_only=False)
    ckpt["model"].end2end = True
    if fused:
        ckpt["model"].model[-1].cv2 = ckpt["model"].model[-1].cv3 = None
    assert ckpt["model"].end2end
    torch.save(ckpt, pt)
    return pt


@pytest.mark.parametrize("arch", ["yolo26n", "yolov10n"])
def test_an_nms_free_head_exports_its_one_to_many_branch(arch, tmp_path, capsys):
    """YOLO26 / YOLOv10 checkpoints with the one-to-one branch selected build like the others, with NMS."""
    import onnx

    out = tmp_path / "o"
    code = main(["--weights", str(_nms_free_pt(tmp_path, False, arch)), "--imgsz", "320", "--out", str(out),
                 "--engine", "none", "--no-fp16", "--no-end2end", "--no-openvino"])
    assert code == EXIT_OK, capsys.readouterr().err
    assert "exporting its one-to-many branch" in capsys.readouterr().out
    graph = onnx.load(str(out / f"{arch}-random.onnx")).graph
    dims = [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim]
    assert len(graph.output) == 1 and dims == [1, 84, 2100]  # 4 box + 80 class rows per anchor, not top-k rows


def test_an_nms_free_head_without_its_one_to_many_branch_is_refused(tmp_path, capsys):
    out = tmp_path / "o"
    code = main(["--weights", str(_nms_free_pt(tmp_path, True)), "--out", str(out), "--engine", "none"])
    err = capsys.readouterr().err
    assert code == EXIT_FAILED and "one-to-many branch was removed" in err and "best.pt" in err
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_an_export_that_is_not_the_raw_head_is_refused_with_the_upgrade():
    """An Ultralytics release that exported the NMS-free top-k branch by default gets a typed error, not a deep one."""
    from onnx import TensorProto, helper

    from engine.errors import UnsupportedModelError
    from exporters.onnx_export import _check_raw_head

    def graph(out_dims):
        g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, out_dims)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_dims)])
        return helper.make_model(g)

    _check_raw_head(graph([1, 84, 2100]), Path("m.pt"), 80)  # the raw head passes
    _check_raw_head(graph(["batch", 84, "anchors"]), Path("m.pt"), 80)
    with pytest.raises(UnsupportedModelError) as e:
        _check_raw_head(graph([1, 300, 6]), Path("m.pt"), 80)
    assert "top-k" in str(e.value) and "pip install -U ultralytics" in e.value.fix


def test_report_exit_codes_are_documented():
    from exporters.cli import build_parser

    text = " ".join(build_parser().format_help().split())
    assert "exit code 0" in text and "3 when some were withheld" in text and "2 when the build failed" in text


def test_a_long_artifact_logs_a_heartbeat_while_it_is_built(demo_pt, tmp_path, monkeypatch):
    """A build's log (a file: no progress bar) says every HEARTBEAT_S which artifact is still running."""
    import time

    import exporters.build as build_mod
    from exporters.build import Outcome
    from tests.build_helpers import stage_build

    monkeypatch.setattr(build_mod, "HEARTBEAT_S", 0.05)
    lines: list[str] = []
    b = stage_build(["--weights", str(demo_pt), "--out", str(tmp_path)], {}, log=lines.append)

    def make(final: Path) -> Outcome:
        time.sleep(0.3)
        final.write_bytes(b"x")
        return Outcome(final)

    assert b.produce("fp16.onnx", make, {}, sources=()).delivered
    beats = [m for m in lines if m.startswith("  FP16 ONNX: still running")]
    assert len(beats) >= 3 and lines[-1].startswith("FP16 ONNX: delivered")


def test_a_rebuilt_model_takes_the_old_models_leftovers_with_it(demo_pt, tmp_path):
    """--imgsz changed and --no-fp16: the 160 build's FP16 file and accuracy report stayed beside the new
    224 FP32 ONNX. Derived files of another FP32 ONNX go; with the same FP32 ONNX they stay (an engine built
    on a GPU box survives a rerun without TensorRT)."""
    base = ["--out", str(tmp_path), "--engine", "none", "--no-openvino", "--no-end2end", "--no-int8"]  # the demo, its data
    assert main([*base, "--imgsz", "160"]) == EXIT_OK
    assert (tmp_path / "demo.fp16.onnx").is_file() and (tmp_path / "demo.accuracy.md").is_file()
    assert main([*base, "--imgsz", "160", "--no-fp16"]) == EXIT_OK  # the same model: its FP16 file stays
    assert (tmp_path / "demo.fp16.onnx").is_file()
    assert main([*base, "--imgsz", "224", "--no-fp16"]) == EXIT_OK
    assert not (tmp_path / "demo.fp16.onnx").exists() and not (tmp_path / "demo.accuracy.md").exists()
    assert _report(tmp_path)["fp16.onnx"]["status"] == "skipped"


def test_an_engine_tied_to_its_gpu_is_rebuilt_on_another_and_one_without_its_sidecar_is_rebuilt(demo_pt, tmp_path,
                                                                                                  monkeypatch):
    """A TensorRT 10 engine built on an sm86 GPU was reused on an sm89 machine (its load error's rebuild command
    then reused it again); an engine whose sidecar was deleted was 'reused', then the build failed on it."""
    from tests.fakes import install_fakes

    argv = ["--weights", str(demo_pt), "--imgsz", "160", "--no-int8", "--no-openvino", "--no-end2end", "--no-fp16",
            "--engine", "fp32", "--tensorrt", "tensorrt", "--out", str(tmp_path)]

    def run(sm):
        install_fakes(monkeypatch, "10.9.0.34", sm=sm, name=f"GPU sm{sm[0]}{sm[1]}")
        assert main(argv) == EXIT_OK
        rec = _report(tmp_path)["fp32.engine"]
        return rec["status"], rec.get("reused", False), json.loads((tmp_path / "demo.fp32.json").read_text())["built_on"]

    assert run((8, 6)) == ("delivered", False, {"gpu": "GPU sm86", "sm": "sm86"})
    assert run((8, 6))[:2] == ("delivered", True)  # the same GPU: reused
    assert run((8, 9)) == ("delivered", False, {"gpu": "GPU sm89", "sm": "sm89"})
    (tmp_path / "demo.fp32.json").unlink()
    assert run((8, 9))[:2] == ("delivered", False) and (tmp_path / "demo.fp32.json").is_file()


def test_an_rtx_engine_is_rebuilt_on_a_turing_machine(demo_pt, tmp_path, monkeypatch):
    """RTX's default targets gain sm75 on a Turing GPU: an engine built elsewhere was reused there and could
    not run (fake TensorRT-RTX)."""
    from tests.fakes import install_fakes

    argv = ["--weights", str(demo_pt), "--imgsz", "160", "--no-int8", "--no-openvino", "--no-end2end",
            "--engine", "fp16", "--tensorrt", "rtx", "--out", str(tmp_path)]
    reused = []
    for sm in ((8, 6), (8, 6), (7, 5)):
        install_fakes(monkeypatch, "1.7.1.116", module="tensorrt_rtx", sm=sm, name=f"GPU sm{sm[0]}{sm[1]}")
        assert main(argv) == EXIT_OK
        reused.append(_report(tmp_path)["fp16.engine"]["reused"])
    assert reused == [False, True, False]


def test_another_model_is_told_by_its_graph_not_by_the_flags_that_made_it(demo_pt, tmp_path):
    """--weights spelled another way made a byte-identical FP32 graph count as 'another model', and the
    cleanup then removed a GPU-built engine on a machine without TensorRT; --rebuild skipped the cleanup."""
    base = ["--out", str(tmp_path), "--engine", "none", "--no-openvino", "--no-end2end", "--no-int8"]
    assert main([*base, "--imgsz", "160"]) == EXIT_OK
    engine = tmp_path / "demo.fp32.engine"
    engine.write_bytes(b"an engine built on the GPU box")
    assert main(["--weights", str(demo_pt.resolve()), *base, "--imgsz", "160", "--no-fp16"]) == EXIT_OK
    assert engine.is_file() and (tmp_path / "demo.fp16.onnx").is_file()  # the same graph: all kept
    assert main([*base, "--imgsz", "192", "--no-fp16", "--rebuild"]) == EXIT_OK  # another model, --rebuild
    assert not engine.exists() and not (tmp_path / "demo.fp16.onnx").exists()
    assert not (tmp_path / "demo.accuracy.md").exists()


def test_a_report_from_before_the_graph_was_recorded_still_tells_another_model(tmp_path):
    """The first build after the upgrade: the last report has no FP32 graph hash; the old file is hashed
    before it is replaced, so the old model's leftovers still go."""
    base = ["--out", str(tmp_path), "--engine", "none", "--no-openvino", "--no-end2end", "--no-int8"]
    assert main([*base, "--imgsz", "160"]) == EXIT_OK
    report = tmp_path / "build_report.json"
    doc = json.loads(report.read_text())
    for r in doc["artifacts"]:
        r.get("figures", {}).pop("graph", None)  # as a report written before this change
    report.write_text(json.dumps(doc))
    assert main([*base, "--imgsz", "192", "--no-fp16"]) == EXIT_OK
    assert not (tmp_path / "demo.fp16.onnx").exists()
