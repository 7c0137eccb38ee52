"""``--triton DIR``: every generated config.pbtxt (ONNX Runtime, TensorRT and OpenVINO backends) parses into Triton's own ModelConfig (from tritonclient).

Small ONNX files carrying our metadata are made here (a graph of constants is enough: the writer reads
the declared inputs/outputs and the metadata, it never runs the model); the real demo export is
checked too once assets/demo/demo.pt exists.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from engine.errors import ConfigError, ExportError
from engine.metadata import (
    METADATA_KEY,
    HeadLayout,
    ModelMetadata,
    Precision,
    Thresholds,
    anchor_count,
)

onnx = pytest.importorskip("onnx")
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="tritonclient not installed: pip install -e .[dev]")
from google.protobuf import text_format  # noqa: E402  (comes with tritonclient)

from exporters import triton_stage  # noqa: E402
from exporters.cli import build_parser  # noqa: E402
from exporters.triton import TritonOptions, write_model  # noqa: E402
from tests.build_helpers import stage_build  # noqa: E402
from tests.fakes.tiny_onnx import onnx_model  # noqa: E402

NAMES = ("disc", "box", "triangle")
IMGSZ = (64, 96)


def make_onnx(path: Path, meta: ModelMetadata, graph_dims: dict[str, list] | None = None) -> Path:
    """An ONNX file with ``meta``'s inputs/outputs declared (values are constants) and ``meta`` in metadata_props."""
    from onnx import TensorProto, helper

    b = "batch" if meta.batch is None else meta.batch
    if meta.head is HeadLayout.RAW:
        outs = {meta.output_names[0]: (TensorProto.FLOAT, [b, 4 + len(meta.names), meta.raw_anchors])}
    else:
        k = meta.thresholds.max_det
        outs = {"num_dets": (TensorProto.INT32, [b, 1]), "boxes": (TensorProto.FLOAT, [b, k, 4]),
                "scores": (TensorProto.FLOAT, [b, k]), "classes": (TensorProto.INT32, [b, k])}
    for name, dims in (graph_dims or {}).items():
        outs[name] = (outs[name][0], dims)
    nodes = [helper.make_node("Constant", [], [n], value=helper.make_tensor(n, t, [1], [0])) for n, (t, _) in outs.items()]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(meta.input_name, TensorProto.FLOAT, [b, 3, *meta.imgsz])],
        [helper.make_tensor_value_info(n, t, d) for n, (t, d) in outs.items()])
    model = onnx_model(graph)
    helper.set_model_props(model, {METADATA_KEY: meta.to_json()})
    onnx.save(model, str(path))
    return path


def parse(folder: Path):
    return text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def run_stage(argv: list[str], artifacts: dict[str, Path], meta: ModelMetadata | None = None, log=lambda s: None):
    """The Triton stage of a build whose earlier stages delivered ``artifacts``; the record it made."""
    if "onnx" in artifacts:
        src = Path(artifacts["onnx"])
    else:  # --onnx must name a file (checked before any work); the stage never reads it
        src = Path(tempfile.mkdtemp()) / "model.onnx"
        src.write_bytes(b"")
    b = stage_build(["--onnx", str(src), *argv], artifacts, meta, log)
    triton_stage.run(b)
    return b.records["triton"]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    """What a full build leaves in ctx.artifacts: FP32/INT8/FP16 ONNX, an engine with its sidecar, a report."""
    d = tmp_path_factory.mktemp("artifacts")
    dyn = ModelMetadata(names=NAMES, imgsz=IMGSZ, batch=None)
    arts = {"onnx": make_onnx(d / "m.onnx", dyn),
            "int8-cpu.onnx": make_onnx(d / "m.int8-cpu.onnx", dyn.replace(precision=Precision.INT8)),
            "fp16.onnx": make_onnx(d / "m.fp16.onnx", dyn.replace(precision=Precision.FP16))}
    engine = d / "m.fp32.engine"
    engine.write_bytes(b"not a real engine: the writer only copies it")
    engine.with_suffix(".json").write_text(json.dumps({"tensorrt": "10.13", "metadata": dyn.to_dict(),
                                                       "profile": {"min": [1, 3, 64, 96], "opt": [4, 3, 64, 96],
                                                                   "max": [4, 3, 64, 96]}}))
    arts["fp32.engine"] = engine
    (d / "report.json").write_text("{}")
    arts["accuracy"] = d / "report.json"
    return arts


