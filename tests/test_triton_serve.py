"""The served path, for real: ``engine.serve`` under the Triton that nvidia-pytriton bundles.

The server runs from ``.venv-triton`` (made by ``bash .ci/setup_triton.sh`` from Debian's python3: the
pyenv Python's Triton Python-backend stub fails to start) as a subprocess, started once for the module,
bound to 127.0.0.1 on free ports. Clients are tritonclient's HTTP and gRPC ones from this venv.
The last test loads a repository written by ``--triton`` into the same Triton binary.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine import Detections, Detector
from engine.errors import InputImageError
from engine.serve import (
    detections_from_outputs,
    frames_from_encoded_input,
    frames_from_image_input,
    pack_outputs,
)
from tests.conftest import DEMO, ROOT
from tests.rtsp_server import free_ports

TRITON_VENV = ROOT / ".venv-triton"
TRITON_PY = TRITON_VENV / "bin" / "python"
OUTPUTS = ("num_detections", "boxes", "scores", "class_ids", "class_names")
needs_triton = pytest.mark.skipif(
    not TRITON_PY.exists(),
    reason=f"{TRITON_VENV} missing: run `bash .ci/setup_triton.sh` (a venv from Debian's /usr/bin/python3 "
           "with nvidia-pytriton; .ci/run does this)")


# ---- request/response helpers: no server needed -------------------------------------------------

def test_serve_defaults_on_a_cpu_and_on_a_gpu(demo_onnx, tmp_path, monkeypatch):
    """A CPU model: no dynamic batcher, the cores shared out between instances; an engine: one instance, batched."""
    from engine.serve import ServeConfig
    from engine.serve.defaults import resolve

    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    cpu = resolve(ServeConfig(model=demo_onnx))
    assert (cpu.dynamic_batching, cpu.instances, cpu.threads) == (False, 2, 2)
    mine = resolve(ServeConfig(model=demo_onnx, dynamic_batching=True, instances=1, threads=0))
    assert (mine.dynamic_batching, mine.instances, mine.threads) == (True, 1, 0)  # explicit values win
    assert resolve(ServeConfig(model=demo_onnx, instances=1)).threads == 0  # one instance: every core
    engine = tmp_path / "m.fp16.engine"
    engine.write_bytes(b"x")
    gpu = resolve(ServeConfig(model=engine))
    assert (gpu.dynamic_batching, gpu.instances, gpu.threads) == (True, 1, 0)
    from engine.serve.cli import _batching, build_parser

    parse = lambda *a: _batching(build_parser().parse_args(["--model", "m.onnx", *a]))  # noqa: E731
    assert parse() is None and parse("--dynamic-batching", "on") is True and parse("--no-dynamic-batching") is False


def test_serve_config_refuses_zero_instances_and_names_too_long_and_leaves_thresholds_to_the_model(demo_onnx):
    """--instances 0 passed the check (a ZeroDivisionError, or count: 0 in the config); a 250-character --name
    was an OSError traceback; --conf/--iou/--max-det defaults overrode an end-to-end model's baked ones."""
    from engine.errors import ConfigError
    from engine.serve import ServeConfig
    from engine.serve.cli import build_parser

    with pytest.raises(ConfigError, match="--instances 0"):
        ServeConfig(model=demo_onnx, instances=0)
    with pytest.raises(ConfigError, match="too long"):
        ServeConfig(model=demo_onnx, name="y" * 250)
    args = build_parser().parse_args(["--model", str(demo_onnx)])
    assert (args.conf, args.iou, args.max_det) == (None, None, None)  # Detector's defaults, or the model's own
    cfg = ServeConfig(model=demo_onnx)
    assert (cfg.conf, cfg.iou, cfg.max_det) == (None, None, None)


def test_outputs_round_trip_with_padding():
    a = Detections([[1, 2, 3, 4], [5, 6, 7, 8]], [0.9, 0.5], [2, 0], ("a", "b", "c"))
    empty = Detections.empty(("a", "b", "c"))
    out = pack_outputs([a, empty])
    assert out["boxes"].shape == (2, 2, 4) and out["num_detections"].ravel().tolist() == [2, 0]
    assert pack_outputs([empty])["boxes"].shape == (1, 1, 4), "never zero-size"
    back = detections_from_outputs(out, names=("a", "b", "c"))
    assert len(back[0]) == 2 and len(back[1]) == 0
    np.testing.assert_array_equal(back[0].xyxy, a.xyxy)
    assert back[0].class_name == ["c", "a"]
    assert detections_from_outputs(out)[0].class_name == ["c", "a"]  # names from the response itself


