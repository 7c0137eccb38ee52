"""The files a benchmark runs: our artifacts (built by the exporters), the Ultralytics ONNX peer, random-weight models.

Each build goes into its own folder under ``<out>/artifacts/`` with a ``manifest.json`` naming what it
was built from (the weights' sha256, the size, the batch mode, the tool and library versions, and a hash
of the source of the packages that build artifacts). A later run with the same inputs and the same code
reuses the files instead of building again (``--rebuild`` forces a build).
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from engine.errors import DeployError

Log = Callable[[str], None]
MANIFEST = "manifest.json"



def form_of(path: Path) -> tuple[str, str]:
    """``(form, label)`` of an artifact from its file name, by the artifact table (:mod:`engine.artifacts`)."""
    from engine.artifacts import kind_of

    kind = kind_of(path)
    if kind is None:
        raise DeployError(f"{path} is not a model artifact (.onnx, .engine or .plan)",
                          "pass --models with files written by python -m exporters.build")
    return kind.form, kind.label


def form_rank(form: str) -> int:
    """Position of a form in the artifact table's build order (unknown forms last)."""
    from engine.artifacts import ANY_ENGINE, ARTIFACTS

    order = [a.form for a in (*ARTIFACTS, ANY_ENGINE)]
    return order.index(form) if form in order else len(order)


def is_engine(path: Path) -> bool:
    from engine.artifacts import kind_of

    kind = kind_of(path)
    return kind is not None and kind.is_engine


def engine_unavailable_reason() -> str | None:
    """Why a TensorRT engine cannot run here (no TensorRT, no CUDA GPU), or ``None`` when it can."""
    if not (importlib.util.find_spec("tensorrt") or importlib.util.find_spec("tensorrt_rtx")):
        return "no TensorRT installed (pip install -e .[rtx] or .[trt])"
    from engine.cuda import unavailable_reason

    reason = unavailable_reason()
    return f"no usable NVIDIA GPU ({reason})" if reason else None


