"""engine.nms: edge cases as a table, then random inputs against torchvision and Ultralytics."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from engine.errors import ConfigError
from engine.nms import MAX_NMS, nms, postprocess_raw

F32 = np.float32
BELOW_HALF = float(np.nextafter(0.5, 0.0))  # the largest double below 0.5


def _boxes(*rows: tuple[float, float, float, float]) -> np.ndarray:
    return np.array(rows, F32).reshape(-1, 4)


def _many_classes(nc: int = 80, copies: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``copies`` identical boxes per class, all classes on the same spot; scores all distinct."""
    boxes = np.tile(_boxes((10, 10, 50, 50)), (nc * copies, 1))
    class_ids = np.repeat(np.arange(nc), copies)
    scores = np.linspace(0.9, 0.1, nc * copies, dtype=F32)[::-1].copy()  # the last box of a class wins
    return boxes, scores, class_ids


_B80, _S80, _C80 = _many_classes()
_TOP80 = [3 * k + 2 for k in reversed(range(80))]  # each class's last (best) copy, best class first

# id, boxes, scores, iou_thres, class_ids, agnostic, max_det, expected kept indices
NMS_CASES = [
    ("no-boxes", np.zeros((0, 4), F32), np.zeros(0, F32), 0.5, None, False, 300, []),
    ("one-box", _boxes((0, 0, 10, 10)), [0.9], 0.5, None, False, 300, [0]),
    ("identical-boxes-keep-higher-score", _boxes((0, 0, 10, 10), (0, 0, 10, 10)), [0.8, 0.9], 0.5,
     None, False, 300, [1]),
    ("score-tie-lower-index-wins", _boxes((0, 0, 10, 10), (0, 0, 10, 10)), [0.7, 0.7], 0.5,
     None, False, 300, [0]),
    ("score-tie-disjoint-keeps-index-order", _boxes((0, 0, 1, 1), (5, 5, 6, 6), (9, 9, 10, 10)),
     [0.5, 0.5, 0.5], 0.5, None, False, 300, [0, 1, 2]),
    # IoU([0,0,10,10], [0,0,10,5]) = 50 / 100 = 0.5 exactly, in float32 too.
    ("iou-equal-thres-both-kept", _boxes((0, 0, 10, 10), (0, 0, 10, 5)), [0.9, 0.8], 0.5,
     None, False, 300, [0, 1]),
    # Just below 0.5 as a double: float32(thres) would round back up to 0.5 and keep both.
    ("iou-just-above-thres-suppressed", _boxes((0, 0, 10, 10), (0, 0, 10, 5)), [0.9, 0.8], BELOW_HALF,
     None, False, 300, [0]),
    # A suppresses B (IoU 7/13); B would suppress C, but B is gone, so C stays (greedy, not Fast-NMS).
    ("suppressed-box-suppresses-nothing", _boxes((0, 0, 10, 10), (3, 0, 13, 10), (6, 0, 16, 10)),
     [0.9, 0.8, 0.7], 0.5, None, False, 300, [0, 2]),
    ("class-aware-keeps-both", _boxes((0, 0, 10, 10), (0, 0, 10, 10)), [0.9, 0.8], 0.5,
     [0, 1], False, 300, [0, 1]),
    ("agnostic-keeps-one", _boxes((0, 0, 10, 10), (0, 0, 10, 10)), [0.9, 0.8], 0.5,
     [0, 1], True, 300, [0]),
    ("no-class-ids-is-agnostic", _boxes((0, 0, 10, 10), (0, 0, 10, 10)), [0.9, 0.8], 0.5,
     None, False, 300, [0]),
    ("max-det-truncates", _boxes((0, 0, 1, 1), (2, 2, 3, 3), (4, 4, 5, 5), (6, 6, 7, 7)),
     [0.1, 0.4, 0.3, 0.2], 0.5, None, False, 2, [1, 2]),
    ("max-det-zero", _boxes((0, 0, 1, 1)), [0.9], 0.5, None, False, 0, []),
    # Two empty boxes: IoU is 0/0 = NaN, which is not > thres, so both stay (torchvision too).
    ("zero-area-boxes-kept", _boxes((5, 5, 5, 5), (5, 5, 5, 5)), [0.9, 0.8], 0.5, None, False, 300, [0, 1]),
    ("80-classes-one-per-class", _B80, _S80, 0.5, _C80, False, 300, _TOP80),
    ("80-classes-agnostic", _B80, _S80, 0.5, _C80, True, 300, [239]),
    ("80-classes-max-det", _B80, _S80, 0.5, _C80, False, 5, _TOP80[:5]),
]
# torchvision's stride (max + 1) lets a class-1 box at negative coordinates land on a class-0 box and
# suppresses it; we widen the stride, so this row is left out of the torchvision cross-check.
NEGATIVE_CASE = ("negative-coords-classes-stay-apart", _boxes((0, 0, 10, 10), (-11, -11, -1, -1)),
                 [0.9, 0.8], 0.5, [0, 1], False, 300, [0, 1])