def test_input_checks_name_the_request_and_the_fix():
    with pytest.raises(InputImageError, match="(?s)request 3: input 'image' has dtype float32.*uint8"):
        frames_from_image_input(np.zeros((1, 8, 8, 3), np.float32), 3)
    with pytest.raises(InputImageError, match=r"(?s)shape \[8, 8, 3\].*\[batch, height, width, 3\]"):
        frames_from_image_input(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(InputImageError, match="empty frame"):
        frames_from_image_input(np.zeros((1, 0, 8, 3), np.uint8))
    with pytest.raises(InputImageError, match="item 1 .* not an image"):
        ok = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes()
        frames_from_encoded_input(np.array([[ok], [b"GIF89a? no"]], dtype=object))


def test_cli_refuses_a_missing_model_and_a_missing_pytriton(tmp_path):
    p = subprocess.run([sys.executable, "-m", "engine.serve", "--model", str(tmp_path / "nope.onnx")],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "no such file" in p.stderr and "fix:" in p.stderr
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    p = subprocess.run([sys.executable, "-c", "import sys; sys.modules['pytriton'] = None\n"
                        "from engine.serve import main; sys.exit(main(['--model', sys.argv[1]]))", str(model)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "needs nvidia-pytriton" in p.stderr and "setup_triton.sh" in p.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        p = subprocess.run([sys.executable, "-m", "engine.serve", "--model", str(model), "--grpc-port", str(port),
                            "--http-port", str(free_ports(1)[0]), "--metrics-port", "0"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and f"--grpc-port {port}" in p.stderr and "not available" in p.stderr


def test_served_model_configs_parse_in_tritons_own_schema(demo_onnx, tmp_path):
    """What engine.serve writes for Triton: both models, batching only where asked, the settings round-trip
    (a model path with quotes, a backslash, a newline and non-ASCII letters included)."""
    pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient not installed")
    from google.protobuf import text_format

    from engine.serve import ServeConfig
    from engine.serve.server import ModelInfo, served_models
    from engine.serve.triton_model import settings

    odd = tmp_path / 'dir "q" \\ é\nx' / "demo.onnx"
    odd.parent.mkdir()
    odd.write_bytes(demo_onnx.read_bytes())
    cfg = ServeConfig(model=odd, max_batch=4, dynamic_batching=True, instances=3, threads=1)
    raw, encoded = served_models(cfg, ModelInfo(3, (320, 320), dynamic=True, onnx=True))
    parsed = [text_format.Parse(m.config_pbtxt(), pb2.ModelConfig()) for m in (raw, encoded)]
    assert [c.name for c in parsed] == ["yolo", "yolo_encoded"] and all(c.backend == "python" for c in parsed)
    assert parsed[0].max_batch_size == 4 and list(parsed[0].input[0].dims) == [-1, -1, 3]
    assert parsed[0].input[0].data_type == pb2.TYPE_UINT8 and parsed[1].input[0].data_type == pb2.TYPE_STRING
    assert parsed[0].HasField("dynamic_batching") and not parsed[1].HasField("dynamic_batching")
    assert parsed[0].dynamic_batching.max_queue_delay_microseconds == 2000
    assert parsed[0].instance_group[0].count == 3
    assert [o.name for o in parsed[0].output] == list(OUTPUTS)
    got = [settings({"parameters": {k: {"string_value": v.string_value} for k, v in c.parameters.items()}})
           for c in parsed]
    assert got[0] == raw.settings and got[0].model == str(odd.resolve()) and got[0].warmup_batch == 4
    assert got[1].target == "yolo" and got[1].input == "encoded"  # decodes, then detects in 'yolo'
    static = served_models(cfg, ModelInfo(3, (320, 320), dynamic=False, onnx=True))[0]
    assert static.settings.warmup_batch == 1  # a static model runs frames one by one: one shape to warm up


def test_the_model_probe_runs_in_a_child_process_where_asked(demo_onnx, tmp_path):
    """On a GPU the serving process loads the model in a spawned child (no CUDA context kept while Triton
    serves): the same info, and a bad file still fails with the Detector's typed error and fix."""
    from engine.errors import ModelLoadError
    from engine.serve import ServeConfig
    from engine.serve.server import probe

    here = probe(ServeConfig(model=demo_onnx), isolated=False)
    assert probe(ServeConfig(model=demo_onnx), isolated=True) == here
    assert here.classes == 3 and here.onnx and not here.dynamic
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(ModelLoadError) as e:
        probe(ServeConfig(model=bad), isolated=True)
    assert "broken.onnx" in e.value.message and e.value.fix


def test_a_typed_error_from_the_probe_child_comes_back_whole():
    """Errors whose constructor differs from DeployError's (a kernel log, a CUDA call) keep every field."""
    from engine.errors import CudaError, KernelCompileError
    from engine.serve.server import _rebuilt

    errors = (KernelCompileError("kernel refused", log="line 3: error", fix="update the driver"),
              CudaError("cudaMalloc failed", "free some GPU memory", call="cudaMalloc", error_name="OOM"))
    for err in errors:
        back = _rebuilt(type(err).__name__, err.args, dict(vars(err)))
        assert type(back) is type(err) and str(back) == str(err) and vars(back) == vars(err)
        assert (back.message, back.fix) == (err.message, err.fix)
    assert errors[0].log == "line 3: error" and errors[1].call == "cudaMalloc"
    unknown = _rebuilt("NotAnError", ("boom",), {"message": "boom", "fix": "do this"})
    assert type(unknown).__name__ == "DeployError" and unknown.fix == "do this"


class _FakePbUtils:
    """The part of Triton's ``triton_python_backend_utils`` the model uses, to run it without Triton.
    ``InferenceRequest.exec`` (a BLS call) runs the named model of :attr:`models` in this process."""

    models: dict = {}

    class TritonError:
        INVALID_ARG, INTERNAL = 3, 13

        def __init__(self, message, code):
            self._message, self._code = message, code

        def message(self):
            return self._message

        def code(self):
            return self._code

    class Tensor:
        def __init__(self, name, array):
            self.name, self.array = name, array

        def as_numpy(self):
            return self.array

    class InferenceResponse:
        def __init__(self, output_tensors=None, error=None):
            self.output_tensors, self._error = output_tensors, error

        def has_error(self):
            return self._error is not None

        def error(self):
            return self._error

    class InferenceRequest:
        def __init__(self, model_name, requested_output_names, inputs):
            self.model_name, self.inputs = model_name, {t.name: t.array for t in inputs}

        def exec(self):
            return _FakePbUtils.models[self.model_name].execute([self.inputs])[0]

    class Logger:
        lines: list = []

        @classmethod
        def log_warn(cls, m):
            cls.lines.append(("warn", m))

        @classmethod
        def log_error(cls, m):
            cls.lines.append(("error", m))

    @classmethod
    def get_input_tensor_by_name(cls, request, name):
        return cls.Tensor(name, request[name]) if name in request else None

    @staticmethod
    def get_output_tensor_by_name(response, name):
        return next(t for t in response.output_tensors if t.name == name)


def test_the_python_backend_model_answers_each_request_alone(demo_onnx, images, monkeypatch):
    """The model Triton's stubs run, driven without Triton: good frames get the Detector's detections (raw,
    and encoded through the raw-frame model), a zero-size frame and bytes that are not an image get
    INVALID_ARG with the project's line, a crash INTERNAL with one line and the traceback in the log."""
    import json

    from engine.serve import ServeConfig
    from engine.serve.server import ModelInfo, served_models
    from engine.serve.triton_model import TritonPythonModel

    fake = _FakePbUtils()
    fake.Logger.lines = []
    monkeypatch.setattr(_FakePbUtils, "models", {})  # what the BLS calls of InferenceRequest.exec reach
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake)
    for m in served_models(ServeConfig(model=demo_onnx, threads=1, instances=1, dynamic_batching=False),
                           ModelInfo(3, (320, 320), dynamic=False, onnx=True)):
        model = TritonPythonModel()
        parameters = {"engine_serve": {"string_value": m.settings.to_json()}}
        model.initialize({"model_config": json.dumps({"parameters": parameters}), "model_name": m.name})
        fake.models[m.name] = model
    assert fake.models["yolo_encoded"].detector is None  # one Detector per instance in all: the raw model's
    outputs = lambda answer: {t.name: t.array for t in answer.output_tensors}  # noqa: E731
    try:
        answers = fake.models["yolo"].execute([{"image": images[0][None]}, {"image": np.zeros((1, 0, 64, 3), np.uint8)},
                                               {"image": images[1][None]}])
        pngs = np.array([[cv2.imencode(".png", img)[1].tobytes()] for img in images[:2]], dtype=object)
        both = fake.models["yolo_encoded"].execute([{"encoded": pngs}])[0]
        with Detector(demo_onnx) as local:
            for answer, img in ((answers[0], images[0]), (answers[2], images[1])):
                assert not answer.has_error(), answer.error().message()
                _same(detections_from_outputs(outputs(answer), local.names)[0], local(img))
            assert not both.has_error(), both.error().message()
            for got, img in zip(detections_from_outputs(outputs(both), local.names), images[:2]):
                _same(got, local(img))
        assert answers[1].error().code() == fake.TritonError.INVALID_ARG
        assert "has shape [1, 0, 64, 3], with nothing in it; fix: " in answers[1].error().message()
        bad = fake.models["yolo_encoded"].execute([{"encoded": np.array([[b"not an image"]], dtype=object)}])[0]
        assert bad.error().code() == fake.TritonError.INVALID_ARG
        assert "not an image OpenCV can decode; fix: " in bad.error().message()
        assert [kind for kind, _ in fake.Logger.lines] == ["warn", "warn"]
        monkeypatch.setattr(fake.models["yolo"].detector, "predict", lambda frames: 1 / 0)
        crash = fake.models["yolo"].execute([{"image": images[0][None]}])[0]
        assert crash.error().code() == fake.TritonError.INTERNAL and "ZeroDivisionError" in crash.error().message()
        assert len(crash.error().message().splitlines()) == 1 and fake.Logger.lines[-1][0] == "error"
        assert "Traceback" in fake.Logger.lines[-1][1]
        png = np.array([[cv2.imencode(".png", images[0])[1].tobytes()]], dtype=object)
        forwarded = fake.models["yolo_encoded"].execute([{"encoded": png}, {"encoded": png}])
        assert [a.error().code() for a in forwarded] == [fake.TritonError.INTERNAL] * 2  # the raw model's failure
        assert forwarded[1].error().message().startswith("request 1: engine.serve: internal error")
    finally:
        for model in fake.models.values():
            model.finalize()


# ---- one server for the module -------------------------------------------------------------------

def _wait_ready(proc: subprocess.Popen, log: Path, url: str, models: list[str], timeout: float = 150) -> None:
    import tritonclient.http as th

    client = th.InferenceServerClient(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if all(client.is_model_ready(m) for m in models):
                return
        except Exception:  # connection refused while Triton starts
            pass
        time.sleep(0.5)
    pytest.fail(f"server not ready in {timeout}s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            _kill_all(proc)


def _stop_timed(proc: subprocess.Popen, sig: int) -> tuple[int, float]:
    """Send ``sig`` to the server; its exit code and the seconds it took to exit."""
    t0 = time.monotonic()
    proc.send_signal(sig)
    code = proc.wait(timeout=60)
    return code, time.monotonic() - t0


def _kill_all(proc: subprocess.Popen) -> None:
    """SIGKILL the server's session (a test that failed): Triton, in a session of its own, gets SIGTERM from
    the kernel when the server dies (PR_SET_PDEATHSIG); the next server removes the folder it leaves."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def served_model(demo_pt, tmp_path_factory) -> Path:
    """The demo model with a dynamic batch axis (so Triton's batches run as one inference)."""
    pytest.importorskip("ultralytics")
    from exporters.config import ExportConfig
    from exporters.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("served")
    return export_onnx(ExportConfig(weights=demo_pt, dynamic=True, out=out), log=lambda s: None).path


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    files = sorted((DEMO / "val" / "images").glob("*.jpg"))[:4]
    if not files:
        pytest.skip(f"no demo val images in {DEMO / 'val' / 'images'}")
    return [cv2.imread(str(f)) for f in files]


@pytest.fixture(scope="module")
def local(served_model):
    with Detector(served_model) as det:
        yield det


@pytest.fixture(scope="module")
def server(served_model, tmp_path_factory):
    pytest.importorskip("tritonclient.http", reason="tritonclient not installed: pip install -e .[dev]")
    if not TRITON_PY.exists():
        pytest.skip(needs_triton.kwargs["reason"])
    http, grpc, metrics = free_ports(3)
    log = tmp_path_factory.mktemp("server") / "serve.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([str(TRITON_PY), "-m", "engine.serve", "--model", str(served_model), "--http-port",
                                 str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
                                 "--max-batch", "4", "--dynamic-batching", "on"],  # off by default on a CPU
                                cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_ready(proc, log, f"127.0.0.1:{http}", ["yolo", "yolo_encoded"])
        yield {"http": f"127.0.0.1:{http}", "grpc": f"127.0.0.1:{grpc}", "metrics": metrics, "log": log}
    finally:
        _stop(proc)
    assert proc.returncode == 0, log.read_text()[-3000:]


def _client(server, protocol: str):
    if protocol == "http":
        import tritonclient.http as mod
    else:
        import tritonclient.grpc as mod
    return mod, mod.InferenceServerClient(server[protocol])


def _infer(mod, client, model: str, name: str, array: np.ndarray, dtype: str) -> list[Detections]:
    inp = mod.InferInput(name, list(array.shape), dtype)
    inp.set_data_from_numpy(array)
    result = client.infer(model, [inp])
    return detections_from_outputs({n: result.as_numpy(n) for n in OUTPUTS})


def _same(remote: Detections, expected: Detections) -> None:
    assert len(remote) == len(expected)
    np.testing.assert_allclose(remote.xyxy, expected.xyxy, atol=1e-3)
    np.testing.assert_allclose(remote.confidence, expected.confidence, atol=1e-5)
    assert remote.class_id.tolist() == expected.class_id.tolist()
    assert remote.class_name == expected.class_name


@needs_triton
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_remote_detections_equal_the_local_detector(server, local, images, protocol):
    mod, client = _client(server, protocol)
    total = 0
    for img in images:
        remote = _infer(mod, client, "yolo", "image", img[None], "UINT8")[0]
        _same(remote, local(img))
        total += len(remote)
    assert total > 0, "the demo images should have detections"
    pair = np.stack([images[0], images[0][::-1].copy()])  # one request, two frames: one batched inference
    remote = _infer(mod, client, "yolo", "image", pair, "UINT8")
    for r, img in zip(remote, pair):
        _same(r, local(img))
    blank = np.full((1, 48, 64, 3), 114, np.uint8)  # no detections: empty outputs, not an error
    assert len(_infer(mod, client, "yolo", "image", blank, "UINT8")[0]) == 0
    png = cv2.imencode(".png", images[1])[1].tobytes()  # lossless, so the decoded frame is the same
    _same(_infer(mod, client, "yolo_encoded", "encoded", np.array([[png]], dtype=object), "BYTES")[0],
          local(images[1]))


def _bad_requests(images: list[np.ndarray]) -> list[tuple[str, str, str, np.ndarray, str, str]]:
    """(case, model, input, array, dtype, expected message) for every bad request the issue lists; each answer
    is the project's one line, reason then fix (the front's checks, or the stub's for content)."""
    png = cv2.imencode(".png", images[0])[1].tobytes()
    frame = r"input 'image' of 'yolo' has shape "
    return [
        ("wrong dtype", "yolo", "image", images[0][None].astype(np.float32), "FP32",
         "input 'image' of 'yolo' has datatype FP32; fix: send datatype UINT8"),
        ("wrong rank: no batch axis", "yolo", "image", images[0], "UINT8",
         frame + r"\[\d+, \d+, 3\]: one frame without the batch axis; fix: send shape \[1, "),
        ("wrong rank: 2", "yolo", "image", images[0][:, :, 0], "UINT8", frame + r"\[\d+, \d+\]; fix: send uint8 BGR"),
        ("wrong rank: 5", "yolo", "image", images[0][None, None], "UINT8", frame + r"\[1, 1, \d+, \d+, 3\]; fix: "),
        ("wrong rank: encoded", "yolo_encoded", "encoded", np.array([png], dtype=object), "BYTES",
         r"input 'encoded' of 'yolo_encoded' has shape \[1\]; fix: send shape \[1, 1\]"),
        ("4 channels", "yolo", "image", np.zeros((1, 8, 8, 4), np.uint8), "UINT8", r"4 channels, not 3; fix: "),
        ("bytes that are not an image", "yolo_encoded", "encoded",
         np.array([[b"these bytes are not an image"]], dtype=object), "BYTES", "not an image OpenCV can decode; fix: "),
        ("a truncated PNG", "yolo_encoded", "encoded", np.array([[png[: len(png) // 2]]], dtype=object), "BYTES",
         r"\(\d+ bytes, starting b'\\x89PNG.*not an image OpenCV can decode; fix: "),
        ("empty bytes", "yolo_encoded", "encoded", np.array([[b""]], dtype=object), "BYTES", r"\(0 bytes.*; fix: "),
        ("a raw frame sent to the encoded model", "yolo_encoded", "image", images[0][None], "UINT8",
         r"'yolo_encoded' has no input 'image' \(that is the input of 'yolo'\); fix: "),
        ("an empty batch", "yolo", "image", np.zeros((0, 8, 8, 3), np.uint8), "UINT8", r"an empty batch; fix: "),
        ("a zero-size frame", "yolo", "image", np.zeros((1, 0, 64, 3), np.uint8), "UINT8",
         frame + r"\[1, 0, 64, 3\], with nothing in it; fix: "),
        ("a batch over the maximum", "yolo", "image", np.zeros((5, 8, 8, 3), np.uint8), "UINT8",
         r"a batch of 5 over this server's maximum of 4; fix: .*--max-batch 5"),
        ("an unknown input", "yolo", "pixels", images[0][None], "UINT8", r"'yolo' has no input 'pixels'; fix: "),
        ("an unknown model", "nope", "image", images[0][None], "UINT8", r"unknown model 'nope': .*; fix: "),
    ]


@needs_triton
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_every_bad_request_gets_a_one_line_client_error_and_the_next_good_one_is_answered(server, local, images,
                                                                                           protocol):
    from tritonclient.utils import InferenceServerException

    mod, client = _client(server, protocol)
    client_error = {"http": ("400",), "grpc": ("StatusCode.INVALID_ARGUMENT",)}[protocol]
    not_found = {"http": ("404",), "grpc": ("StatusCode.NOT_FOUND",)}[protocol]
    for case, model, name, array, dtype, message in _bad_requests(images):
        with pytest.raises(InferenceServerException) as e:
            _infer(mod, client, model, name, array, dtype)
        text = e.value.message() or ""
        assert str(e.value.status()) in (not_found if model == "nope" else client_error), (case, e.value.status(), text)
        assert re.search(message, text), (case, text)
        assert len(text.splitlines()) == 1 and "Traceback" not in text, (case, text)
        assert not re.search(r"/(tmp|work|root|home|usr)/|site-packages|\.py\b", text), (case, text)  # no server path
        _same(_infer(mod, client, "yolo", "image", images[2][None], "UINT8")[0], local(images[2]))
    log = server["log"].read_text()
    assert "Traceback" not in log and "bad request to 'yolo_encoded': request 0: input 'encoded'" in log  # a stub's
    assert "bad request to 'yolo': input 'image' of 'yolo' has shape [1, 0, 64, 3]" in log  # the front's


@needs_triton
def test_a_bad_request_batched_with_good_ones_fails_alone(server, local, images):
    """A bad request among concurrent good ones (which the dynamic batcher gathers) fails alone."""
    import tritonclient.grpc as mod
    from tritonclient.utils import InferenceServerException

    results: dict[int, object] = {}

    def call(k: int) -> None:
        client = mod.InferenceServerClient(server["grpc"])
        frame = np.zeros((1, 0, 64, 3), np.uint8) if k == 0 else images[k % len(images)][None]
        try:
            results[k] = _infer(mod, client, "yolo", "image", frame, "UINT8")[0]
        except InferenceServerException as e:
            results[k] = e

    threads = [threading.Thread(target=call, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert isinstance(results[0], InferenceServerException) and "nothing in it" in results[0].message()
    for k in (1, 2, 3):
        _same(results[k], local(images[k % len(images)]))


@needs_triton
def test_a_stream_answers_a_bad_request_in_the_stream_and_the_good_ones_as_usual(server, local, images):
    """gRPC's ModelStreamInfer: each request of the stream is checked by the front as a unary one is."""
    import queue

    import tritonclient.grpc as tg

    client = tg.InferenceServerClient(server["grpc"])
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for k, frame in enumerate([images[0][None], images[1], images[2][None]]):
            inp = tg.InferInput("image", list(frame.shape), "UINT8")
            inp.set_data_from_numpy(frame)
            client.async_stream_infer("yolo", [inp], request_id=str(k))
        got = [answers.get(timeout=60) for _ in range(3)]
    finally:
        client.stop_stream()
    errors = [e.message() for r, e in got if e is not None]
    assert len(errors) == 1 and "one frame without the batch axis; fix: send shape [1, " in errors[0], errors
    by_id = {r.get_response().id: r for r, e in got if e is None}
    for k in ("0", "2"):
        _same(detections_from_outputs({n: by_id[k].as_numpy(n) for n in OUTPUTS})[0], local(images[int(k)]))


def test_bad_request_log_lines_are_rate_limited(caplog):
    from engine.serve.handler import LogLimit

    now = [0.0]
    limit = LogLimit(lines=3, window_s=10.0, clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="engine.serve"):
        for i in range(8):
            limit.warning(f"bad request {i}")
        now[0] = 11.0
        limit.warning("bad request later")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["bad request 0", "bad request 1", "bad request 2",
                     "5 more bad requests in the last 10 s were not logged", "bad request later"]


@needs_triton
def test_concurrent_clients_each_get_their_own_detections(server, local, images):
    """Requests the dynamic batcher gathers into one inference come back to the right client."""
    import tritonclient.grpc as mod

    expected = [local(img) for img in images]
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            client = mod.InferenceServerClient(server["grpc"])
            for j in range(4):
                i = (k + j) % len(images)
                _same(_infer(mod, client, "yolo", "image", images[i][None], "UINT8")[0], expected[i])
        except BaseException as e:  # collected and re-raised in the test thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[0]
    assert not any(t.is_alive() for t in threads)


@needs_triton
def test_metrics_endpoint_counts_inferences(server):
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{server['metrics']}/metrics", timeout=10).read().decode()
    assert 'nv_inference_request_success{model="yolo"' in text


@needs_triton
def test_no_client_can_unload_the_model_or_load_code(server, local, images):
    """Triton's admin APIs (repository load/unload, statistics...) want the token only engine.serve holds."""
    import tritonclient.grpc as tg
    import tritonclient.http as th
    from tritonclient.utils import InferenceServerException

    for client in (th.InferenceServerClient(server["http"]), tg.InferenceServerClient(server["grpc"])):
        with pytest.raises(InferenceServerException, match="is restricted, expecting header"):
            client.unload_model("yolo")
        with pytest.raises(InferenceServerException, match="is restricted, expecting header"):
            client.load_model("yolo", config='{"backend": "python"}', files={"file:1/model.py": b"raise SystemExit"})
        with pytest.raises(InferenceServerException, match="is restricted, expecting header"):
            client.get_inference_statistics("yolo")
        assert client.is_model_ready("yolo")
    mod, client = _client(server, "http")
    _same(_infer(mod, client, "yolo", "image", images[0][None], "UINT8")[0], local(images[0]))


def test_leftovers_of_a_killed_server_are_removed_by_the_next_one(tmp_path):
    """A server killed with SIGKILL cannot remove its folder or shm regions; the next one to start does:
    only real folders of this user whose engine.serve pid no longer runs, and only the regions of such a
    folder (a region alone may be a live server's in another container sharing /dev/shm)."""
    from engine.serve.triton_process import PREFIX, remove_stale

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, timeout=60).stdout.strip()
    tmp, shm, elsewhere = tmp_path / "tmp", tmp_path / "shm", tmp_path / "elsewhere"
    for d in (tmp, shm, elsewhere):
        d.mkdir()
    (tmp / f"{PREFIX}{dead}-aaaa-x1" / "models").mkdir(parents=True)  # a killed server's
    (tmp / f"{PREFIX}{os.getpid()}-bbbb-x2").mkdir()  # a live one's (this process)
    (tmp / f"{PREFIX}notapid").mkdir()
    (tmp / f"{PREFIX}{dead}-cccc-x3").symlink_to(elsewhere)  # a link: never followed nor removed
    for name in (f"{dead}-aaaa-r1", f"{dead}-aaaa-r2", f"{os.getpid()}-bbbb-r1", f"{dead}-dddd-r1"):
        (shm / f"{PREFIX}{name}").write_bytes(b"x")
    removed = remove_stale(tmp, shm)
    assert sorted(p.name for p in removed) == [f"{PREFIX}{dead}-aaaa-{x}" for x in ("r1", "r2", "x1")]
    assert sorted(p.name for p in tmp.iterdir()) == sorted([f"{PREFIX}{os.getpid()}-bbbb-x2", f"{PREFIX}notapid",
                                                            f"{PREFIX}{dead}-cccc-x3"])
    assert sorted(p.name for p in shm.iterdir()) == sorted([f"{PREFIX}{os.getpid()}-bbbb-r1",
                                                            f"{PREFIX}{dead}-dddd-r1"])
    assert elsewhere.is_dir()


def _fake_triton(tmp_path: Path, script: str, model: Path):
    """A TritonProcess on a fake ``tritonserver`` (a shell ``script``), with the two models engine.serve serves."""
    from engine.serve import ServeConfig
    from engine.serve.server import ModelInfo, served_models
    from engine.serve.triton_process import TritonDist, TritonProcess

    binary = tmp_path / "tritonserver"
    binary.write_text("#!/bin/sh\n" + script)
    binary.chmod(0o755)
    backend = tmp_path / "python"
    backend.mkdir()
    (backend / "libtriton_python.so").write_bytes(b"")
    dist = TritonDist(binary=binary, python_backend=backend, stub=binary, libs=tmp_path)
    models = served_models(ServeConfig(model=model, instances=1, threads=1, dynamic_batching=False),
                           ModelInfo(3, (320, 320), dynamic=False, onnx=True))
    http, grpc = free_ports(2)
    return TritonProcess(dist, models, "127.0.0.1", http, grpc, 0, exit_timeout_s=2)


@pytest.mark.skipif(sys.platform == "win32", reason="Triton runs on Linux")
def test_a_triton_that_fails_to_start_is_a_typed_error_and_leaves_nothing(tmp_path, demo_onnx):
    """A Triton binary that exits at once (a stub that cannot start, a port taken meanwhile): ServeError
    naming how it ended, and the repository folder removed."""
    from engine.errors import ServeError

    with pytest.raises(ServeError, match="exited with code 3 while loading yolo, yolo_encoded"):
        with _fake_triton(tmp_path, "echo 'fake triton: failing' >&2\nexit 3\n", demo_onnx) as triton:
            folder = triton.workspace
            assert (folder / "models" / "yolo" / "config.pbtxt").is_file()
            triton.wait_ready(30)
    assert not folder.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="Triton runs on Linux")
def test_nothing_of_tritons_process_group_outlives_the_stop(tmp_path, demo_onnx):
    """A stop while Triton was still loading the models left Python-backend stubs (which ignore SIGTERM and
    SIGINT) running under init after Triton exited: here a fake Triton leaves such a child behind."""
    child = tmp_path / "child.pid"
    script = ("(trap '' INT TERM; exec sleep 120) &\n"
              f"echo $! > {child}\n"
              "trap 'exit 0' INT TERM\n"
              "while :; do sleep 0.1; done\n")
    with _fake_triton(tmp_path, script, demo_onnx) as triton:
        deadline = time.monotonic() + 30
        while not child.exists() or not child.read_text().strip():
            assert time.monotonic() < deadline, "the fake Triton did not start its child"
            time.sleep(0.1)
        pid = int(child.read_text())
        triton.stop(unload_wait_s=0.5)
        assert not triton.alive()

    def running(p: int) -> bool:
        try:
            return Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 5
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running(pid), "a process of Triton's group outlived engine.serve"


def _cmdlines() -> list[list[str]]:
    out = []
    for f in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            out.append(f.read_bytes().decode(errors="replace").split("\0"))
        except OSError:
            pass
    return out


def _parent(pid: str) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _left_behind(server_pid: int) -> list[Path]:
    """What the Triton of the engine.serve ``server_pid`` keeps while it runs: engine.serve's temporary folder
    (its model repository) and the Python-backend stubs' shared-memory regions (one per model instance)."""
    for f in Path("/proc").glob("[0-9]*/cmdline"):
        if _parent(f.parent.name) != server_pid:
            continue
        try:
            a = f.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if a[0].endswith("tritonserver") and "--model-repository" in a:
            prefix = next(x.split("=", 1)[1] for x in a if x.startswith("python,shm-region-prefix-name="))
            return [Path(a[a.index("--model-repository") + 1]).parent, *Path("/dev/shm").glob(prefix + "*")]
    return []


@needs_triton
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_stops_within_10s_with_clients_holding_connections_and_leaves_nothing(served_model, tmp_path, sig):
    """An HTTP keep-alive connection kept Triton waiting out its 30 s exit timeout, then it left its model
    folders under /tmp: now the models are unloaded first and the exit timeout is short."""
    import http.client

    import tritonclient.grpc as tg

    http_port, grpc_port = free_ports(2)
    log = tmp_path / "serve.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([str(TRITON_PY), "-m", "engine.serve", "--model", str(served_model), "--http-port",
                                 str(http_port), "--grpc-port", str(grpc_port), "--metrics-port", "0", "--max-batch", "2"],
                                cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_ready(proc, log, f"127.0.0.1:{http_port}", ["yolo", "yolo_encoded"])
        kept = _left_behind(proc.pid)
        assert kept and kept[0].is_dir() and len(kept) >= 3, kept  # the repository folder and the stubs' regions
        keep_alive = http.client.HTTPConnection("127.0.0.1", http_port)
        keep_alive.request("GET", "/v2/health/live")
        assert keep_alive.getresponse().read() == b""  # answered, and the connection stays open
        grpc_client = tg.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        assert grpc_client.is_server_live()
        code, took = _stop_timed(proc, sig)
    finally:
        if proc.poll() is None:
            _kill_all(proc)
    out = log.read_text()
    assert took < 10.0, f"stopped in {took:.1f}s\n{out[-3000:]}"
    assert code == (0 if sig == signal.SIGTERM else 130), out[-3000:]  # engine.cli's policy: Ctrl-C exits 130
    assert not [d for d in kept if d.exists()], kept  # the repository folder and the shared memory are gone
    assert not [a for a in _cmdlines() if a[0].endswith(("tritonserver", "triton_python_backend_stub"))
                and any(str(kept[0]) in x for x in a)], "Triton or a stub outlived the server"
    assert "Traceback" not in out and "non-graceful" not in out.lower(), out[-3000:]  # the stubs finalized
    assert "could not unload" not in out, out[-3000:]  # engine.serve's own unload, with its token, worked
    said = "stopped (SIGTERM)" if sig == signal.SIGTERM else "interrupted: Triton stopped, models unloaded"
    assert said in out, out[-3000:]


@needs_triton
def test_a_grpc_only_server_gets_ready_serves_and_stops_cleanly(served_model, local, images, tmp_path):
    """--http-port 0: readiness, the unload at stop (with the admin token) and the stop go through gRPC."""
    import tritonclient.grpc as tg

    (grpc_port,) = free_ports(1)
    log = tmp_path / "serve.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([str(TRITON_PY), "-m", "engine.serve", "--model", str(served_model), "--http-port", "0",
                                 "--grpc-port", str(grpc_port), "--metrics-port", "0", "--instances", "1"],
                                cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        while "Ctrl+C stops" not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert "Ctrl+C stops" in log.read_text(), log.read_text()[-3000:]
        client = tg.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        _same(_infer(tg, client, "yolo", "image", images[1][None], "UINT8")[0], local(images[1]))
        client.close()
        code, took = _stop_timed(proc, signal.SIGTERM)
    finally:
        if proc.poll() is None:
            _kill_all(proc)
    out = log.read_text()
    assert code == 0 and took < 10.0, out[-3000:]
    assert "could not unload" not in out and "non-graceful" not in out.lower() and "Traceback" not in out, out[-3000:]


@needs_triton
def test_without_the_front_clients_reach_triton_itself(served_model, local, images, tmp_path):
    """--no-front: Triton's own endpoints on the public port (one hop less); a frame without its batch axis then
    gets Triton's misleading words, which the front exists to replace."""
    import tritonclient.http as th
    from tritonclient.utils import InferenceServerException

    (http_port,) = free_ports(1)
    log = tmp_path / "serve.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([str(TRITON_PY), "-m", "engine.serve", "--model", str(served_model), "--http-port",
                                 str(http_port), "--grpc-port", "0", "--metrics-port", "0", "--instances", "1",
                                 "--max-batch", "2", "--no-front"],
                                cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_ready(proc, log, f"127.0.0.1:{http_port}", ["yolo", "yolo_encoded"])
        tritons = [a for a in _cmdlines() if a[0].endswith("tritonserver") and str(http_port) in a]
        assert len(tritons) == 1  # Triton listens on the public port itself
        client = th.InferenceServerClient(f"127.0.0.1:{http_port}")
        _same(_infer(th, client, "yolo", "image", images[0][None], "UINT8")[0], local(images[0]))
        with pytest.raises(InferenceServerException, match="batch-size must be <= 2"):
            _infer(th, client, "yolo", "image", images[0], "UINT8")
        code, took = _stop_timed(proc, signal.SIGTERM)
    finally:
        if proc.poll() is None:
            _kill_all(proc)
    out = log.read_text()
    assert code == 0 and "clients reach Triton directly" in out, out[-3000:]


# ---- the --triton repository in the same Triton binary -----------------------------------------

# A Python-based backend named "onnxruntime": the Triton in nvidia-pytriton ships the Python backend
# only, so this stands in for the real ONNX Runtime backend. Triton still reads, normalizes and
# validates our config.pbtxt, batches, and checks tensor names, dtypes and dims on every request.
STAND_IN_BACKEND = '''
import json, os
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        path = os.path.join(args["model_repository"], args["model_version"], cfg["default_model_filename"])
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.outputs = [o["name"] for o in cfg["output"]]

    def execute(self, requests):
        responses = []
        for r in requests:
            feeds = {i.name: pb_utils.get_input_tensor_by_name(r, i.name).as_numpy() for i in self.session.get_inputs()}
            values = self.session.run(self.outputs, feeds)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(n, v) for n, v in zip(self.outputs, values)]))
        return responses
'''


@needs_triton
def test_generated_repository_loads_and_serves_in_triton(served_model, tmp_path):
    import onnxruntime as ort
    import tritonclient.http as th

    from exporters.triton import Device, TritonOptions, write_repository

    write_repository(tmp_path / "repo", {"onnx": served_model}, "demo", TritonOptions(max_batch=4, device=Device.CPU),
                     log=lambda s: None)
    version = subprocess.run([str(TRITON_PY), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=60).stdout.strip()
    site = TRITON_VENV / "lib" / f"python{version}" / "site-packages"
    dist = site / "pytriton" / "tritonserver"  # the Triton 2.51 pytriton ships: binary, Python backend, stubs
    backends = tmp_path / "backends"
    shutil.copytree(dist / "backends", backends)
    shutil.copy(dist / "python_backend_stubs" / version / "triton_python_backend_stub", backends / "python")
    (backends / "onnxruntime").mkdir()
    (backends / "onnxruntime" / "model.py").write_text(STAND_IN_BACKEND)
    http, grpc = free_ports(2)
    env = dict(os.environ, PATH=f"{TRITON_VENV / 'bin'}:{os.environ['PATH']}",
               LD_LIBRARY_PATH=str(site / "nvidia_pytriton.libs"))
    log = tmp_path / "tritonserver.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([str(dist / "bin" / "tritonserver"), "--model-repository", str(tmp_path / "repo"),
                                 "--backend-directory", str(backends), "--http-address", "127.0.0.1", "--http-port",
                                 str(http), "--grpc-address", "127.0.0.1", "--grpc-port", str(grpc),
                                 "--allow-metrics", "false", "--exit-on-error", "true", "--disable-auto-complete-config",
                                 "--exit-timeout-secs", "5"],
                                env=env, stdout=f, stderr=subprocess.STDOUT)
    try:
        _wait_ready(proc, log, f"127.0.0.1:{http}", ["demo_onnx"], timeout=90)
        client = th.InferenceServerClient(f"127.0.0.1:{http}")
        cfg = client.get_model_config("demo_onnx")
        assert cfg["max_batch_size"] == 4 and cfg["dynamic_batching"]["preferred_batch_size"] == [2, 4]
        h, w = (int(d) for d in cfg["input"][0]["dims"][1:])
        x = np.random.default_rng(0).random((2, 3, h, w), dtype=np.float32)
        inp = th.InferInput(cfg["input"][0]["name"], list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        got = client.infer("demo_onnx", [inp]).as_numpy(cfg["output"][0]["name"])
        want = ort.InferenceSession(str(served_model), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
        np.testing.assert_allclose(got, want, atol=1e-4)
        client.close()  # a kept-alive connection makes Triton wait out its exit timeout, then exit leaving /tmp files
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
