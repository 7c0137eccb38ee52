"""Read and vet an Ultralytics ``.pt`` checkpoint before anything is exported from it.

Every way a checkpoint can be bad becomes a typed error naming the file and the fix, instead of a
traceback from deep inside ``torch.load`` or a pip install attempted at run time (which is what
Ultralytics' own loader does for an unknown module).
"""
from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ModelLoadError, UnsupportedModelError

_TASK_HINT = {
    "segment": "segmentation", "pose": "pose", "classify": "classification", "obb": "oriented-box",
}


@dataclass(frozen=True)
class CheckpointInfo:
    """What an Ultralytics detect checkpoint says about itself.

    Attributes:
        path: the file.
        names: class names, index = class id.
        stride: the largest stride.
        train_imgsz: the training image size (height, width), if recorded.
        head: the detect head's class name (``Detect``, ``v10Detect``...).
        end2end: whether the head is NMS-free (YOLOv10 / YOLO26 style).
        arch: the model yaml it was built from (e.g. ``yolo11n.yaml``), if recorded.
        strides: the detect head's strides, one per level (``(8, 16, 32)``; a P2 head adds 4, a P6 head 64).
    """

    path: Path
    names: tuple[str, ...]
    stride: int
    train_imgsz: tuple[int, int] | None
    head: str
    end2end: bool
    arch: str
    strides: tuple[int, ...] = (8, 16, 32)


def _torch_load(path: Path) -> Any:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    try:
        import torch
        from ultralytics.nn.tasks import temporary_modules  # noqa: F401  (registers Ultralytics' classes)
    except ImportError as e:
        raise ModelLoadError(f"reading {path} needs PyTorch and Ultralytics ({e})",
                             "pip install -e .[export]") from None
    # The same legacy-path aliases Ultralytics applies, so old YOLOv8 checkpoints unpickle.
    aliases = dict(modules={"ultralytics.yolo.utils": "ultralytics.utils",
                            "ultralytics.yolo.v8": "ultralytics.models.yolo",
                            "ultralytics.yolo.data": "ultralytics.data"})
    try:
        with temporary_modules(**aliases):
            return torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as e:
        raise ModelLoadError(
            f"{path} is not an Ultralytics detect checkpoint: it needs the Python module '{e.name}'",
            "YOLOv5-era and other repositories' checkpoints are not supported; train or convert with "
            "Ultralytics (pip install ultralytics) and pass its best.pt") from None
    except AttributeError as e:
        raise ModelLoadError(
            f"{path} refers to a class this Ultralytics version lacks ({e})",
            "it was probably saved by a newer Ultralytics: pip install -U ultralytics") from None
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise ModelLoadError(
            f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:160]})",
            "the file is truncated or corrupt: copy it again from the training run (runs/detect/train*/weights/best.pt)",
        ) from None


def load_checkpoint_model(path: str | Path):
    """Load the checkpoint's ``nn.Module`` (EMA weights when present), float32, eval mode, on the CPU.

    Raises:
        ModelLoadError: missing, unreadable, or not an Ultralytics model.
        UnsupportedModelError: an Ultralytics model of a task other than detection.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"weights file not found: {path}", "pass --weights path/to/best.pt (an Ultralytics checkpoint)")
    if path.suffix.lower() != ".pt":
        raise ModelLoadError(f"{path} is not a .pt checkpoint", "pass a .pt with --weights, or an ONNX file with --onnx")
    ckpt = _torch_load(path)
    import torch

    model = None
    if isinstance(ckpt, dict):
        model = ckpt["ema"] if ckpt.get("ema") is not None else ckpt.get("model")

    if not isinstance(model, torch.nn.Module) or not hasattr(model, "yaml") or not hasattr(model, "model"):
        kind = type(ckpt).__name__ if not isinstance(ckpt, dict) else f"dict with keys {sorted(ckpt)[:6]}"
        raise ModelLoadError(f"{path} does not contain an Ultralytics model (found a {kind})",
                             "pass the best.pt that Ultralytics training writes (it holds 'model' or 'ema')")
    task = _task(model, ckpt)
    if task != "detect":
        raise UnsupportedModelError(
            f"{path} is a {_TASK_HINT.get(task, task)} model (task '{task}'); only detection is supported for now",
            "export a detection checkpoint (yolo11n.pt, yolov8s.pt, your detect best.pt)")
    return model.float().eval(), ckpt


def _task(model, ckpt) -> str:
    """The checkpoint's task. A model saved by training has no ``.task``: then its training arguments, then
    Ultralytics' own guess from the head (a segment or classify model read as detect failed much later)."""
    task = getattr(model, "task", None) or ((ckpt.get("train_args") or {}).get("task") if isinstance(ckpt, dict) else None)
    if task:
        return str(task)
    try:
        from ultralytics.nn.tasks import guess_model_task

        return str(guess_model_task(model))
    except Exception:  # noqa: BLE001 - an Ultralytics without it, or a model it cannot read: the head decides later
        return "detect"


def inspect_checkpoint(path: str | Path) -> CheckpointInfo:
    """Vet ``path`` and describe it; see :func:`load_checkpoint_model` for the errors."""
    return describe_checkpoint(path, *load_checkpoint_model(path))


def describe_checkpoint(path: str | Path, model, ckpt: dict) -> CheckpointInfo:
    """Describe a checkpoint already loaded by :func:`load_checkpoint_model`."""
    head = model.model[-1]
    names = model.names if isinstance(model.names, (list, tuple)) else [model.names[k] for k in sorted(model.names)]
    imgsz = (ckpt.get("train_args") or {}).get("imgsz")
    train_imgsz = None
    if isinstance(imgsz, int):
        train_imgsz = (imgsz, imgsz)
    elif isinstance(imgsz, (list, tuple)) and len(imgsz) == 2:
        train_imgsz = (int(imgsz[0]), int(imgsz[1]))
    return CheckpointInfo(
        path=Path(path), names=tuple(str(n) for n in names), stride=int(max(model.stride)),
        train_imgsz=train_imgsz, head=type(head).__name__, end2end=bool(getattr(head, "end2end", False)),
        arch=str(model.yaml.get("yaml_file", "")), strides=tuple(int(s) for s in model.stride),
    )
