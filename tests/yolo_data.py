"""A tiny YOLO dataset on disk for the dataset and evaluator tests (the ``dataset`` fixture, via conftest)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest


def write_image(path: Path, hw=(48, 64)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((*hw, 3), 127, np.uint8))
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A 3-image val split (one with no label file) under ``ds/``, with ``ds/data.yaml``."""
    root = tmp_path / "ds"
    for name in ("a", "b", "c"):
        write_image(root / "images" / "val" / f"{name}.jpg", hw=(100, 200))
    write_text(root / "labels" / "val" / "a.txt", "0 0.5 0.5 0.2 0.4\n1 0.25 0.25 0.1 0.1\n")
    write_text(root / "labels" / "val" / "b.txt", "1 0.75 0.5 0.3 0.3\n")
    return write_text(root / "data.yaml", "val: images/val\ntrain: images/val\nnames: [cat, dog]\n")
