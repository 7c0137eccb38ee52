"""Our CUDA kernel: NVRTC compiles it (no GPU needed), its logic runs on the CPU, and on a GPU it matches
the CPU reference (``gpu``-marked, skipped without one).

The CPU run is the kernel's own ``.cu`` source compiled by the host C++ compiler with a small shim for
CUDA's built-ins, each launch played as a loop over the same grid the Python wrapper uses. The kernel
uses no shared memory and no barriers, so that loop is a faithful schedule; it checks the arithmetic
and indexing (not timing or the PTX itself).
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from engine.cuda.kernels import (
    LETTERBOX_FILE,
    LETTERBOX_KERNELS,
    letterbox_args,
    letterbox_launch,
)
from engine.cuda.nvrtc import KERNEL_DIR, KernelCompileError
from engine.preprocess import Letterbox, LetterboxGeometry
from tests.conftest import DEMO


def _nvrtc_or_skip():
    from engine.errors import BackendUnavailableError

    try:
        from engine.cuda.nvrtc import nvrtc_version

        return nvrtc_version()
    except BackendUnavailableError as e:
        pytest.skip(f"NVRTC unavailable: {e.message}")


# --------------------------------------------------------------------------------------------- NVRTC
@pytest.mark.parametrize("arch", ["compute_75", "sm_86", "sm_89", "sm_120"])
def test_the_kernel_compiles(arch):
    from engine.cuda.nvrtc import compile_kernel_file, supported_archs

    _nvrtc_or_skip()
    if arch.startswith("sm_") and int(arch[3:]) not in supported_archs():
        pytest.skip(f"this NVRTC does not know {arch}")
    for file, kernels in ((LETTERBOX_FILE, LETTERBOX_KERNELS),):
        m = compile_kernel_file(file, kernels, arch)
        assert m.kind == ("ptx" if arch.startswith("compute") else "cubin") and len(m.image) > 1000
        if m.kind == "ptx":
            assert all(f".entry {k}(".encode() in m.image for k in kernels)
            assert b"fma.rn" not in m.image or file == LETTERBOX_FILE  # --fmad=false: IoUs as on the host


def test_compile_error_carries_nvrtc_log():
    from engine.cuda.nvrtc import compile_source

    _nvrtc_or_skip()
    src = 'extern "C" __global__ void k(float* x) {\n  x[0] = undefined_name;\n}\n'
    with pytest.raises(KernelCompileError) as e:
        compile_source(src, "broken.cu", ("k",))
    assert "broken.cu(2)" in str(e.value) and "undefined_name" in e.value.log


def test_missing_entry_point_is_reported():
    from engine.cuda.nvrtc import compile_source

    _nvrtc_or_skip()
    with pytest.raises(KernelCompileError, match="no kernels"):
        compile_source('extern "C" __global__ void k(float* x) { x[0] = 1.f; }', "k.cu", ("k", "other"))


def test_unknown_kernel_file_lists_the_known_ones():
    from engine.cuda.nvrtc import kernel_source

    with pytest.raises(KernelCompileError, match="letterbox"):
        kernel_source("nope")


def test_arch_for_device(monkeypatch):
    import engine.cuda.nvrtc as nv

    monkeypatch.setattr(nv, "supported_archs", lambda: (75, 80, 86, 89, 90, 120))
    monkeypatch.setattr(nv, "nvrtc_version", lambda: (13, 2))
    assert nv.arch_for_device(8, 6) == "sm_86"
    assert nv.arch_for_device(8, 7) == "compute_86"  # unknown to this NVRTC: PTX of the newest below it
    with pytest.raises(KernelCompileError, match="7.0"):
        nv.arch_for_device(7, 0)


def test_kernel_sources_ship_as_package_data():
    text = (Path(__file__).resolve().parents[1] / "setup.py").read_text()
    assert "cuda/kernels/*.cu" in text
    assert {p.name for p in KERNEL_DIR.glob("*.cu")} >= {"letterbox.cu"}


# ----------------------------------------------------------------------------- the kernels, on the CPU
SHIM = r'''
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
struct emu_dim3 { unsigned x, y, z; };
static emu_dim3 threadIdx, blockIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
using std::max; using std::min;
static inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline int atomicAdd(int* p, int v) { int o = *p; *p += v; return o; }
#include "letterbox.cu"
template <class F> static void emu_grid(const unsigned* g, const unsigned* b, F f) {
    gridDim = {g[0], g[1], g[2]}; blockDim = {b[0], b[1], b[2]};
    for (unsigned bz = 0; bz < g[2]; ++bz) for (unsigned by = 0; by < g[1]; ++by) for (unsigned bx = 0; bx < g[0]; ++bx)
    for (unsigned tz = 0; tz < b[2]; ++tz) for (unsigned ty = 0; ty < b[1]; ++ty) for (unsigned tx = 0; tx < b[0]; ++tx) {
        blockIdx = {bx, by, bz}; threadIdx = {tx, ty, tz}; f();
    }
}
extern "C" void emu_letterbox(int f16, const unsigned* g, const unsigned* b, const unsigned char* src, void* dst,
                              const LetterboxArgs* a) {
    if (f16) emu_grid(g, b, [&] { letterbox_f16(src, (unsigned short*)dst, *a); });
    else emu_grid(g, b, [&] { letterbox_f32(src, (float*)dst, *a); });
}
'''


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no host C++ compiler to run the kernels on the CPU")
    d = tmp_path_factory.mktemp("cuda_emu")
    (d / "shim.cpp").write_text(SHIM)
    so = d / "libkernels_emu.so"
    p = subprocess.run([cxx, "-O2", "-std=c++17", "-ffp-contract=off", "-fPIC", "-shared", "-I", str(KERNEL_DIR),
                        str(d / "shim.cpp"), "-o", str(so)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return ctypes.CDLL(str(so))


def _dims(t):
    return (ctypes.c_uint * 3)(*t)


def emu_letterbox(lib, frame: np.ndarray, imgsz, dtype=np.float32) -> np.ndarray:
    frame = np.ascontiguousarray(frame)
    g = LetterboxGeometry.fit(frame.shape[:2], imgsz)
    out = np.full((3, *imgsz), np.nan, dtype)
    grid, block = letterbox_launch(imgsz)
    args = letterbox_args(frame.shape, frame.strides[0], g)
    lib.emu_letterbox(int(dtype == np.float16), _dims(grid), _dims(block), frame.ctypes.data_as(ctypes.c_void_p),
                      out.ctypes.data_as(ctypes.c_void_p), ctypes.byref(args))
    return out


def _frames():
    rng = np.random.default_rng(0)
    yield "1080p noise", rng.integers(0, 256, (1080, 1920, 3), np.uint8)
    yield "vga noise", rng.integers(0, 256, (480, 640, 3), np.uint8)
    yield "tall odd", rng.integers(0, 256, (101, 37, 3), np.uint8)
    yield "same size", rng.integers(0, 256, (320, 320, 3), np.uint8)
    gx, gy = np.meshgrid(np.arange(300) % 256, np.arange(200) % 256)
    yield "gradient", np.dstack([gx, gy, np.full_like(gx, 7)]).astype(np.uint8)
    for f in sorted((DEMO / "val" / "images").glob("*.jpg"))[:2]:
        import cv2

        yield f.name, cv2.imread(str(f))


@pytest.mark.parametrize("imgsz", [(320, 320), (384, 640)])
def test_letterbox_kernel_on_cpu_matches_opencv(emu, imgsz):
    """Within one uint8 step (1/255) of OpenCV's bilinear everywhere, identical in nearly every pixel."""
    lb = Letterbox(imgsz)
    for name, frame in _frames():
        ref = lb([frame])[0][0]
        out = emu_letterbox(emu, frame, imgsz)
        diff = np.abs(out - ref)
        assert diff.max() <= 1 / 255 + 1e-6, name
        assert (diff > 1e-6).mean() < 0.01, name  # OpenCV's scalar row tails round differently
        np.testing.assert_array_equal(emu_letterbox(emu, frame, imgsz, np.float16), out.astype(np.float16))


