"""OpenVINO backend: IR folders (``<stem>_openvino/``, ``<stem>.int8_openvino/``), ``.xml`` files, and ``.onnx``.

Runs on Intel (and other x86) CPUs, Intel iGPUs and NPUs through OpenVINO's devices (``AUTO``, ``CPU``,
``GPU``, ``NPU``). The model's metadata comes from the IR's ``rt_info`` (key ``yolodeploy``, written by
``python -m exporters.build``); an IR exported by Ultralytics (``best_openvino_model/``) is read from its
``metadata.yaml`` instead, and an ``.onnx`` from its ``metadata_props``.

Two ways to run, chosen by ``hint``:

* ``"latency"`` (default): one infer request per calling thread, one frame batch at a time on all the
  cores OpenVINO gives it (its ``LATENCY`` hint).
* ``"throughput"``: OpenVINO's ``THROUGHPUT`` hint splits the cores into streams, and each call runs its
  frames as several infer requests in flight at once (one per stream), so a batch of frames from several
  cameras keeps every core busy without a pool of detectors. The input then takes any batch size; each
  frame (or each static batch of the IR) goes to its own request. A single frame gets one stream's cores,
  so its latency is higher than in ``"latency"`` mode.

Thread contract (as every backend's, :mod:`engine.backends.base`): requests are not shared between
threads: each thread that calls :meth:`infer` gets its own, made once and dropped with the thread.
Outputs are views of the request's own output tensors (latency) or of arrays allocated once per batch size
(throughput), valid until that thread's next call. :meth:`close` waits for calls in flight (none leaves a
request running: throughput calls wait for theirs), then frees the compiled model; later calls raise
:class:`~engine.errors.ClosedError`.
"""
from __future__ import annotations

import logging
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailableError, ConfigError, ModelLoadError
from ..metadata import METADATA_KEY, HeadLayout, ModelMetadata, PixelFormat, from_onnx_props
from .base import Backend, TensorSpec

HINTS = ("latency", "throughput")
PRECISIONS = ("f32", "bf16", "f16")
log = logging.getLogger("engine.backends")
INSTALL = "pip install -e .[openvino] (or pip install openvino)"
ULTRALYTICS_METADATA = "metadata.yaml"  # what Ultralytics writes beside its IR


def find_model_file(path: str | Path) -> Path:
    """The ``.xml`` (or ``.onnx``) to read for ``path``: an IR folder, an ``.xml`` file or an ``.onnx`` file.

    Raises:
        ModelLoadError: nothing there, or a folder without exactly one ``.xml``.
    """
    path = Path(path)
    if path.is_dir():
        xmls = sorted(path.glob("*.xml"))
        if len(xmls) != 1:
            raise ModelLoadError(f"OpenVINO model folder {path} holds {len(xmls)} .xml files ({', '.join(x.name for x in xmls)})"
                                 if xmls else f"OpenVINO model folder {path} holds no .xml file",
                                 "pass the .xml file itself, or a folder written by python -m exporters.build --openvino")
        path = xmls[0]
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}", "check the path, or export one with python -m exporters.build")
    if path.suffix.lower() == ".xml" and not path.with_suffix(".bin").is_file():
        raise ModelLoadError(f"{path} has no weights file {path.with_suffix('.bin').name} beside it",
                             "copy the .xml and .bin together (the whole folder), or export the model again")
    return path


def ir_metadata(xml: str | Path) -> ModelMetadata | None:
    """Our metadata from an IR ``.xml``'s ``rt_info`` (read as XML: no OpenVINO needed), else ``None``."""
    try:
        root = ET.parse(str(xml)).getroot()
    except (OSError, ET.ParseError) as e:
        raise ModelLoadError(f"{xml} is not a readable OpenVINO IR ({e})", "export the model again") from None
    node = root.find(f"rt_info/{METADATA_KEY}")
    return ModelMetadata.from_json(node.get("value", "")) if node is not None else None


def _compiled_precision(compiled) -> str | None:
    """The inference precision the device compiled to (``"f32"``, ``"bf16"``...), ``None`` where it does not say."""
    try:
        value = compiled.get_property("INFERENCE_PRECISION_HINT")
        return value.get_type_name() if hasattr(value, "get_type_name") else str(value)
    except Exception:  # noqa: BLE001 - devices without the property (NPU, some AUTO setups)
        return None


