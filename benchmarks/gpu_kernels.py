"""``python -m benchmarks.gpu_kernels``: our two CUDA kernels against the CPU path they replace.

Needs an NVIDIA GPU, cuda-python and NVRTC (``pip install -e .[cuda]``); TensorRT is not needed. Measures:

* kernel (a), letterbox: a 1920x1080 BGR frame into a 640x640 FP32 input — the kernel alone (CUDA events
  around the launch, frame already on the device) and with the H2D copy of the frame from pinned memory,
  against OpenCV's CPU letterbox (``engine.preprocess.Letterbox``, wall clock). Goal: >= 10x.
* kernel (b), decode + filter + top-K + NMS: a raw head on the device → K detections on the host (the
  kernels, and with the D2H copy of the K rows), against the host path: D2H of the whole raw head plus
  ``engine.nms.postprocess_raw``.

Each is checked against the CPU reference first (letterbox within 1/255, the same kept boxes), so a
wrong kernel is never timed. Prints a Markdown section for ``benchmarks/RESULTS.md`` ("GPU kernels")
and writes the numbers as JSON (``--json``).
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
            raise SystemExit(f"letterbox kernel differs from the CPU by {err * 255:.2f}/255: not timing a wrong kernel")
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


def _head(rng, nc: int, anchors: int, objects: int = 12) -> np.ndarray:
    """A COCO-sized raw head with ``objects`` objects, each seen by a cluster of anchors (as a real head)."""
    pred = np.zeros((1, 4 + nc, anchors), np.float32)
    pred[0, 4:] = rng.uniform(0, 0.05, (nc, anchors))
    centers, sizes, cls = rng.uniform(40, 600, (objects, 2)), rng.uniform(20, 200, (objects, 2)), rng.integers(0, nc, objects)
    pred[0, 0:2] = rng.uniform(0, 640, (2, anchors))
    pred[0, 2:4] = rng.uniform(4, 60, (2, anchors))
    for o in range(objects):
        idx = rng.choice(anchors, 40, replace=False)
        pred[0, 0:2, idx] = (centers[o] + rng.normal(0, 4, (40, 2))).T
        pred[0, 2:4, idx] = (sizes[o] * rng.uniform(0.9, 1.1, (40, 2))).T
        pred[0, 4 + cls[o], idx] = rng.uniform(0.3, 0.95, 40)
    return pred


def bench_postprocess(iters: int, nc: int = 80, anchors: int = 8400, conf: float = 0.25, iou: float = 0.45) -> dict:
    from engine.cuda import DeviceBuffer, PinnedBuffer, Stream
    from engine.cuda.kernels import GpuPostprocess
    from engine.nms import postprocess_raw

    pred = _head(np.random.default_rng(0), nc, anchors)
    ref = postprocess_raw(pred[0], conf, iou, 300)
    with GpuPostprocess(nc, anchors, batch=1) as pp, Stream() as s, DeviceBuffer(pred.nbytes) as d, \
            PinnedBuffer(pred.nbytes) as pin:
        np.copyto(pin.array(pred.shape, np.float32), pred)
        d.copy_from_host(pin, s)
        r = pp(d.ptr, conf, iou, s)
        n = int(r.num_dets[0, 0])
        same = n == len(ref[0]) and np.array_equal(r.classes[0, :n], ref[2]) and np.allclose(r.boxes[0, :n], ref[0], atol=1e-3)
        if not same:
            raise SystemExit(f"postprocess kernel kept {n} boxes, the host {len(ref[0])}: not timing a wrong kernel")
        kernels = _gpu_time(lambda: pp.launch(d.ptr, conf, iou, s), s, iters)
        with_d2h = _gpu_time(lambda: pp.enqueue(d.ptr, conf, iou, s), s, iters)
        raw_d2h = _gpu_time(lambda: d.copy_to_host(pin, s), s, iters)
    host = _cpu_time(lambda: postprocess_raw(pred[0], conf, iou, 300), iters)
    host_total = statistics.median(raw_d2h) + statistics.median(host)
    return {"head": f"(1, {4 + nc}, {anchors}) float32", "candidates": int(r.candidates[0]), "detections": n,
            "kernels_ms": _stats(kernels), "kernels_plus_d2h_ms": _stats(with_d2h), "raw_head_d2h_ms": _stats(raw_d2h),
            "host_nms_ms": _stats(host), "host_path_ms": host_total,
            "speedup_vs_host_path": host_total / statistics.median(with_d2h)}


def machine() -> dict:
    import cv2

    from engine.cuda import device_info, versions
    from engine.cuda.nvrtc import nvrtc_version

    gpu = device_info(0)
    try:
        import importlib.metadata as md

        cuda_python = md.version("cuda-python")
    except Exception:
        cuda_python = "?"
    driver, runtime = versions()
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"gpu": gpu.name, "sm": gpu.sm_tag, "driver": driver, "cuda_runtime": runtime,
            "nvrtc": ".".join(map(str, nvrtc_version())), "cuda_python": cuda_python, "opencv": cv2.__version__,
            "numpy": np.__version__, "cpu": cpu, "python": platform.python_version()}


def markdown(res: dict) -> str:
    m, a, b = res["machine"], res["letterbox"], res["postprocess"]
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
        f"| (b) decode+top-K+NMS {b['head']}, {b['candidates']} candidates → {b['detections']} boxes | "
        f"{p(b['kernels_ms'])} | {p(b['kernels_plus_d2h_ms'])} (D2H of K rows) | "
        f"{b['host_path_ms']:.3f} (D2H of the head {p(b['raw_head_d2h_ms'])} + NumPy NMS {p(b['host_nms_ms'])}) | "
        f"— / {b['speedup_vs_host_path']:.1f}x |",
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
    from engine.cuda.kernels import cuda_unavailable_reason

    reason = cuda_unavailable_reason()
    if reason:
        print(f"error: no usable GPU: {reason}\n  fix: run this on a machine with an NVIDIA GPU, its driver and "
              "pip install -e .[cuda]", file=sys.stderr)
        return 2
    res = {"iters": args.iters, "machine": machine(), "letterbox": bench_letterbox(args.iters),
           "postprocess": bench_postprocess(args.iters)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
