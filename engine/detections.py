"""The runtime's result type."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np


class Detection(NamedTuple):
    """One box, as yielded by iterating a :class:`Detections`."""

    xyxy: tuple[float, float, float, float]
    confidence: float
    class_id: int
    class_name: str


@dataclass(frozen=True)
class Detections:
    """Detections for one frame, in source-frame pixels.

    Attributes:
        xyxy: ``(N, 4)`` float32 boxes (x1, y1, x2, y2).
        confidence: ``(N,)`` float32 scores.
        class_id: ``(N,)`` int32 class indices.
        names: the model's class names (index = class id).
        track_id: ``(N,)`` int32 ids from a tracker (:mod:`engine.track`; -1: not tracked), or ``None``
            when no tracker ran.

    Arrays are validated and cast in ``__post_init__``; an empty result is a valid ``Detections``
    of length 0.
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    names: Sequence[str] = field(default=())
    track_id: np.ndarray | None = None

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        conf = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
        cls = np.asarray(self.class_id, dtype=np.int32).reshape(-1)
        if not len(xyxy) == len(conf) == len(cls):
            raise ValueError(f"Detections arrays disagree in length: xyxy {len(xyxy)}, "
                             f"confidence {len(conf)}, class_id {len(cls)}")
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "confidence", conf)
        object.__setattr__(self, "class_id", cls)
        object.__setattr__(self, "names", tuple(self.names))
        if self.track_id is not None:
            tid = np.asarray(self.track_id, dtype=np.int32).reshape(-1)
            if len(tid) != len(conf):
                raise ValueError(f"Detections arrays disagree in length: track_id {len(tid)}, confidence {len(conf)}")
            object.__setattr__(self, "track_id", tid)

    @classmethod
    def empty(cls, names: Sequence[str] = ()) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32), names)

    def __len__(self) -> int:
        return len(self.confidence)

    def __iter__(self) -> Iterator[Detection]:
        for box, conf, cid in zip(self.xyxy.tolist(), self.confidence.tolist(), self.class_id.tolist()):
            yield Detection(tuple(box), conf, cid, self._name(cid))

    def _name(self, cid: int) -> str:
        return self.names[cid] if 0 <= cid < len(self.names) else str(cid)

    @property
    def class_name(self) -> list[str]:
        """Class name of every box."""
        return [self._name(c) for c in self.class_id.tolist()]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"detections": [{"xyxy": [...], "confidence": c, "class_id": i, "class_name": s}]}``.

        With :attr:`track_id`, each detection also has an integer ``"track_id"``.
        """
        out = [{"xyxy": [round(v, 2) for v in d.xyxy], "confidence": round(d.confidence, 5),
                "class_id": d.class_id, "class_name": d.class_name} for d in self]
        if self.track_id is not None:
            for row, tid in zip(out, self.track_id.tolist()):
                row["track_id"] = tid
        return {"detections": out}