def test_a_model_per_artifact_and_every_config_parses(artifacts, tmp_path):
    rec = run_stage(["--triton", str(tmp_path / "repo")], artifacts)
    assert rec.delivered and rec.path == tmp_path / "repo"
    folders = sorted(p.parent for p in (tmp_path / "repo").glob("*/config.pbtxt"))
    assert [f.name for f in folders] == ["m_fp16_onnx", "m_fp32_engine", "m_int8-cpu_onnx", "m_onnx"]
    for folder in folders:
        cfg = parse(folder)
        assert cfg.name == folder.name
        assert (folder / "1" / cfg.default_model_filename).is_file()
        assert cfg.input[0].name == "images" and list(cfg.input[0].dims) == [3, *IMGSZ]
        assert cfg.input[0].data_type == model_config_pb2.TYPE_FP32
        assert cfg.output[0].name == "output0"
        assert list(cfg.output[0].dims) == [4 + len(NAMES), anchor_count(IMGSZ, (8, 16, 32))]
        assert cfg.dynamic_batching.max_queue_delay_microseconds == 2000
        assert len(cfg.instance_group) == 1 and cfg.instance_group[0].count == 1
        meta = ModelMetadata.from_json(cfg.parameters[METADATA_KEY].string_value)
        assert meta.names == NAMES
    by_name = {f.name: parse(f) for f in folders}
    assert by_name["m_onnx"].backend == "onnxruntime" and by_name["m_onnx"].max_batch_size == 8
    assert list(by_name["m_onnx"].dynamic_batching.preferred_batch_size) == [4, 8]
    assert by_name["m_onnx"].instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert by_name["m_int8-cpu_onnx"].instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    plan = by_name["m_fp32_engine"]
    assert plan.backend == "tensorrt" and plan.default_model_filename == "model.plan"
    assert plan.max_batch_size == 4, "the engine profile's max batch caps max_batch_size"
    assert list(plan.dynamic_batching.preferred_batch_size) == [2, 4]
    assert (tmp_path / "repo" / "m_fp32_engine" / "1" / "model.plan").read_bytes().startswith(b"not a real engine")


def test_options_reach_the_config(artifacts, tmp_path):
    run_stage(["--triton", str(tmp_path / "r"), "--triton-max-batch", "16", "--triton-preferred", "8,16",
               "--triton-queue-delay-us", "500", "--triton-instances", "2", "--triton-device", "cpu"],
              {"onnx": artifacts["onnx"]})
    cfg = parse(tmp_path / "r" / "m_onnx")
    assert cfg.max_batch_size == 16 and list(cfg.dynamic_batching.preferred_batch_size) == [8, 16]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500
    assert cfg.instance_group[0].count == 2
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU


@pytest.mark.parametrize("batch, max_batch_size, dims, batching", [
    (1, 0, [1, 3, 64, 96], False),    # static batch 1: full dims; a max_batch_size of 1 is refused by Triton's
                                      # ONNX Runtime backend unless the first dimension is -1
    (4, 0, [4, 3, 64, 96], False),    # static batch 4: Triton must send exactly 4
])
def test_static_batch_models(tmp_path, batch, max_batch_size, dims, batching):
    m = make_onnx(tmp_path / "s.onnx", ModelMetadata(names=NAMES, imgsz=IMGSZ, batch=batch))
    cfg = parse(write_model(tmp_path / "repo", "s", m, TritonOptions()))
    assert cfg.max_batch_size == max_batch_size and list(cfg.input[0].dims) == dims
    assert cfg.HasField("dynamic_batching") is batching


def test_end2end_outputs(tmp_path):
    meta = ModelMetadata(names=NAMES, imgsz=IMGSZ, batch=None, head=HeadLayout.END2END,
                         thresholds=Thresholds(0.25, 0.45, 100), output_names=("num_dets", "boxes", "scores", "classes"))
    cfg = parse(write_model(tmp_path / "repo", "e2e", make_onnx(tmp_path / "e.onnx", meta), TritonOptions()))
    got = {o.name: (model_config_pb2.DataType.Name(o.data_type), list(o.dims)) for o in cfg.output}
    assert got == {"num_dets": ("TYPE_INT32", [1]), "boxes": ("TYPE_FP32", [100, 4]),
                   "scores": ("TYPE_FP32", [100]), "classes": ("TYPE_INT32", [100])}


def test_graph_that_disagrees_with_its_metadata_is_refused(tmp_path):
    meta = ModelMetadata(names=NAMES, imgsz=IMGSZ, batch=1)
    bad = make_onnx(tmp_path / "bad.onnx", meta, {"output0": [1, 9, 10]})
    with pytest.raises(ExportError, match="output0.*re-export|metadata"):
        write_model(tmp_path / "repo", "bad", bad, TritonOptions())


def test_engine_without_sidecar_takes_the_build_metadata(tmp_path):
    engine = tmp_path / "x.fp16.engine"
    engine.write_bytes(b"plan")
    meta = ModelMetadata(names=NAMES, imgsz=IMGSZ, batch=None)
    run_stage(["--triton", str(tmp_path / "repo")], {"fp16.engine": engine}, meta)
    cfg = parse(tmp_path / "repo" / "model_fp16_engine")
    assert cfg.backend == "tensorrt" and cfg.max_batch_size == 8
    with pytest.raises(ExportError, match="no sidecar"):
        write_model(tmp_path / "repo2", "x", engine, TritonOptions())


