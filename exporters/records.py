"""What the build stages hand each other and the report: one frozen record per artifact.

A record says what became of one artifact kind (:mod:`engine.artifacts`): ``delivered`` (its file is
written and passed its checks), ``withheld`` (it was built but failed a check, or its build raised; no
file is left under its name), or ``skipped`` (not built: not asked for, its source was withheld, or a
tool is missing). Each carries the checks it went through with their figures, the reason and the fix
a user can try.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Mapping

Figure = float | int | str | None
NOT_ASKED = "not asked for"  # how a skip reason starts when the user did not ask for the artifact


class Status(str, Enum):
    """What became of an artifact."""

    DELIVERED = "delivered"
    WITHHELD = "withheld"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Check:
    """One check an artifact went through: its name, verdict, the figures behind it and the bar."""

    name: str
    passed: bool
    summary: str
    figures: Mapping[str, Figure] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "summary": self.summary, "figures": dict(self.figures)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Check":
        return cls(str(d["name"]), bool(d["passed"]), str(d.get("summary", "")), dict(d.get("figures", {})))


@dataclass(frozen=True)
class ArtifactRecord:
    """What one artifact kind came to in this build.

    Attributes:
        key: the artifact kind's key (:attr:`engine.artifacts.ArtifactKind.key`, e.g. ``int8-cpu.onnx``),
            or ``triton`` for the model repository.
        label: the name people read.
        status: delivered, withheld or skipped.
        path: the file (or folder) when delivered, else ``None``.
        checks: the checks it went through, in order.
        figures: the figures a reader compares (mAP50-95, its drop vs FP32, detection agreement, bytes).
        reason: why it was withheld or skipped (empty when delivered).
        fix: what a user can try about it.
        seconds: how long building and checking took.
        reused: the file of an earlier build into the same folder was kept (same inputs).
        fingerprint: hash of everything the artifact was made from (see :mod:`exporters.reuse`).
    """

    key: str
    label: str
    status: Status
    path: Path | None = None
    checks: tuple[Check, ...] = ()
    figures: Mapping[str, Figure] = field(default_factory=dict)
    reason: str = ""
    fix: str = ""
    seconds: float = 0.0
    reused: bool = False
    fingerprint: str = ""

    @property
    def delivered(self) -> bool:
        return self.status is Status.DELIVERED

    @property
    def not_asked(self) -> bool:
        """Skipped because the user did not ask for it (not because something failed)."""
        return self.status is Status.SKIPPED and self.reason.startswith(NOT_ASKED)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "status": self.status.value,
                "path": None if self.path is None else str(self.path), "checks": [c.to_dict() for c in self.checks],
                "figures": dict(self.figures), "reason": self.reason, "fix": self.fix,
                "seconds": round(self.seconds, 2), "reused": self.reused, "fingerprint": self.fingerprint}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ArtifactRecord":
        return cls(str(d["key"]), str(d.get("label", d["key"])), Status(d["status"]),
                   None if d.get("path") is None else Path(d["path"]),
                   tuple(Check.from_dict(c) for c in d.get("checks", ())), dict(d.get("figures", {})),
                   str(d.get("reason", "")), str(d.get("fix", "")), float(d.get("seconds", 0.0)),
                   bool(d.get("reused", False)), str(d.get("fingerprint", "")))


def _cell(rec: ArtifactRecord) -> list[str]:
    f = rec.figures
    m = f"{f['map50_95']:.4f}" if isinstance(f.get("map50_95"), float) else "-"
    drop = f.get("drop_points")
    d = f"{-drop:+.2f}" if isinstance(drop, (int, float)) else ""
    low, high = f.get("drop_low"), f.get("drop_high")
    if d and f.get("judged_by") == "map" and isinstance(low, (int, float)) and isinstance(high, (int, float)):
        d += f" ({-high:+.2f} to {-low:+.2f})"  # the INT8 gate's bootstrap interval of the drop
    agree = f.get("agreement")
    a = f"{agree:.1%}" if isinstance(agree, float) else ""
    status = rec.status.value + (" (reused)" if rec.reused else "")
    name = rec.path.name if rec.path is not None else "-"
    note = rec.reason if rec.status is not Status.DELIVERED else next((c.summary for c in rec.checks[-1:]), "")
    return [rec.label, name, status, m, d, a, note]


HEADER = ["artifact", "file", "status", "mAP50-95", "Δ pts vs FP32 (interval)", "agreement", "check / reason"]


def table(records: list[ArtifactRecord], width: int = 200) -> str:
    """The records as an aligned text table; fixes of withheld/skipped artifacts follow it."""
    rows = [HEADER, *(_cell(r) for r in records)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER) - 1)]
    lines = []
    for r in rows:
        line = "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1]
        lines.append(line if len(line) <= width else line[: width - 3] + "...")
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * len(HEADER[-1]))
    fixes = [f"  {r.label}: {r.fix}" for r in records if r.status is not Status.DELIVERED and r.fix]
    return "\n".join(lines + (["fixes to try:", *fixes] if fixes else []))


def write_report(path: Path, records: list[ArtifactRecord], extra: Mapping[str, Any]) -> Path:
    """``build_report.json``: every record plus ``extra`` (config, versions, exit code), written atomically."""
    from .io import write_bytes_atomic

    doc = {**extra, "artifacts": [r.to_dict() for r in records]}
    return write_bytes_atomic(path, (json.dumps(doc, indent=1, default=str) + "\n").encode())
