"""The files a benchmark runs: our artifacts (built by ``python -m exporters.build``), the Ultralytics peers' exports,
random-weight models.

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
import os
import shutil
import subprocess
import sys
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
        from engine.artifacts import runtime_suffixes

        raise DeployError(f"{path} is not a model artifact ({', '.join(runtime_suffixes())})",
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
    for dist in ("yolo-deploy", "ultralytics", "onnxruntime", "onnx", "torch", "openvino", "nncf"):
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
        m = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files = [folder / f for f in m.get("files", [])]
    return files if m.get("key") == key and files and all(f.exists() for f in files) else None


def _save(folder: Path, key: dict, files: list[Path], notes: list[str]) -> None:
    m = {"key": key, "files": [f.relative_to(folder).as_posix() for f in files], "notes": notes}
    (folder / MANIFEST).write_text(json.dumps(m, indent=1) + "\n", encoding="utf-8")


def _notes(folder: Path) -> list[str]:
    try:
        return list(json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("notes", []))
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
    """Our artifacts of ``src`` at ``imgsz``: what ``python -m exporters.build`` delivers (with random weights:
    FP32 and the INT8 forms only)."""
    folder = folder_for(root, src, imgsz, dynamic) / "ours"
    key = _key(src, imgsz, dynamic, "ours")
    hit = None if rebuild else _cached(folder, key)
    if hit:
        return Built(hit, _notes(folder), True)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    files, notes = _build(src, imgsz, dynamic, folder, log)
    if src.random:
        notes.append("random weights: timing only; INT8 forms calibrated on 16 demo images (the gate cannot judge "
                     "a model that detects nothing)")
    _save(folder, key, files, notes)
    return Built(files, notes, False)


def _artifacts_in(folder: Path, stem: str) -> list[Path]:
    """The files (or folders) of the artifact table's kinds that a build of ``stem`` wrote in ``folder``."""
    from engine.artifacts import ARTIFACTS

    return [p for p in (kind.path(folder, stem) for kind in ARTIFACTS) if p.exists()]


def _exporters_root() -> str:
    return str(Path(importlib.util.find_spec("exporters").origin).parents[1])


