"""Build stage: ``<stem>.end2end.onnx``, the raw FP32 graph with a fixed-size detection tail (on by default,
``--no-end2end`` skips it; about a second to build and check).

See :mod:`exporters.end2end` for the graph, and ``engine/end2end.py`` for how the runtime reads it. The
new graph is checked at once against host NMS on the raw graph (ONNX Runtime CPU, the parity images):
a difference withholds it.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from .records import NOT_ASKED

KEY = "end2end.onnx"


def run(b) -> None:
    cfg = b.cfg.end2end
    if cfg is None:
        b.skip(KEY, f"{NOT_ASKED} (--no-end2end)")
        return
    inputs = {"end2end": {k: str(v) for k, v in asdict(cfg).items()}, "parity_images": str(b.cfg.export.parity_images),
              "parity_count": b.cfg.export.parity_count}
    b.produce(KEY, lambda final: _make(b, cfg, final), inputs)


def _make(b, cfg, final: Path):
    from .build import Outcome
    from .end2end import export_end2end
    from .parity import parity_inputs
    from .records import Check

    images = parity_inputs(b.metadata.imgsz, b.cfg.export.parity_images, b.cfg.export.parity_count)
    path, report = export_end2end(b.path("onnx"), cfg, final.parent, images, b.log)
    check = Check("detections vs host NMS", report.ok, report.summary(),
                  {"images": report.images, "detections": report.detections, "mismatched": report.mismatched,
                   "max_box_diff": report.max_box_diff})
    return Outcome(path, (check,))
