"""Build stage 1: the source (.pt or Ultralytics .onnx) → ``<out>/<stem>.onnx``, parity-checked.

The one required artifact: if it fails, the build fails (everything else is built from it).
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

KEY = "onnx"


def run(b) -> None:
    from engine.metadata import file_sha256

    cfg = b.cfg.export
    _record_last_graph(b)
    inputs = {"source_sha256": file_sha256(cfg.source) if cfg.source.is_file() else str(cfg.source),
              "export": {k: str(v) for k, v in asdict(cfg).items() if k != "out"}}
    rec = b.produce(KEY, lambda final: _make(b, final), inputs)
    if rec.reused:
        b.metadata = _read_metadata(rec.path)
    _check_excludes(b)


def _check_excludes(b) -> None:
    """``--exclude`` patterns that match no node of the FP32 graph are a flag error now (exit 2), not a
    withheld INT8 form (exit 3) after the FP16, OpenVINO and calibration work."""
    from . import evidence
    from .quantize import match_nodes

    q = b.cfg.quantize
    if q.int8 and q.exclude:
        match_nodes(evidence.fp32_model(b), q.exclude)


def _record_last_graph(b) -> None:
    """A report from before the graph was recorded: hash the last build's FP32 ONNX now, while it is still
    the file that report describes, so this build can tell whether it makes another model."""
    import dataclasses

    from engine.metadata import file_sha256

    last = b.last.get(KEY)
    if last is None or last.figures.get("graph") or last.path is None or not last.path.is_file():
        return
    if last.figures.get("sha256") != file_sha256(last.path):
        return  # not the file that report describes any more: unknown, nothing removed on a guess
    b.last[KEY] = dataclasses.replace(last, figures={**last.figures, "graph": model_graph_hash(last.path)})


def _make(b, final: Path):
    from .build import Outcome
    from .onnx_export import export_onnx
    from .records import Check

    art = export_onnx(b.cfg.export, b.log)
    b.metadata = art.metadata
    p = art.parity
    parity = Check("parity vs source", p.ok, p.summary(),
                   {"max_abs_box": p.max_abs_box, "max_abs_score": p.max_abs_score, "images": p.n_images})
    return Outcome(art.path, (parity,), {"graph": model_graph_hash(art.path)})


def model_graph_hash(path: Path) -> str:
    """The FP32 ONNX's graph and weights, without its metadata (an export date): the same model re-exported
    hashes the same, so what was derived from it is still its own (``Build.fp32_changed``)."""
    import onnx

    from calibration.cache import graph_hash

    return graph_hash(onnx.load(str(path)))


def _read_metadata(path: Path):
    import onnx

    from engine.errors import MetadataError
    from engine.metadata import from_onnx_props

    model = onnx.load(str(path), load_external_data=False)
    meta = from_onnx_props({p.key: p.value for p in model.metadata_props})
    if meta is None:
        raise MetadataError(f"{path} (reused from the last build) has no metadata", "rerun with --rebuild")
    return meta
