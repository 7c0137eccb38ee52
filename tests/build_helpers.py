"""A :class:`exporters.build.Build` as a stage sees it mid-run: earlier artifacts delivered, metadata known."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

from exporters.build import Build
from exporters.cli import build_parser, config_from_args
from exporters.records import ArtifactRecord, Status


def stage_build(argv: list[str], artifacts: dict[str, Path], meta=None,
                log: Callable[[str], None] = lambda s: None) -> Build:
    """A build of ``argv`` whose earlier stages delivered ``artifacts`` (key → file), reusing nothing."""
    b = Build(replace(config_from_args(build_parser().parse_args(argv)), rebuild=True), log)
    for key, path in artifacts.items():
        b.records[key] = ArtifactRecord(key, key, Status.DELIVERED, Path(path))
    b.metadata = meta
    return b