def test_letterbox_kernel_pads_with_114(emu):
    frame = np.zeros((100, 400, 3), np.uint8)  # wide: pad rows above and below
    out = emu_letterbox(emu, frame, (320, 320))
    g = LetterboxGeometry.fit(frame.shape[:2], (320, 320))
    assert g.top > 0 and np.all(out[:, : g.top] == np.float32(114 / 255)) and np.all(out[:, g.top + 2 : g.top + 40] == 0)


# ------------------------------------------------------------------------------- on a GPU (skipped here)
@pytest.mark.gpu
def test_gpu_letterbox_matches_cpu():
    from engine.cuda import DeviceBuffer, PinnedBuffer, Stream
    from engine.cuda.kernels import GpuLetterbox

    imgsz = (384, 640)
    lb = Letterbox(imgsz)
    with GpuLetterbox(imgsz) as glb, Stream() as s, DeviceBuffer(3 * 384 * 640 * 4) as d, PinnedBuffer(3 * 384 * 640 * 4) as h:
        for name, frame in _frames():
            glb([frame], d.ptr, s)
            d.copy_to_host(h, s)
            s.synchronize()
            out = h.array((3, *imgsz), np.float32)
            ref = lb([frame])[0][0]
            assert np.abs(out - ref).max() <= 1 / 255 + 1e-6, name


@pytest.mark.gpu
def test_gpu_letterbox_fp16():
    from engine.cuda import DeviceBuffer, PinnedBuffer, Stream
    from engine.cuda.kernels import GpuLetterbox

    frame = next(_frames())[1]
    with GpuLetterbox((320, 320), np.float16) as glb, Stream() as s, DeviceBuffer(3 * 320 * 320 * 2) as d, \
            PinnedBuffer(3 * 320 * 320 * 2) as h:
        glb([frame], d.ptr, s)
        d.copy_to_host(h, s)
        s.synchronize()
        ref = Letterbox((320, 320), dtype=np.float16)([frame])[0][0].astype(np.float32)
        assert np.abs(h.array((3, 320, 320), np.float16).astype(np.float32) - ref).max() <= 1 / 255 + 1e-3


