"""The runtime's result type: :class:`Detections`, a value (read-only arrays, ``==``, indexing, merge)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np


class Detection(NamedTuple):
    """One box, as yielded by iterating a :class:`Detections`."""

    xyxy: tuple[float, float, float, float]
    confidence: float
    class_id: int
    class_name: str


class BoxField(NamedTuple):
    """One per-box array of :class:`Detections`: its dtype, the shape of one box's entry, and whether it
    may be ``None`` (an optional array, e.g. tracker ids, present only when something filled it)."""

    name: str
    dtype: type
    shape: tuple[int, ...] = ()
    optional: bool = False


# Every per-box array. Validation, indexing, merge, equality and (for optional scalars) to_dict/from_dict
# go over this table, so a new per-box array is one line here plus its dataclass field (default None).
BOX_FIELDS: tuple[BoxField, ...] = (
    BoxField("xyxy", np.float32, (4,)),
    BoxField("confidence", np.float32),
    BoxField("class_id", np.int32),
    BoxField("track_id", np.int32, optional=True),  # engine.track fills it
)


def _frozen(value: Any, f: BoxField) -> np.ndarray:
    """``value`` as a read-only array of ``f``'s dtype and shape, never sharing a writable caller's memory."""
    a = np.asarray(value, dtype=f.dtype)
    if isinstance(value, np.ndarray) and a.flags.writeable and np.may_share_memory(a, value):
        a = a.copy()  # the caller may still write to its array; a value must not change under us
    a = a.reshape(-1, *f.shape)
    a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class Detections:
    """Detections for one frame, in source-frame pixels; a value.

    Attributes:
        xyxy: ``(N, 4)`` float32 boxes (x1, y1, x2, y2).
        confidence: ``(N,)`` float32 scores.
        class_id: ``(N,)`` int32 class indices.
        names: the model's class names (index = class id).
        track_id: ``(N,)`` int32 ids from a tracker (:mod:`engine.track`; -1: not tracked), or ``None``
            when no tracker ran.

    Arrays are validated, cast and made read-only in ``__post_init__`` (a writable array passed in is
    copied, so later writes to it do not change the result); an empty result is a valid ``Detections`` of
    length 0. ``a == b`` is ``True`` when both hold the same boxes, scores, class ids and names, in the
    same order (two empty results with the same names are equal); a ``Detections`` is not hashable.
    ``d[i]``, ``d[a:b]``, ``d[mask]`` and ``d[[i, j]]`` give a ``Detections`` of those boxes;
    :meth:`merge` concatenates; :meth:`from_dict` reads what :meth:`to_dict` writes.
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    names: Sequence[str] = field(default=())
    track_id: np.ndarray | None = None

    __hash__ = None  # arrays inside: equal values must not be told apart or collide by identity

    def __post_init__(self) -> None:
        lengths = {}
        for f in BOX_FIELDS:
            value = getattr(self, f.name)
            if value is None and f.optional:
                continue
            arr = _frozen(value, f)
            object.__setattr__(self, f.name, arr)
            lengths[f.name] = len(arr)
        if len(set(lengths.values())) > 1:
            raise ValueError("Detections arrays disagree in length: "
                             + ", ".join(f"{k} {n}" for k, n in lengths.items()))
        object.__setattr__(self, "names", tuple(self.names))

    @classmethod
    def empty(cls, names: Sequence[str] = ()) -> "Detections":
        """A result with no boxes."""
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32), names)

    def _arrays(self) -> dict[str, np.ndarray | None]:
        return {f.name: getattr(self, f.name) for f in BOX_FIELDS}

    def __len__(self) -> int:
        return len(self.confidence)

    def __iter__(self) -> Iterator[Detection]:
        for box, conf, cid in zip(self.xyxy.tolist(), self.confidence.tolist(), self.class_id.tolist()):
            yield Detection(tuple(box), conf, cid, self._name(cid))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Detections):
            return NotImplemented
        if self.names != other.names or len(self) != len(other):
            return False
        mine, theirs = self._arrays(), other._arrays()
        return all((mine[k] is None and theirs[k] is None) or
                   (mine[k] is not None and theirs[k] is not None and np.array_equal(mine[k], theirs[k]))
                   for k in mine)

    def __getitem__(self, key: int | slice | Sequence[int] | Sequence[bool] | np.ndarray) -> "Detections":
        """The boxes at ``key``: an index (a ``Detections`` of one box), a slice, a boolean mask of length
        ``len(self)`` or an array of indices."""
        n = len(self)
        if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
            i = int(key)
            if not -n <= i < n:
                raise IndexError(f"box {i} out of range for {n} detections")
            i %= n
            key = slice(i, i + 1)
        elif not isinstance(key, slice):
            key = np.asarray(key)
            if key.dtype == bool:
                if key.shape != (n,):
                    raise IndexError(f"a boolean mask of shape {key.shape} does not fit {n} detections")
            elif key.size == 0:
                key = key.astype(np.intp)
            elif key.ndim != 1 or not np.issubdtype(key.dtype, np.integer):
                raise IndexError(f"index Detections with an int, a slice, a boolean mask or integers, not {key!r}")
        return self._with({k: None if a is None else a[key] for k, a in self._arrays().items()})

    def _with(self, arrays: Mapping[str, np.ndarray | None]) -> "Detections":
        """A ``Detections`` of these per-box arrays and this one's names."""
        return type(self)(**arrays, names=self.names)

    @classmethod
    def merge(cls, items: Iterable["Detections"]) -> "Detections":
        """One ``Detections`` of every box of ``items``, in order (e.g. the tiles of one frame).

        Raises:
            ValueError: the items have different class names, or an optional array (such as tracker ids)
                is set on some items and not on others.
        """
        items = list(items)
        if not items:
            return cls.empty()
        names = items[0].names
        if any(d.names != names for d in items[1:]):
            raise ValueError("cannot merge Detections of models with different class names")
        arrays = {}
        for f in BOX_FIELDS:
            parts = [getattr(d, f.name) for d in items]
            if all(p is None for p in parts):
                arrays[f.name] = None
            elif any(p is None for p in parts):
                raise ValueError(f"cannot merge Detections where only some have {f.name}")
            else:
                arrays[f.name] = np.concatenate(parts)
        return items[0]._with(arrays)

    def _name(self, cid: int) -> str:
        return self.names[cid] if 0 <= cid < len(self.names) else str(cid)

    @property
    def class_name(self) -> list[str]:
        """Class name of every box."""
        return [self._name(c) for c in self.class_id.tolist()]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"detections": [{"xyxy": [...], "confidence": c, "class_id": i, "class_name": s}]}``
        (boxes rounded to 0.01 px, scores to 1e-5; an optional per-box array set on this result adds its
        key to each detection)."""
        rows = [{"xyxy": [round(v, 2) for v in d.xyxy], "confidence": round(d.confidence, 5),
                 "class_id": d.class_id, "class_name": d.class_name} for d in self]
        for f in BOX_FIELDS:
            values = getattr(self, f.name)
            if f.optional and values is not None:
                for row, v in zip(rows, values.tolist()):
                    row[f.name] = v
        return {"detections": rows}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], names: Sequence[str] | None = None) -> "Detections":
        """The result :meth:`to_dict` wrote: ``Detections.from_dict(d.to_dict()).to_dict() == d.to_dict()``.

        Args:
            data: ``{"detections": [{"xyxy", "confidence", "class_id", "class_name"}, ...]}``.
            names: the model's class names; by default rebuilt from the rows' ``class_name`` (ids no row
                names read as their number, as :meth:`to_dict` writes them).

        Raises:
            ValueError: a row lacks a key, or its ``class_name`` contradicts ``names``.
        """
        rows = list(data.get("detections", ())) if isinstance(data, Mapping) else None
        if rows is None:
            raise ValueError(f"expected {{'detections': [...]}}, got {type(data).__name__}")
        try:
            arrays: dict[str, Any] = {"xyxy": np.array([r["xyxy"] for r in rows], np.float32).reshape(-1, 4),
                                      "confidence": [r["confidence"] for r in rows],
                                      "class_id": [int(r["class_id"]) for r in rows]}
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"a detection row is malformed ({type(e).__name__}: {e})") from None
        for f in BOX_FIELDS:
            if f.optional:
                arrays[f.name] = [r[f.name] for r in rows] if rows and all(f.name in r for r in rows) else None
        given = {int(r["class_id"]): str(r.get("class_name", r["class_id"])) for r in rows}
        if names is None:
            top = max(given, default=-1) + 1
            names = [given.get(i, str(i)) for i in range(top)]
        result = cls(**arrays, names=names)
        wrong = [(i, s) for i, s in given.items() if result._name(i) != s]
        if wrong:
            raise ValueError(f"class names {wrong} contradict names={tuple(names)}")
        return result