@pytest.mark.parametrize("boxes,scores,iou,class_ids,agnostic,max_det,expected",
                         [c[1:] for c in NMS_CASES + [NEGATIVE_CASE]],
                         ids=[c[0] for c in NMS_CASES + [NEGATIVE_CASE]])
def test_nms_edge_cases(boxes, scores, iou, class_ids, agnostic, max_det, expected):
    keep = nms(boxes, np.asarray(scores, F32), iou, None if class_ids is None else np.asarray(class_ids),
               agnostic=agnostic, max_det=max_det)
    assert keep.dtype == np.int64
    assert keep.tolist() == expected


@pytest.mark.parametrize("boxes,scores,iou,class_ids,agnostic,max_det,expected",
                         [c[1:] for c in NMS_CASES], ids=[c[0] for c in NMS_CASES])
def test_nms_edge_cases_agree_with_torchvision(boxes, scores, iou, class_ids, agnostic, max_det, expected):
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision")
    b, s = torch.from_numpy(np.asarray(boxes, F32)), torch.from_numpy(np.asarray(scores, F32))
    if class_ids is None or agnostic:
        ref = tv.ops.nms(b, s, iou)
    else:
        ref = tv.ops.batched_nms(b, s, torch.as_tensor(class_ids), iou)
    assert ref[:max_det].tolist() == expected


def test_nms_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="2 boxes, 1 scores"):
        nms(_boxes((0, 0, 1, 1), (2, 2, 3, 3)), [0.5], 0.5)
    with pytest.raises(ValueError, match="3 class ids"):
        nms(_boxes((0, 0, 1, 1), (2, 2, 3, 3)), [0.5, 0.4], 0.5, class_ids=[0, 1, 2])


