"""The bundled demo: committed weights, val and calibration sets within their size limits, and its accuracy."""
from __future__ import annotations

import json

import pytest

from tests.conftest import DEMO

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def _size(folder) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_weights_exist_and_are_small(demo_pt):
    assert demo_pt.stat().st_size <= 6 * 1024 * 1024


def test_val_and_calib_sets_are_small_and_labelled():
    assert _size(DEMO / "val") + _size(DEMO / "calib") <= 10 * 1024 * 1024
    for split in ("val", "calib"):
        images = [p for p in (DEMO / split / "images").iterdir() if p.suffix in IMAGE_SUFFIXES]
        assert len(images) >= 50
        for img in images:
            assert (DEMO / split / "labels" / f"{img.stem}.txt").is_file()


def test_frames_include_16_9_and_objects_of_varied_size():
    cv2 = pytest.importorskip("cv2")
    shapes, widths = set(), []
    for img in sorted((DEMO / "val" / "images").glob("*.jpg")):
        h, w = cv2.imread(str(img)).shape[:2]
        shapes.add((w, h))
        for line in (DEMO / "val" / "labels" / f"{img.stem}.txt").read_text().splitlines():
            widths.append(float(line.split()[3]) * w)
    assert (640, 360) in shapes and len(shapes) >= 2
    assert min(widths) < 40 and max(widths) > 150


def test_data_yaml_names_the_splits_and_classes():
    yaml = pytest.importorskip("yaml")
    d = yaml.safe_load((DEMO / "data.yaml").read_text())
    assert d["train"] == "calib/images" and d["val"] == "val/images" and "path" not in d
    assert list(d["names"].values()) == ["disc", "box", "triangle"]


def test_recorded_training_result_meets_the_bar():
    r = json.loads((DEMO / "train_result.json").read_text())
    assert r["map50_95"] >= 0.5 and r["imgsz"] in (320, 416)


def test_demo_generator_is_deterministic(tmp_path):
    """The committed val set is exactly what scripts/make_demo.py writes for its seed."""
    import hashlib

    from scripts.make_demo import write_split

    write_split(tmp_path / "val", 5, seed=1)
    for i in range(5):
        ours = (tmp_path / "val" / "labels" / f"{i:05d}.txt").read_text()
        assert ours == (DEMO / "val" / "labels" / f"{i:05d}.txt").read_text()
        a = hashlib.sha256((tmp_path / "val" / "images" / f"{i:05d}.jpg").read_bytes()).hexdigest()
        b = hashlib.sha256((DEMO / "val" / "images" / f"{i:05d}.jpg").read_bytes()).hexdigest()
        assert a == b