def _build_cli(argv: list[str], folder: Path, log: Log) -> tuple[int, str]:
    """``python -m exporters.build ARGV`` in a child process (the build's public interface, and none of its
    imports or threads stay in this process); its output goes to ``folder/build.log``. Returns the exit
    code and what a reader of the figures must know: each artifact the build withheld, with its reason
    (from ``build_report.json``), or the last ``error:`` paragraph when the build failed."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [_exporters_root(),
                                                                    os.environ.get("PYTHONPATH")])))
    env.setdefault("YOLO_OFFLINE", "1")
    out = folder / "build.log"
    log(f"building our artifacts: python -m exporters.build {' '.join(argv)} (log: {out})")
    with out.open("w", encoding="utf-8") as fh:
        rc = subprocess.run([sys.executable, "-m", "exporters.build", *argv], stdout=fh, stderr=subprocess.STDOUT,
                            env=env, check=False).returncode
    from exporters.build import EXIT_OK, EXIT_WITHHELD
    from exporters.records import Status
    from exporters.reuse import previous_records

    if rc == EXIT_WITHHELD:  # the build finished; some optional artifacts failed their check
        stem = Path(argv[argv.index("--weights") + 1]).stem
        return rc, "; ".join(f"{r.label} withheld: {r.reason}" for r in previous_records(folder, stem).values()
                             if r.status is Status.WITHHELD)[:600]
    if rc == EXIT_OK:
        return rc, ""
    text = out.read_text(encoding="utf-8", errors="replace")
    at = text.rfind("error: ")
    return rc, (" ".join(text[at + 7:].split()) if at >= 0 else "")[:600]


def _build(src: ModelSource, imgsz, dynamic: bool, folder: Path, log: Log) -> tuple[list[Path], list[str]]:
    argv = ["--weights", str(src.weights), "--imgsz", f"{imgsz[0]},{imgsz[1]}", "--out", str(folder),
            "--engine", "auto" if engine_unavailable_reason() is None else "none"]
    argv += ["--dynamic"] if dynamic else []
    if src.random:  # timing only: FP32 and the INT8 forms, calibrated on 16 demo images; the gate cannot fail
        from exporters.config import DEMO_DATA

        argv += ["--int8", "--data", str(DEMO_DATA), "--calib-images", "16", "--max-map-drop", "100",
                 "--no-fp16", "--no-end2end"]
    else:
        argv += ["--int8", "--data", str(src.data)] if src.data else ["--no-int8"]
    rc, error = _build_cli(argv, folder, log)
    files = _artifacts_in(folder, src.weights.stem)
    from engine.artifacts import FP32_ONNX

    if FP32_ONNX.path(folder, src.weights.stem) not in files:
        raise DeployError(f"python -m exporters.build did not write the FP32 ONNX of {src.weights} "
                          f"(exit code {rc}): {error or 'see ' + str(folder / 'build.log')}",
                          f"run the build alone to see why: python -m exporters.build {' '.join(argv)}")
    if src.random:
        made = _timing_only_int8(FP32_ONNX.path(folder, src.weights.stem), log)
        files = _artifacts_in(folder, src.weights.stem)
        return files, [f"the build withheld the INT8 forms (its gate cannot judge a model that detects nothing); "
                       f"{', '.join(made) or 'none'} made here without the gate, for timing only"] if made else []
    notes = [f"build (exit code {rc}): {error}; the artifacts it delivered are benchmarked"] if rc else []
    if not src.data and not src.random:
        notes.append("no INT8 forms: they are built only with a labelled --data (accuracy gate)")
    log(notes[0] if rc else f"built {', '.join(p.name for p in files)}")
    return files, notes


def _export_in_child(weights: str, kwargs: dict, log_file: str) -> str:
    """In a fresh process: ``YOLO(weights).export(**kwargs)`` with its output (NNCF is talkative) in ``log_file``."""
    with open(log_file, "a", encoding="utf-8") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        os.environ.setdefault("YOLO_OFFLINE", "1")
        from ultralytics import YOLO

        return str(YOLO(weights).export(**kwargs))


def ultralytics_export(src: ModelSource, peer, imgsz: tuple[int, int], dynamic: bool, root: Path, rebuild: bool,
                       log: Log) -> Path:
    """The file (or folder) Ultralytics itself exports from ``src`` for ``peer`` (a
    :class:`~benchmarks.candidates.PeerKind`): its defaults, dynamic batch when ``dynamic``, INT8 calibrated
    on the train split of ``src.data`` (the images our INT8 forms calibrate on) when the peer calibrates."""
    from .worker import in_fresh_process

    folder = folder_for(root, src, imgsz, dynamic) / f"ultralytics-{peer.key}"
    key = _key(src, imgsz, dynamic, f"ultralytics-{peer.key}")
    hit = None if rebuild else _cached(folder, key)
    if hit:
        return hit[0]
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    kwargs = dict(peer.export, imgsz=list(imgsz), dynamic=dynamic, device="cpu")
    if peer.calibrated:
        from exporters.config import DEMO_DATA

        data = src.data or DEMO_DATA  # random weights: timing only, calibrated on the demo's images
        kwargs.update(data=str(Path(data).resolve()), split="train")
    copy = folder / src.weights.name  # Ultralytics writes its export beside the weights: keep it here
    shutil.copy2(src.weights, copy)
    log(f"Ultralytics export: YOLO({copy.name}).export({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) "
        f"(log: {folder / 'export.log'})")
    f = Path(in_fresh_process(_export_in_child, str(copy), kwargs, str(folder / "export.log"),
                              name=f"Ultralytics {peer.key} export"))
    copy.unlink()
    _save(folder, key, [f], [])
    return f


def _timing_only_int8(onnx_path: Path, log: Log) -> list[str]:
    """A random-weight model's INT8 CPU form and OpenVINO INT8 IR, where the build withheld them: the build's
    own quantization (16 demo calibration images) without its gate, which cannot judge a model that detects
    nothing. Timing only: such a model has no accuracy to lose. Returns the names made."""
    import onnxruntime as ort

    from engine.artifacts import INT8_CPU, INT8_IR
    from engine.metadata import from_onnx_props
    from exporters.config import DEMO_DATA

    from .openvino_artifacts import make_cpu_form

    folder, stem = onnx_path.parent, onnx_path.stem
    meta = from_onnx_props(ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
                           .get_modelmeta().custom_metadata_map)
    made = []
    if not INT8_CPU.path(folder, stem).is_file():
        made.append(make_cpu_form(onnx_path, meta, folder, DEMO_DATA, 16, log).name)
    if not INT8_IR.path(folder, stem).is_dir() and all(importlib.util.find_spec(m) for m in ("openvino", "nncf")):
        from calibration.config import CalibrationConfig
        from calibration.readers import CalibrationImages, open_source
        from exporters.openvino import quantize_openvino

        images = CalibrationImages(open_source(CalibrationConfig(source=DEMO_DATA, max_images=16)), meta.imgsz, 1,
                                   show_progress=False, log=log)
        made.append(quantize_openvino(onnx_path, images, folder, meta).name)
    if made:
        log(f"timing only, no gate: made {', '.join(made)}")
    return made


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