def _random_boxes(rng: np.random.Generator, n: int, nc: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heavily overlapping boxes: jittered copies of a few objects in a 640 px frame."""
    k = max(n // 10, 1)
    centers, sizes = rng.uniform(40, 600, (k, 2)), rng.uniform(10, 250, (k, 2))
    obj = rng.integers(0, k, n)
    c = centers[obj] + rng.normal(0, 8, (n, 2))
    wh = sizes[obj] * rng.uniform(0.7, 1.3, (n, 2))
    boxes = np.concatenate((c - wh / 2, c + wh / 2), 1).clip(0, 640).astype(F32)
    return boxes, rng.random(n).astype(F32), rng.integers(0, nc, n)


@pytest.mark.parametrize("iou", [0.45, 0.7])
@pytest.mark.parametrize("nc", [3, 80])
@pytest.mark.parametrize("n", [0, 1, 50, 500])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nms_matches_torchvision(seed, n, nc, iou):
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision")
    boxes, scores, cls = _random_boxes(np.random.default_rng(seed), n, nc)
    b, s = torch.from_numpy(boxes), torch.from_numpy(scores)
    # Continuous scores are distinct, so order is compared too. max_det above n: no truncation.
    ref = tv.ops.batched_nms(b, s, torch.from_numpy(cls), iou).numpy()
    np.testing.assert_array_equal(nms(boxes, scores, iou, cls, max_det=10_000), ref)
    ref = tv.ops.nms(b, s, iou).numpy()
    np.testing.assert_array_equal(nms(boxes, scores, iou, cls, agnostic=True, max_det=10_000), ref)


def _raw_head(rng: np.random.Generator, nc: int, anchors: int, imgsz: int, objects: int,
              per_object: int) -> np.ndarray:
    """A plausible ``(4 + nc, anchors)`` head: faint background, clusters of confident anchors."""
    head = np.empty((4 + nc, anchors), F32)
    head[:2] = rng.uniform(0, imgsz, (2, anchors))
    head[2:4] = rng.uniform(4, imgsz / 3, (2, anchors))
    head[4:] = rng.beta(0.3, 40, (nc, anchors))  # mostly < 0.01, a few above 0.001
    for _ in range(objects):
        idx = rng.choice(anchors, per_object, replace=False)
        head[:2, idx] = rng.uniform(20, imgsz - 20, (2, 1)) + rng.normal(0, 3, (2, per_object))
        head[2:4, idx] = rng.uniform(15, imgsz / 2, (2, 1)) * rng.uniform(0.8, 1.2, (2, per_object))
        head[4 + rng.integers(nc), idx] = rng.uniform(0.05, 0.95, per_object)
    return head


def _head_with_scores(scores: list[list[float]]) -> np.ndarray:
    """Disjoint 10 px boxes, one per anchor, with the given (nc, A) class scores."""
    s = np.asarray(scores, F32)
    xywh = np.stack([np.arange(s.shape[1]) * 20.0 + 5, np.full(s.shape[1], 5.0),
                     np.full(s.shape[1], 10.0), np.full(s.shape[1], 10.0)]).astype(F32)
    return np.concatenate((xywh, s))


UP = float(np.nextafter(F32(0.25), F32(1)))
# id, class scores (nc, A), conf, classes, expected (anchor kept, class) in output order
POST_CASES = [
    # Ultralytics keeps `amax(scores) > conf_thres` (ultralytics/utils/nms.py, non_max_suppression):
    # a score equal to conf is dropped.
    ("score-equal-conf-dropped", [[0.25, UP]], 0.25, None, [(1, 0)]),
    # conf is rounded to the head's float32 before `>` (torch and NumPy both), so float32(0.3) == 0.3.
    ("score-equal-float32-conf-dropped", [[float(F32(0.3)), 0.31]], 0.3, None, [(1, 0)]),
    ("best-class-only", [[0.6, 0.1], [0.7, 0.2], [0.1, 0.9]], 0.25, None, [(1, 2), (0, 1)]),
    ("classes-filter", [[0.6, 0.1], [0.1, 0.9]], 0.25, [0], [(0, 0)]),
    ("classes-filter-uses-best-class", [[0.5, 0.1], [0.6, 0.1]], 0.25, [0], []),
    ("all-below-conf", [[0.1, 0.2], [0.05, 0.25]], 0.25, None, []),
]


@pytest.mark.parametrize("scores,conf,classes,expected", [c[1:] for c in POST_CASES],
                         ids=[c[0] for c in POST_CASES])
def test_postprocess_raw_cases(scores, conf, classes, expected):
    head = _head_with_scores(scores)
    xyxy, conf_out, cls = postprocess_raw(head, conf, 0.7, classes=classes)
    assert (xyxy.dtype, conf_out.dtype, cls.dtype) == (np.float32, np.float32, np.int32)
    assert xyxy.shape == (len(expected), 4) and conf_out.shape == cls.shape == (len(expected),)
    anchors = [a for a, _ in expected]
    np.testing.assert_array_equal(xyxy, head[[0, 1, 0, 1]][:, anchors].T + np.array([-5, -5, 5, 5], F32))
    assert cls.tolist() == [c for _, c in expected]
    np.testing.assert_array_equal(conf_out, head[4:, anchors].max(0))


def test_postprocess_raw_accepts_batch_of_one_and_fp16():
    head = _raw_head(np.random.default_rng(0), 3, 2100, 320, 5, 10)
    ref = postprocess_raw(head, 0.25, 0.7)
    for got, want in zip(postprocess_raw(head[None], 0.25, 0.7), ref):
        np.testing.assert_array_equal(got, want)
    xyxy, scores, cls = postprocess_raw(head.astype(np.float16), 0.25, 0.7)
    assert len(xyxy) > 0 and (xyxy.dtype, scores.dtype, cls.dtype) == (np.float32, np.float32, np.int32)


def test_postprocess_raw_caps_candidates_at_max_nms():
    # MAX_NMS + 1 identical boxes collapse to one; a lone lowest-score box survives NMS only if
    # it survives the cap, which it must not (Ultralytics keeps the top max_nms by score).
    n = MAX_NMS + 1
    head = np.zeros((5, n), F32)
    head[:4] = np.array([[50], [50], [20], [20]], F32)
    head[4] = np.linspace(0.9, 0.5, n, dtype=F32)
    head[:2, -1] = 500
    xyxy, _, _ = postprocess_raw(head, 0.25, 0.7)
    assert xyxy.tolist() == [[40, 40, 60, 60]]
    xyxy, _, _ = postprocess_raw(head[:, 1:], 0.25, 0.7)  # one fewer: the lone box is in
    assert len(xyxy) == 2


@pytest.mark.parametrize("kwargs", [dict(conf=1.5, iou=0.7), dict(conf=0.25, iou=-0.1)], ids=["conf", "iou"])
def test_postprocess_raw_rejects_thresholds_outside_unit_interval(kwargs):
    with pytest.raises(ConfigError):
        postprocess_raw(np.zeros((5, 4), F32), **kwargs)


def test_postprocess_raw_rejects_bad_shape():
    with pytest.raises(ValueError, match="4 \\+ nc"):
        postprocess_raw(np.zeros((4, 10), F32), 0.25, 0.7)


@pytest.fixture(scope="module")
def ultralytics_nms():
    pytest.importorskip("ultralytics")
    try:
        from ultralytics.utils.nms import non_max_suppression
    except ImportError:  # older releases kept it in ops
        from ultralytics.utils.ops import non_max_suppression
    return non_max_suppression


@pytest.mark.parametrize("conf,classes,agnostic", [
    (0.25, None, False), (0.001, None, False), (0.25, [0, 2], False), (0.25, None, True),
    (0.3, None, False)], ids=["conf0.25", "conf0.001", "classes", "agnostic", "conf0.3"])
@pytest.mark.parametrize("seed", [0, 1])
def test_postprocess_raw_matches_ultralytics(ultralytics_nms, seed, conf, classes, agnostic):
    torch = pytest.importorskip("torch")
    head = _raw_head(np.random.default_rng(seed), 3, 2100, 320, 12, 12)
    head[4, :5] = F32(conf)  # boundary scores: equal to conf, dropped by both
    ref = ultralytics_nms(torch.from_numpy(head[None]), conf, 0.7, classes=classes, agnostic=agnostic,
                          max_det=300)[0].numpy()
    xyxy, scores, cls = postprocess_raw(head, conf, 0.7, classes=classes, agnostic=agnostic)
    assert len(ref) > 0 and len(xyxy) == len(ref)
    np.testing.assert_allclose(xyxy, ref[:, :4], atol=1e-4)
    np.testing.assert_array_equal(scores, ref[:, 4])
    np.testing.assert_array_equal(cls, ref[:, 5].astype(np.int32))


def test_nms_module_imports_numpy_only():
    """The runtime must not need torch, torchvision or OpenCV for NMS."""
    tree = ast.parse(Path(__file__).parents[1].joinpath("engine", "nms.py").read_text())
    absolute = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    absolute |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.level == 0 and n.module}
    assert absolute <= {"__future__", "typing", "numpy"}
