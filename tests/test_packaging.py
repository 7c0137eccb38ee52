"""setup.py: the lean base install, the extras, and the layout the user asked for."""
from __future__ import annotations

import re

from tests.conftest import ROOT

SETUP = (ROOT / "setup.py").read_text()


def _list(name: str) -> str:
    return re.search(rf"{name} = (\[.*?\]|\{{.*?\n\}})", SETUP, re.S).group(1)


def test_base_install_is_the_lean_runtime():
    base = _list("RUNTIME")
    for pkg in ("numpy", "opencv-python", "onnxruntime"):
        assert f'"{pkg}' in base
    for heavy in ("torch", "ultralytics", "tensorrt", "cuda-python", "headless"):
        assert heavy not in base


def test_extras_exist_and_gpu_uses_onnxruntime_gpu():
    extras = _list("EXTRAS")
    for extra in ("export", "rtx", "trt", "gpu", "bench", "stream"):
        assert f'"{extra}":' in extras
    assert 'EXTRAS["dev"]' in SETUP
    assert "onnxruntime-gpu" in extras and "tensorrt-rtx" in extras and "cuda-python" in extras
    assert "pycuda" not in SETUP and "headless" not in extras  # cv2 must come from one wheel only


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
    from exporters.build import build_parser

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


def test_alert_extras_are_declared_and_in_dev():
    extras = _list("EXTRAS")
    assert '"track": ["trackers' in extras and '"alerts": ["trackers' in extras and "paho-mqtt" in extras
    assert '*EXTRAS["alerts"]' in SETUP  # dev installs them: the tests use both
