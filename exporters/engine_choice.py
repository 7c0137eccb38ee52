"""Which engine to deploy: timed where the build runs on an NVIDIA GPU, pending where it does not.

INT8 is not the fastest engine by definition: TensorRT fuses a Q/DQ convolution with its bias, SiLU
and requantization only where its kernels allow, and on TensorRT-RTX the kernels are compiled for the
GPU at load time. So a build on a GPU machine times each engine it wrote (FP16, INT8, and FP32)
there, batch of one letterboxed frame through the runtime backend (host to device, execute, device to
host, median of :data:`RUNS` calls after :data:`WARMUP`), marks the fastest as recommended in the
build report (each engine's figures) and in every sidecar (``builder.timing_ms``, ``builder.recommended``), and says
so. Without a GPU (or a TensorRT runtime) the choice is left pending, with the command that makes it
on the deployment machine: ``python -m benchmarks.verify``.

Written to TensorRT's and CUDA's Python APIs through :mod:`engine.backends.tensorrt`; tested with the
project's fake TensorRT and CUDA modules (``tests/fakes``), not yet run on a GPU here.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

RUNS = 200
WARMUP = 30
PENDING_FIX = ("run `python -m benchmarks.verify --engine DIR/<stem>.<precision>.engine` for each engine on the "
               "GPU that will run it, or rebuild there: the build then times its engines itself")


@dataclass(frozen=True)
class EngineChoice:
    """The engines' timings on this GPU and the fastest one, or why there is no choice yet."""

    timings_ms: Mapping[str, float]  # precision -> median ms per call
    recommended: str | None
    gpu: str | None
    pending: str | None = None  # why nothing was timed

    def summary(self) -> str:
        if self.recommended is None:
            return f"engine choice pending: {self.pending}; {PENDING_FIX}"
        times = ", ".join(f"{k} {v:.3f} ms" for k, v in sorted(self.timings_ms.items(), key=lambda kv: kv[1]))
        return (f"engines timed on {self.gpu} (their smallest batch, median of {RUNS}): {times} -> recommended: "
                f"{self.recommended}")

    def to_dict(self) -> dict:
        return {"timings_ms": {k: round(v, 4) for k, v in self.timings_ms.items()}, "recommended": self.recommended,
                "gpu": self.gpu, "pending": self.pending, "how": None if self.recommended else PENDING_FIX}


def time_engine(path: Path, runs: int = RUNS, warmup: int = WARMUP, device: int = 0) -> float:
    """Median milliseconds of one ``backend.infer`` of letterboxed grey frames of ``path``: one frame, or the
    smallest batch the engine takes (a static batch, or a profile's minimum), in its own input format."""
    from engine import Detector
    from engine.metadata import PixelFormat
    from engine.preprocess import Letterbox

    with Detector(path, device=device) as det:
        h, w = det.metadata.imgsz
        n = det.backend.max_batch or det.backend.batch_range[0] or 1
        spec = det.backend.inputs[0]
        lb = Letterbox((h, w), batch=n, dtype=spec.dtype, pixels=PixelFormat.of_input(spec.shape, spec.dtype))
        x, _ = lb([np.full((h, w, 3), 114, np.uint8)] * n)
        for _ in range(warmup):
            det.backend.infer(x)
        ts = np.empty(runs)
        for i in range(runs):
            t = time.perf_counter()
            det.backend.infer(x)
            ts[i] = time.perf_counter() - t
    return float(np.median(ts) * 1e3)


def _gpu() -> tuple[str | None, str | None]:
    """(GPU name, None) or (None, why there is none)."""
    try:
        from engine.cuda import device_info

        info = device_info(0)
        return f"{info.name} ({info.sm_tag})", None
    except Exception as e:  # no cuda-python, no driver, no device: all mean "not here"
        return None, f"no NVIDIA GPU answered here ({type(e).__name__}: {str(e).splitlines()[0][:120]})"


def choose(engines: Mapping[str, Path], timer: Callable[[Path], float] = time_engine) -> EngineChoice:
    """Time every engine in ``engines`` (precision -> path) on this machine's GPU and pick the fastest."""
    if not engines:
        return EngineChoice({}, None, None, "no engine was built")
    gpu, why = _gpu()
    if gpu is None:
        return EngineChoice({}, None, None, why)
    timings = {}
    for key, path in engines.items():
        try:
            timings[key] = timer(path)
        except Exception as e:  # an engine that cannot run here is reported, not fatal to the build
            return EngineChoice({}, None, gpu, f"the {key} engine did not run here ({type(e).__name__}: {e})")
    best = min(timings, key=timings.get)
    return EngineChoice(timings, best, gpu)


def _update_builder(path: Path, sc, **fields) -> None:
    """Write ``fields`` into the ``builder`` section of ``path``'s sidecar ``sc`` (atomically)."""
    from engine.backends.trt_sidecar import sidecar_path

    from .io import write_bytes_atomic

    builder = {**sc.builder, **fields}
    write_bytes_atomic(sidecar_path(path), dataclasses.replace(sc, builder=builder).to_json().encode())


def mark_sidecars(engines: Mapping[str, Path], choice: EngineChoice) -> None:
    """Write each engine's timing and whether it is the recommended one into its sidecar."""
    from engine.backends.trt_sidecar import read_sidecar

    for key, path in engines.items():
        _update_builder(path, read_sidecar(path), recommended=choice.recommended == key,
                        timing_ms=None if key not in choice.timings_ms else round(choice.timings_ms[key], 4),
                        timed_on=choice.gpu, choice_pending=choice.pending)


def _unmark_others(b, engines: Mapping[str, Path]) -> None:
    """An engine file an earlier build left beside these (same model, not built or timed now) loses its old
    verdict: two sidecars must never both say ``recommended``."""
    from engine.backends.trt_sidecar import read_sidecar, sidecar_path

    from .engine_stage import ENGINES

    for precision, spec in ENGINES.items():
        path = spec.path(b.cfg.export.out, b.cfg.export.stem)
        if precision in engines or not path.is_file() or not sidecar_path(path).is_file():
            continue
        try:
            sc = read_sidecar(path)
        except Exception:  # noqa: BLE001 - an unreadable leftover is the loader's business, not the choice's
            continue
        if sc.builder.get("recommended"):
            _update_builder(path, sc, recommended=False, choice_pending="not timed by the last build")


def recommend(b, engines: Mapping[str, Path], timer: Callable[[Path], float] = time_engine) -> EngineChoice:
    """The engine stage's last step: time ``engines`` (precision -> delivered file), choose, mark the sidecars,
    add the choice to each engine's record figures (so to ``build_report.json``) and log it."""
    choice = choose(engines, timer)
    if engines:
        mark_sidecars(engines, choice)
    _unmark_others(b, engines)
    for precision in engines:
        key = f"{precision}.engine"
        rec = b.records[key]
        verdict = "pending" if choice.recommended is None else ("yes" if choice.recommended == precision else "no")
        figures = {**rec.figures, "recommended": verdict, "timing_ms": choice.to_dict()["timings_ms"].get(precision),
                   "engine_choice": choice.summary()}
        b.records[key] = dataclasses.replace(rec, figures=figures)
    b.shared["engine_choice"] = choice.to_dict()
    b.log(choice.summary())
    return choice
