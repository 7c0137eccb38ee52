"""Check that every TensorRT name the builder and the runtime backend use exists in a given TensorRT.

The builder (``exporters/tensorrt.py``), the backend (``engine/backends/tensorrt.py``, ``trt_engine.py``,
``trt_context.py``) and the flavour gate
(``engine/backends/trt_flavor.py``) serve TensorRT 10.x, 11.x and TensorRT-RTX 1.x. Only TensorRT-RTX
installs and builds without a GPU; this checks the other two by name, in one of two ways:

* ``--module tensorrt_rtx`` (or ``tensorrt``): import the installed module and look each name up on its
  class (``IBuilderConfig.set_compute_capability``) or enum (``BuilderFlag.FP16``).
* ``--pypi 10.16.1.11`` (repeatable): download ``tensorrt-cu12-bindings`` of that version from PyPI
  (1.3 MB, no dependencies) and read the identifiers its compiled module registers, without loading it.
  PyPI cannot install the whole TensorRT here: ``tensorrt-cu12`` and ``tensorrt-cu12-libs`` are source
  stubs that fetch the libraries (gigabytes) from pypi.nvidia.com at install time, and the bindings'
  ``tensorrt.so`` does not import without ``libnvinfer``. The string table does not say which class
  owns a name, so this is the weaker check: a name missing from it is certainly missing.

Which names apply to which flavour is :data:`API`; ``tests/test_tensorrt_api.py`` keeps it in step with the
sources. Exit code 1 lists every missing name.

    python scripts/check_tensorrt_api.py --module tensorrt_rtx
    python scripts/check_tensorrt_api.py --pypi 10.16.1.11 --pypi 11.4.0.106
"""
from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ALL, TRT, RTX, V10 = ("10", "11", "rtx"), ("10", "11"), ("rtx",), ("10",)
# (owner.name, flavours). The owner is a module attribute (class or enum) or "module" for the module itself.
API: tuple[tuple[str, tuple[str, ...]], ...] = (
    # module-level classes, enums and helpers
    ("module.Builder", ALL), ("module.OnnxParser", ALL), ("module.Runtime", ALL), ("module.ILogger", ALL),
    ("module.nptype", ALL), ("TensorIOMode.INPUT", ALL), ("MemoryPoolType.WORKSPACE", ALL),
    ("NetworkDefinitionCreationFlag.STRONGLY_TYPED", V10), ("BuilderFlag.FP16", V10), ("BuilderFlag.INT8", V10),
    ("ComputeCapability.SM75", RTX), ("ComputeCapability.SM120", RTX), ("ComputeCapability.CURRENT", RTX),
    ("CudaGraphStrategy.WHOLE_GRAPH_CAPTURE", RTX), ("DataType.HALF", ALL), ("DataType.FLOAT", ALL),
    # the builder
    ("Builder.create_network", ALL), ("Builder.create_builder_config", ALL),
    ("Builder.create_optimization_profile", ALL), ("Builder.build_serialized_network", ALL),
    ("IBuilderConfig.set_memory_pool_limit", ALL), ("IBuilderConfig.builder_optimization_level", ALL),
    ("IBuilderConfig.add_optimization_profile", ALL), ("IBuilderConfig.set_flag", V10),
    ("IBuilderConfig.create_timing_cache", TRT), ("IBuilderConfig.set_timing_cache", TRT),
    ("IBuilderConfig.get_timing_cache", TRT), ("ITimingCache.serialize", TRT),
    ("IBuilderConfig.num_compute_capabilities", RTX), ("IBuilderConfig.set_compute_capability", RTX),
    ("IOptimizationProfile.set_shape", ALL),
    ("INetworkDefinition.num_layers", ALL), ("INetworkDefinition.get_layer", ALL),
    ("INetworkDefinition.num_inputs", ALL), ("INetworkDefinition.get_input", ALL),
    ("ILayer.type", ALL), ("ILayer.name", ALL), ("ILayer.num_outputs", ALL), ("ILayer.get_output", ALL),
    ("ITensor.dtype", ALL), ("ITensor.shape", ALL), ("ITensor.name", ALL),
    ("OnnxParser.parse_from_file", ALL), ("OnnxParser.num_errors", ALL), ("OnnxParser.get_error", ALL),
    ("ParserError.node", ALL), ("ParserError.node_name", ALL), ("ParserError.node_operator", ALL),
    ("ParserError.desc", ALL), ("ParserError.code", ALL),
    # the runtime backend
    ("Runtime.deserialize_cuda_engine", ALL), ("Runtime.get_engine_validity", RTX),
    ("Runtime.engine_header_size", RTX),
    ("ICudaEngine.num_io_tensors", ALL), ("ICudaEngine.get_tensor_name", ALL), ("ICudaEngine.get_tensor_mode", ALL),
    ("ICudaEngine.get_tensor_shape", ALL), ("ICudaEngine.get_tensor_dtype", ALL),
    ("ICudaEngine.get_tensor_profile_shape", ALL), ("ICudaEngine.create_execution_context", ALL),
    ("ICudaEngine.create_runtime_config", RTX), ("IRuntimeConfig.create_runtime_cache", RTX),
    ("IRuntimeConfig.set_runtime_cache", RTX), ("IRuntimeConfig.cuda_graph_strategy", RTX),
    ("IRuntimeCache.serialize", RTX), ("IRuntimeCache.deserialize", RTX),
    ("IExecutionContext.set_input_shape", ALL), ("IExecutionContext.get_tensor_shape", ALL),
    ("IExecutionContext.set_tensor_address", ALL), ("IExecutionContext.execute_async_v3", ALL),
)
PYTHON_HELPERS = {"nptype"}  # defined in the package's __init__.py, not in the compiled module


