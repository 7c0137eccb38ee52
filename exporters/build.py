"""``python -m exporters.build``: a trained ``.pt`` becomes deployable artifacts.

With no arguments it builds the bundled demo model (``assets/demo/demo.pt``) into ``deploy/``.
Errors are printed as one message and a fix, with exit code 2 (``--debug`` shows the traceback).

The build is a pipeline of stages. Each stage is a module with ``add_arguments(parser)`` and
``run(args, ctx)``; :data:`STAGES` lists them in order. A stage reads what earlier stages produced
from ``ctx.artifacts`` and adds its own. Stage modules keep heavy imports inside ``run``.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from engine.cli import run_cli
from engine.errors import DeployError

STAGES: tuple[str, ...] = (
    "exporters.onnx_stage",
    "exporters.quantize_stage",
    "exporters.end2end_stage",
    "exporters.engine_stage",
    "exporters.openvino_stage",
    "exporters.triton_stage",
)


@dataclass
class BuildContext:
    """What the stages share: the log function, artifacts by kind, report rows, and deferred failures.

    A stage that fails in a way later stages do not depend on (an INT8 form withheld by the accuracy
    gate) appends its error to ``failures`` and names the withheld artifact kinds in ``withheld``; the
    remaining stages still run on what was built, and :func:`run` raises the first failure at the end.
    """

    log: Callable[[str], None] = print
    artifacts: dict[str, Path] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    failures: list[DeployError] = field(default_factory=list)
    withheld: set[str] = field(default_factory=set)


def _stages():
    return [importlib.import_module(name) for name in STAGES]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m exporters.build",
        description="Build deployable artifacts from an Ultralytics YOLOv8/YOLO11 detect checkpoint. "
                    "With no source, builds the bundled demo model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for stage in _stages():
        stage.add_arguments(ap)
    ap.add_argument("--debug", action="store_true", help="show full tracebacks")
    return ap


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> BuildContext:
    """Run every stage on parsed ``args``; return the context with the artifacts.

    Raises:
        DeployError: a stage failed; a deferred failure (see :class:`BuildContext`) is raised after
            the other stages ran and the artifacts were listed.
    """
    ctx = BuildContext(log=log)
    t0 = time.perf_counter()
    for stage in _stages():
        stage.run(args, ctx)
    log(f"{'finished with errors' if ctx.failures else 'done'} in {time.perf_counter() - t0:.1f}s:")
    for kind, path in ctx.artifacts.items():
        log(f"  {kind:<14} {path}")
    for kind in sorted(ctx.withheld):
        log(f"  {kind:<14} not written (see the error below)")
    if ctx.failures:
        raise ctx.failures[0]
    return ctx


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: run(args), args.debug, "interrupted: nothing half-written was left in the output folder")


if __name__ == "__main__":
    sys.exit(main())
