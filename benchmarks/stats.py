"""Pure arithmetic of the benchmark: percentiles, per-frame summaries, ratios and target verdicts.

No timing happens here, so every function is unit-tested with exact numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

STAGES = ("preprocess", "inference", "postprocess", "end_to_end")
PERCENTILES = (50, 95, 99)


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between order statistics.

    The same definition as NumPy's default (``method="linear"``): rank ``q/100 * (n - 1)`` in the
    sorted samples, interpolated between its neighbours.

    Raises:
        ValueError: no samples, or ``q`` outside 0..100.
    """
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q={q} is outside 0..100")
    xs = sorted(float(x) for x in samples)
    if not xs:
        raise ValueError("percentile of no samples")
    rank = q / 100.0 * (len(xs) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (rank - lo)


def summarize(samples: Sequence[float]) -> dict[str, float]:
    """``{"p50", "p95", "p99", "mean", "n"}`` of ``samples`` (milliseconds stay milliseconds)."""
    out = {f"p{q}": percentile(samples, q) for q in PERCENTILES}
    out["mean"] = sum(samples) / len(samples)
    out["n"] = len(samples)
    return out


def per_frame(call_ms: Iterable[float], batch: int) -> list[float]:
    """Milliseconds per call → milliseconds per frame for calls of ``batch`` frames."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    return [float(ms) / batch for ms in call_ms]


def fps(ms_per_frame: float) -> float:
    """Frames per second of one sequential stream at ``ms_per_frame`` (0 for a non-positive time)."""
    return 1000.0 / ms_per_frame if ms_per_frame > 0 else 0.0


def ratio(ours_ms: float, peer_ms: float) -> float | None:
    """``ours / peer`` (below 1: ours is faster); ``None`` when the peer's time is not positive."""
    if peer_ms is None or ours_ms is None or peer_ms <= 0:
        return None
    return ours_ms / peer_ms


def ratio_table(ours: Mapping[str, Mapping[str, Mapping[str, float]]],
                peers: Mapping[str, Mapping[str, Mapping[str, float]]],
                stages: Sequence[str] = ("end_to_end", "inference"), stat: str = "p50") -> list[dict]:
    """Every ours × peer ratio of ``stat`` for ``stages``.

    Args:
        ours, peers: candidate name → stage → summary (as :func:`summarize` returns).

    Returns:
        One row per pair: ``{"ours", "peer", "stat", <stage>: ratio or None, ...}``.
    """
    rows = []
    for o_name, o in ours.items():
        for p_name, p in peers.items():
            row = {"ours": o_name, "peer": p_name, "stat": stat}
            for s in stages:
                row[s] = ratio(o.get(s, {}).get(stat), p.get(s, {}).get(stat))
            rows.append(row)
    return rows


@dataclass(frozen=True)
class Target:
    """A speed target stated as a ratio: ``numerator / denominator <= limit`` on end-to-end p50."""

    name: str
    numerator: str
    denominator: str
    limit: float

    def verdict(self, value: float | None) -> dict:
        """A JSON-ready verdict; ``missed_by`` is how far over the limit, as a ratio and in percent."""
        if value is None:
            return {"target": self.name, "limit": self.limit, "ratio": None, "met": None,
                    "note": f"not measured: needs both {self.numerator!r} and {self.denominator!r} in one run"}
        met = value <= self.limit
        out = {"target": self.name, "limit": self.limit, "ratio": round(value, 4), "met": met}
        if not met:
            out["missed_by"] = round(value - self.limit, 4)
            out["missed_by_pct"] = round((value / self.limit - 1.0) * 100.0, 1)
        return out