def _converted_metadata(model) -> ModelMetadata | None:
    """The ONNX's metadata an IR made by OpenVINO's own converter (``ovc``, ``ov.convert_model``) keeps under
    ``rt_info['framework']``: ours, else Ultralytics' keys (without it the class names were made up)."""
    try:
        if not model.has_rt_info(["framework"]):
            return None
        section = model.get_rt_info(["framework"])
        props = {str(k): v.astype(str) if hasattr(v, "astype") else str(v) for k, v in dict(section.astype(dict)).items()}
    except Exception:  # noqa: BLE001 - an rt_info of another shape: the graph decides
        return None
    return from_onnx_props(props)


def ultralytics_metadata(xml: Path) -> ModelMetadata | None:
    """Metadata from the ``metadata.yaml`` Ultralytics writes beside its IR (``None``: there is none)."""
    yml = xml.parent / ULTRALYTICS_METADATA
    if not yml.is_file():
        return None
    import yaml  # a base dependency (pyyaml)

    try:
        d = yaml.safe_load(yml.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ModelLoadError(f"{yml} is unreadable ({e})", "export the model again") from None
    if d.get("task", "detect") != "detect":
        from ..errors import UnsupportedModelError

        raise UnsupportedModelError(f"{xml.parent} is a '{d.get('task')}' model; only detect models are supported",
                                    "export a YOLO detect model")
    # Ultralytics writes its ONNX metadata_props as str() of the same values: one parser for both
    return from_onnx_props({k: str(v) for k, v in d.items()})


def _onnx_metadata(path: Path) -> ModelMetadata | None:
    import onnxruntime as ort  # the base install has it; it reads metadata_props without the onnx package

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        props = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).get_modelmeta()
    except Exception as e:  # noqa: BLE001 - ORT's own exception types
        raise ModelLoadError(f"cannot read {path} ({type(e).__name__})", "export it again") from None
    return from_onnx_props(props.custom_metadata_map)


def ov_device(device: Any, available: list[str]) -> str:
    """OpenVINO's device name for ``device``: ``"auto"`` → ``CPU`` when it is the only one, else ``AUTO``;
    ``"cpu"``/``"gpu"``/``"npu"`` → ``CPU``/``GPU``/``NPU``; an OpenVINO name (``GPU.1``, ``AUTO:GPU,CPU``) as is.

    Raises:
        ConfigError: a CUDA device or index (OpenVINO does not run on NVIDIA GPUs).
        BackendUnavailableError: the device is not present here.
    """
    if device in (None, "auto"):
        return "CPU" if available == ["CPU"] else "AUTO"
    if not isinstance(device, str) or device.lower().startswith("cuda"):
        raise ConfigError(f"device={device!r} is not an OpenVINO device",
                          "use device='auto', 'cpu', 'gpu' (Intel GPU) or 'npu'; for an NVIDIA GPU use an .onnx with "
                          "onnxruntime-gpu or a TensorRT engine")
    name = device.upper()
    virtual = name.split(":")[0] in ("AUTO", "MULTI", "HETERO", "BATCH")
    if not virtual and not any(d == name or d.startswith(name + ".") for d in available):
        raise BackendUnavailableError(f"OpenVINO device '{name}' is not available here (available: {', '.join(available)})",
                                      "use device='auto' or one of the available devices; an Intel GPU or NPU needs "
                                      "its driver installed")
    return name


def _shape(partial) -> tuple[int | None, ...]:
    return tuple(d.get_length() if d.is_static else None for d in partial)


def _name(port, unnamed: str) -> str:
    """A port's tensor name, or ``unnamed`` where it has none (OpenVINO's conversion of a traced PyTorch
    model, as Ultralytics' own OpenVINO export, leaves the output tensor without a name)."""
    names = port.get_names()
    return port.get_any_name() if names else unnamed


