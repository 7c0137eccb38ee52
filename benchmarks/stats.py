"""Pure arithmetic of the benchmark: percentiles, per-frame summaries, ratios, agreement and target verdicts.

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


def summarize_rounds(rounds: Sequence[Sequence[float]]) -> dict[str, float | list[float]]:
    """The figures of one stage over rounds of calls (each round: one turn of the candidate, its calls).

    ``p50`` is the median over rounds of each round's median (a round slowed by another process moves one
    of those medians, not the figure); ``min`` and ``max`` are the fastest and slowest round medians and
    ``spread_pct`` their distance in percent of ``p50``. ``p50_all``, ``p95``, ``p99``, ``mean`` and ``n`` are
    over every call pooled (a tail needs every call), and ``rounds`` keeps each round's median.

    Raises:
        ValueError: no rounds, or a round without calls.
    """
    if not rounds or any(len(r) == 0 for r in rounds):
        raise ValueError("summarize_rounds needs at least one round, each with calls")
    medians = [percentile(r, 50) for r in rounds]
    pooled = [float(x) for r in rounds for x in r]
    mid = percentile(medians, 50)
    out = summarize(pooled)
    out.update(p50_all=out["p50"], p50=mid, min=min(medians), max=max(medians),
               spread_pct=(max(medians) - min(medians)) / mid * 100.0 if mid > 0 else 0.0, rounds=medians)
    return out


def agreement(harness_ms: float, standalone_ms: float, tolerance: float = 0.10) -> dict:
    """Whether a harness figure agrees with the same candidate timed alone: ``|harness / standalone - 1| <= tolerance``."""
    if standalone_ms is None or harness_ms is None or standalone_ms <= 0:
        return {"harness_ms": harness_ms, "standalone_ms": standalone_ms, "ratio": None, "agrees": None}
    r = harness_ms / standalone_ms
    return {"harness_ms": harness_ms, "standalone_ms": standalone_ms, "ratio": round(r, 4),
            "agrees": abs(r - 1.0) <= tolerance + 1e-12, "tolerance": tolerance}


def busy(load: Sequence[float] | None, cores: int | None) -> bool:
    """Whether a 1-minute load average above the core count says other work shared the machine."""
    return bool(load) and bool(cores) and float(load[0]) > float(cores)


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
    """A goal stated as a ratio of two figures measured in the same run.

    ``at_most`` (the default): ``numerator / denominator <= limit`` (a time ratio: ours over a peer's);
    ``at_least=True``: ``>= limit`` (a throughput ratio: served over in-process).
    """

    name: str
    numerator: str
    denominator: str
    limit: float
    at_least: bool = False

    def verdict(self, value: float | None) -> dict:
        """A JSON-ready verdict; ``missed_by`` is how far past the limit, as a ratio and in percent."""
        op = ">=" if self.at_least else "<="
        if value is None:
            return {"target": self.name, "limit": self.limit, "op": op, "ratio": None, "met": None,
                    "note": f"not measured: needs both {self.numerator!r} and {self.denominator!r} in one run"}
        met = value >= self.limit if self.at_least else value <= self.limit
        out = {"target": self.name, "limit": self.limit, "op": op, "ratio": round(value, 4), "met": met}
        if not met:
            out["missed_by"] = round(abs(value - self.limit), 4)
            out["missed_by_pct"] = round(abs(value / self.limit - 1.0) * 100.0, 1)
        return out
