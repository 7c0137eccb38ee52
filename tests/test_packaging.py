"""setup.py: the lean base install, the extras, and the layout the user asked for.

setup.py is run with ``setuptools.setup`` replaced, so the tests read what pip would get (requirement names
parsed, packages found), not the file's text.
"""
from __future__ import annotations

import re
import runpy

import pytest
from packaging.requirements import Requirement

from tests.conftest import ROOT

HEAVY = {"torch", "torchvision", "ultralytics", "onnx", "onnxslim", "tensorrt", "tensorrt-rtx", "tensorrt-cu12",
         "cuda-python", "pycuda", "nvidia-pytriton", "openvino", "nncf"}


@pytest.fixture(scope="module")
def setup_kwargs() -> dict:
    import setuptools

    captured: dict = {}
    real = setuptools.setup
    setuptools.setup = lambda **kw: captured.update(kw)
    try:
        runpy.run_path(str(ROOT / "setup.py"))
    finally:
        setuptools.setup = real
    return captured


def _names(reqs) -> set[str]:
    return {Requirement(r).name.lower() for r in reqs}


def test_base_install_is_the_lean_runtime(setup_kwargs):
    base = _names(setup_kwargs["install_requires"])
    assert {"numpy", "opencv-python", "onnxruntime"} <= base
    assert not base & HEAVY and not any("headless" in n for n in base), base


def test_extras_exist_and_gpu_uses_onnxruntime_gpu(setup_kwargs):
    extras = {k: _names(v) for k, v in setup_kwargs["extras_require"].items()}
    assert {"export", "rtx", "trt", "gpu", "bench", "stream", "cuda", "serve", "dev"} <= set(extras)
    assert "onnxruntime-gpu" in extras["gpu"] and {"tensorrt-rtx", "cuda-python"} <= extras["rtx"]
    assert {"tensorrt", "cuda-python"} <= extras["trt"] and "ultralytics" in extras["export"]
    assert extras["export"] | extras["bench"] | extras["stream"] | extras["cuda"] <= extras["dev"]
    every = set().union(*extras.values())
    assert "pycuda" not in every and not any("headless" in n for n in every)  # cv2 must come from one wheel only
    assert {"openvino", "nncf"} <= extras["openvino"] <= extras["dev"]


def test_windows_wheel_check_covers_the_runtime_extras():
    from scripts.check_windows_wheels import RUNTIME_EXTRAS

    assert set(RUNTIME_EXTRAS) == {"export", "gpu", "openvino", "cuda", "stream"}  # the build runs on Windows too


def test_every_package_folder_is_installed(setup_kwargs):
    """A new room (engine/stream, engine/serve ...) without its __init__.py would be left out of the wheel."""
    packages = set(setup_kwargs["packages"])
    for top in ("engine", "exporters", "calibration", "benchmarks"):
        for folder in [ROOT / top, *(p.parent for p in (ROOT / top).rglob("*.py"))]:
            if "__pycache__" not in folder.parts:
                assert ".".join(folder.relative_to(ROOT).parts) in packages, folder
    assert "cuda/kernels/*.cu" in " ".join(setup_kwargs["package_data"]["engine"])


def test_layout_the_user_asked_for():
    for p in ("setup.py", "engine", "exporters", "calibration", "benchmarks", "tests", "README.md"):
        assert (ROOT / p).exists(), p


def test_engine_never_imports_exporters_or_calibration():
    for f in (ROOT / "engine").rglob("*.py"):
        text = f.read_text()
        assert not re.search(r"^\s*(from|import) (exporters|calibration)\b", text, re.M), f


def test_results_md_has_a_section_per_topic():
    text = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    for topic in ("Runtime", "INT8", "TensorRT", "GPU kernels", "Streams"):
        assert re.search(rf"^## .*{topic}", text, re.M), topic


def test_readme_documents_every_build_flag():
    from exporters.cli import build_parser

    readme = (ROOT / "README.md").read_text()
    flags = {o for a in build_parser()._actions for o in a.option_strings if o.startswith("--") and o != "--help"}
    missing = sorted(f for f in flags if f not in readme)
    assert not missing, f"README lacks {missing}"


def test_readme_documents_every_stream_flag():
    from engine.stream.cli import build_parser

    readme = (ROOT / "README.md").read_text()
    flags = {o for a in build_parser()._actions for o in a.option_strings if o.startswith("--") and o != "--help"}
    missing = sorted(f for f in flags if f not in readme)
    assert not missing, f"README lacks {missing}"


def test_alert_extras_are_declared_and_in_dev(setup_kwargs):
    extras = setup_kwargs["extras_require"]
    assert "trackers" in _names(extras["track"]) and {"trackers", "paho-mqtt"} <= _names(extras["alerts"])
    assert _names(extras["alerts"]) <= _names(extras["dev"])  # dev installs them: the tests use both
