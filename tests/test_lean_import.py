"""The runtime imports, and runs an ONNX model, with torch, Ultralytics, onnx, TensorRT and CUDA blocked."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import DEMO, ROOT

# Blocked imports fail, and every attempt is recorded: a module that tries a heavy import at import time and
# falls back when it fails still pays for it where the library is installed, so an attempt counts as a failure.
BLOCKER = textwrap.dedent('''
    import importlib.abc, sys
    BLOCKED = {"torch", "torchvision", "ultralytics", "onnx", "onnxslim", "tensorrt", "tensorrt_rtx", "cuda", "pycuda"}
    TRIED = []
    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                TRIED.append(name)
                raise ImportError(f"blocked in this test: {name}")
    sys.meta_path.insert(0, _Block())
''')


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_every_engine_module_imports_without_heavy_libraries():
    p = _run('''
        import importlib, pkgutil, engine
        names = [m.name for m in pkgutil.walk_packages(engine.__path__, "engine.")]
        for n in names:
            if not n.endswith("__main__"):  # running an entry point is not importing it
                importlib.import_module(n)
        print("imported", len(names), "tried", sorted(set(TRIED)))
    ''')
    assert p.returncode == 0, p.stderr
    assert "tried []" in p.stdout and int(p.stdout.split()[1]) >= 30, p.stdout  # every room was walked


def test_every_project_module_imports_without_tensorrt_or_cuda():
    """exporters, calibration and benchmarks may use torch or onnx, but never need TensorRT or CUDA to import."""
    code = BLOCKER.replace('{"torch", "torchvision", "ultralytics", "onnx", "onnxslim", "tensorrt"',
                           '{"tensorrt"') + textwrap.dedent('''
        import importlib, pkgutil
        names = []
        for pkg in ("engine", "exporters", "calibration", "benchmarks"):
            mod = importlib.import_module(pkg)
            names += [pkg] + [m.name for m in pkgutil.walk_packages(mod.__path__, pkg + ".")]
        for n in names:
            if not n.endswith("__main__"):
                importlib.import_module(n)
        print("imported", len(names), "tried", sorted(set(TRIED)))
    ''')
    assert "tensorrt_rtx" in code and "torchvision" not in code  # the replace above took
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "tried []" in p.stdout, p.stdout


def test_detector_runs_onnx_without_heavy_libraries(demo_onnx):
    image = sorted((DEMO / "val" / "images").glob("*.jpg"))[0]
    p = _run(f'''
        import cv2
        from engine import Detector
        with Detector(r"{demo_onnx}", conf=0.25) as det:
            r = det(cv2.imread(r"{image}"))
        print("boxes", len(r))
    ''')
    assert p.returncode == 0, p.stderr
    assert int(p.stdout.split("boxes")[1]) > 0
