"""``python -m benchmarks.gpu_kernels``: our CUDA letterbox kernel against the CPU path it replaces.

Needs an NVIDIA GPU, cuda-python and NVRTC (``pip install -e .[cuda]``); TensorRT is not needed. Measures
the letterbox kernel on a 1920x1080 BGR frame into a 640x640 FP32 input: the kernel alone (CUDA events
around the launch, frame already on the device) and with the H2D copy of the frame from pinned memory,
against OpenCV's CPU letterbox (``engine.preprocess.Letterbox``, wall clock). Goal: >= 10x.

The kernel is checked against the CPU reference first (within 1/255), so a wrong kernel is never timed.
Prints a Markdown section for ``benchmarks/RESULTS.md`` ("GPU kernels") and writes the numbers as JSON
(``--json``).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from engine.cli import run_cli
from engine.errors import BackendUnavailableError, DeployError


def _stats(ms: list[float]) -> dict[str, float]:
    ms = sorted(ms)
    pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
    return {"p50": statistics.median(ms), "p95": pick(0.95), "p99": pick(0.99), "mean": statistics.fmean(ms)}


def _gpu_time(fn, stream, iters: int, warmup: int = 20) -> list[float]:
    """Milliseconds of the work ``fn`` queues on ``stream``, per call, from CUDA events."""
    from engine.cuda import Event

    for _ in range(warmup):
        fn()
    stream.synchronize()
    out = []
    with Event() as a, Event() as b:
        for _ in range(iters):
            a.record(stream)
            fn()
            b.record(stream)
            b.synchronize()
            out.append(a.elapsed_ms(b))
    return out


def _cpu_time(fn, iters: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def bench_letterbox(iters: int, imgsz=(640, 640)) -> dict:
    import cv2

    from engine.cuda import DeviceBuffer, PinnedBuffer, Stream, cudart, check
    from engine.cuda.kernels import GpuLetterbox
    from engine.preprocess import Letterbox

    rng = np.random.default_rng(0)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (1080, 1920, 3), np.uint8), (7, 7), 0)  # image-like, not noise
    cpu = Letterbox(imgsz)
    ref = cpu([frame])[0][0].copy()
    nbytes = 3 * imgsz[0] * imgsz[1] * 4
    with GpuLetterbox(imgsz) as glb, Stream() as s, DeviceBuffer(nbytes) as dst, PinnedBuffer(nbytes) as out, \
            PinnedBuffer(frame.nbytes) as pin, DeviceBuffer(frame.nbytes) as src:
        glb([frame], dst.ptr, s)
        dst.copy_to_host(out, s)
        s.synchronize()
        err = float(np.abs(out.array((3, *imgsz), np.float32) - ref).max())
        if err > 1 / 255 + 1e-6:
            raise DeployError(f"letterbox kernel differs from the CPU by {err * 255:.2f}/255: not timing a wrong "
                              "kernel", "report it with this output and python -m benchmarks.verify's report")
        np.copyto(pin.array(frame.shape, np.uint8), frame)
        rt = cudart()

        def h2d():
            check(rt.cudaMemcpyAsync(src.ptr, pin.ptr, frame.nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
                                     s.handle), "cudaMemcpyAsync")

        h2d()
        kernel = _gpu_time(lambda: glb.launch(src.ptr, frame.shape[:2], frame.strides[0], dst.ptr, s), s, iters)
        with_copy = _gpu_time(lambda: (h2d(), glb.launch(src.ptr, frame.shape[:2], frame.strides[0], dst.ptr, s)), s, iters)
        via_call = _cpu_time(lambda: (glb([frame], dst.ptr, s), s.synchronize()), iters)  # the Detector path
    cpu_ms = _cpu_time(lambda: cpu([frame]), iters)
    return {"frame": "1920x1080 BGR uint8", "imgsz": list(imgsz), "max_abs_err_255": err * 255,
            "kernel_ms": _stats(kernel), "h2d_plus_kernel_ms": _stats(with_copy),
            "python_call_wall_ms": _stats(via_call), "cpu_cv2_ms": _stats(cpu_ms),
            "speedup_kernel": statistics.median(cpu_ms) / statistics.median(kernel),
            "speedup_with_h2d": statistics.median(cpu_ms) / statistics.median(with_copy)}


def machine() -> dict:
    import cv2

    from engine.cuda import device_info, versions
    from engine.cuda.nvrtc import nvrtc_version

    gpu = device_info(0)
    import importlib.metadata as md

    from benchmarks.env import cpu_model

    cuda_python = "?"  # the cuda-python metapackage, else the bindings alone (as some GPU images have them)
    for dist, shown in (("cuda-python", "{}"), ("cuda-bindings", "{} (cuda-bindings)")):
        try:
            cuda_python = shown.format(md.version(dist))
            break
        except md.PackageNotFoundError:
            continue
    driver, runtime = versions()
    cpu = cpu_model()
    return {"gpu": gpu.name, "sm": gpu.sm_tag, "driver": driver, "cuda_runtime": runtime,
            "nvrtc": ".".join(map(str, nvrtc_version())), "cuda_python": cuda_python, "opencv": cv2.__version__,
            "numpy": np.__version__, "cpu": cpu, "python": platform.python_version()}


def markdown(res: dict) -> str:
    m, a = res["machine"], res["letterbox"]
    p = lambda s: f"{s['p50']:.3f}"  # noqa: E731
    return "\n".join([
        f"`python -m benchmarks.gpu_kernels --iters {res['iters']}` on {m['gpu']} ({m['sm']}), driver {m['driver']}, "
        f"CUDA runtime {m['cuda_runtime']}, NVRTC {m['nvrtc']}, cuda-python {m['cuda_python']}, OpenCV {m['opencv']}, "
        f"CPU {m['cpu']}; median ms.",
        "",
        "| kernel | GPU kernel | GPU incl. copy | CPU path | speedup (kernel / incl. copy) |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| (a) letterbox 1920x1080 → {a['imgsz'][0]}x{a['imgsz'][1]} fp32 | {p(a['kernel_ms'])} | "
        f"{p(a['h2d_plus_kernel_ms'])} (H2D from pinned) | {p(a['cpu_cv2_ms'])} (cv2) | "
        f"{a['speedup_kernel']:.1f}x / {a['speedup_with_h2d']:.1f}x |",
        "",
        f"Letterbox max difference from the CPU path: {a['max_abs_err_255']:.2f}/255. "
        f"Python-call wall time of kernel (a) incl. the pinned copy and a sync: {p(a['python_call_wall_ms'])} ms.",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_kernels", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--iters", type=int, default=200, help="timed iterations of each measurement")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args(argv)
    return run_cli(lambda: _run(args), False)


def _run(args: argparse.Namespace) -> int:
    """Check the kernel against the CPU, then time it."""
    from engine.cuda.kernels import cuda_unavailable_reason

    reason = cuda_unavailable_reason()
    if reason:
        raise BackendUnavailableError(f"no usable GPU: {reason}",
                                      "run this on a machine with an NVIDIA GPU, its driver and pip install -e .[cuda]")
    res = {"iters": args.iters, "machine": machine(), "letterbox": bench_letterbox(args.iters)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2), encoding="utf-8")
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