def test_tensorrt_rtx_engines_are_left_out(artifacts, tmp_path):
    rtx = tmp_path / "m.fp16.engine"
    rtx.write_bytes(b"rtx plan")
    rtx.with_suffix(".json").write_text(json.dumps({"builder": "tensorrt_rtx", "version": "1.7.1"}))
    lines: list[str] = []
    run_stage(["--triton", str(tmp_path / "repo")], {"onnx": artifacts["onnx"], "fp16.engine": rtx}, log=lines.append)
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["m_onnx"]
    assert any("TensorRT-RTX" in line for line in lines)


def test_no_flag_no_repository_and_bad_options(artifacts, tmp_path):
    rec = run_stage([], artifacts)
    assert rec.not_asked and not rec.delivered
    with pytest.raises(ConfigError, match="--triton-max-batch"):
        run_stage(["--triton", str(tmp_path / "r"), "--triton-max-batch", "0"], artifacts)
    with pytest.raises(ConfigError, match="--triton-preferred"):
        run_stage(["--triton", str(tmp_path / "r"), "--triton-preferred", "32"], artifacts)
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is a file"):
        run_stage(["--triton", str(tmp_path / "file")], artifacts)
    rec = run_stage(["--triton", str(tmp_path / "r2")], {"accuracy": artifacts["accuracy"]})
    assert rec.status.value == "withheld" and "no model artifacts" in rec.reason
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--triton-preferred", "a,b"])


def test_help_documents_the_flags():
    text = build_parser().format_help()
    for flag in ("--triton DIR", "--triton-max-batch", "--triton-preferred", "--triton-queue-delay-us",
                 "--triton-instances", "--triton-device"):
        assert flag in text


def test_demo_export_makes_a_valid_repository(demo_onnx, tmp_path):
    run_stage(["--triton", str(tmp_path / "repo")], {"onnx": demo_onnx})
    cfg = parse(tmp_path / "repo" / f"{demo_onnx.stem}_onnx")
    meta = ModelMetadata.from_json(cfg.parameters[METADATA_KEY].string_value)
    assert cfg.input[0].name == meta.input_name and list(cfg.input[0].dims) == [1, 3, *meta.imgsz]
    assert list(cfg.output[0].dims) == [1, 4 + meta.num_classes, meta.raw_anchors]


def test_an_openvino_ir_becomes_a_model_of_tritons_openvino_backend(demo_onnx, tmp_path):
    pytest.importorskip("openvino")
    from engine import Detector
    from exporters.openvino import export_openvino
    from exporters.triton import write_repository

    with Detector(demo_onnx, device="cpu") as d:
        meta = d.metadata
    fp32_ir = export_openvino(demo_onnx, tmp_path, meta)
    written = write_repository(tmp_path / "repo", {"openvino": fp32_ir}, "demo", TritonOptions(), log=lambda s: None)
    folder = written["demo_openvino"]
    cfg = text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert cfg.backend == "openvino" and cfg.default_model_filename == "model.xml"
    assert sorted(p.name for p in (folder / "1").iterdir()) == ["model.bin", "model.xml"]
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert cfg.max_batch_size == 0 and list(cfg.input[0].dims) == [1, *meta.imgsz, 3]  # the IR takes uint8 BGR pixels
    assert cfg.input[0].data_type == model_config_pb2.TYPE_UINT8 and cfg.input[0].name == meta.input_name
    assert list(cfg.output[0].dims) == [1, 4 + meta.num_classes, meta.raw_anchors]
    assert cfg.parameters["PERFORMANCE_HINT"].string_value == "LATENCY"
    assert cfg.parameters["SKIP_OV_DYNAMIC_BATCHSIZE"].string_value == "YES"
    assert json.loads(cfg.parameters["yolodeploy"].string_value)["names"] == list(meta.names)
    with Detector(folder / "1" / "model.xml") as d:  # what Triton loads is a working IR
        assert d.names == meta.names


def test_a_dynamic_batch_ir_gets_throughput_streams_and_the_batcher():
    from exporters.triton import Device, config_pbtxt, make_config, tensor_specs

    meta = ModelMetadata(names=NAMES, imgsz=IMGSZ, batch=None)
    cfg = make_config("m_openvino", "openvino", meta, *tensor_specs(meta), TritonOptions(), Device.CPU)
    parsed = text_format.Parse(config_pbtxt(cfg), model_config_pb2.ModelConfig())
    assert parsed.max_batch_size == 8 and parsed.HasField("dynamic_batching")
    assert parsed.parameters["PERFORMANCE_HINT"].string_value == "THROUGHPUT"
    assert "SKIP_OV_DYNAMIC_BATCHSIZE" not in parsed.parameters
