"""Host side of end-to-end graphs (``python -m exporters.build --end2end``).

Such a graph ends in fixed-size outputs ``num_dets (B, 1)``, ``boxes (B, K, 4)``, ``scores (B, K)``,
``classes (B, K)``, rows by descending score. Its metadata's :class:`~engine.metadata.Thresholds` say
what was baked in: ``conf``, ``iou``, ``K`` (``max_det``) and whether NMS ran in the graph (``nms``) or
the graph kept the top-K candidates for the host NMS to finish (``nms=False``).

Run-time thresholds may only be stricter than the baked ones: a higher ``conf`` filters on the host
(exact: greedy NMS of a score-filtered set equals the score-filtered NMS result); a lower one would need
anchors the graph already dropped, so it is refused with the command that re-exports.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .errors import ConfigError, UnsupportedModelError
from .metadata import ModelMetadata, Thresholds
from .nms import nms

OUTPUT_NAMES = ("num_dets", "boxes", "scores", "classes")


@dataclass(frozen=True)
class RunThresholds:
    """Thresholds a Detector applies, resolved against what the graph baked in."""

    conf: float
    iou: float
    max_det: int


def resolve_thresholds(meta: ModelMetadata, path: str | Path, conf: float | None, iou: float | None,
                       max_det: int | None, agnostic: bool) -> RunThresholds:
    """Run-time thresholds for an end-to-end model: the baked ones where ``None``, checked otherwise.

    Raises:
        UnsupportedModelError: the model has no recorded thresholds (e.g. Ultralytics' ``nms=True``).
        ConfigError: a threshold looser than the graph allows; the message gives the re-export command.
    """
    thr: Thresholds | None = meta.thresholds
    if thr is None:
        raise UnsupportedModelError(f"{path} is an end-to-end export without recorded thresholds "
                                    "(Ultralytics' nms=True or an NMS-free head)",
                                    "export the raw head with python -m exporters.build, with or without --end2end")
    again = (f"re-export: python -m exporters.build --weights {meta.source_name or '<model.pt>'} --end2end"
             + (" --e2e-tail nms" if thr.nms else ""))
    conf = thr.conf if conf is None else conf
    if conf < thr.conf:
        raise ConfigError(f"conf={conf} is looser than the conf={thr.conf} baked into {path}: the graph already "
                          "dropped those boxes", f"pass conf >= {thr.conf}, or {again} --e2e-conf {conf}")
    if not thr.nms:  # top-K candidates: the host NMS takes any iou / max_det / agnostic
        return RunThresholds(conf, thr.iou if iou is None else iou, 300 if max_det is None else max_det)
    iou = thr.iou if iou is None else iou
    if abs(iou - thr.iou) > 1e-9:
        raise ConfigError(f"iou={iou} differs from the iou={thr.iou} of the NMS inside {path}",
                          f"pass iou={thr.iou} (or leave it out), or {again} --e2e-iou {iou}")
    max_det = thr.max_det if max_det is None else max_det
    if max_det > thr.max_det:
        raise ConfigError(f"max_det={max_det} exceeds the {thr.max_det} detections {path} returns",
                          f"pass max_det <= {thr.max_det}, or {again} --max-det {max_det}")
    if agnostic:
        raise ConfigError(f"agnostic=True, but the NMS inside {path} is per class",
                          "use agnostic=False, or re-export without --e2e-tail nms (the host NMS then runs agnostic)")
    return RunThresholds(conf, iou, max_det)


def split_outputs(names: Sequence[str], outputs: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
    """``(num_dets, boxes, scores, classes)`` from a backend's outputs, by name."""
    by_name: Mapping[str, np.ndarray] = dict(zip(names, outputs))
    missing = [n for n in OUTPUT_NAMES if n not in by_name]
    if missing:
        raise UnsupportedModelError(f"end-to-end model lacks outputs {missing} (has {list(names)})",
                                    "re-export it with python -m exporters.build --end2end")
    return tuple(by_name[n] for n in OUTPUT_NAMES)


def finish_end2end(num: np.ndarray, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, nms_in_graph: bool,
                   run: RunThresholds, keep_classes: Sequence[int] | None = None, agnostic: bool = False,
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's rows of an end-to-end graph → ``xyxy`` float32, ``scores`` float32, ``class_ids`` int32.

    ``num``/``boxes``/``scores``/``classes`` are that image's slices (``(1,)``, ``(K, 4)``, ``(K,)``, ``(K,)``).
    Rows past ``num`` are padding. With ``nms_in_graph`` the rows are final detections (filtered by the
    stricter ``run.conf`` and ``keep_classes``, cut to ``run.max_det``); otherwise they are candidates and
    the host NMS runs on them, with the same semantics as on the raw head.
    """
    n = int(np.asarray(num).reshape(-1)[0])
    b, s, c = boxes[:n], scores[:n], classes[:n]
    m = s > np.float32(run.conf)  # every row is already above the baked conf; a stricter one filters here
    if keep_classes is not None:
        m &= np.isin(c, np.asarray(keep_classes))
    if not m.all():
        b, s, c = b[m], s[m], c[m]
    if nms_in_graph:
        keep = slice(0, run.max_det)
    else:
        keep = nms(b, s, run.iou, c, agnostic=agnostic, max_det=run.max_det)
    return (np.array(b[keep], np.float32, copy=True), np.asarray(s[keep], np.float32).copy(),
            np.asarray(c[keep], np.int32).copy())
