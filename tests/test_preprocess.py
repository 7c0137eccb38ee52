"""Letterbox: Ultralytics' geometry byte for byte, exact box mapping, frame validation, no reallocation."""
from __future__ import annotations

import numpy as np
import pytest

from engine.errors import InputImageError
from engine.preprocess import (
    PAD_VALUE,
    Letterbox,
    LetterboxGeometry,
    as_bgr,
    letterbox_image,
)

SIZES = [((1080, 1920), (640, 640)), ((360, 640), (320, 320)), ((480, 480), (384, 640)), ((1080, 1920), (384, 640)),
         ((333, 517), (640, 640)), ((2000, 100), (640, 640))]


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("src,dst", SIZES)
def test_matches_ultralytics_letterbox_bytes(src, dst, rng):
    augment = pytest.importorskip("ultralytics.data.augment")
    frame = rng.integers(0, 256, (*src, 3), dtype=np.uint8)
    ours, _ = letterbox_image(frame, dst)
    theirs = augment.LetterBox(dst, auto=False, stride=32)(image=frame)
    assert ours.shape == theirs.shape and np.array_equal(ours, theirs)


@pytest.mark.parametrize("src,dst", SIZES)
def test_buffer_is_rgb_chw_scaled_copy_of_letterbox(src, dst, rng):
    frame = rng.integers(0, 256, (*src, 3), dtype=np.uint8)
    lb = Letterbox(dst)
    x, (g,) = lb([frame])
    ref, _ = letterbox_image(frame, dst)
    expected = ref[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) / 255.0
    assert x.shape == (1, 3, *dst) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], expected, atol=1e-6)
    assert g.src_hw == src


def test_buffer_is_reused_and_border_refreshed_on_size_change(rng):
    lb = Letterbox((320, 320), dtype=np.float16)
    buf = lb.buffer
    a, _ = lb([rng.integers(0, 256, (100, 300, 3), dtype=np.uint8)])
    b, _ = lb([rng.integers(0, 256, (300, 100, 3), dtype=np.uint8)])  # tall: old content area is now border
    assert a.base is buf or a is buf or np.shares_memory(a, buf)
    assert np.shares_memory(b, buf) and b.dtype == np.float16
    assert np.allclose(b[0, :, 0, 0], PAD_VALUE / 255, atol=1e-3)  # corner is pad for both sizes
    ref, _ = letterbox_image(rng.integers(0, 1, (300, 100, 3), dtype=np.uint8), (320, 320))
    pad_mask = (ref == PAD_VALUE).all(2)
    assert np.allclose(b[0, 0][pad_mask], PAD_VALUE / 255, atol=1e-3)


@pytest.mark.parametrize("src,dst", SIZES)
def test_boxes_map_back_exactly_like_ultralytics(src, dst, rng):
    ops = pytest.importorskip("ultralytics.utils.ops")
    g = LetterboxGeometry.fit(src, dst)
    boxes = np.array([[g.left + 1.5, g.top + 2.0, g.left + g.new_hw[1] - 3.0, g.top + g.new_hw[0] - 1.0],
                      [-5, -5, 10_000, 10_000]], np.float32)
    ours = g.boxes_to_source(boxes.copy())
    theirs = ops.scale_boxes(dst, boxes.copy(), src)
    np.testing.assert_allclose(ours, theirs, atol=1e-3)
    assert ours[1].tolist() == [0, 0, src[1], src[0]]  # clipped to the frame


def test_round_trip_of_a_box_is_exact():
    g = LetterboxGeometry.fit((1080, 1920), (640, 640))
    src_box = np.array([[100.0, 200.0, 700.0, 900.0]], np.float32)
    gx, gy = g.new_hw[1] / 1920, g.new_hw[0] / 1080
    model_box = np.array([[100 * gx + g.left, 200 * gy + g.top, 700 * gx + g.left, 900 * gy + g.top]], np.float32)
    np.testing.assert_allclose(g.boxes_to_source(model_box), src_box, atol=1e-3)


@pytest.mark.parametrize("shape", [(50, 60), (50, 60, 1), (50, 60, 4)])
def test_gray_and_bgra_are_converted(shape, rng):
    out = as_bgr(rng.integers(0, 256, shape, dtype=np.uint8))
    assert out.shape == (50, 60, 3) and out.dtype == np.uint8


def test_non_contiguous_frame_is_accepted(rng):
    big = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    view = big[::2, ::3]
    x, _ = Letterbox((64, 64))([view])
    y, _ = Letterbox((64, 64))([np.ascontiguousarray(view)])
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("frame,match", [
    (np.zeros((10, 10, 3), np.uint16), "uint8"),
    (np.zeros((10, 10, 3), np.float32), "uint8"),
    (np.zeros((0, 10, 3), np.uint8), "empty"),
    (np.zeros((10, 10, 2), np.uint8), "shape"),
    (np.zeros((2, 10, 10, 3), np.uint8), "list"),
    ([[1, 2], [3, 4]], "numpy array"),
])
def test_bad_frames_are_rejected_clearly(frame, match):
    with pytest.raises(InputImageError, match=match):
        as_bgr(frame)
