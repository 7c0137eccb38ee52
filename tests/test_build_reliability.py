"""The build under faults: a full or read-only disk, leftovers of a killed build, absurd sizes, path typos,
and every ONNX it writes valid enough to be given back with --onnx."""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys

import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("ultralytics")

from exporters.build import EXIT_FAILED, EXIT_OK, main  # noqa: E402
from exporters.io import atomic_path, remove_stale_temporaries, staged, temp_prefix  # noqa: E402


def test_a_full_disk_is_a_typed_error_naming_the_file_and_the_space(demo_pt, tmp_path, monkeypatch, capsys):
    real_save = onnx.save

    def full(model, f, *a, **k):
        real_save(model, f, *a, **k)
        raise OSError(errno.ENOSPC, "No space left on device", str(f))

    monkeypatch.setattr(onnx, "save", full)
    out = tmp_path / "o"
    assert main(["--weights", str(demo_pt), "--no-int8", "--engine", "none", "--out", str(out)]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write") and "demo.onnx" in err and "disk is full" in err
    assert "MB free" in err and "MB needed" in err and "Traceback" not in err and "fix:" in err
    assert not any(p.name.startswith("demo.") for p in out.iterdir())  # nothing half-written, no temporaries
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused(demo_pt, tmp_path, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    assert main(["--weights", str(demo_pt), "--out", str(out)]) == EXIT_FAILED
    assert "not writable" in capsys.readouterr().err


def test_atomic_path_turns_only_write_failures_into_typed_errors(tmp_path):
    from engine.errors import OutputDirError

    with pytest.raises(OutputDirError, match="read-only"):
        with atomic_path(tmp_path / "a.bin", need=10):
            raise OSError(errno.EROFS, "Read-only file system")
    with pytest.raises(FileNotFoundError):  # a missing input is not a disk problem
        with atomic_path(tmp_path / "b.bin"):
            open(tmp_path / "missing" / "x")
    assert not list(tmp_path.iterdir())


def test_staged_replaces_a_folder_artifact_whole_or_not_at_all(tmp_path):
    """An OpenVINO IR is a folder: a failed write keeps the old one, a good one replaces it, no mix of the two."""
    final = tmp_path / "m_openvino"
    final.mkdir()
    (final / "old.xml").write_text("old")
    with pytest.raises(RuntimeError):
        with staged(final) as tmp:
            tmp.mkdir()
            (tmp / "new.xml").write_text("half")
            raise RuntimeError("the check failed")
    assert [p.name for p in final.iterdir()] == ["old.xml"]
    with staged(final) as tmp:
        tmp.mkdir()
        (tmp / "new.xml").write_text("new")
    assert [p.name for p in final.iterdir()] == ["new.xml"] and [p.name for p in tmp_path.iterdir()] == [final.name]


def test_a_killed_build_leaves_temporaries_the_next_build_removes(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (tmp_path / f".int8-p{pid}-abc").mkdir()
    (tmp_path / f".int8-p{pid}-abc" / "q0.onnx").write_bytes(b"x" * 100)
    (tmp_path / f".demo.onnx.p{pid}.x1y2.tmp").write_bytes(b"half")
    (tmp_path / ".export-oldstyle").mkdir()
    live = tmp_path / f"{temp_prefix('int8')}mine"  # this process is alive: a build still running
    live.mkdir()
    (tmp_path / "demo.onnx").write_bytes(b"a delivered artifact")
    removed = {p.name for p in remove_stale_temporaries(tmp_path)}
    assert removed == {f".int8-p{pid}-abc", f".demo.onnx.p{pid}.x1y2.tmp", ".export-oldstyle"}
    assert live.is_dir() and (tmp_path / "demo.onnx").is_file()


def test_sigkill_mid_build_then_a_rebuild_leaves_no_temporaries(demo_pt, tmp_path):
    import signal
    import time

    out = tmp_path / "o"
    p = subprocess.Popen([sys.executable, "-m", "exporters.build", "--weights", str(demo_pt), "--out", str(out),
                          "--no-int8", "--engine", "none"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out.is_dir() and any(x.name.startswith(".export-") for x in out.iterdir())):
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert main(["--weights", str(demo_pt), "--out", str(out), "--no-int8", "--engine", "none", "--no-fp16",
                 "--no-end2end"]) == EXIT_OK
    assert not [x for x in out.iterdir() if x.name.startswith(".")]


@pytest.mark.parametrize("imgsz", ["100000", "640,9000"])
def test_an_absurd_imgsz_is_refused_before_any_work(demo_pt, tmp_path, imgsz, capsys):
    assert main(["--weights", str(demo_pt), "--imgsz", imgsz, "--out", str(tmp_path / "o")]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "--imgsz" in err and "4096" in err and not (tmp_path / "o").exists()


def test_a_parity_folder_without_images_is_an_error(demo_pt, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--weights", str(demo_pt), "--parity-images", str(empty), "--out", str(tmp_path / "o")]) == EXIT_FAILED
    assert "no readable" in capsys.readouterr().err


def test_every_onnx_the_build_writes_passes_the_full_check_and_is_accepted_back(demo_pt, small_data, tmp_path):
    out = tmp_path / "o"
    assert main(["--weights", str(demo_pt), "--int8", "--data", str(small_data), "--max-map-drop", "100",
                 "--engine", "none", "--out", str(out)]) == EXIT_OK
    written = sorted(out.glob("*.onnx"))
    assert [p.name for p in written] == ["demo.end2end.onnx", "demo.fp16.onnx", "demo.int8-cpu.onnx",
                                         "demo.int8.onnx", "demo.onnx"]
    for path in written:
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
        from exporters.onnx_export import _read_onnx

        _read_onnx(path)  # what --onnx does first: no "truncated or corrupt"


@pytest.mark.parametrize("flag", ["--parity-images", "--data", "--calib", "--onnx"])
def test_a_missing_path_flag_is_refused_before_any_work(demo_pt, tmp_path, flag, capsys):
    argv = ([] if flag == "--onnx" else ["--weights", str(demo_pt)]) + [flag, str(tmp_path / "nope"),
                                                                       "--out", str(tmp_path / "o")]
    argv += ["--int8", "--data", str(tmp_path / "nope.yaml")] if flag == "--calib" else []
    assert main(argv) == EXIT_FAILED
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope" in err and "fix:" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_a_failed_fp32_onnx_leaves_the_earlier_good_one_and_never_removes_the_source(demo_pt, tmp_path):
    """A rerun with a bad flag used to delete the last good demo.onnx; an --onnx given inside --out was deleted
    as 'left by an earlier build' before the overwrite check refused it."""
    from engine.errors import ExportError
    from tests.build_helpers import stage_build

    def fail(final: Path):
        raise ExportError("the export failed", "fix it")

    (tmp_path / "demo.onnx").write_bytes(b"the earlier build's good model")
    b = stage_build(["--weights", str(demo_pt), "--out", str(tmp_path)], {})
    with pytest.raises(ExportError):
        b.produce("onnx", fail, {})
    assert (tmp_path / "demo.onnx").read_bytes() == b"the earlier build's good model"
    src = tmp_path / "best.onnx"
    src.write_bytes(b"the user's own export")
    b = stage_build(["--onnx", str(src), "--out", str(tmp_path)], {})
    b.remove_leftovers(src)  # whatever asks: the source is never ours to remove
    assert src.read_bytes() == b"the user's own export"


def test_a_failed_triton_stage_removes_only_its_own_models_from_a_shared_repository(tmp_path):
    """--triton DIR may hold other models: a failure withholds this build's models and leaves DIR and the rest."""
    from exporters import triton_stage
    from tests.build_helpers import stage_build
    from tests.fakes.tiny_onnx import tiny_metadata, write_tiny_onnx

    repo = tmp_path / "repo"
    (repo / "other_model" / "1").mkdir(parents=True)
    (repo / "other_model" / "config.pbtxt").write_text('name: "other_model"\n')
    (repo / "tiny_onnx").write_text("a stray file where this build's model folder goes")
    onnx = write_tiny_onnx(tmp_path / "tiny.onnx")
    b = stage_build(["--onnx", str(onnx), "--out", str(tmp_path / "out"), "--triton", str(repo)], {"onnx": onnx},
                    meta=tiny_metadata())
    triton_stage.run(b)
    assert b.records["triton"].status.value == "withheld"
    assert (repo / "other_model" / "config.pbtxt").is_file()  # the whole repository was removed before


def test_a_static_batch_keeps_the_class_branch_rule(demo_pt, export_dir, tmp_path):
    """--batch 2: the class branch's share of the MACs was inferred for batch 1 on a batch-2 graph, failed,
    read as 'not measurable', and the branch went INT8 against the rule."""
    import onnx

    from exporters import quantize_stage
    from exporters.config import ExportConfig
    from exporters.onnx_export import export_onnx
    from tests.build_helpers import stage_build

    out = export_onnx(ExportConfig(weights=demo_pt, batch=2, out=export_dir / "b2_rule"), log=lambda s: None)
    model = onnx.load(str(out.path), load_external_data=False)
    b = stage_build(["--weights", str(demo_pt), "--out", str(tmp_path), "--batch", "2"], {}, meta=out.metadata)
    _, classes, _ = quantize_stage._default_float(b, model)
    assert out.metadata.batch == 2 and classes.share is not None and classes.nodes


def test_onnx_takes_an_fp32_export_at_its_own_size(demo_onnx, tmp_path):
    """An FP16 or INT8 file of this tool was adopted as the FP32 ONNX (a Q/DQ graph delivered as 'FP32');
    a fixed-size export with another --imgsz crashed inside ONNX Runtime (a traceback, exit 1)."""
    import onnx

    from engine.errors import UnsupportedModelError
    from engine.metadata import METADATA_KEY, ModelMetadata, Precision
    from exporters.config import ExportConfig
    from exporters.onnx_export import export_onnx

    model = onnx.load(str(demo_onnx))
    prop = next(p for p in model.metadata_props if p.key == METADATA_KEY)
    meta = ModelMetadata.from_json(prop.value)
    prop.value = meta.replace(precision=Precision.FP16).to_json()
    onnx.save(model, str(tmp_path / "demo.fp16.onnx"))
    with pytest.raises(UnsupportedModelError, match="--onnx takes an FP32 one") as e:
        export_onnx(ExportConfig(onnx=tmp_path / "demo.fp16.onnx", out=tmp_path / "a"), log=lambda s: None)
    assert "demo.onnx" in e.value.fix
    other = (meta.imgsz[0] + 32, meta.imgsz[1] + 32)
    with pytest.raises(UnsupportedModelError, match=f"exported for {meta.imgsz[0]}x{meta.imgsz[1]} input only"):
        export_onnx(ExportConfig(onnx=demo_onnx, imgsz=other, out=tmp_path / "b"), log=lambda s: None)


def test_int8_options_without_int8_are_refused(demo_pt, tmp_path):
    """--calib /typo, --exclude NoSuchOp, --calib-cache: ignored without --int8, and the build exited 0."""
    from engine.errors import ConfigError
    from exporters.cli import build_parser, config_from_args

    for extra in (["--calib", str(tmp_path)], ["--exclude", "NoSuchOp"], ["--calib-cache", str(tmp_path / "c.json")]):
        argv = ["--weights", str(demo_pt), "--out", str(tmp_path / "o"), *extra]
        with pytest.raises(ConfigError, match="this build makes no INT8 model") as e:
            config_from_args(build_parser().parse_args(argv))
        assert extra[0] in e.value.message and "--int8" in e.value.fix
    assert config_from_args(build_parser().parse_args(["--out", str(tmp_path / "o"), "--exclude", "Sigmoid"]))  # the demo: INT8 on


def test_the_triton_repository_follows_what_the_build_delivered(demo_pt, tmp_path):
    """A model this build withheld stayed in --triton DIR (Triton would serve the earlier one); a model folder
    deleted since the last build was 'reused' and stayed missing."""
    from exporters import triton_stage
    from exporters.records import ArtifactRecord, Status
    from tests.build_helpers import stage_build
    from tests.fakes.tiny_onnx import tiny_metadata, write_tiny_onnx

    repo = tmp_path / "repo"
    onnx = write_tiny_onnx(tmp_path / "tiny.onnx")
    fp16 = write_tiny_onnx(tmp_path / "tiny.fp16.onnx", fp16=True)
    argv = ["--onnx", str(onnx), "--out", str(tmp_path / "out"), "--triton", str(repo)]
    b = stage_build(argv, {"onnx": onnx, "fp16.onnx": fp16}, meta=tiny_metadata())
    triton_stage.run(b)
    assert (repo / "tiny_fp16_onnx").is_dir() and (repo / "tiny_onnx").is_dir()
    b = stage_build(argv, {"onnx": onnx}, meta=tiny_metadata())
    b.records["fp16.onnx"] = ArtifactRecord("fp16.onnx", "FP16 ONNX", Status.WITHHELD, reason="parity failed")
    triton_stage.run(b)
    assert not (repo / "tiny_fp16_onnx").exists() and (repo / "tiny_onnx").is_dir()
    (repo / "tiny_fp16_engine" / "1").mkdir(parents=True)  # an engine an earlier build served
    b = stage_build(argv, {"onnx": onnx}, meta=tiny_metadata())
    b.records["fp16.engine"] = ArtifactRecord("fp16.engine", "TensorRT engine (FP16)", Status.SKIPPED,
                                              reason="its source FP16 ONNX was withheld")
    triton_stage.run(b)  # skipped, its file gone from --out: its model goes from the repository too
    assert not (repo / "tiny_fp16_engine").exists() and (repo / "tiny_onnx").is_dir()

    out = tmp_path / "demo"
    run = ["--weights", str(demo_pt), "--imgsz", "160", "--no-int8", "--no-fp16", "--no-openvino", "--no-end2end",
           "--engine", "none", "--out", str(out), "--triton", str(tmp_path / "r2")]
    assert main(run) == EXIT_OK
    shutil.rmtree(tmp_path / "r2" / "demo_onnx")
    assert main(run) == EXIT_OK
    assert (tmp_path / "r2" / "demo_onnx" / "config.pbtxt").is_file()


@pytest.mark.parametrize("argv, says", [
    (["--dynamic", "--engine-batch", "8,4,1"], "must satisfy 1 <= min <= opt <= max"),
    (["--engine-targets", "8x"], "is not a compute capability"),
    (["--engine-targets", ","], "names no compute capability"),
    (["--engine-opt-level", "9"], "outside 0..5"),
    (["--engine-workspace", "0"], "must be >= 1"),
    (["--engine", "fp16,int8", "--no-int8"], "makes no INT8 graph"),
])
def test_engine_flags_are_checked_before_any_work(demo_pt, tmp_path, argv, says, capsys):
    """They failed in the engine stage, after the export and the INT8 calibration, with no report written."""
    assert main(["--weights", str(demo_pt), "--out", str(tmp_path / "o"), *argv]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert says in err and "fix:" in err
    assert not (tmp_path / "o").exists()


def test_an_exclude_pattern_matching_nothing_is_a_flag_error_before_the_int8_work(demo_pt, small_data, tmp_path,
                                                                                   capsys):
    """It withheld every INT8 artifact after the FP16, OpenVINO and calibration work (exit 3), and a rerun
    reused that verdict."""
    out = tmp_path / "o"
    argv = ["--weights", str(demo_pt), "--int8", "--data", str(small_data), "--exclude", "NoSuchNode*",
            "--engine", "none", "--no-openvino", "--out", str(out)]
    assert main(argv) == EXIT_FAILED
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "NoSuchNode*" in err and "matches no node" in err
    assert not list(out.glob("*.int8*")) and not (out / "demo.fp16.onnx").exists()


def test_parity_images_under_a_non_ascii_path_are_read_without_cv2_imread(tmp_path, monkeypatch):
    """cv2.imread cannot open a non-ASCII path on Windows: --parity-images C:\\Users\\José\\imgs was refused as
    'no readable images' (and the demo's images, under such a path, silently became noise). Simulated here by
    an imread that fails as it does there."""
    import shutil

    import cv2
    import numpy as np

    from exporters.config import DEMO_DIR
    from exporters.parity import parity_inputs

    d = tmp_path / "Jos\u00e9"
    shutil.copytree(DEMO_DIR / "val" / "images", d)
    monkeypatch.setattr(cv2, "imread", lambda *a, **k: None)
    from engine.preprocess import Letterbox

    frames = [cv2.imdecode(np.fromfile(str(p), np.uint8), cv2.IMREAD_COLOR) for p in sorted(d.glob("*.jpg"))[:4]]
    want, _ = Letterbox((320, 320), batch=4)(frames)
    np.testing.assert_array_equal(parity_inputs((320, 320), d, 4), want)