def test_gpu_preprocess_without_cuda_is_a_clear_error(tmp_path):
    from engine import Detector
    from engine.errors import BackendUnavailableError
    from tests.gpu import cuda_unavailable_reason
    from tests.test_end2end import tiny_model

    if cuda_unavailable_reason() is None:
        pytest.skip("a GPU is present: this checks the message where there is none")
    with pytest.raises(BackendUnavailableError, match="preprocess='gpu' needs CUDA") as e:
        Detector(tiny_model(tmp_path / "tiny.onnx"), preprocess="gpu")
    assert "preprocess='cpu'" in e.value.fix


def test_gpu_kernels_without_cuda_raise_unavailable():
    from engine.cuda import CudaUnavailableError
    from engine.cuda.kernels import GpuLetterbox, cuda_unavailable_reason

    if cuda_unavailable_reason() is None:
        pytest.skip("a GPU is present")
    with pytest.raises(CudaUnavailableError, match="CUDA kernels cannot run"):
        GpuLetterbox((320, 320))


def test_bad_preprocess_value_is_refused(tmp_path):
    from engine import Detector
    from engine.errors import ConfigError
    from tests.test_end2end import tiny_model

    with pytest.raises(ConfigError, match="preprocess"):
        Detector(tiny_model(tmp_path / "tiny.onnx"), preprocess="tpu")


def test_detector_gpu_preprocess_plumbing_with_fakes(tmp_path, monkeypatch):
    """Detector(preprocess='gpu') hands frames to the kernel wrapper with the backend's device input and
    runs the backend on it; here the 'device' is a NumPy buffer and the kernel is the CPU letterbox."""
    import engine.cuda.kernels as kernels
    import engine.detector as detector_mod
    from engine import Detector
    from engine.backends.onnxruntime import OnnxRuntimeBackend
    from tests.test_end2end import tiny_model

    memory: dict[int, np.ndarray] = {}

    class FakeGpuLetterbox:
        def __init__(self, imgsz, dtype=np.float32, device=0):
            self.lb, self.closed = Letterbox(imgsz, batch=8, dtype=dtype), False

        def __call__(self, frames, dst_ptr, stream):
            assert stream == "stream"
            x, geoms = self.lb(frames)
            memory[dst_ptr][: len(frames)] = x
            return geoms

        def close(self):
            self.closed = True

    class DeviceInputBackend(OnnxRuntimeBackend):
        def device_input(self, batch):
            memory.setdefault(id(self), np.zeros((batch, 3, 32, 32), np.float32))
            return id(self), "stream"

        def infer_device(self, batch):
            return self.infer(memory[id(self)][:batch])

    monkeypatch.setattr(kernels, "cuda_unavailable_reason", lambda: None)
    monkeypatch.setattr(kernels, "GpuLetterbox", FakeGpuLetterbox)
    model = tiny_model(tmp_path / "tiny.onnx")
    monkeypatch.setattr(detector_mod, "load_backend", lambda path, backend, **kw: DeviceInputBackend(path))
    frames = [np.random.default_rng(i).integers(0, 256, (40, 30 + i, 3), np.uint8) for i in range(3)]
    with Detector(model, preprocess="gpu") as gpu:
        got = gpu(frames)
        glb = gpu._gpu_letterbox
    assert glb.closed and gpu.last_timings["preprocess"] > 0
    monkeypatch.undo()
    with Detector(model) as cpu:
        ref = cpu(frames)
    assert sum(len(r) for r in ref) > 0
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a.xyxy, b.xyxy)
        np.testing.assert_array_equal(a.class_id, b.class_id)


def test_gpu_preprocess_needs_a_device_input_backend(tmp_path, monkeypatch):
    import engine.cuda.kernels as kernels
    from engine import Detector
    from engine.errors import BackendUnavailableError
    from tests.test_end2end import tiny_model

    monkeypatch.setattr(kernels, "cuda_unavailable_reason", lambda: None)
    with pytest.raises(BackendUnavailableError, match="no device-input entry"):
        Detector(tiny_model(tmp_path / "tiny.onnx"), preprocess="gpu")


def test_compiling_leaves_interned_bytes_intact():
    """Regression: NVRTC wrote its (empty) log's NUL into CPython's shared b" ", breaking torch.load later."""
    from engine.cuda.nvrtc import compile_source

    _nvrtc_or_skip()
    compile_source('extern "C" __global__ void k(float* x) { x[0] = 1.0f; }', "k.cu", ["k"], "compute_75")
    assert b" " == bytes([32]) and b" " * 1 == bytes([32])
