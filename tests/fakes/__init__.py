"""FAKE TensorRT and CUDA modules, and a fake detector graph, for tests on machines without a GPU.

Everything here proves our own logic against each API surface; nothing here proves that TensorRT or
CUDA behave as the fakes do. The real TensorRT-RTX builder is tested separately, and the real run
path is checked on a GPU by ``python -m benchmarks.verify``.
"""
from __future__ import annotations

import sys

from .fake_cudart import make_fake_cudart
from .fake_tensorrt import make_fake_tensorrt

__all__ = ["make_fake_cudart", "make_fake_tensorrt", "install_fakes"]


def install_fakes(monkeypatch, version: str = "10.9.0.34", module: str = "tensorrt", **cudart_kw):
    """Put a fake TensorRT (``module`` at ``version``) and a fake CUDA runtime in place for one test.

    The other TensorRT module is hidden (an import of it fails), so ``auto`` finds only the fake.
    Returns ``(fake_trt, fake_cudart)``.
    """
    import engine.cuda.runtime as rt

    cudart = make_fake_cudart(**cudart_kw)
    trt = make_fake_tensorrt(version, module, cudart)
    monkeypatch.setattr(rt, "_CUDART", cudart)
    monkeypatch.setitem(sys.modules, module, trt)
    monkeypatch.setitem(sys.modules, "tensorrt_rtx" if module == "tensorrt" else "tensorrt", None)
    return trt, cudart
