"""Compile our CUDA C++ kernels at run time with NVRTC, through ``cuda-python`` (``cuda.bindings.nvrtc``).

NVRTC is a library, not a driver feature: it compiles on a machine without a GPU (the
``nvidia-cuda-nvrtc`` wheel, which ``cuda-python`` finds), which is how CI checks the kernels build.

What to compile for: the GPU in use when there is one (``sm_XY`` machine code: it loads on any driver of
the same CUDA major version, where PTX of a newer NVRTC would need a newer driver to JIT), else PTX for
``compute_75``, the oldest architecture TensorRT-RTX supports. Results are cached per process.

Errors are typed: :class:`KernelCompileError` carries NVRTC's log (file, line, message), and a missing
``cuda-python`` / NVRTC library is a :class:`~engine.errors.BackendUnavailableError` naming the install.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import BackendUnavailableError, KernelCompileError

KERNEL_DIR = Path(__file__).resolve().parent / "kernels"
DEFAULT_ARCH = "compute_75"  # PTX for Turing and newer: the oldest GPU TensorRT-RTX supports
INSTALL = "pip install cuda-python nvidia-cuda-nvrtc (the NVRTC library wheel; no CUDA toolkit needed)"
# Exactness over speed: no fused multiply-adds, IEEE division and square root (the kernels compare
# IoUs with a threshold exactly as the host does).
BASE_OPTIONS = ("--fmad=false", "--prec-div=true", "--prec-sqrt=true", "-lineinfo")


@dataclass(frozen=True)
class CompiledModule:
    """A compiled translation unit: ``image`` is PTX text (``kind="ptx"``) or a cubin (``"cubin"``)."""

    name: str
    arch: str
    kind: str
    image: bytes
    log: str
    kernels: tuple[str, ...]


def _nvrtc():
    try:
        from cuda.bindings import nvrtc
    except ImportError as e:
        raise BackendUnavailableError(f"compiling CUDA kernels needs cuda-python ({e})", INSTALL) from None
    return nvrtc


def _check(result, what: str, nvrtc) -> None:
    if result != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        _, text = nvrtc.nvrtcGetErrorString(result)
        raise KernelCompileError(f"NVRTC {what} failed: {text.decode(errors='replace') if text else result}")


def nvrtc_version() -> tuple[int, int]:
    """NVRTC's (major, minor) version.

    Raises:
        BackendUnavailableError: cuda-python or the NVRTC library is missing.
    """
    nvrtc = _nvrtc()
    try:
        err, major, minor = nvrtc.nvrtcVersion()
    except RuntimeError as e:  # cuda-python found, NVRTC shared library not
        raise BackendUnavailableError(f"the NVRTC library cannot be loaded ({e})", INSTALL) from None
    _check(err, "version query", nvrtc)
    return major, minor


def supported_archs() -> tuple[int, ...]:
    """Compute capabilities this NVRTC compiles for (e.g. ``(75, 80, 86, 89, 90, 100, 120)``)."""
    nvrtc = _nvrtc()
    nvrtc_version()
    err, archs = nvrtc.nvrtcGetSupportedArchs()
    _check(err, "architecture query", nvrtc)
    return tuple(int(a) for a in archs)


def arch_for_device(major: int, minor: int) -> str:
    """``sm_XY`` machine code for a device NVRTC knows, else PTX for the newest architecture below it."""
    cc = major * 10 + minor
    archs = supported_archs()
    if cc in archs:
        return f"sm_{cc}"
    older = [a for a in archs if a <= cc]
    if not older:
        raise KernelCompileError(f"this NVRTC ({'.'.join(map(str, nvrtc_version()))}) cannot compile for compute "
                                 f"capability {major}.{minor} (it supports {archs})",
                                 fix="install an nvidia-cuda-nvrtc wheel that supports this GPU")
    return f"compute_{max(older)}"


def kernel_source(name: str) -> str:
    """The text of ``engine/cuda/kernels/<name>.cu``."""
    path = KERNEL_DIR / f"{name}.cu"
    if not path.is_file():
        known = sorted(p.stem for p in KERNEL_DIR.glob("*.cu"))
        raise KernelCompileError(f"no kernel source {path} (known: {known})",
                                 fix="reinstall the package: the .cu files ship as package data")
    return path.read_text(encoding="utf-8")


def compile_source(source: str, name: str, kernels: Sequence[str], arch: str = DEFAULT_ARCH,
                   options: Sequence[str] = ()) -> CompiledModule:
    """Compile CUDA C++ ``source`` (file name ``name`` in messages) to PTX (``compute_XY``) or a cubin (``sm_XY``).

    ``kernels`` are the ``extern "C"`` entry points the caller will look up; each must exist after
    compiling (NVRTC drops nothing that is ``__global__``, so a missing one is a typo to report now).

    Raises:
        KernelCompileError: a compile error (the message holds NVRTC's log), or an unknown architecture.
        BackendUnavailableError: cuda-python or NVRTC is not installed.
    """
    nvrtc = _nvrtc()
    nvrtc_version()
    if not (arch.startswith("compute_") or arch.startswith("sm_")):
        raise KernelCompileError(f"architecture {arch!r} is not compute_XY or sm_XY", fix="pass e.g. compute_75 or sm_86")
    err, prog = nvrtc.nvrtcCreateProgram(source.encode(), name.encode(), 0, [], [])
    _check(err, "program creation", nvrtc)
    try:
        opts = [f"--gpu-architecture={arch}".encode(), *(o.encode() for o in BASE_OPTIONS),
                *(o.encode() for o in options)]
        result = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)[0]
        err, size = nvrtc.nvrtcGetProgramLogSize(prog)
        # NVRTC writes into the buffer: it must be mutable. NVIDIA's samples pass ``b" " * size``, which
        # for size 1 (an empty log) is CPython's shared b" " object: writing its NUL there turns every
        # b" " in the process into b"\x00" (torch.load then fails on intact files).
        log = bytearray(size)
        nvrtc.nvrtcGetProgramLog(prog, log)
        log_text = bytes(log).rstrip(b"\x00 ").decode(errors="replace")
        if result != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise KernelCompileError(f"NVRTC could not compile {name} for {arch}", log_text,
                                     fix="the kernel source has an error (see the log above)")
        if arch.startswith("sm_"):
            err, size = nvrtc.nvrtcGetCUBINSize(prog)
            _check(err, "cubin size", nvrtc)
            buf = bytearray(size)
            _check(nvrtc.nvrtcGetCUBIN(prog, buf)[0], "cubin", nvrtc)
            kind = "cubin"
        else:
            err, size = nvrtc.nvrtcGetPTXSize(prog)
            _check(err, "PTX size", nvrtc)
            buf = bytearray(size)
            _check(nvrtc.nvrtcGetPTX(prog, buf)[0], "PTX", nvrtc)
            kind = "ptx"
        image = bytes(buf)
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
    if kind == "ptx":
        missing = [k for k in kernels if f".entry {k}(".encode() not in image]
        if missing:
            raise KernelCompileError(f"{name} compiled, but has no kernels {missing}",
                                     fix="check the extern \"C\" __global__ names in the .cu file")
    return CompiledModule(name, arch, kind, image, log_text, tuple(kernels))


@functools.lru_cache(maxsize=None)
def compile_kernel_file(name: str, kernels: tuple[str, ...], arch: str = DEFAULT_ARCH) -> CompiledModule:
    """Compile ``engine/cuda/kernels/<name>.cu`` (cached per process and architecture)."""
    return compile_source(kernel_source(name), f"{name}.cu", kernels, arch)
