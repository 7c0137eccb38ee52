"""One tracker over one video: :class:`~engine.Detections` in, the same detections with ``track_id`` out.

The trackers themselves are roboflow's ``trackers`` package (Apache-2.0; ByteTrack, OC-SORT, SORT),
maintained and checked against the papers' numbers; this module only adapts our types to theirs and
keeps ids unique over a reset. Install it with ``pip install 'yolo-deploy[track]'``; it is imported when
the first :class:`Tracker` is made, so the runtime imports without it.

    from engine import Detector
    from engine.track import Tracker

    with Detector("model.onnx", conf=0.1) as det:      # ByteTrack also uses weak boxes (low_conf)
        tracker = Tracker("bytetrack", fps=cap_fps)    # one per video or camera
        for frame in frames:
            tracked = tracker.update(det(frame))        # tracked.track_id[i]: id of box i (-1: none yet)
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

import numpy as np

from ..detections import Detections
from ..errors import BackendUnavailableError, ConfigError

INSTALL = "pip install 'yolo-deploy[track]' (or pip install trackers)"


@dataclass(frozen=True)
class TrackerConfig:
    """How objects are tracked.

    Attributes:
        kind: ``bytetrack`` (default), ``ocsort`` or ``sort``.
        conf: a box needs this score to start a track (and, in ByteTrack, to be matched in the first
            association). Boxes under it are still reported (down to the detector's conf), with an id
            when they continue a track. On ``benchmarks/tracking.py`` 0.5 switched ids 133 times, 0.25
            (Ultralytics' new-track threshold) 210 and 0.7 (the library's default) 93; 0.7 would never
            track an object a weaker model scores 0.5-0.7. Keep it at or under your rules' ``min_confidence``.
        low_conf: ByteTrack's second association also matches boxes down to this score to tracks the
            first left unmatched (a half-hidden object scores low); a stream runs its detector at this conf.
        min_iou: overlap a box needs with a track's predicted box to continue it (``None``: the library's
            default for the kind: 0.1 ByteTrack, 0.3 OC-SORT and SORT).
        lost_seconds: how long a track that sees no box is kept for re-association (occlusions).
        min_frames: matched frames before a track gets an id (1: its second sighting, even after a gap,
            so a box that flickers every other frame still gets one id).
    """

    kind: str = "bytetrack"
    conf: float = 0.5
    low_conf: float = 0.1
    min_iou: float | None = None
    lost_seconds: float = 1.0
    min_frames: int = 1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown tracker '{self.kind}'", f"use one of {', '.join(KINDS)}")
        for name in ("conf", "low_conf", "min_iou"):  # min_iou None: the library's default
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ConfigError(f"tracker {name}={value}", f"use 0 <= {name} < 1")
        if self.lost_seconds < 0 or self.min_frames < 1:
            raise ConfigError(f"tracker lost_seconds={self.lost_seconds}, min_frames={self.min_frames}",
                              "use lost_seconds >= 0 and min_frames >= 1")

    @classmethod
    def of(cls, value: "TrackerConfig | str | bool") -> "TrackerConfig":
        """A config from a kind name (``True`` or ``""``: ByteTrack) or a config."""
        if isinstance(value, TrackerConfig):
            return value
        return cls(kind=value if isinstance(value, str) and value else "bytetrack")

    @property
    def uses_low_boxes(self) -> bool:
        return KINDS[self.kind].uses_low_boxes


@dataclass(frozen=True)
class Kind:
    """One tracker of the library: its class and how our config maps onto its arguments."""

    cls: str
    arguments: Callable[[TrackerConfig, float], dict[str, Any]]
    uses_low_boxes: bool = False


def _common(c: TrackerConfig, fps: float) -> dict[str, Any]:
    # the library counts the lost budget in frames of a 30 fps video (with timestamps: budget / 30 seconds)
    out = {"lost_track_buffer": max(int(round(c.lost_seconds * 30)), 0), "frame_rate": fps,
           "minimum_consecutive_frames": c.min_frames}
    if c.min_iou is not None:
        out["minimum_iou_threshold"] = c.min_iou
    return out


KINDS: Mapping[str, Kind] = {
    "bytetrack": Kind("ByteTrackTracker", lambda c, fps: {
        **_common(c, fps), "track_activation_threshold": c.conf, "high_conf_det_threshold": c.conf},
        uses_low_boxes=True),
    "ocsort": Kind("OCSORTTracker", lambda c, fps: {**_common(c, fps), "high_conf_det_threshold": c.conf}),
    "sort": Kind("SORTTracker", lambda c, fps: {**_common(c, fps), "track_activation_threshold": c.conf}),
}


def _library() -> Any:
    try:
        import supervision
        import trackers
    except ImportError as e:
        raise BackendUnavailableError(f"tracking needs roboflow's trackers package ({e})", INSTALL) from None
    return trackers, supervision


class Tracker:
    """Track the boxes of one video or camera; make one per source (ids never cross sources).

    Args:
        config: a :class:`TrackerConfig` or a kind name (``"bytetrack"``, ``"ocsort"``, ``"sort"``).
        fps: the source's frame rate (scales the motion model; 30 when unknown).
        report_conf: boxes under this score are dropped unless they continue a track (ByteTrack's weak
            boxes); the stream passes its ``conf``.

    :meth:`update` returns the input's boxes in the input's order, each with a ``track_id`` (1, 2, …;
    -1 while a box has no track yet). Ids stay unique across :meth:`reset`.
    """

    def __init__(self, config: TrackerConfig | str = "bytetrack", fps: float = 30.0, report_conf: float = 0.25) -> None:
        self.config = TrackerConfig.of(config)
        self.report_conf = report_conf
        self.fps = fps if fps and fps > 0 else 30.0
        self._trackers, self._sv = _library()
        self._offset = 0  # ids given before the last reset, so a reset never reuses one
        self._max_id = 0
        self._last_time: float | None = None
        self._inner = self._make()

    def _make(self) -> Any:
        kind = KINDS[self.config.kind]
        return getattr(self._trackers, kind.cls)(**kind.arguments(self.config, self.fps))

    def reset(self) -> None:
        """Forget every track (a camera that reconnected shows another moment); later ids stay unique."""
        self._offset = self._max_id
        self._last_time = None
        self._inner = self._make()

    def update(self, detections: Detections, timestamp: float | None = None) -> Detections:
        """Assign ids to one frame's boxes.

        Args:
            detections: the frame's boxes, in pixels.
            timestamp: the frame's time in seconds (source time: index / fps for a file, capture time for
                a camera), so dropped frames count as elapsed time; ``None``: one frame per call.
        """
        if timestamp is not None:  # the library skips a frame whose time is not after the last one's
            if self._last_time is not None and timestamp <= self._last_time:
                timestamp = self._last_time + 1e-3  # a camera clock set back: keep tracking, as a tiny step
            self._last_time = timestamp
        n = len(detections)
        boxes = self._sv.Detections(xyxy=detections.xyxy.astype(np.float32, copy=False),
                                    confidence=detections.confidence, class_id=detections.class_id,
                                    data={"i": np.arange(n)})
        out = self._inner.update(boxes, timestamp=timestamp) if timestamp is not None else self._inner.update(boxes)
        ids = np.full(n, -1, dtype=np.int64)
        if len(out):
            got = np.asarray(out.tracker_id, dtype=np.int64)
            ids[np.asarray(out.data["i"], dtype=np.int64)] = np.where(got >= 0, got + 1 + self._offset, -1)
            self._max_id = max(self._max_id, int(ids.max()))
        keep = (detections.confidence >= self.report_conf) | (ids >= 0)
        return replace(detections, xyxy=detections.xyxy[keep], confidence=detections.confidence[keep],
                       class_id=detections.class_id[keep], track_id=ids[keep])