@dataclass(frozen=True)
class ModelSource:
    """A model to benchmark: a ``.pt`` (the demo, the user's, or a random-weight one built from a yaml).

    Attributes:
        label: short name used in tables and folder names.
        weights: the ``.pt`` checkpoint.
        data: a data.yaml for the INT8 accuracy gate and ``--accuracy`` (``None``: no INT8 is built
            from a trained model, no mAP).
        random: random weights: timing only (no INT8 gate, no mAP, labelled everywhere).
    """

    label: str
    weights: Path
    data: Path | None = None
    random: bool = False


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("yolo-deploy", "ultralytics", "onnxruntime", "onnx", "torch"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = ""
    return out


_CODE_PACKAGES = ("engine", "exporters", "calibration")  # the code that decides what an artifact holds


@functools.lru_cache(maxsize=4)
def _code_digest(roots: tuple[Path, ...]) -> str:
    """sha256 of the ``.py`` files under ``roots`` (names and contents), so that artifacts built by other
    code (an edit that keeps the version number) are not reused. Computed once per run."""
    h = hashlib.sha256()
    for root in roots:
        for f in sorted(root.rglob("*.py")):
            h.update(f"{root.name}/{f.relative_to(root).as_posix()}\n".encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:32]


def _code_roots() -> tuple[Path, ...]:
    return tuple(Path(next(iter(importlib.util.find_spec(p).submodule_search_locations))) for p in _CODE_PACKAGES)


def _key(src: ModelSource, imgsz: tuple[int, int], dynamic: bool, what: str) -> dict:
    from engine.metadata import file_sha256

    return {"what": what, "weights_sha256": file_sha256(src.weights), "imgsz": list(imgsz), "dynamic": dynamic,
            "data": str(src.data) if src.data else None, "random": src.random,
            "versions": _versions(), "code": _code_digest(_code_roots())}


def _cached(folder: Path, key: dict) -> list[Path] | None:
    try:
        m = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    files = [folder / f for f in m.get("files", [])]
    return files if m.get("key") == key and files and all(f.is_file() for f in files) else None


def _save(folder: Path, key: dict, files: list[Path], notes: list[str]) -> None:
    m = {"key": key, "files": [f.relative_to(folder).as_posix() for f in files], "notes": notes}
    (folder / MANIFEST).write_text(json.dumps(m, indent=1) + "\n")


def _notes(folder: Path) -> list[str]:
    try:
        return list(json.loads((folder / MANIFEST).read_text()).get("notes", []))
    except (OSError, ValueError):
        return []


def folder_for(root: Path, src: ModelSource, imgsz: tuple[int, int], dynamic: bool) -> Path:
    return Path(root) / f"{src.label}-{imgsz[0]}x{imgsz[1]}{'-dynamic' if dynamic else ''}"


@dataclass
class Built:
    """Files of one build and what the build said about them (e.g. an INT8 form withheld by its gate)."""

    files: list[Path]
    notes: list[str]
    reused: bool


def build_ours(src: ModelSource, imgsz: tuple[int, int], dynamic: bool, root: Path, rebuild: bool, log: Log) -> Built:
    """Our artifacts of ``src`` at ``imgsz``: what ``python -m exporters.build`` writes (trained weights), or
    the FP32 ONNX and an ungated INT8 CPU form (random weights)."""
    folder = folder_for(root, src, imgsz, dynamic) / "ours"
    key = _key(src, imgsz, dynamic, "ours")
    hit = None if rebuild else _cached(folder, key)
    if hit:
        return Built(hit, _notes(folder), True)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    notes: list[str] = []
    if src.random:
        files = _build_random(src, imgsz, dynamic, folder, log)
        notes.append("random weights: timing only; INT8 CPU form calibrated on 16 demo images, not accuracy-gated")
    else:
        files, notes = _build_trained(src, imgsz, dynamic, folder, log)
    _save(folder, key, files, notes)
    return Built(files, notes, False)


def _artifacts_in(folder: Path, stem: str) -> list[Path]:
    from engine.artifacts import kind_of

    out = []
    for f in sorted(folder.iterdir()):
        if not f.is_file() or not f.name.startswith(stem + "."):
            continue
        if kind_of(f) is not None and f.name[len(stem):].count(".") <= 2:
            out.append(f)
    return sorted(out, key=lambda p: form_rank(form_of(p)[0]))


def _build_trained(src: ModelSource, imgsz, dynamic: bool, folder: Path, log: Log) -> tuple[list[Path], list[str]]:
    from exporters.build import build_argv

    argv = ["--weights", str(src.weights), "--imgsz", f"{imgsz[0]},{imgsz[1]}", "--out", str(folder),
            "--engine", "auto" if engine_unavailable_reason() is None else "none"]
    argv += ["--dynamic"] if dynamic else []
    argv += ["--int8", "--data", str(src.data)] if src.data else ["--no-int8"]
    log(f"building our artifacts: python -m exporters.build {' '.join(argv)}")
    notes = []
    for rec in build_argv(argv, log=log).withheld:  # the artifacts that passed are written; the withheld are not
        notes.append(f"{rec.label} withheld: {rec.reason}")
        log(f"note: {notes[-1]}")
    if not src.data:
        notes.append("no INT8 forms: they are built only with a labelled --data (accuracy gate)")
    return _artifacts_in(folder, src.weights.stem), notes


def _build_random(src: ModelSource, imgsz, dynamic: bool, folder: Path, log: Log) -> list[Path]:
    import onnx

    from calibration.config import CalibrationConfig
    from exporters.config import DEMO_DATA, ExportConfig
    from exporters.onnx_export import export_onnx, write_metadata
    from exporters.quantize import (
        QuantTarget,
        decode_tail,
        int8_metadata,
        load_or_calibrate,
        quantize_model,
    )

    art = export_onnx(ExportConfig(weights=src.weights, imgsz=imgsz, dynamic=dynamic, out=folder, parity_count=2),
                      log)
    model = onnx.load(str(art.path))
    meta = art.metadata
    calib = CalibrationConfig(source=DEMO_DATA, max_images=16)
    ranges, _ = load_or_calibrate(art.path, model, meta, calib, folder / f"{src.weights.stem}.calib.json", log,
                                  show_progress=False)
    out = folder / f"{src.weights.stem}{QuantTarget.CPU.suffix}"
    quantize_model(art.path, ranges, QuantTarget.CPU, decode_tail(model), out)
    q = onnx.load(str(out))
    write_metadata(q, int8_metadata(meta, q))
    onnx.save(q, str(out))
    log(f"wrote {out} (INT8 CPU form, not accuracy-gated: random weights)")
    return [art.path, out]


def ultralytics_onnx(src: ModelSource, imgsz: tuple[int, int], dynamic: bool, root: Path, rebuild: bool,
                     log: Log) -> Path:
    """The ONNX that Ultralytics itself exports from ``src`` (its defaults; dynamic batch when ``dynamic``)."""
    folder = folder_for(root, src, imgsz, dynamic) / "ultralytics"
    key = _key(src, imgsz, dynamic, "ultralytics-onnx")
    hit = None if rebuild else _cached(folder, key)
    if hit:
        return hit[0]
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO
    from ultralytics.utils import LOGGER

    copy = folder / src.weights.name  # Ultralytics writes its export beside the weights: keep it here
    shutil.copy2(src.weights, copy)
    log(f"Ultralytics export: YOLO({copy.name}).export(format='onnx', imgsz={list(imgsz)}, dynamic={dynamic})")
    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)
    try:
        f = Path(YOLO(str(copy)).export(format="onnx", imgsz=list(imgsz), dynamic=dynamic, device="cpu"))
    finally:
        LOGGER.setLevel(level)
    copy.unlink()
    _save(folder, key, [f], [])
    return f


def random_checkpoint(arch: str, root: Path, seed: int = 0) -> Path:
    """A checkpoint ``{"model": DetectionModel}`` of ``<arch>.yaml`` with seeded random weights (no download)."""
    path = Path(root) / "checkpoints" / f"{arch}-random.pt"
    if path.is_file():
        return path
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import torch
    from ultralytics import YOLO

    torch.manual_seed(seed)
    try:
        model = YOLO(f"{arch}.yaml").model
    except Exception as e:  # Ultralytics raises FileNotFoundError and others for unknown names
        raise DeployError(f"--arch {arch}: Ultralytics cannot build {arch}.yaml ({type(e).__name__}: {e})",
                          "use a detect model yaml Ultralytics ships, e.g. yolo11n, yolo11m, yolov8s") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model}, tmp)
    os.replace(tmp, path)
    return path
