"""``Detections`` is a value: equality of any sizes, no hash, read-only arrays, indexing, merge, dict round trip."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine.detections import BOX_FIELDS, BoxField, Detections

NAMES = ("disc", "box", "triangle")


def _dets(n: int, offset: float = 0.0, names=NAMES) -> Detections:
    i = np.arange(n, dtype=np.float32)
    boxes = np.stack([i * 10 + offset, i * 5, i * 10 + 8 + offset, i * 5 + 6], axis=1)
    return Detections(boxes, 0.9 - i / 100, (np.arange(n) % 3), names)


# ---- equality and hashing ------------------------------------------------------------------------

@pytest.mark.parametrize("a, b, equal", [
    (Detections.empty(NAMES), Detections.empty(NAMES), True),
    (_dets(1), _dets(1), True),
    (_dets(3), _dets(3), True),
    (_dets(3), _dets(2), False),
    (Detections.empty(NAMES), _dets(1), False),
    (_dets(3), _dets(3, offset=0.5), False),
    (_dets(3), _dets(3, names=("a", "b", "c")), False),
    (Detections.empty(NAMES), Detections.empty(), False),
], ids=["empty", "one", "three", "3-vs-2", "empty-vs-one", "moved", "other-names", "empty-other-names"])
def test_equality_is_a_bool_for_any_sizes(a, b, equal):
    assert (a == b) is equal and (a != b) is (not equal)


def test_equality_sees_each_field():
    d = _dets(3)
    for name, change in (("confidence", lambda a: a + np.float32(0.01)), ("class_id", lambda a: (a + 1) % 3)):
        other = Detections(**{"xyxy": d.xyxy, "confidence": d.confidence, "class_id": d.class_id,
                              name: change(getattr(d, name))}, names=NAMES)
        assert d != other, name
    assert (d == "not detections") is False and d != [1, 2]


def test_not_hashable():
    assert Detections.__hash__ is None
    with pytest.raises(TypeError, match="unhashable"):
        hash(_dets(2))


# ---- read-only arrays ----------------------------------------------------------------------------

def test_arrays_are_read_only_and_do_not_follow_the_callers_array():
    boxes = np.array([[1, 2, 3, 4]], np.float32)
    d = Detections(boxes, np.array([0.5], np.float32), np.array([1], np.int32), NAMES)
    for f in BOX_FIELDS:
        if getattr(d, f.name) is None:  # an optional array nobody filled
            continue
        with pytest.raises(ValueError, match="read-only"):
            getattr(d, f.name)[...] = 0
    boxes[0, 0] = 99  # the caller's array is still its own, and the result does not change
    assert d.xyxy[0, 0] == 1 and boxes.flags.writeable
    with pytest.raises(AttributeError):
        d.xyxy = boxes  # frozen


def test_arrays_are_cast_and_lengths_checked():
    d = Detections([[1, 2, 3, 4]], [0.5], [2.0])
    assert (d.xyxy.dtype, d.confidence.dtype, d.class_id.dtype) == (np.float32, np.float32, np.int32)
    with pytest.raises(ValueError, match="disagree in length: xyxy 1, confidence 2, class_id 1"):
        Detections([[1, 2, 3, 4]], [0.5, 0.6], [1])


# ---- indexing ------------------------------------------------------------------------------------

@pytest.mark.parametrize("key, rows", [
    (0, [0]), (-1, [4]), (np.int64(2), [2]),
    (slice(1, 3), [1, 2]), (slice(None, None, -2), [4, 2, 0]), (slice(7, 9), []),
    (np.array([True, False, True, False, False]), [0, 2]), ([False] * 5, []),
    ([3, 0], [3, 0]), (np.array([1, 1]), [1, 1]), ([], []),
], ids=["int", "negative", "np-int", "slice", "step", "past-end", "mask", "empty-mask", "list", "repeat", "none"])
def test_indexing_gives_detections_of_those_rows(key, rows):
    d = _dets(5)
    sub = d[key]
    assert isinstance(sub, Detections) and sub.names == NAMES and len(sub) == len(rows)
    np.testing.assert_array_equal(sub.xyxy, d.xyxy[rows].reshape(-1, 4))
    np.testing.assert_array_equal(sub.confidence, d.confidence[rows])
    np.testing.assert_array_equal(sub.class_id, d.class_id[rows])
    assert not sub.xyxy.flags.writeable


def test_mask_from_the_arrays_themselves():
    d = _dets(5)
    assert d[d.confidence > 0.875] == d[:3]
    assert list(d[d.class_id == 1]) == [list(d)[1], list(d)[4]]


@pytest.mark.parametrize("key, error", [
    (5, IndexError), (-6, IndexError), (np.array([True, False]), IndexError), ("a", IndexError),
    (np.array([[0, 1]]), IndexError), ([0.5], IndexError), ([7], IndexError),
])
def test_bad_keys_are_refused(key, error):
    with pytest.raises(error):
        _dets(5)[key]


# ---- merge ---------------------------------------------------------------------------------------

def test_merge_concatenates_in_order():
    d = _dets(5)
    assert Detections.merge([d[:2], d[2:2], d[2:]]) == d
    assert Detections.merge([d]) == d and Detections.merge([]) == Detections.empty()
    assert len(Detections.merge([d, d])) == 10 and Detections.merge([d, d])[5:] == d


def test_merge_refuses_other_names():
    with pytest.raises(ValueError, match="different class names"):
        Detections.merge([_dets(1), _dets(1, names=("x",))])


# ---- dict round trip -----------------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 4])
def test_from_dict_round_trips_to_dict(n):
    d = _dets(n)
    data = json.loads(json.dumps(d.to_dict()))  # through JSON, as a JSON-lines reader gets it
    back = Detections.from_dict(data, names=NAMES)
    assert back.to_dict() == data and back == d  # these values survive the rounding exactly
    assert Detections.from_dict(data).to_dict() == data  # names rebuilt from the rows


def test_from_dict_rebuilds_names_and_checks_them():
    data = {"detections": [{"xyxy": [0, 0, 1, 1], "confidence": 0.5, "class_id": 2, "class_name": "triangle"}]}
    assert Detections.from_dict(data).names == ("0", "1", "triangle")
    with pytest.raises(ValueError, match="contradict"):
        Detections.from_dict(data, names=("a", "b", "c"))
    with pytest.raises(ValueError, match="malformed"):
        Detections.from_dict({"detections": [{"xyxy": [0, 0, 1, 1]}]})


# ---- an optional per-box array (how tracker ids are carried) -------------------------------------

def test_an_optional_per_box_array_is_carried_by_indexing_merge_and_dicts(monkeypatch):
    """What one more BOX_FIELDS line and dataclass field give (here a subclass stands in for that edit)."""
    import dataclasses

    import engine.detections as mod

    @dataclasses.dataclass(frozen=True, eq=False)
    class Tracked(Detections):
        track_id: np.ndarray | None = None

    base = _dets(3)
    monkeypatch.setattr(mod, "BOX_FIELDS", (*BOX_FIELDS, BoxField("track_id", np.int32, optional=True)))
    d = Tracked(base.xyxy, base.confidence, base.class_id, NAMES, track_id=[7, 8, 9])
    assert not d.track_id.flags.writeable and d[1:].track_id.tolist() == [8, 9]
    assert d[np.array([True, False, True])].track_id.tolist() == [7, 9]
    assert Tracked.merge([d[:1], d[1:]]) == d and d != Tracked(d.xyxy, d.confidence, d.class_id, NAMES)
    assert [r["track_id"] for r in d.to_dict()["detections"]] == [7, 8, 9]
    assert Tracked.from_dict(d.to_dict(), names=NAMES) == d
    untracked = Tracked(d.xyxy, d.confidence, d.class_id, NAMES)
    assert untracked.track_id is None and untracked[:2].track_id is None
    with pytest.raises(ValueError, match="only some have track_id"):
        Tracked.merge([d, untracked])
    with pytest.raises(ValueError, match="track_id 2"):
        Tracked(d.xyxy, d.confidence, d.class_id, NAMES, track_id=[1, 2])
