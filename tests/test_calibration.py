"""Calibration: readers (folder, data.yaml split, video), limits and seeds, skipped files, the range pass, the cache."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration import (
    CalibrationConfig,
    CalibrationImages,
    CalibrationMethod,
    SourceKind,
    collect_ranges,
    open_source,
)
from calibration.cache import CacheKey, TensorRanges, dumps, loads, read_cache
from engine.errors import CalibrationError, ConfigError
from engine.preprocess import Letterbox
from tests.fakes.tiny_onnx import onnx_model

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _write_images(folder: Path, n: int, size=(48, 64), start: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(start, start + n):
        img = np.full((*size, 3), (i * 20) % 256, np.uint8)
        p = folder / f"img{i:03d}.png"
        cv2.imwrite(str(p), img)
        out.append(p)
    return out


def _images(src, **kw) -> CalibrationImages:
    return CalibrationImages(open_source(CalibrationConfig(src, **kw)), (32, 32), show_progress=False,
                             log=lambda s: None)


def test_folder_reader_letterboxes_with_the_runtime_letterbox(tmp_path):
    paths = _write_images(tmp_path / "imgs", 3)
    images = _images(tmp_path / "imgs")
    batches = list(images)
    assert len(batches) == 3 and batches[0].shape == (1, 3, 32, 32) and batches[0].dtype == np.float32
    frame = cv2.imread(str(sorted(paths)[0]))
    expected, _ = Letterbox((32, 32))([frame])
    assert any(np.array_equal(b, expected) for b in batches)  # one implementation: engine.preprocess
    assert images.stats.used == 3 and not images.stats.skipped


def test_preprocessing_fingerprint_follows_the_letterbox(tmp_path, monkeypatch):
    """The cache key's preprocessing hash: stable for the same letterbox, changed by any change to it."""
    import engine.preprocess

    _write_images(tmp_path / "imgs", 2)
    src = open_source(CalibrationConfig(tmp_path / "imgs"))
    first = CalibrationImages(src, (32, 32), show_progress=False).fingerprint()
    assert CalibrationImages(src, (32, 32), batch=4, show_progress=False).fingerprint() == first
    assert CalibrationImages(src, (32, 48), show_progress=False).fingerprint() != first
    monkeypatch.setattr(engine.preprocess, "PAD_VALUE", 115)  # the border a frame is padded with
    assert CalibrationImages(src, (32, 32), show_progress=False).fingerprint() != first
    monkeypatch.undo()
    monkeypatch.setattr(engine.preprocess.cv2, "INTER_LINEAR", engine.preprocess.cv2.INTER_NEAREST)
    assert CalibrationImages(src, (32, 32), show_progress=False).fingerprint() != first


def test_other_pictures_under_the_same_names_and_sizes_change_the_image_fingerprint(tmp_path):
    """Frames saved as BMP at one size all have one byte size: a second folder of other pictures with the
    same names, or pictures replaced in place, must not reuse the first one's ranges."""
    import os

    a, b = [], []
    for i in range(3):
        for folder, grey, out in ((tmp_path / "a", 20 * i, a), (tmp_path / "b", 200 - 20 * i, b)):
            folder.mkdir(exist_ok=True)
            out.append(folder / f"f{i}.bmp")
            cv2.imwrite(str(out[-1]), np.full((48, 64, 3), grey, np.uint8))
    assert [p.stat().st_size for p in a] == [p.stat().st_size for p in b]  # BMP: the size is the resolution's
    fa = open_source(CalibrationConfig(tmp_path / "a")).fingerprint()
    for p in b:
        os.utime(p, ns=(1, 1))  # other pictures, even written at another time
    assert open_source(CalibrationConfig(tmp_path / "b")).fingerprint() != fa
    os.utime(a[0], ns=(2, 2))  # replaced in place
    assert open_source(CalibrationConfig(tmp_path / "a")).fingerprint() != fa


def test_count_limit_and_seeded_shuffle(tmp_path):
    _write_images(tmp_path / "imgs", 20)
    a = open_source(CalibrationConfig(tmp_path / "imgs", max_images=5, seed=0))
    b = open_source(CalibrationConfig(tmp_path / "imgs", max_images=5, seed=0))
    c = open_source(CalibrationConfig(tmp_path / "imgs", max_images=5, seed=1))
    assert len(a) == 5 and a.available == 20 and a.items == b.items
    assert set(a.items) != set(c.items)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert "5 of 20 images" in a.description


