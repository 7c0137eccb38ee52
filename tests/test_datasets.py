"""engine.eval.datasets: data.yaml parsing, image lists, YOLO labels (the evaluator's tests: test_evaluate.py)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.errors import DatasetError
from engine.eval.datasets import (
    label_path_for,
    list_images,
    load_labels,
    load_split,
    read_data_yaml,
    read_image,
)
from tests.yolo_data import write_image as _write_image
from tests.yolo_data import write_text as _write

# --------------------------------------------------------------------------- data.yaml


@pytest.mark.parametrize("names_yaml", ["names: [cat, dog]", "names:\n  0: cat\n  1: dog", "names: {1: dog, 0: cat}"])
def test_names_as_list_or_dict(tmp_path, names_yaml):
    cfg = read_data_yaml(_write(tmp_path / "data.yaml", f"val: images\n{names_yaml}\n"))
    assert cfg.names == ("cat", "dog")


def test_nc_only_gives_generic_names(tmp_path):
    assert read_data_yaml(_write(tmp_path / "d.yaml", "val: images\nnc: 2\n")).names == ("class_0", "class_1")


def test_path_absent_is_the_yaml_folder(tmp_path):
    cfg = read_data_yaml(_write(tmp_path / "sub" / "data.yaml", "train: images/train\nval: images/val\nnames: [a]\n"))
    assert cfg.root == (tmp_path / "sub").resolve()
    assert cfg.splits == {"train": [(tmp_path / "sub/images/train").resolve()],
                          "val": [(tmp_path / "sub/images/val").resolve()]}


def test_yaml_given_by_a_relative_path_without_path_key(tmp_path, monkeypatch):
    """``--data sub/data.yaml`` from the folder above: splits resolve inside sub/, not sub/sub/."""
    _write(tmp_path / "sub" / "data.yaml", "val: images/val\nnames: [a]\n")
    monkeypatch.chdir(tmp_path)
    cfg = read_data_yaml(Path("sub") / "data.yaml")
    assert cfg.root == (tmp_path / "sub").resolve()
    assert cfg.splits["val"] == [(tmp_path / "sub" / "images" / "val").resolve()]


def test_relative_path_is_relative_to_the_yaml(tmp_path):
    cfg = read_data_yaml(_write(tmp_path / "cfg" / "data.yaml", "path: ../data\nval: [v1, v2]\nnames: [a]\n"))
    assert cfg.root == (tmp_path / "data").resolve()
    assert cfg.splits["val"] == [(tmp_path / "data" / "v1").resolve(), (tmp_path / "data" / "v2").resolve()]
    assert "test" not in cfg.splits


def test_absolute_path_key(tmp_path):
    text = f"path: {json.dumps(str(tmp_path / 'd'))}\nval: v\nnames: [a]\n"  # JSON string = YAML double-quoted
    cfg = read_data_yaml(_write(tmp_path / "y" / "data.yaml", text))
    assert cfg.root == (tmp_path / "d").resolve()


def test_txt_image_list(tmp_path):
    a = _write_image(tmp_path / "images" / "a.png")
    b = _write_image(tmp_path / "other" / "images" / "b.jpg")
    _write(tmp_path / "val.txt", f"./images/a.png\n\n{b}\n")  # relative to the list's folder, and absolute
    cfg = read_data_yaml(_write(tmp_path / "data.yaml", "val: val.txt\nnames: [a]\n"))
    assert list_images(cfg.splits["val"]) == [a.resolve(), b]


@pytest.mark.parametrize("text, match", [
    ("- just\n- a list\n", "mapping"),
    ("val: images\n", "neither 'names:' nor 'nc:'"),
    ("val: images\nnames: {0: a, 2: b}\n", "without gaps"),
    ("val: images\nnames: [a, b]\nnc: 3\n", "'nc: 3' but 2 names"),
    ("val: {a: 1}\nnames: [a]\n", "'val:' must be a path"),
    ("val: [unclosed\n", "not valid YAML"),
])
def test_bad_yaml_raises_dataset_error(tmp_path, text, match):
    y = _write(tmp_path / "data.yaml", text)
    with pytest.raises(DatasetError, match=match) as e:
        read_data_yaml(y)
    assert str(y) in str(e.value) and e.value.fix


def test_missing_yaml(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        read_data_yaml(tmp_path / "nope.yaml")


# --------------------------------------------------------------------------- images and labels


def test_list_images_recursive_sorted_case_insensitive(tmp_path):
    for rel in ("b.JPG", "a.png", "sub/c.jpeg", "sub/deeper/d.TIFF", "e.webp", "f.bmp"):
        _write(tmp_path / rel, "x")
    _write(tmp_path / "notes.txt", "x")
    _write(tmp_path / "g.gif", "x")
    got = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert got == ["a.png", "b.JPG", "e.webp", "f.bmp", "sub/c.jpeg", "sub/deeper/d.TIFF"]


def test_list_images_missing_source(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        list_images(tmp_path / "missing")


@pytest.mark.parametrize("image, label", [
    ("ds/images/val/a.jpg", "ds/labels/val/a.txt"),
    ("images/x/images/b.PNG", "images/x/labels/b.txt"),  # the last 'images' folder only
    ("imgs/c.jpg", "imgs/c.txt"),  # no 'images' folder: beside the image
    ("my_images/d.jpg", "my_images/d.txt"),  # a whole folder name must match
])
def test_label_path_for(image, label):
    assert label_path_for(Path(image)) == Path(label)


def test_load_labels_to_pixels(dataset):
    xyxy, cls = load_labels(dataset.parent / "images/val/a.jpg", (100, 200))
    np.testing.assert_allclose(xyxy, [[80, 30, 120, 70], [40, 20, 60, 30]], atol=1e-4)
    assert xyxy.dtype == np.float32 and cls.dtype == np.int32 and cls.tolist() == [0, 1]


def test_missing_label_file_means_no_objects(dataset):
    xyxy, cls = load_labels(dataset.parent / "images/val/c.jpg", (100, 200))
    assert xyxy.shape == (0, 4) and cls.shape == (0,)


def test_polygon_label_and_duplicates(tmp_path):
    img = tmp_path / "images" / "p.jpg"
    _write(tmp_path / "labels" / "p.txt", "2 0.1 0.2 0.5 0.2 0.3 0.6\n0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n\n")
    xyxy, cls = load_labels(img, (10, 10))
    np.testing.assert_allclose(xyxy, [[1, 2, 5, 6], [4, 4, 6, 6]], atol=1e-5)
    assert cls.tolist() == [2, 0]


@pytest.mark.parametrize("line, match", [
    ("0 0.5 0.5 0.2", "expected 5 values"),
    ("cat 0.5 0.5 0.2 0.2", "not numbers"),
    ("-1 0.5 0.5 0.2 0.2", "class must be an integer"),
    ("1.5 0.5 0.5 0.2 0.2", "class must be an integer"),
    ("0 320 240 50 50", "outside 0..1"),
    ("0 1.02 0.5 0.2 0.2", "outside 0..1"),  # past Ultralytics' 1 % slack
    ("0 0.5 0.5 -0.005 0.2", "outside 0..1"),  # a negative side, even within the slack
    ("0 nan 0.5 0.2 0.2", "non-finite"),
])
def test_malformed_label_names_file_and_line(tmp_path, line, match):
    lbl = _write(tmp_path / "labels" / "m.txt", f"0 0.5 0.5 0.1 0.1\n{line}\n")
    with pytest.raises(DatasetError, match=match) as e:
        load_labels(tmp_path / "images" / "m.jpg", (10, 10))
    assert f"{lbl}, line 2" in str(e.value)


def test_labels_ultralytics_accepts_are_read(tmp_path):
    """A byte-order mark, coordinates up to 1 % outside 0..1: Ultralytics trains on these, so they are read."""
    lbl = tmp_path / "labels" / "u.txt"
    lbl.parent.mkdir(parents=True)
    lbl.write_text("\ufeff0 0.5 0.5 0.2 0.2\n1 1.005 0.5 0.2 0.2\n2 -0.004 0.5 0.2 0.2\n", encoding="utf-8")
    xyxy, cls = load_labels(tmp_path / "images" / "u.jpg", (100, 100))
    assert cls.tolist() == [0, 1, 2]
    np.testing.assert_allclose(xyxy[1], [90.5, 40, 110.5, 60], atol=1e-4)


def test_a_class_id_the_data_yaml_does_not_name_is_an_error(dataset):
    """Counted, it would be a class of AP 0 in the mean; Ultralytics refuses such a label too."""
    lbl = dataset.parent / "labels" / "val" / "b.txt"
    lbl.write_text(lbl.read_text() + "7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DatasetError, match=r"class 7, but the data.yaml names 2 classes \(ids 0-1\)") as e:
        load_split(dataset, "val")
    assert str(lbl) in str(e.value)
    assert len(load_split(dataset.parent / "images" / "val")) == 3  # a folder names no classes: read as is


def test_load_split_from_yaml_and_from_folder(dataset):
    items = load_split(dataset, "val")
    assert [i.path.name for i in items] == ["a.jpg", "b.jpg", "c.jpg"]
    assert [len(i) for i in items] == [2, 1, 0] and items[0].hw == (100, 200)
    same = load_split(dataset.parent / "images" / "val")
    assert [i.path for i in same] == [i.path for i in items]


def test_image_size_without_pillow(dataset, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)  # the base install has OpenCV only
    assert [i.hw for i in load_split(dataset)] == [(100, 200)] * 3


def test_load_split_errors(dataset, tmp_path):
    with pytest.raises(DatasetError, match="no 'test:' split"):
        load_split(dataset, "test")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images found"):
        load_split(tmp_path / "empty")


def test_read_image_non_ascii_path_and_corrupt(tmp_path):
    p = tmp_path / "données" / "é.png"
    p.parent.mkdir()
    ok, buf = cv2.imencode(".png", np.zeros((5, 7, 3), np.uint8))
    buf.tofile(str(p))
    assert read_image(p).shape == (5, 7, 3)
    bad = _write(tmp_path / "bad.jpg", "not an image")
    with pytest.raises(DatasetError, match="cannot decode"):
        read_image(bad)


# --------------------------------------------------------------------------- datasets as users bring them
# (found by a helper comparing against Ultralytics' val on copies of the demo data, 2026-12-05)

def test_an_exif_rotated_tiff_gets_its_decoded_size(tmp_path):
    """Pillow reports a TIFF's size already EXIF-rotated: swapping it again put every label of such an image in
    the wrong frame, and the build's FP32 and INT8 mAP read 0.41 where Ultralytics reads 0.83."""
    from PIL import Image

    from engine.eval.datasets import image_hw

    stored = np.ascontiguousarray(np.rot90(np.zeros((40, 100, 3), np.uint8), 1))  # displayed 40 x 100
    exif = Image.Exif()
    exif[0x0112] = 6
    for ext in ("tif", "jpg", "png", "webp"):
        p = tmp_path / f"x.{ext}"
        Image.fromarray(stored).save(p, exif=exif if ext == "tif" else exif.tobytes())
        assert image_hw(p) == read_image(p).shape[:2] == (40, 100), ext


