"""What machine and software a benchmark ran on: recorded in every results.json and results.md."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
from pathlib import Path

# distribution name → shown name; missing ones are recorded as absent, never imported here
PACKAGES = {"yolo-deploy": "yolo-deploy", "numpy": "numpy", "opencv-python": "opencv", "onnxruntime": "onnxruntime",
            "onnxruntime-gpu": "onnxruntime-gpu", "onnx": "onnx", "torch": "torch", "ultralytics": "ultralytics",
            "tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt-rtx", "cuda-python": "cuda-python",
            "openvino": "openvino", "nncf": "nncf"}


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux, ``platform`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def physical_cores() -> int | None:
    try:
        import psutil

        return psutil.cpu_count(logical=False)
    except ImportError:
        return None


def memory_gib() -> float | None:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        return None


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (``None`` where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def gpus() -> list[str]:
    """NVIDIA GPUs by ``nvidia-smi`` (name, memory, driver); empty when there is none or no driver."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


WRITTEN = ("RESULTS.md", "results", "charts")  # what benchmarks.refresh writes: not an edit of the code measured


def source_commit(root: Path = Path(__file__).resolve().parent.parent) -> str | None:
    """The project's git commit (short), ``+`` when the working tree differs from it (the figures
    ``benchmarks.refresh`` writes aside); ``None`` outside git."""
    exe = shutil.which("git")
    if not exe:
        return None
    try:
        sha = subprocess.run([exe, "rev-parse", "--short=10", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run([exe, "status", "--porcelain", "--untracked-files=no", "--", ".", *(
            f":!benchmarks/{p}" for p in WRITTEN)], cwd=root, capture_output=True, text=True, timeout=10,
                               check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+" if dirty else "") if sha else None


def versions() -> dict[str, str | None]:
    out = {}
    for dist, shown in PACKAGES.items():
        try:
            out[shown] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[shown] = None
    return out


def environment() -> dict:
    """The machine, its load now, and the library versions."""
    return {
        "cpu": cpu_model(), "logical_cores": os.cpu_count(), "physical_cores": physical_cores(),
        "memory_gib": memory_gib(), "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(), "gpus": gpus(), "load_avg_start": load_average(),
        "versions": {k: v for k, v in versions().items() if v is not None}, "commit": source_commit(),
    }


def describe(env: dict) -> str:
    """One line: CPU, cores, GPU, load."""
    gpu = "; ".join(env.get("gpus") or []) or "no GPU"
    load = env.get("load_avg_start")
    cores = f"{env.get('physical_cores') or '?'} cores / {env.get('logical_cores')} threads"
    text = f"{env.get('cpu')}, {cores}, {env.get('memory_gib') or '?'} GiB, {gpu}, {env.get('os')}"
    if load:
        text += f"; load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"
    end = env.get("load_avg_end")
    if end:
        text += f", at end {end[0]:.2f} / {end[1]:.2f} / {end[2]:.2f}"
    return text
