"""Shared fixtures: the bundled demo model and its ONNX export (made once per session)."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.fakes.engines import fake_engine  # noqa: F401 (a fixture: engine files of the fake TensorRT)
from tests.yolo_data import dataset  # noqa: F401 (a fixture: a 3-image YOLO val split)

# A suite started in the background by a non-interactive shell (`pytest &`) has SIGINT ignored, and every
# process it starts inherits that: the Ctrl-C tests would see their servers ignore Ctrl-C and hang.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

os.environ.setdefault("YOLO_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo"


def pytest_collection_modifyitems(config, items):
    """Skip @pytest.mark.gpu tests, with the reason, where no CUDA device answers."""
    from tests.gpu import cuda_unavailable_reason

    reason = cuda_unavailable_reason() if any("gpu" in i.keywords for i in items) else None
    if reason:
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=f"no GPU: {reason}"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 40-frame MPEG-4 clip of moving shapes (the stream tests' video file)."""
    from tests.rtsp_server import make_clip

    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=40)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, clip) -> Path:
    """Six frames of the clip as JPEGs, a text file and a broken JPEG (the stream tests' image folder)."""
    import cv2

    d = tmp_path_factory.mktemp("images")
    cap = cv2.VideoCapture(str(clip))
    for i in range(6):
        ok, img = cap.read()
        cv2.imwrite(str(d / f"{i:03d}.jpg"), img)
    (d / "notes.txt").write_text("not an image")
    (d / "zz_broken.jpg").write_bytes(b"not a jpeg")  # skipped with a warning
    return d


@pytest.fixture(scope="session")
def demo_pt() -> Path:
    p = DEMO / "demo.pt"
    if not p.is_file():
        pytest.skip(f"{p} missing: run python scripts/make_demo.py")
    return p


@pytest.fixture(scope="session")
def demo_data() -> Path:
    return DEMO / "data.yaml"


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="session")
def demo_onnx(demo_pt, export_dir) -> Path:
    """The demo model exported by our exporter (static batch 1, training size)."""
    pytest.importorskip("ultralytics")
    from exporters.config import ExportConfig
    from exporters.onnx_export import export_onnx

    return export_onnx(ExportConfig(weights=demo_pt, out=export_dir / "static"), log=lambda s: None).path


@pytest.fixture(scope="session")
def small_data(tmp_path_factory, demo_data) -> Path:
    """A data.yaml over a few demo images (train: 8 calibration images, val: 12 labelled ones) for fast INT8 tests."""
    import shutil

    if not demo_data.is_file():
        pytest.skip(f"{demo_data} missing: run python scripts/make_demo.py")
    root = tmp_path_factory.mktemp("small_data")
    for split, src, n in (("train", "calib", 8), ("val", "val", 12)):
        for kind in ("images", "labels"):
            (root / split / kind).mkdir(parents=True)
        for img in sorted((DEMO / src / "images").iterdir())[:n]:
            shutil.copy2(img, root / split / "images" / img.name)
            label = DEMO / src / "labels" / f"{img.stem}.txt"
            if label.is_file():
                shutil.copy2(label, root / split / "labels" / label.name)
    import yaml

    names = yaml.safe_load(demo_data.read_text())["names"]
    (root / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "train/images", "val": "val/images",
                                                    "names": names}))
    return root / "data.yaml"