def test_static_batch_pads_the_last_batch(tmp_path):
    _write_images(tmp_path / "imgs", 3)
    images = CalibrationImages(open_source(CalibrationConfig(tmp_path / "imgs")), (32, 32), batch=2,
                               show_progress=False, log=lambda s: None)
    shapes = [b.shape for b in images]
    assert shapes == [(2, 3, 32, 32), (2, 3, 32, 32)] and len(images) == 2


def test_unreadable_files_are_skipped_and_counted(tmp_path):
    _write_images(tmp_path / "imgs", 2)
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "imgs" / "empty.png").write_bytes(b"")
    logs = []
    images = CalibrationImages(open_source(CalibrationConfig(tmp_path / "imgs")), (32, 32), show_progress=False,
                               log=logs.append)
    assert len(list(images)) == 2
    assert images.stats.used == 2 and len(images.stats.skipped) == 2
    assert "2 unreadable skipped" in logs[-1] and "broken.jpg" in logs[-1]


def test_all_unreadable_is_an_error(tmp_path):
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        (tmp_path / "imgs" / f"x{i}.jpg").write_bytes(b"\x00" * 10)
    with pytest.raises(CalibrationError, match="none of the 3 calibration files could be read"):
        list(_images(tmp_path / "imgs"))


@pytest.mark.parametrize("make,match", [
    (lambda d: d, "no images found"),  # empty folder
    (lambda d: (d / "notes.txt").write_text("x") and d, "other files, e.g. notes.txt"),  # non-images only
    (lambda d: d / "missing", "not found"),
    (lambda d: (d / "model.bin").write_bytes(b"1") and d / "model.bin", "not a folder, image list"),
])
def test_bad_sources_are_clear_errors(tmp_path, make, match):
    d = tmp_path / "src"
    d.mkdir()
    with pytest.raises(CalibrationError, match=match) as err:
        open_source(CalibrationConfig(make(d)))
    assert err.value.fix


def test_data_yaml_split_and_missing_split(tmp_path):
    _write_images(tmp_path / "ds" / "train" / "images", 4)
    _write_images(tmp_path / "ds" / "val" / "images", 2)
    yaml = tmp_path / "ds" / "data.yaml"
    yaml.write_text("path: .\ntrain: train/images\nval: val/images\nnames: [a, b]\n")
    src = open_source(CalibrationConfig(yaml))
    assert src.kind is SourceKind.IMAGES and len(src) == 4 and "split 'train'" in src.description
    yaml.write_text("path: .\nval: val/images\nnames: [a, b]\n")
    with pytest.raises(CalibrationError, match="no 'train:' split") as err:
        open_source(CalibrationConfig(yaml))
    assert "--calib" in err.value.fix
    yaml.write_text("path: .\ntrain: nowhere/images\nval: val/images\nnames: [a]\n")
    with pytest.raises(CalibrationError, match="not found"):
        open_source(CalibrationConfig(yaml))


def _write_video(path: Path, n: int) -> bool:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    if not w.isOpened():
        return False
    for i in range(n):
        w.write(np.full((48, 64, 3), i * 8, np.uint8))
    w.release()
    return path.is_file() and path.stat().st_size > 0


def test_video_every_nth_frame(tmp_path):
    video = tmp_path / "clip.avi"
    if not _write_video(video, 30):
        pytest.skip("this OpenCV cannot write MJPG video")
    src = open_source(CalibrationConfig(video, video_every=10))
    assert src.kind is SourceKind.VIDEO and src.items == (0, 10, 20)
    images = CalibrationImages(src, (48, 64), show_progress=False, log=lambda s: None)
    means = [float(b[0, :, 10:40, 10:50].mean() * 255) for b in images]
    assert images.stats.used == 3
    assert np.allclose(means, [0, 80, 160], atol=6)  # frames 0, 10 and 20 (MJPG is lossy)
    limited = open_source(CalibrationConfig(video, video_every=5, max_images=2, seed=3))
    assert len(limited) == 2 and list(limited.items) == sorted(limited.items)


def test_unopenable_video_is_an_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(CalibrationError, match="cannot open video"):
        open_source(CalibrationConfig(bad))


def test_config_checks():
    with pytest.raises(ConfigError, match="--calib-images"):
        CalibrationConfig(Path("x"), max_images=0)
    with pytest.raises(ConfigError, match="--calib-every"):
        CalibrationConfig(Path("x"), video_every=0)
    assert CalibrationConfig(Path("x"), method="minmax").method is CalibrationMethod.MINMAX
    assert CalibrationConfig(Path("x")).method is CalibrationMethod.MEAN_MINMAX  # NNCF's default estimator


