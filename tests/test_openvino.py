"""OpenVINO: the IR kinds, the backend under Detector, device="auto", the exporter functions and the build stage."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine import Detector
from engine.artifacts import ANY_IR, FP32_IR, FP32_ONNX, INT8_IR, kind, kind_of, runtime_suffixes
from engine.errors import BackendUnavailableError, ConfigError, ModelLoadError
from engine.metadata import PixelFormat, Precision
from tests.conftest import DEMO

ov = pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def frames():
    return [cv2.imread(str(p)) for p in sorted((DEMO / "val" / "images").glob("*.jpg"))[:4]]


@pytest.fixture(scope="module")
def meta(demo_onnx):
    with Detector(demo_onnx, device="cpu") as d:
        return d.metadata.replace(source_name=demo_onnx.name)


@pytest.fixture(scope="module")
def fp32_ir(demo_onnx, meta, tmp_path_factory) -> Path:
    from exporters.openvino import export_openvino

    return export_openvino(demo_onnx, tmp_path_factory.mktemp("ov"), meta)


def calib_batches(imgsz, n: int) -> list[np.ndarray]:
    from engine.preprocess import Letterbox

    files = sorted((DEMO / "calib" / "images").glob("*.jpg"))[:n]
    return [Letterbox(imgsz)([cv2.imread(str(f))])[0].copy() for f in files]


@pytest.fixture(scope="module")
def int8_ir(demo_onnx, meta, tmp_path_factory) -> Path:
    pytest.importorskip("nncf")
    from exporters.openvino import quantize_openvino

    return quantize_openvino(demo_onnx, calib_batches(meta.imgsz, 8), tmp_path_factory.mktemp("ov8"), meta)


# ---- the artifact table ------------------------------------------------------------------------------

@pytest.mark.parametrize("path, expected", [
    ("deploy/demo_openvino", FP32_IR), ("deploy/demo.int8_openvino", INT8_IR),
    ("deploy/demo_openvino/demo.xml", FP32_IR), ("deploy/demo.int8_openvino/demo.xml", INT8_IR),
    ("model.xml", ANY_IR), ("runs/best_int8_openvino_model", ANY_IR), ("best_openvino_model/best.xml", ANY_IR),
    ("deploy/demo.onnx", FP32_ONNX), ("deploy/openvino", None), ("_openvino", None),
])
def test_kinds_name_the_ir_forms(path, expected):
    assert kind_of(path) is expected


def test_a_backend_named_for_a_form_it_misreads_is_refused():
    """OpenVINO runs the TensorRT INT8 form's Q/DQ graph wrongly (mAP50-95 0.56 -> 0.24 on the demo at 160),
    silently: a backend the artifact table says misreads a form is an error; the other ONNX forms still load."""
    from engine.backends import backend_for
    from engine.errors import BackendUnavailableError

    with pytest.raises(BackendUnavailableError, match="openvino misreads it, it runs on onnxruntime") as e:
        backend_for("deploy/demo.int8.onnx", backend="openvino")
    assert "_openvino" in e.value.fix
    for ok in ("demo.onnx", "demo.fp16.onnx", "demo.int8-cpu.onnx", "demo.end2end.onnx"):  # it reads these right
        assert backend_for(f"deploy/{ok}", backend="openvino").__name__ == "OpenVinoBackend"


def test_ir_kinds_in_the_table():
    assert FP32_IR.path("deploy", "demo") == Path("deploy/demo_openvino") and FP32_IR.folder
    assert INT8_IR.path("deploy", "demo") == Path("deploy/demo.int8_openvino") and INT8_IR.precision is Precision.INT8
    assert kind("openvino") is FP32_IR and kind("int8_openvino") is INT8_IR
    assert INT8_IR.backends == ("openvino",) and FP32_ONNX.backends[0] == "onnxruntime"
    assert {"_openvino/", ".int8_openvino/", ".xml", ".onnx"} <= set(runtime_suffixes())


# ---- the backend ----------------------------------------------------------------------------------------

def test_ir_runs_under_detector_as_the_onnx_does(demo_onnx, fp32_ir, meta, frames):
    from engine.backends.openvino import ir_metadata

    xml = fp32_ir / f"{demo_onnx.stem}.xml"
    assert sorted(p.name for p in fp32_ir.iterdir()) == [f"{demo_onnx.stem}.bin", xml.name]
    ir_meta = meta.replace(pixels=PixelFormat.NHWC_BGR_UINT8)  # the IR takes the letterboxed frame as uint8 BGR
    assert ir_metadata(xml) == ir_meta  # read from rt_info as XML, no OpenVINO
    with Detector(demo_onnx, device="cpu") as ref, Detector(fp32_ir, precision="f32") as d, Detector(xml) as by_xml:
        assert d.backend.name == "openvino" and "openvino" in repr(d) and d.backend.selection is None
        assert d.names == ("disc", "box", "triangle") and d.imgsz == meta.imgsz and d.metadata == ir_meta
        spec = d.backend.inputs[0]
        assert spec.dtype == np.uint8 and spec.shape == (1, *meta.imgsz, 3) and spec.name == meta.input_name
        assert d._new_letterbox(1).buffer.dtype == np.uint8  # a resize into the input, no float conversion in Python
        assert d.backend.execution_devices == ("CPU",) and by_xml.metadata == ir_meta
        for f in frames:
            a, b, c = ref(f), d(f), by_xml(f)
            assert len(a) > 0 and a.class_id.tolist() == b.class_id.tolist()
            np.testing.assert_allclose(a.xyxy, b.xyxy, atol=0.05)  # f32 compute: the conversion is exact
            assert len(c) == len(a)  # OpenVINO's default precision (bf16 on some CPUs): same boxes found


def test_throughput_mode_pads_a_static_batch_in_its_own_buffer(tmp_path):
    """A static batch-2 model and an odd frame count: the last chunk's padding must not land in a caller's
    array (after a shared-input call, the request's input tensor is the previous caller's memory)."""
    import onnx

    from engine.backends.openvino import OpenVinoBackend
    from engine.metadata import METADATA_KEY
    from tests.fakes.tiny_onnx import IMGSZ, tiny_metadata, write_tiny_onnx

    model = onnx.load(str(write_tiny_onnx(tmp_path / "tiny.onnx", dynamic=True)))
    for v in (*model.graph.input, *model.graph.output):
        v.type.tensor_type.shape.dim[0].dim_value = 2
    del model.metadata_props[:]
    model.metadata_props.add(key=METADATA_KEY, value=tiny_metadata().replace(batch=2).to_json())
    onnx.save(model, str(tmp_path / "b2.onnx"))
    rng = np.random.default_rng(0)
    be = OpenVinoBackend(tmp_path / "b2.onnx", device="cpu", hint="throughput", requests=2, precision="f32")
    try:
        first = rng.random((4, 3, *IMGSZ), dtype=np.float32)
        kept = first.copy()
        be.infer(first)
        odd = rng.random((3, 3, *IMGSZ), dtype=np.float32)
        got = be.infer(odd)[0].copy()
        assert np.array_equal(first, kept), "the padding overwrote an earlier caller's frames"
        alone = be.infer(np.concatenate([odd[2:], odd[2:]]))[0][0]
        np.testing.assert_allclose(got[2], alone, atol=1e-5)
    finally:
        be.close()


def test_throughput_mode_splits_a_batch_over_requests_and_threads_get_their_own(fp32_ir, frames):
    import threading

    with Detector(fp32_ir, precision="f32") as lat, Detector(fp32_ir, hint="throughput", requests=2,
                                                             precision="f32") as thr:
        assert thr.backend.requests == 2 and thr.backend.inputs[0].shape[0] is None  # any batch
        assert lat.backend.inputs[0].shape[0] == 1
        want = [r.xyxy for r in lat(frames)]
        for got in (thr(frames), thr(frames[:3]), [thr(f) for f in frames]):
            for w, g in zip(want, got):
                np.testing.assert_allclose(w, g.xyxy, atol=1e-3)
        # the backend under several threads (Detector's own buffers are another matter): each thread its own request
        xs = [lat._new_letterbox(1)([f])[0].copy() for f in frames]  # the IR's own input format
        ref = [lat.backend.infer(x)[0].copy() for x in xs]
        out: dict[int, list] = {}

        def run(i: int) -> None:
            out[i] = [lat.backend.infer(xs[(i + k) % len(xs)])[0].copy() for k in range(20)]

        threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i, res in out.items():
            for k, r in enumerate(res):
                np.testing.assert_array_equal(r, ref[(i + k) % len(xs)])
        mine = lat.backend._thread_requests()
        theirs: list = []
        t = threading.Thread(target=lambda: theirs.extend(lat.backend._thread_requests()))
        t.start()
        t.join()
        assert mine is lat.backend._thread_requests() and not set(map(id, mine)) & set(map(id, theirs))


def test_a_shared_ir_detector_gives_each_thread_the_single_threaded_result(fp32_ir, frames):
    import threading

    from tests.test_detector_threads import same

    with Detector(fp32_ir, precision="f32") as det:
        ref = [det(f) for f in frames]
        bad: list[str] = []

        def worker(k: int) -> None:
            for j in range(40):
                i = (k + j) % len(frames)
                if not same(det(frames[i]), ref[i]):
                    bad.append(f"thread {k} call {j}")

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert sum(len(r) for r in ref) > 0 and not bad, bad[:3]


def test_close_waits_for_a_call_in_flight_and_later_calls_raise(fp32_ir, frames, monkeypatch):
    import threading
    import time

    from engine.backends.openvino import OpenVinoBackend
    from engine.errors import ClosedError

    det = Detector(fp32_ir)
    real = OpenVinoBackend.infer_impl
    entered = threading.Event()

    def slow(self, x):
        entered.set()
        time.sleep(0.5)
        return real(self, x)

    monkeypatch.setattr(OpenVinoBackend, "infer_impl", slow)
    out: list = []
    t = threading.Thread(target=lambda: out.append(det(frames[0])))
    t.start()
    assert entered.wait(10)
    t0 = time.monotonic()
    det.close()  # must not free the compiled model under the running call
    assert time.monotonic() - t0 > 0.2 and "compiled" not in det.backend.__dict__
    t.join(10)
    assert len(out) == 1 and len(out[0]) > 0
    det.close()  # idempotent
    with pytest.raises(ClosedError, match="is closed"):
        det.backend.infer(np.zeros((1, 3, *det.imgsz), np.float32))


def test_device_auto_picks_and_says_which(demo_onnx, fp32_ir, monkeypatch, caplog):
    import engine.backends as b
    from engine.artifacts import FP32_ENGINE

    with caplog.at_level(logging.INFO, logger="engine"), Detector(demo_onnx, device="auto") as d:
        assert d.backend.name == "openvino" and "OpenVINO is installed" in d.backend.selection
    assert "device='auto' for demo.onnx: openvino backend" in caplog.text
    with Detector(demo_onnx) as d:  # without device="auto": the kind's default, as before
        assert d.backend.name == "onnxruntime" and d.backend.selection is None
    assert b.pick_backend(INT8_IR)[0] == "openvino" and b.pick_backend(FP32_ENGINE)[0] == "tensorrt"
    monkeypatch.setattr(b, "_has_openvino", lambda: False)
    assert b.pick_backend(FP32_ONNX) == ("onnxruntime", b.AUTO_ORDER[-1][2])
    monkeypatch.setattr(b, "_ort_cuda", lambda: True)
    assert b.pick_backend(FP32_ONNX)[0] == "onnxruntime" and "onnxruntime-gpu" in b.pick_backend(FP32_ONNX)[1]
    monkeypatch.setattr(b, "_has_tensorrt", lambda: True)
    assert b.pick_backend(FP32_ENGINE) == ("tensorrt", b.AUTO_ORDER[0][2])


def test_bad_models_and_options_are_typed_errors(fp32_ir, tmp_path):
    empty = tmp_path / "empty_openvino"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="no .xml"):
        Detector(empty)
    two = tmp_path / "two_openvino"
    shutil.copytree(fp32_ir, two)
    shutil.copy(next(two.glob("*.xml")), two / "other.xml")
    with pytest.raises(ModelLoadError, match="2 .xml"):
        Detector(two)
    lone = tmp_path / "lone.xml"
    shutil.copy(next(fp32_ir.glob("*.xml")), lone)
    with pytest.raises(ModelLoadError, match="no weights file"):
        Detector(lone)
    bad = tmp_path / "bad_openvino"
    bad.mkdir()
    (bad / "m.xml").write_text("<net><layers>")
    (bad / "m.bin").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="OpenVINO cannot read"):
        Detector(bad)
    with pytest.raises(ConfigError, match="not an OpenVINO device"):
        Detector(fp32_ir, device="cuda")
    with pytest.raises(BackendUnavailableError, match="'NPU' is not available") as e:
        Detector(fp32_ir, device="npu")
    assert "CPU" in e.value.message
    with pytest.raises(ConfigError, match="hint='fast'"):
        Detector(fp32_ir, hint="fast")


def test_an_ir_without_our_metadata_reads_ultralytics_yaml_or_the_graph(demo_onnx, tmp_path, frames):
    import onnx

    folder = tmp_path / "best_openvino_model"
    bare = onnx.load(str(demo_onnx))
    del bare.metadata_props[:]  # a traced PyTorch model carries none (ours would reach rt_info['framework'])
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    model = ov.convert_model(str(tmp_path / "bare.onnx"))
    model.outputs[0].get_tensor().set_names(set())  # as Ultralytics' export (a traced PyTorch model) leaves it
    ov.save_model(model, str(folder / "best.xml"), compress_to_fp16=False)
    with Detector(folder) as d:  # no metadata at all: sizes and class count from the graph
        assert d.names == ("class0", "class1", "class2") and d.imgsz == (320, 320)
        assert [o.name for o in d.backend.outputs] == ["output0"]
    (folder / "metadata.yaml").write_text("task: detect\nstride: 32\nbatch: 1\nimgsz:\n- 320\n- 320\n"
                                          "names:\n  0: disc\n  1: box\n  2: triangle\n")
    with Detector(folder) as d:
        assert d.names == ("disc", "box", "triangle") and len(d(frames[0])) > 0
    (folder / "metadata.yaml").write_text("task: segment\nimgsz: [320, 320]\nnames: {0: a}\n")
    with pytest.raises(ModelLoadError, match="'segment' model"):
        Detector(folder)


# ---- INT8 by NNCF ------------------------------------------------------------------------------------------

def test_int8_ir_keeps_the_decode_tail_and_the_class_branch_float(demo_onnx, int8_ir, fp32_ir, frames):
    import onnx

    from exporters.openvino import float_nodes, ov_names, quantized_layers
    from exporters.quantize import decode_tail

    assert kind_of(int8_ir) is INT8_IR
    graph = onnx.load(str(demo_onnx))
    keep = float_nodes(graph)
    assert set(decode_tail(graph)) < set(keep) and "/model.23/cv3.0/cv3.0.1/cv3.0.1.1/conv/Conv" in keep
    assert "/model.23/cv2.0/cv2.0.2/Conv" in keep and "/model.23/cv2.0/cv2.0.1/conv/Conv" not in keep
    model = ov.Core().read_model(str(next(int8_ir.glob("*.xml"))))
    layers = quantized_layers(model)
    floats = set(ov_names(model, keep))
    assert len(layers) > 50 and floats and not floats & set(layers)
    assert "/model.23/cv2.0/cv2.0.1/conv/Conv/WithoutBiases" in layers  # the box branch's inner convs: int8
    with Detector(int8_ir) as q, Detector(fp32_ir) as f:
        assert q.metadata.precision is Precision.INT8 and q.metadata.names == f.metadata.names
        for fr in frames:
            a, b = f(fr), q(fr)
            assert abs(len(a) - len(b)) <= 1 and a.class_id[0] == b.class_id[0]


def test_sensitivity_ranks_the_int8_layers_and_keep_float_reaches_nncf(demo_onnx, int8_ir, meta, tmp_path,
                                                                          monkeypatch):
    import nncf

    from exporters.openvino import quantize_openvino, quantized_layers, sensitivity

    images = calib_batches(meta.imgsz, 2)
    ranking, stable = sensitivity(demo_onnx, int8_ir, images)
    assert stable is None  # two images: too few to split into halves
    layers = quantized_layers(ov.Core().read_model(str(next(int8_ir.glob("*.xml")))))
    assert {n for n, _ in ranking} == set(layers) and ranking[0][1] >= ranking[-1][1] > -1
    seen = {}

    def fake_quantize(model, dataset, **kw):  # what NNCF is asked to keep float (NNCF itself: the tests above)
        seen.update(kw)
        return model

    monkeypatch.setattr(nncf, "quantize", fake_quantize)
    top, conv = ranking[0][0], "/model.0/conv/Conv"  # an IR name, and an ONNX node name (two IR operations)
    quantize_openvino(demo_onnx, images, tmp_path, meta, keep_float=[top, conv], final=tmp_path / "k_openvino")
    names = seen["ignored_scope"].names
    assert top in names and {conv, conv + "/WithoutBiases"} <= set(names) and "/model.23/Sigmoid" in names
    assert seen["preset"] == nncf.QuantizationPreset.MIXED and seen["fast_bias_correction"] is False


# ---- the build stage ----------------------------------------------------------------------------------------

def _stage(argv: list[str], demo_onnx: Path, out: Path, meta) -> tuple:
    """The OpenVINO stage of a build of ``demo_onnx`` whose ONNX stage delivered it."""
    from exporters import openvino_stage
    from tests.build_helpers import stage_build

    lines: list[str] = []
    out.mkdir(parents=True, exist_ok=True)
    b = stage_build(["--onnx", str(demo_onnx), "--out", str(out), *argv], {"onnx": demo_onnx},
                    meta.replace(source_name=demo_onnx.name), lines.append)
    openvino_stage.run(b)
    return b, "\n".join(lines)


def test_stage_writes_the_fp32_ir_by_default_and_respects_the_flags(demo_onnx, meta, tmp_path, monkeypatch):
    from exporters.config import OpenVinoOptions

    b, log = _stage([], demo_onnx, tmp_path / "a", meta)
    rec = b.records["openvino"]
    assert rec.delivered and rec.path == tmp_path / "a" / f"{demo_onnx.stem}_openvino" and kind_of(rec.path) is FP32_IR
    assert rec.checks[0].name == "detections vs FP32" and rec.checks[0].passed and rec.figures["agreement"] >= 0.98
    assert b.records["int8_openvino"].not_asked and "OpenVINO IR: detections vs FP32" in log
    assert not list((tmp_path / "a").glob(".*"))  # no temporary folder left
    with Detector(rec.path) as d:
        assert d.metadata.source_name == demo_onnx.name and d.metadata.precision is Precision.FP32
    b, _ = _stage(["--no-openvino"], demo_onnx, tmp_path / "b", meta)
    assert b.records["openvino"].not_asked and b.records["int8_openvino"].not_asked
    assert not list((tmp_path / "b").iterdir())
    b, _ = _stage(["--openvino-fp16"], demo_onnx, tmp_path / "c", meta)
    assert (b.path("openvino") / f"{demo_onnx.stem}.bin").stat().st_size < \
        0.6 * (tmp_path / "a" / f"{demo_onnx.stem}_openvino" / f"{demo_onnx.stem}.bin").stat().st_size
    monkeypatch.setattr(OpenVinoOptions, "installed", staticmethod(lambda: False))
    with pytest.raises(ConfigError, match="--openvino needs the openvino package"):
        _stage(["--openvino"], demo_onnx, tmp_path / "d", meta)
    b, _ = _stage([], demo_onnx, tmp_path / "e", meta)
    rec = b.records["openvino"]
    assert rec.status.value == "skipped" and "not installed" in rec.reason and "[openvino]" in rec.fix


def test_stage_gates_the_int8_ir_and_reports_it(demo_onnx, meta, small_data, tmp_path):
    pytest.importorskip("nncf")
    from exporters import evidence

    b, log = _stage(["--int8", "--data", str(small_data), "--max-map-drop", "10"], demo_onnx, tmp_path, meta)
    rec = b.records["int8_openvino"]
    assert rec.delivered and rec.path == tmp_path / f"{demo_onnx.stem}.int8_openvino" and kind_of(rec.path) is INT8_IR
    assert rec.checks[0].name == "accuracy gate" and rec.checks[0].passed and rec.figures["map50_95"] > 0.5
    assert "mAP vs FP32" in [c.name for c in b.records["openvino"].checks]
    evidence.write_accuracy_report(b)  # what the INT8 stage after this one does
    rep = json.loads((tmp_path / f"{demo_onnx.stem}.accuracy.json").read_text())
    assert [r["key"] for r in rep["rows"]] == ["fp32", "openvino", "int8_openvino"]
    assert rep["gates"]["openvino"]["passed"] and all(r["map50_95"] > 0.5 for r in rep["rows"])
    assert "OpenVINO INT8: NNCF on 8 of 8 images" in log and not list(tmp_path.glob(".*"))


def test_stage_withholds_an_int8_ir_over_the_bar(demo_onnx, meta, small_data, tmp_path, monkeypatch):
    """One flat grey calibration image breaks INT8: the IR is withheld with its figures, an old one deleted."""
    from exporters import gate as gate_mod

    pytest.importorskip("nncf")
    calib = tmp_path / "calib"
    calib.mkdir()
    cv2.imwrite(str(calib / "grey.png"), np.full((320, 320, 3), 114, np.uint8))
    stale = tmp_path / "out" / f"{demo_onnx.stem}.int8_openvino"
    stale.mkdir(parents=True)
    (stale / "old.xml").write_text("from an earlier build")
    monkeypatch.setattr(gate_mod, "FALLBACK_STEPS", (1,))  # one fallback trial keeps the test short
    b, log = _stage(["--int8", "--data", str(small_data), "--calib", str(calib), "--max-map-drop", "1"],
                    demo_onnx, tmp_path / "out", meta)
    rec = b.records["int8_openvino"]
    assert rec.status.value == "withheld" and rec.path is None and not stale.exists()
    assert "OpenVINO INT8 gate" in rec.reason and "--calib" in rec.fix and rec.figures["drop_points"] > 1
    gate = rec.checks[0].figures["gate"]
    assert not gate["passed"] and len(gate["trials"]) == 2 and gate["sensitivity_top"]
    assert gate["trials"][1]["kept_float"] == [gate["sensitivity_top"][0][0]]
    assert b.records["openvino"].delivered and "WITHHELD" in log and not list((tmp_path / "out").glob(".*"))


def test_a_pool_of_ir_detectors_shares_the_cores(fp32_ir, frames):
    from engine.pool import DetectorPool

    with DetectorPool(fp32_ir, workers=2, precision="f32") as pool, Detector(fp32_ir, precision="f32") as one:
        assert [d.backend.name for d in pool.detectors] == ["openvino"] * 2
        assert pool.threads >= 1 and pool.detectors[0].backend.compiled.get_property("INFERENCE_NUM_THREADS") == pool.threads
        for a, b in zip(pool.predict(frames), one.predict(frames)):
            np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)


def test_a_stream_of_several_sources_runs_one_ir_detector_in_throughput_mode(fp32_ir, tmp_path):
    from engine.stream import Stream, StreamConfig
    from engine.stream.sources import CaptureConfig
    from tests.rtsp_server import make_clip

    clip = make_clip(tmp_path / "clip.mp4", frames=6)
    got = []
    stream = Stream(fp32_ir, [f"a={clip}", f"b={clip}"], StreamConfig(log_interval=0),
                    on_result=lambda r: got.append(r.source))
    snap = stream.run()
    assert stream.workers == 1 and stream.detector.backend.hint == "throughput" and stream.batch == 2
    assert snap["a"]["frames_out"] == 6 == snap["b"]["frames_out"] and len(got) == 12
    one_camera = StreamConfig(log_interval=0, capture=CaptureConfig(realtime=True))
    with Stream(fp32_ir, [str(clip)], one_camera) as s:  # one live source: nothing to overlap
        assert s.detector.backend.hint == "latency" and s.batch == 1
    with Stream(fp32_ir, [f"a={clip}", f"b={clip}"], StreamConfig(log_interval=0), hint="latency") as s:
        assert s.detector.backend.hint == "latency"  # the caller's choice wins
    with Stream(fp32_ir, [str(clip)], StreamConfig(log_interval=0), requests=3) as s:  # one file: the
        # throughput hint with a batch of 1 kept one request in flight (the others idle)
        assert s.detector.backend.hint == "throughput" and s.batch == 3
    with Stream(fp32_ir, [str(clip)], StreamConfig(log_interval=0, batch=1), requests=3) as s:
        assert s.batch == 1  # --batch wins


def test_the_fp32_irs_map_check_scores_the_conversion_in_f32(demo_onnx, meta, tmp_path, monkeypatch):
    """OpenVINO's CPU default is bf16 where the CPU has it: the IR's mAP against FP32 (a 0.3-point bar) scored
    bf16 drift, not the conversion the check is for."""
    import exporters.accuracy as accuracy

    seen, real = [], accuracy.score_onnx
    monkeypatch.setattr(accuracy, "score_onnx", lambda path, items, progress=False, **kw: (
        seen.append((Path(path).name, kw)), real(path, items[:8], progress, **kw))[1])
    b, _ = _stage(["--data", str(DEMO / "data.yaml")], demo_onnx, tmp_path / "a", meta)
    assert b.records["openvino"].delivered
    assert any(name.endswith("_openvino") and kw == {"precision": "f32"} for name, kw in seen), seen


def test_an_ir_made_by_openvinos_own_converter_keeps_the_class_names(demo_onnx, meta, tmp_path):
    """ovc / ov.convert_model keep the ONNX's metadata under rt_info['framework']: it was not read, and the
    classes came back as class0, class1..."""
    import openvino as ov

    ov.save_model(ov.convert_model(str(demo_onnx)), str(tmp_path / "ovc" / "demo.xml"))
    with Detector(tmp_path / "ovc" / "demo.xml", precision="f32") as d:
        assert d.names == meta.names and d.imgsz == meta.imgsz


def test_a_precision_the_device_swaps_is_said(fp32_ir, caplog):
    """precision='f16' on an x86 CPU compiled to bf16 without a word (the README offers f16 as a choice)."""
    import logging

    with caplog.at_level(logging.WARNING, logger="engine.backends"):
        with Detector(fp32_ir, precision="f32") as d:
            assert d.backend.precision == "f32" and not caplog.records
        with Detector(fp32_ir, precision="f16") as d:
            got = d.backend.precision
    assert got == "f16" or any(f"in {got}, not the f16 asked for" in r.message for r in caplog.records)
