"""Reruns into the same output folder: keep what has not changed, rebuild the rest.

Each artifact's record carries a fingerprint of everything it was made from: its settings, the
fingerprints of the artifacts it was built from (so a rebuilt FP32 ONNX invalidates everything after
it), the data it was checked or calibrated on (file names, sizes and times), this project's version and
a hash of its source code (an edit that keeps the version number still rebuilds). A rerun finds the
previous ``build_report.json`` in the folder and reuses a record whose fingerprint matches and whose
file is still there with the same bytes (sha256); ``--rebuild`` reuses nothing.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from engine.metadata import file_sha256

from .records import ArtifactRecord, Status

REPORT_NAME = "build_report.json"
_CODE_PACKAGES = ("engine", "exporters", "calibration")  # the code that decides what an artifact holds


@functools.lru_cache(maxsize=4)
def code_digest(roots: tuple[Path, ...] | None = None) -> str:
    """sha256 of the ``.py`` files (names and contents) of the packages that make artifacts; once per run."""
    if roots is None:
        import importlib.util

        roots = tuple(Path(next(iter(importlib.util.find_spec(p).submodule_search_locations))) for p in _CODE_PACKAGES)
    h = hashlib.sha256()
    for root in roots:
        for f in sorted(Path(root).rglob("*.py")):
            h.update(f"{Path(root).name}/{f.relative_to(root).as_posix()}\n".encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:32]


def files_digest(paths: Iterable[Path]) -> str:
    """A cheap fingerprint of a set of files: names, sizes and modification times (not their bytes)."""
    h = hashlib.sha256()
    for p in sorted(Path(p) for p in paths):
        try:
            st = p.stat()
            h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}|missing\n".encode())
    return h.hexdigest()[:32]


def fingerprint(inputs: Mapping[str, Any]) -> str:
    """The fingerprint of an artifact from its ``inputs`` (JSON-able values; paths and enums as text)."""
    from engine import __version__

    doc = {"inputs": inputs, "version": __version__, "code": code_digest()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:32]


def previous_records(out: Path, stem: str) -> dict[str, ArtifactRecord]:
    """The records of the last build of ``stem`` into ``out`` (empty when there is none or it is unreadable)."""
    try:
        doc = json.loads((Path(out) / REPORT_NAME).read_text(encoding="utf-8"))
        if doc.get("stem") != stem:
            return {}
        return {r["key"]: ArtifactRecord.from_dict(r) for r in doc.get("artifacts", [])}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def reusable(prev: ArtifactRecord | None, fp: str) -> bool:
    """Whether ``prev`` was made from the same inputs and (when delivered) its file is intact."""
    if prev is None or prev.fingerprint != fp or prev.status is Status.SKIPPED:
        return False
    if prev.status is Status.WITHHELD:
        return True  # same inputs, same verdict: withheld again without the work
    path = prev.path
    if path is None or not path.exists():
        return False
    if path.is_dir():  # every file it was delivered with, unchanged (a folder alone said nothing)
        files = prev.figures.get("files")
        return isinstance(files, dict) and bool(files) and all(
            (path / name).is_file() and file_sha256(path / name) == digest for name, digest in files.items())
    want = prev.figures.get("sha256")
    return isinstance(want, str) and file_sha256(path) == want