def _tiny_model(path: Path) -> Path:
    """Conv → Relu → Conv: enough for a calibration pass."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.5, (2, 4, 1, 1)).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["images", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["out"], name="conv2")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2, 32, 32])], [w1, w2])
    model = onnx_model(graph)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("method", list(CalibrationMethod))
def test_one_pass_gives_every_tensor_a_range(tmp_path, method):
    import onnxruntime as ort

    model = _tiny_model(tmp_path / "tiny.onnx")
    _write_images(tmp_path / "imgs", 10)
    cfg = CalibrationConfig(tmp_path / "imgs", method=method)
    images = CalibrationImages(open_source(cfg), (32, 32), show_progress=False, log=lambda s: None)
    ranges = collect_ranges(model, images, cfg, log=lambda s: None)
    assert ranges.method is method and ranges.n_images == 10
    assert {"images", "c1", "r1", "out"} <= set(ranges.ranges)
    m = onnx.load(str(model))
    m.graph.output.append(onnx.helper.make_empty_tensor_value_info("c1"))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = np.stack([sess.run(["c1"], {"images": x})[0] for x in images])
    per_image = outs.reshape(len(outs), -1)
    lo, hi = ranges.ranges["c1"]
    expected = {CalibrationMethod.MINMAX: (outs.min(), outs.max()),  # the extremes over all images
                CalibrationMethod.MEAN_MINMAX: (per_image.min(1).mean(), per_image.max(1).mean()),
                CalibrationMethod.PERCENTILE: (np.quantile(per_image, 1 - cfg.percentile / 100, axis=1).mean(),
                                               np.quantile(per_image, cfg.percentile / 100, axis=1).mean())}[method]
    assert np.allclose((lo, hi), expected, rtol=1e-4, atol=1e-6), (method, (lo, hi), expected)
    assert np.allclose(ranges.extremes["c1"], (outs.min(), outs.max()), rtol=1e-4)  # kept by every method
    for lo, hi in ranges.ranges.values():
        assert lo <= hi


def test_cache_round_trip_and_key_differences(tmp_path):
    key = CacheKey("g" * 32, (320, 320), "minmax", "", "i" * 32, "p" * 32)
    ranges = TensorRanges(CalibrationMethod.MINMAX, {"a": (-1.5, 2.0), "b": (0.0, 6.0)}, n_images=7,
                          extremes={"a": (-3.0, 4.0), "b": (0.0, 9.0)})
    k2, r2 = loads(dumps(key, ranges))
    assert k2 == key and dict(r2.ranges) == dict(ranges.ranges) and r2.n_images == 7
    assert dict(r2.extremes) == dict(ranges.extremes)
    swapped = TensorRanges(CalibrationMethod.MINMAX, {"b": (0.0, 6.0), "a": (-1.5, 2.0)}, n_images=7,
                           extremes={"b": (0.0, 9.0), "a": (-3.0, 4.0)})
    assert dumps(key, swapped) == dumps(key, ranges)  # byte-stable whatever order calibration found them in
    assert key.differences(CacheKey("h" * 32, (320, 320), "mean-minmax", "", "i" * 32, "p" * 32)) == ["graph", "method"]
    assert key.differences(CacheKey("g" * 32, (320, 320), "minmax", "", "i" * 32, "q" * 32)) == ["preprocessing"]
    (tmp_path / "bad.json").write_text("{not json")
    assert read_cache(tmp_path / "bad.json") is None and read_cache(tmp_path / "absent.json") is None
    td = ranges.to_ort()
    assert float(td["a"].range_value[0]) == -1.5


def test_nncf_dataset_feeds_the_calibration_images_by_input_name(tmp_path):
    """The one calibration path every NNCF use shares: CalibrationImages in, {input: batch} feeds out."""
    from calibration import nncf_dataset

    _write_images(tmp_path / "imgs", 3)
    images = _images(tmp_path / "imgs")
    feeds = list(nncf_dataset(images, "pixels").get_inference_data())
    assert len(feeds) == 3 and set(feeds[0]) == {"pixels"} and feeds[0]["pixels"].shape == (1, 3, 32, 32)
    assert any(np.array_equal(f["pixels"], b) for f in feeds for b in images)