def names_for(flavour: str) -> list[str]:
    """The ``owner.name`` entries of :data:`API` that ``flavour`` ("10", "11" or "rtx") must have."""
    return [n for n, fl in API if flavour in fl]


def _missing(flavour: str, present) -> list[str]:
    """Entries of ``flavour`` for which ``present(owner, name)`` is false."""
    return [e for e in names_for(flavour) if not present(*e.split(".", 1))]


def missing_in_module(module, flavour: str) -> list[str]:
    """Entries of ``flavour`` missing from an imported TensorRT module (looked up on their owner)."""
    def present(owner: str, name: str) -> bool:
        obj = module if owner == "module" else getattr(module, owner, None)
        return obj is not None and hasattr(obj, name)

    return _missing(flavour, present)


def identifiers(blob: bytes) -> set[str]:
    """Identifiers stored as NUL-terminated strings in a compiled module (suffixes too: linkers merge a
    string into the tail of a longer one, ``INT8`` into ``UINT8``)."""
    found = set()
    for m in re.finditer(rb"[A-Za-z_][A-Za-z0-9_]*(?=\x00)", blob):
        word = m.group().decode()
        found.update(word[i:] for i in range(len(word)) if word[i].isalpha() or word[i] == "_")
    return found


def missing_in_strings(blob: bytes, python_source: str, flavour: str) -> list[str]:
    """Entries of ``flavour`` whose owner or name is absent from the compiled module's identifiers."""
    ids = identifiers(blob)

    def present(owner: str, name: str) -> bool:
        if name in PYTHON_HELPERS:
            return re.search(rf"\bdef {name}\b", python_source) is not None
        return name in ids and (owner == "module" or owner in ids)

    return _missing(flavour, present)


def fetch_bindings(version: str, dest: Path) -> tuple[bytes, str]:
    """``(tensorrt.so bytes, __init__.py text)`` of ``tensorrt-cu12-bindings==version`` from PyPI."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check",
                    "--only-binary=:all:", "-d", str(dest), f"tensorrt-cu12-bindings=={version}"], check=True)
    wheel = next(dest.glob(f"tensorrt_cu12_bindings-{version}-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        so = next(n for n in z.namelist() if re.search(r"tensorrt_bindings/tensorrt[^/]*\.so$", n))
        return z.read(so), z.read("tensorrt_bindings/__init__.py").decode()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--module", action="append", default=[], help="an installed module: tensorrt_rtx or tensorrt")
    ap.add_argument("--pypi", action="append", default=[], metavar="VERSION",
                    help="a tensorrt-cu12-bindings version on PyPI (10.x or 11.x)")
    args = ap.parse_args(argv)
    failed = 0
    for name in args.module:
        module = importlib.import_module(name)
        version = str(module.__version__)
        flavour = "rtx" if name == "tensorrt_rtx" else version.split(".")[0]
        failed += _report(f"{name} {version}", flavour, missing_in_module(module, flavour))
    for version in args.pypi:
        with tempfile.TemporaryDirectory() as tmp:
            blob, init = fetch_bindings(version, Path(tmp))
        flavour = version.split(".")[0]
        failed += _report(f"tensorrt-cu12-bindings {version} (string table of tensorrt.so)", flavour,
                          missing_in_strings(blob, init, flavour))
    return 1 if failed else 0


def _report(what: str, flavour: str, missing: list[str]) -> bool:
    """Print one line for ``what``; true when names are missing."""
    total = len(names_for(flavour))
    print(f"{what}: {total - len(missing)}/{total} names present" + (f"; MISSING: {', '.join(missing)}" if missing else ""))
    return bool(missing)


if __name__ == "__main__":
    sys.exit(main())