def test_the_builds_detections_are_put_in_the_frame_the_labels_were_read_at(demo_onnx, tmp_path):
    """evaluate() rescaled labels to the decoded size; the build's own scoring (detect_onnx) did not."""
    from engine.eval.datasets import LabeledImage
    from exporters.accuracy import detect_onnx

    src = sorted((Path(__file__).parents[1] / "assets" / "demo" / "val" / "images").glob("*.jpg"))[0]
    h, w = read_image(src).shape[:2]
    item = LabeledImage(src, (h, w), np.zeros((0, 4), np.float32), np.zeros(0, np.int32))
    twice = LabeledImage(src, (2 * h, 2 * w), item.boxes, item.classes)
    a, b = detect_onnx(demo_onnx, [item, twice])
    assert len(a) > 0
    np.testing.assert_allclose(b.xyxy, 2 * a.xyxy, rtol=1e-6)


def test_hidden_files_and_folders_are_skipped_and_linked_folders_followed(tmp_path):
    """.thumbnails/ copies were scored twice (0.69 for Ultralytics' 0.83), macOS '._x.jpg' sidecars stopped the
    build, a linked folder of half the images was left out."""
    for rel in ("a.jpg", ".thumbnails/a.jpg", "._a.jpg", "sub/.hidden.png"):
        _write_image(tmp_path / "images" / rel)
    _write_image(tmp_path / "elsewhere" / "b.jpg")
    (tmp_path / "images" / "more").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere" / "loop").symlink_to(tmp_path / "images", target_is_directory=True)  # no endless walk
    got = [p.relative_to(tmp_path / "images").as_posix() for p in list_images(tmp_path / "images")]
    assert got == ["a.jpg", "more/b.jpg"]
    # a link to a folder the tree holds anyway: the real path, whose labels are found (whatever the walk order)
    _write_image(tmp_path / "images" / "2024" / "x.jpg")
    for name in ("0latest", "latest"):
        (tmp_path / "images" / name).symlink_to(tmp_path / "images" / "2024", target_is_directory=True)
    got = [p.relative_to(tmp_path / "images").as_posix() for p in list_images(tmp_path / "images")]
    assert got == ["2024/x.jpg", "a.jpg", "more/b.jpg"]


