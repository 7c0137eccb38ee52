"""ONNX Runtime backend: CUDA when onnxruntime-gpu is installed, else CPU.

Outputs are written into arrays allocated once per batch size through ``IOBinding``, so the hot
path allocates no output memory. Thread-safe by per-thread state: ONNX Runtime's ``Run`` may be called
from several threads at once, and each thread gets its own ``IOBinding`` and output arrays (valid
until that thread's next call), so concurrent calls neither share nor overwrite buffers.
"""
from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailableError, ModelLoadError
from ..metadata import HeadLayout, ModelMetadata, PixelFormat, from_onnx_props
from .base import Backend, TensorSpec

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int32)": np.int32,
           "tensor(int64)": np.int64, "tensor(uint8)": np.uint8}


class OnnxRuntimeBackend(Backend):
    """Run an ``.onnx`` file with ONNX Runtime.

    Options:
        device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"`` or ``"cuda"``.
        intra_op_threads: threads inside an operator (0 = ONNX Runtime's default: all cores).
        inter_op_threads: threads across operators (0 = default).
        optimization: ``"all"`` (default), ``"extended"``, ``"basic"`` or ``"disable"``.
        spin_wait: let ONNX Runtime's worker threads spin between calls (its default). ``False`` frees
            the cores as soon as a call returns, which helps when other work (postprocess, capture
            threads, other processes) shares a small CPU.
    """

    name = "onnxruntime"

    def __init__(self, path: str | Path, device: str = "auto", intra_op_threads: int = 0,
                 inter_op_threads: int = 0, optimization: str = "all", spin_wait: bool = True,
                 **options: Any) -> None:
        super().__init__(path, **options)
        import onnxruntime as ort

        if not self.path.is_file():
            raise ModelLoadError(f"model file not found: {self.path}", "check the path, or export one with python -m exporters.build")
        available = ort.get_available_providers()
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise BackendUnavailableError(f"device 'cuda' asked for {self.path}, but ONNX Runtime offers only {available}",
                                          "install onnxruntime-gpu in place of onnxruntime (see README), or use device='cpu'")
        use_cuda = self.uses_cuda(device)
        self.providers = (["CUDAExecutionProvider"] if use_cuda else []) + ["CPUExecutionProvider"]
        so = ort.SessionOptions()
        so.intra_op_num_threads = intra_op_threads
        so.inter_op_num_threads = inter_op_threads
        if not spin_wait:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        so.graph_optimization_level = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }[optimization]
        try:
            self.session = ort.InferenceSession(str(self.path), so, providers=self.providers)
        except Exception as e:  # ORT raises its own Fail/InvalidProtobuf/InvalidGraph types
            raise load_error(self.path, e, ort.__version__) from None
        self.inputs = [self._spec(i, "input") for i in self.session.get_inputs()]
        self.outputs = [self._spec(o, "output") for o in self.session.get_outputs()]
        self.metadata = from_onnx_props(self.session.get_modelmeta().custom_metadata_map) or self._infer_metadata()
        self._out_shapes: dict[int, list[tuple[int, ...]]] = {}  # per batch size, shared by the threads
        self._probe_lock = threading.Lock()
        self._local = threading.local()  # per thread: .binding and .buffers {batch: [arrays]}

    @staticmethod
    def uses_cuda(device: str) -> bool:
        """Whether a session for ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``) runs on CUDA with this ONNX Runtime."""
        import onnxruntime as ort

        return device in ("auto", "cuda") and "CUDAExecutionProvider" in ort.get_available_providers()

    def _spec(self, arg, role: str) -> TensorSpec:
        dtype = _DTYPES.get(arg.type)
        if dtype is None:  # never guess: a double read as float32 gives garbage boxes, silently
            handled = ", ".join(t[len("tensor("):-1] for t in _DTYPES)
            raise ModelLoadError(f"{role} '{arg.name}' of {self.path} has type {arg.type}, which the runtime does "
                                 f"not read (it reads {handled})",
                                 "export the model again with python -m exporters.build (float32 outputs), or add a "
                                 f"Cast to float32 after '{arg.name}' in the graph")
        shape = tuple(d if isinstance(d, int) else None for d in arg.shape)
        return TensorSpec(arg.name, shape, np.dtype(dtype))

    def _infer_metadata(self) -> ModelMetadata:
        """For an ONNX file without metadata: sizes from the graph, class count from the output."""
        spec = self.inputs[0]
        pixels = PixelFormat.of_input(spec.shape, spec.dtype)
        h, w = spec.shape[1:3] if pixels is PixelFormat.NHWC_BGR_UINT8 else spec.shape[2:4]
        imgsz = (h or 640, w or 640)
        channels = self.outputs[0].shape[1]
        if channels is None:
            probe = self.session.run(None, {spec.name: np.zeros(pixels.shape(1, imgsz), spec.dtype)})
            channels = probe[0].shape[1]
        nc = channels - 4
        if nc < 1 or len(self.outputs) != 1:
            raise ModelLoadError(f"{self.path} has no metadata and its outputs {[o.shape for o in self.outputs]} "
                                 "are not a raw detect head (B, 4+classes, anchors)",
                                 "export it with python -m exporters.build --onnx ... to add metadata")
        return ModelMetadata(names=tuple(f"class{i}" for i in range(nc)), imgsz=imgsz,
                             batch=spec.shape[0], head=HeadLayout.RAW, tool_version="", pixels=pixels)

    def _shapes_for(self, batch: int) -> list[tuple[int, ...]]:
        shapes = self._out_shapes.get(batch)
        if shapes is None:
            with self._probe_lock:  # one probe run per batch size, whichever thread asks first
                shapes = self._out_shapes.get(batch)
                if shapes is None:
                    spec = self.inputs[0]
                    shape = PixelFormat.of_input(spec.shape, spec.dtype).shape(batch, self.metadata.imgsz)
                    probe = self.session.run(None, {spec.name: np.zeros(shape, spec.dtype)})
                    shapes = self._out_shapes[batch] = [p.shape for p in probe]
        return shapes

    def _outputs_for(self, batch: int) -> list[np.ndarray]:
        """This thread's output arrays for ``batch`` (made once per thread and batch size)."""
        local = self._local
        if not hasattr(local, "buffers"):
            local.buffers, local.binding = {}, self.session.io_binding()
        bufs = local.buffers.get(batch)
        if bufs is None:
            bufs = local.buffers[batch] = [np.empty(shape, spec.dtype)
                                           for shape, spec in zip(self._shapes_for(batch), self.outputs)]
        return bufs

    def infer_impl(self, x: np.ndarray) -> list[np.ndarray]:
        x = np.ascontiguousarray(x)
        outs = self._outputs_for(x.shape[0])
        b = self._local.binding
        b.clear_binding_inputs()
        b.clear_binding_outputs()
        b.bind_cpu_input(self.inputs[0].name, x)
        for spec, buf in zip(self.outputs, outs):
            b.bind_output(spec.name, "cpu", 0, buf.dtype, buf.shape, buf.ctypes.data)
        self.session.run_with_iobinding(b)
        return outs

    def close(self) -> None:
        """Release the session and every thread's buffers, after calls in flight end (idempotent)."""
        if self.gate.close():
            self._local = threading.local()
            self.__dict__.pop("session", None)