class OpenVinoBackend(Backend):
    """Run an OpenVINO IR (or an ``.onnx``) with OpenVINO.

    Options:
        device: ``"auto"`` (``CPU`` where it is the only device, else OpenVINO's ``AUTO``), ``"cpu"``,
            ``"gpu"`` (an Intel GPU), ``"npu"``, or any OpenVINO device name.
        hint: ``"latency"`` (default) or ``"throughput"`` (several infer requests in flight; see the module).
        threads: CPU threads of the compiled model (0: OpenVINO's choice, all cores). ``intra_op_threads``,
            ONNX Runtime's name for it, is read the same way.
        requests: infer requests in flight in throughput mode (default: OpenVINO's optimal number).
        precision: ``"f32"``, ``"bf16"`` or ``"f16"``: the device's inference precision hint. Default:
            OpenVINO's (on CPUs with bfloat16 instructions, bf16 for the float layers). What the device
            compiled to is :attr:`precision` after loading; a hint it swapped (f16 runs as bf16 on x86 CPUs) is
            logged as a warning.
        cache_dir: OpenVINO's model cache (``CACHE_DIR``); makes a second load on a GPU or NPU fast.
    """

    name = "openvino"

    def __init__(self, path: str | Path, device: Any = "auto", hint: str = "latency", threads: int = 0,
                 requests: int | None = None, precision: str | None = None, cache_dir: str | Path | None = None,
                 **options: Any) -> None:
        super().__init__(path, **options)
        try:
            import openvino as ov
        except ImportError as e:
            raise BackendUnavailableError(f"OpenVINO is not installed ({e}), needed for {self.path}", INSTALL) from None
        threads = int(options.get("intra_op_threads") or threads)
        if hint not in HINTS or (precision is not None and precision not in PRECISIONS) or threads < 0 \
                or (requests is not None and requests < 1):
            raise ConfigError(f"OpenVINO options hint={hint!r}, precision={precision!r}, threads={threads}, "
                              f"requests={requests}", f"use hint in {HINTS}, precision in {PRECISIONS} or None, "
                                                      "threads >= 0, requests >= 1")
        self.file = find_model_file(self.path)
        core = ov.Core()
        self.device = ov_device(device, core.available_devices)
        self.hint = hint
        try:
            model = core.read_model(str(self.file))
        except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError for every parse failure
            raise ModelLoadError(f"OpenVINO cannot read {self.file} ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
                                 "the file is truncated, corrupt or not a model: export it again") from None
        self.metadata = self._metadata(model)
        config: dict[str, Any] = {"PERFORMANCE_HINT": hint.upper()}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        if precision:
            config["INFERENCE_PRECISION_HINT"] = precision
        if cache_dir:
            config["CACHE_DIR"] = str(cache_dir)
        try:
            self.compiled = core.compile_model(model, self.device, config)
        except Exception as e:  # noqa: BLE001
            raise BackendUnavailableError(f"OpenVINO could not compile {self.file} for {self.device} "
                                          f"({str(e).splitlines()[0][:200]})",
                                          "try device='cpu', or check the device's driver") from None
        self.precision = _compiled_precision(self.compiled)
        if precision and self.precision and self.precision != precision:
            log.warning("OpenVINO on %s runs %s in %s, not the %s asked for (the device does not offer it)",
                        self.device, self.file.name, self.precision, precision)
        self.requests = requests or int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")) \
            if hint == "throughput" else 1
        self.inputs = [self._spec(p, f"input{i}") for i, p in enumerate(self.compiled.inputs)]
        self.outputs = [self._spec(p, f"output{i}") for i, p in enumerate(self.compiled.outputs)]
        self._request_batch = self.inputs[0].shape[0] or 1  # frames one request takes (throughput mode)
        if hint == "throughput":  # any batch: split over the requests
            self.inputs = [TensorSpec(s.name, (None, *s.shape[1:]), s.dtype) for s in self.inputs]
            self.outputs = [TensorSpec(s.name, (None, *s.shape[1:]), s.dtype) for s in self.outputs]
        self._local = threading.local()  # per thread: .requests, .buffers {frames: [arrays]}

    @staticmethod
    def uses_cuda(device: Any) -> bool:
        """Never: OpenVINO does not run on NVIDIA GPUs (what :mod:`engine.pool` asks of a CPU backend)."""
        return False

    @property
    def execution_devices(self) -> tuple[str, ...]:
        """The devices OpenVINO runs the model on (what ``AUTO`` chose)."""
        return tuple(self.compiled.get_property("EXECUTION_DEVICES"))

    def _metadata(self, model) -> ModelMetadata:
        if model.has_rt_info(METADATA_KEY):
            return ModelMetadata.from_json(model.get_rt_info(METADATA_KEY).astype(str))
        found = (_onnx_metadata(self.file) if self.file.suffix.lower() == ".onnx" else ultralytics_metadata(self.file))
        return found or _converted_metadata(model) or self._graph_metadata(model)

    def _graph_metadata(self, model) -> ModelMetadata:
        """For a model without metadata: size from the input, class count from a raw head's output."""
        inp, outs = model.inputs[0], model.outputs
        shape = _shape(inp.get_partial_shape())
        pixels = PixelFormat.of_input(shape, inp.get_element_type().to_dtype())
        h, w = shape[1:3] if pixels is PixelFormat.NHWC_BGR_UINT8 else shape[2:4]
        channels = _shape(outs[0].get_partial_shape())[1] if len(outs) == 1 else None
        if not channels or channels < 5 or not h or not w:
            raise ModelLoadError(f"{self.file} has no metadata and its outputs are not a raw detect head "
                                 "(B, 4+classes, anchors)", "export it with python -m exporters.build --openvino")
        return ModelMetadata(names=tuple(f"class{i}" for i in range(channels - 4)), imgsz=(h, w), batch=shape[0],
                             head=HeadLayout.RAW, tool_version="", pixels=pixels, input_name=_name(inp, "input0"))

    @staticmethod
    def _spec(port, unnamed: str) -> TensorSpec:
        return TensorSpec(_name(port, unnamed), _shape(port.get_partial_shape()),
                          np.dtype(port.get_element_type().to_dtype()))

    def _thread_requests(self) -> list:
        reqs = getattr(self._local, "requests", None)
        if reqs is None:
            reqs = self._local.requests = [self.compiled.create_infer_request() for _ in range(self.requests)]
            self._local.buffers = {}
        return reqs

    def infer_impl(self, x: np.ndarray) -> list[np.ndarray]:
        if self.hint == "throughput":
            return self._infer_throughput(np.ascontiguousarray(x))
        req = self._thread_requests()[0]
        req.infer({0: np.ascontiguousarray(x)}, share_inputs=True)  # no copy of the letterbox buffer
        return [req.get_output_tensor(i).data for i in range(len(self.outputs))]

    def _infer_throughput(self, x: np.ndarray) -> list[np.ndarray]:
        """Each ``_request_batch`` of frames on its own request, up to ``requests`` in flight at once."""
        reqs, b, n = self._thread_requests(), self._request_batch, x.shape[0]
        outs: list[np.ndarray] | None = None
        starts = list(range(0, n, b))
        for wave in range(0, len(starts), len(reqs)):
            active = list(zip(reqs, starts[wave : wave + len(reqs)]))
            for req, s in active:
                chunk = x[s : s + b]
                if len(chunk) < b:  # a static-batch IR: the last chunk padded in this thread's own buffer
                    chunk = self._padded(chunk, b)
                req.start_async({0: chunk}, share_inputs=True)
            for req, s in active:
                req.wait()
                k = min(b, n - s)
                outs = outs or self._outputs_for(n, req)
                for i, out in enumerate(outs):
                    out[s : s + k] = req.get_output_tensor(i).data[:k]
        return outs

    def _padded(self, chunk: np.ndarray, b: int) -> np.ndarray:
        """``chunk`` padded to ``b`` frames with copies of its first, in a buffer this thread owns.

        Never the request's input tensor: after a ``share_inputs`` call that is a caller's array (a
        Detector's letterbox buffer), which the padding would overwrite.
        """
        pad = getattr(self._local, "pad", None)
        if pad is None or pad.shape != (b, *chunk.shape[1:]) or pad.dtype != chunk.dtype:
            pad = self._local.pad = np.empty((b, *chunk.shape[1:]), chunk.dtype)
        pad[: len(chunk)] = chunk
        pad[len(chunk):] = chunk[:1]
        return pad

    def _outputs_for(self, n: int, done) -> list[np.ndarray]:
        """This thread's output arrays for ``n`` frames (made once per size, shaped like ``done``'s outputs)."""
        bufs = self._local.buffers.get(n)
        if bufs is None:
            bufs = self._local.buffers[n] = [np.empty((n, *t.data.shape[1:]), t.data.dtype)
                                             for t in (done.get_output_tensor(i) for i in range(len(self.outputs)))]
        return bufs

    def close(self) -> None:
        """Free the compiled model and every thread's requests, after calls in flight end (idempotent)."""
        if self.gate.close():
            self._local = threading.local()
            self.__dict__.pop("compiled", None)
