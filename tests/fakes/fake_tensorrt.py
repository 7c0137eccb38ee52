"""FAKE ``tensorrt`` / ``tensorrt_rtx`` modules that record every call.

They prove OUR builder's and backend's logic on each TensorRT flavour's API surface (TensorRT 10 has
the FP16/INT8 builder flags, 11 does not, RTX has compute capabilities and a runtime cache but no
timing cache here), not TensorRT's behaviour: the "engine" is JSON, and "inference" writes
``output[b, c, a] = mean(input[b]) + c`` through the fake CUDA stream.
"""
from __future__ import annotations

import ctypes
import enum
import json
from types import ModuleType, SimpleNamespace

import numpy as np


def _enum(name: str, members: list[str]) -> type[enum.IntEnum]:
    return enum.IntEnum(name, {m: i for i, m in enumerate(members)})


def make_fake_tensorrt(version: str = "10.9.0.34", module: str = "tensorrt", cudart=None,
                       fail_build: str | None = None) -> ModuleType:
    """A fresh fake module named ``module`` at ``version``.

    ``m.calls`` records ``(what, detail)`` tuples; ``fail_build`` makes ``build_serialized_network``
    log that error and return ``None``; ``cudart`` is the fake CUDA runtime whose streams run the work.
    """
    rtx = module == "tensorrt_rtx"
    major = int(version.split(".")[0])
    m = ModuleType(module)
    m.__version__ = version
    m.calls = []
    rec = m.calls.append

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class ILogger:
        def __init__(self) -> None:
            pass

        def log(self, severity, msg) -> None:
            pass

    class Logger(ILogger):
        WARNING = Severity.WARNING

        def __init__(self, level=Severity.WARNING) -> None:
            super().__init__()

    ILogger.Severity = Severity
    m.ILogger, m.Logger = ILogger, Logger
    m.NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag", ["STRONGLY_TYPED"])
    flags = ["TF32", "REFIT"] + (["FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"] if major == 10 and not rtx else [])
    m.BuilderFlag = _enum("BuilderFlag", flags)
    m.MemoryPoolType = _enum("MemoryPoolType", ["WORKSPACE"])
    m.DataType = _enum("DataType", ["FLOAT", "HALF", "INT8", "INT32", "INT64"])
    m.TensorIOMode = _enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
    m.ErrorCode = _enum("ErrorCode", ["SUCCESS", "INVALID_NODE", "MODEL_DESERIALIZE_FAILED"])
    if rtx:
        m.ComputeCapability = _enum("ComputeCapability", ["NONE", "CURRENT", "SM75", "SM80", "SM86", "SM89", "SM120"])
        m.CudaGraphStrategy = _enum("CudaGraphStrategy", ["DISABLED", "WHOLE_GRAPH_CAPTURE"])
    _np = {m.DataType.FLOAT: np.float32, m.DataType.HALF: np.float16, m.DataType.INT32: np.int32}
    m.nptype = lambda dt: _np[dt]

    # ---- build side ------------------------------------------------------------------------
    class Tensor(SimpleNamespace):
        pass

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags, self.inputs, self.outputs, self.layers = flags, [], [], []

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        @property
        def num_layers(self) -> int:
            return len(self.layers)

        def get_layer(self, i):
            return self.layers[i]

        def get_input(self, i):
            return self.inputs[i]

    class ParserError:
        def __init__(self, node: int, name: str, op: str, desc: str, code) -> None:
            self._v = (node, name, op, desc, code)

        def node(self):
            return self._v[0]

        def node_name(self):
            return self._v[1]

        def node_operator(self):
            return self._v[2]

        def desc(self):
            return self._v[3]

        def code(self):
            return self._v[4]

    class OnnxParser:
        def __init__(self, network, logger) -> None:
            self.network, self.errors = network, []

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

        def parse(self, data: bytes):
            raise AssertionError("the builder must use parse_from_file (parse(bytes) crashed TensorRT-RTX 1.7)")

        def parse_from_file(self, path: str) -> bool:
            import onnx

            rec(("parse_from_file", path))
            try:
                model = onnx.load(path)
            except Exception:
                self.errors.append(ParserError(-1, "", "", "Failed to parse the ONNX model.",
                                               m.ErrorCode.MODEL_DESERIALIZE_FAILED))
                return False
            for i, node in enumerate(model.graph.node):
                if node.domain not in ("", "ai.onnx"):
                    self.errors.append(ParserError(i, node.name, node.op_type, "Plugin not found",
                                                   m.ErrorCode.INVALID_NODE))
            if self.errors:
                return False

            def dims(vi):
                return tuple(d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim)

            kinds = {"QuantizeLinear": "QUANTIZE", "DequantizeLinear": "DEQUANTIZE", "MatMul": "MATRIX_MULTIPLY",
                     "Conv": "CONVOLUTION", "Cast": "CAST"}
            self.network.layers = [
                Tensor(name=n.name, type=SimpleNamespace(name=kinds.get(n.op_type, "OTHER")), num_outputs=1,
                       get_output=lambda j, half=(n.op_type == "Cast" and n.attribute[0].i == 10):
                       SimpleNamespace(dtype=SimpleNamespace(name="HALF" if half else "FLOAT")))
                for n in model.graph.node]
            self.network.inputs = [Tensor(name=i.name, shape=dims(i)) for i in model.graph.input]
            self.network.outputs = [Tensor(name=o.name, shape=dims(o)) for o in model.graph.output]
            return True

    class Profile:
        def __init__(self) -> None:
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi) -> None:
            rec(("profile.set_shape", name, tuple(lo), tuple(opt), tuple(hi)))
            self.shapes[name] = [list(lo), list(opt), list(hi)]

    class TimingCache:
        def __init__(self, blob: bytes) -> None:
            self.blob = bytes(blob) or b"fresh"

        def serialize(self) -> bytes:
            return self.blob + b"+timings"

    class Config:
        def __init__(self) -> None:
            self.flags, self.profiles, self.targets, self.cache = [], [], [], None
            self.builder_optimization_level = 3
            self.num_compute_capabilities = 0

        def set_memory_pool_limit(self, pool, size) -> None:
            rec(("set_memory_pool_limit", pool.name, size))

        def set_flag(self, flag) -> None:
            rec(("set_flag", flag.name))
            self.flags.append(flag.name)

        def add_optimization_profile(self, p) -> None:
            self.profiles.append(p)

    if not rtx:
        def create_timing_cache(self, blob):
            rec(("create_timing_cache", bytes(blob)))
            return TimingCache(blob)

        def set_timing_cache(self, cache, ignore_mismatch):
            rec(("set_timing_cache", ignore_mismatch))
            self.cache = cache
            return True

        Config.create_timing_cache = create_timing_cache
        Config.set_timing_cache = set_timing_cache
        Config.get_timing_cache = lambda self: self.cache
    else:
        def set_compute_capability(self, cc, index):
            rec(("set_compute_capability", cc.name, index))
            self.targets.append(cc.name)

        Config.set_compute_capability = set_compute_capability

    class Builder:
        def __init__(self, logger) -> None:
            self.logger = logger

        def create_network(self, flags: int = 0):
            rec(("create_network", flags))
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            rec(("build", config.builder_optimization_level, tuple(config.flags), tuple(config.targets)))
            if fail_build:
                self.logger.log(Severity.ERROR, fail_build)
                return None
            return json.dumps({
                "fake": module, "version": version, "flags": config.flags, "targets": config.targets,
                "inputs": [{"name": t.name, "shape": list(t.shape)} for t in network.inputs],
                "outputs": [{"name": t.name, "shape": list(t.shape)} for t in network.outputs],
                "profiles": [p.shapes for p in config.profiles]}).encode()

    m.Builder, m.OnnxParser = Builder, OnnxParser

    # ---- run side --------------------------------------------------------------------------
    def view(ptr: int, shape, dtype=np.float32) -> np.ndarray:
        n = int(np.prod(shape))
        raw = (ctypes.c_ubyte * (n * np.dtype(dtype).itemsize)).from_address(ptr)
        return np.frombuffer(raw, dtype=dtype, count=n).reshape(shape)

    class Context:
        def __init__(self, engine, runtime_config) -> None:
            self.engine, self.runtime_config = engine, runtime_config
            self.shapes = {t["name"]: tuple(t["shape"]) for t in engine.plan["inputs"]}
            self.addresses = {}
            rec(("create_execution_context", runtime_config is not None))

        def set_input_shape(self, name, shape) -> bool:
            rec(("set_input_shape", name, tuple(shape)))
            lo, _, hi = self.engine.get_tensor_profile_shape(name, 0)
            if not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
                return False
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            if name in self.shapes:
                return self.shapes[name]
            batch = next(iter(self.shapes.values()))[0]
            shape = self.engine.get_tensor_shape(name)
            return (batch, *shape[1:])

        def set_tensor_address(self, name, ptr) -> bool:
            self.addresses[name] = int(ptr)
            return True

        def execute_async_v3(self, stream_handle) -> bool:
            rec(("execute_async_v3", int(stream_handle)))
            stream = cudart.streams[int(stream_handle)]
            inp = self.engine.plan["inputs"][0]["name"]
            shapes = {n: self.get_tensor_shape(n) for n in [inp] + [o["name"] for o in self.engine.plan["outputs"]]}
            addrs = dict(self.addresses)

            def run():
                x = view(addrs[inp], shapes[inp])
                means = x.reshape(x.shape[0], -1).mean(axis=1)
                for o in self.engine.plan["outputs"]:
                    out = view(addrs[o["name"]], shapes[o["name"]])
                    out[:] = means[:, None, None] + np.arange(out.shape[1], dtype=np.float32)[None, :, None]

            cudart.enqueue(stream, run, "execute")
            return True

    class RuntimeCache:
        def __init__(self) -> None:
            self.blob = b""

        def deserialize(self, blob) -> bool:
            rec(("runtime_cache.deserialize", bytes(blob)))
            self.blob = bytes(blob)
            return True

        def serialize(self) -> bytes:
            return self.blob + b"+kernels"

    class RuntimeConfig:
        def __init__(self) -> None:
            self.cache, self.cuda_graph_strategy = None, None

        def create_runtime_cache(self):
            return RuntimeCache()

        def set_runtime_cache(self, cache) -> bool:
            self.cache = cache
            return True

    class Engine:
        def __init__(self, plan: dict) -> None:
            self.plan = plan
            self._io = [(t, True) for t in plan["inputs"]] + [(t, False) for t in plan["outputs"]]

        @property
        def num_io_tensors(self) -> int:
            return len(self._io)

        def get_tensor_name(self, i):
            return self._io[i][0]["name"]

        def _find(self, name):
            return next((t, is_in) for t, is_in in self._io if t["name"] == name)

        def get_tensor_mode(self, name):
            return m.TensorIOMode.INPUT if self._find(name)[1] else m.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return m.DataType.FLOAT

        def get_tensor_shape(self, name):
            return tuple(self._find(name)[0]["shape"])

        def get_tensor_profile_shape(self, name, index):
            if self.plan["profiles"]:
                return [tuple(s) for s in self.plan["profiles"][index][name]]
            shape = self.get_tensor_shape(name)
            return [shape, shape, shape]

        def create_execution_context(self, runtime_config=None):
            return Context(self, runtime_config)

    if rtx:
        Engine.create_runtime_config = lambda self: RuntimeConfig()

    class Runtime:
        def __init__(self, logger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, blob):
            rec(("deserialize_cuda_engine", len(blob)))
            try:
                return Engine(json.loads(bytes(blob)))
            except ValueError:
                self.logger.log(Severity.ERROR, "fake: the engine plan is not one this fake wrote")
                return None

    if rtx:
        m.EngineValidity = _enum("EngineValidity", ["VALID", "SUBOPTIMAL", "INVALID"])
        m.EngineInvalidityDiagnostics = enum.IntFlag("EngineInvalidityDiagnostics", {
            "VERSION_MISMATCH": 1, "UNSUPPORTED_CC": 2, "OLD_CUDA_DRIVER": 4})
        m.validity = (m.EngineValidity.VALID, 0)  # what get_engine_validity answers; tests change it
        Runtime.engine_header_size = 64
        Runtime.get_engine_validity = lambda self, header: m.validity
    m.Runtime = Runtime
    return m