def load_error(path: Path, e: Exception, ort_version: str) -> ModelLoadError:
    """The typed error for an ONNX file ONNX Runtime refused: an IR version newer than this ONNX Runtime
    reads gets both versions and the upgrade, anything else ORT's own reason without its C++ source location
    (``/…/model.cc:202 onnxruntime::Model::Model(…)`` on Linux, ``D:\\…\\model.cc:181 onnxruntime::Model::Model``
    on Windows)."""
    text = " ".join(str(e).split())
    ir = re.search(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)", text)
    if ir:
        return ModelLoadError(f"{path} is ONNX IR version {ir[1]}; ONNX Runtime {ort_version} reads up to IR "
                              f"version {ir[2]}", "upgrade the ONNX Runtime package you have installed (pip install "
                              "-U onnxruntime, or onnxruntime-gpu / onnxruntime-directml where that is the one), or "
                              "export the model again with python -m exporters.build")
    reason = re.sub(r"(?:(?<![A-Za-z])[A-Za-z]:)?[\\/]\S+\.(?:cc|h):\d+ \S+?(?:\(.*?\))? ", "", text)
    return ModelLoadError(f"ONNX Runtime cannot load {path} ({type(e).__name__}: {reason[:300]})",
                          "the file is truncated, corrupt or not ONNX: export it again")