def test_label_files_and_image_lists_in_utf16_or_with_a_bom_are_read_and_other_bytes_named(tmp_path):
    """Notepad's 'Unicode' (UTF-16) label crashed the build with a UnicodeDecodeError traceback; a .txt image
    list with a byte-order mark failed on a path starting with an invisible U+FEFF."""
    img = _write_image(tmp_path / "images" / "a.jpg", hw=(100, 100))
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\r\n", encoding="utf-16")
    assert load_labels(img, (100, 100))[1].tolist() == [0]
    (tmp_path / "list.txt").write_text("./images/a.jpg\r\n", encoding="utf-8-sig")
    assert list_images(tmp_path / "list.txt") == [img.resolve()]
    (tmp_path / "labels" / "a.txt").write_bytes(b"0 0.5 0.5 0.2 \xe9\xff\n")
    with pytest.raises(DatasetError, match="a.txt is not UTF-8 text") as e:
        load_labels(img, (100, 100))
    assert "UTF-8" in e.value.fix


def test_jpeg2000_and_mpo_images_are_listed(tmp_path):
    for rel in ("a.jp2", "b.MPO", "c.heic"):
        _write(tmp_path / rel, "x")
    assert [p.name for p in list_images(tmp_path)] == ["a.jp2", "b.MPO"]


@pytest.mark.parametrize("nc", ["'3'", "3.0", "3"])
def test_nc_as_ultralytics_takes_it(tmp_path, nc):
    assert len(read_data_yaml(_write(tmp_path / "d.yaml", f"val: images\nnc: {nc}\n")).names) == 3
    with pytest.raises(DatasetError, match="'nc: 3' but 2 names"):
        read_data_yaml(_write(tmp_path / "e.yaml", f"val: images\nnc: {nc}\nnames: [a, b]\n"))


def test_an_nc_that_is_not_a_whole_number_is_named(tmp_path):
    with pytest.raises(DatasetError, match="'nc: 'three'' is not a whole number"):
        read_data_yaml(_write(tmp_path / "d.yaml", "val: images\nnc: three\n"))
