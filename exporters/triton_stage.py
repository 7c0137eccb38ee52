"""Build stage (last): ``--triton DIR`` writes a Triton model repository of every model artifact delivered.

Runs after every other stage, so it sees which artifacts were delivered, and writes ``DIR/<stem>_<kind>/``
for each (see :mod:`exporters.triton`). Without ``--triton`` it records the repository as not asked for.
"""
from __future__ import annotations

import time
from pathlib import Path

from .records import NOT_ASKED

KEY = "triton"


def run(b) -> None:
    settings = b.cfg.triton
    if settings is None:
        b.skip(KEY, f"{NOT_ASKED} (--triton DIR)")
        return
    models = {k: r.path for k, r in b.records.items() if r.delivered and r.path is not None}
    _remove_undelivered(b, Path(settings.repo))
    inputs = {"options": {k: str(v) for k, v in settings.options.__dict__.items()},
              "models": {k: b.fingerprint(k) for k in models},
              # never reused, a withheld repository included (it is retried: a stray file may be gone): rewriting
              # is file copies. (A delivered one could not be reused anyway: its record holds no per-file
              # digests, which a shared folder's reuse would need.)
              "written_at": time.time_ns()}

    def make(final: Path):
        from .build import Outcome
        from .records import Check
        from .triton import write_repository

        written = write_repository(final, models, b.cfg.export.stem, settings.options, b.metadata, b.log)
        summary = f"{len(written)} models: {', '.join(sorted(written))}"
        return Outcome(final, (Check("models written", True, summary, {"models": len(written)}),),
                       {"models": len(written)})

    # the repository may hold other models: a failure removes only this build's (write_repository), never DIR
    b.produce(KEY, make, inputs, final=Path(settings.repo), sources=(), owns_final=False)


def _remove_undelivered(b, repo: Path) -> None:
    """A model of this stem that this build withheld, or skipped while its file left ``--out`` (its source
    withheld, or the FP32 ONNX changed), leaves the repository too: Triton would serve the earlier one."""
    from engine.artifacts import kind

    from .records import Status
    from .triton import model_name

    def gone_from_out(k: str) -> bool:  # the build removed (or never left) this kind's file in --out
        try:
            return not kind(k).path(b.cfg.export.out, b.cfg.export.stem).exists()
        except KeyError:
            return False

    stale = [k for k, r in b.records.items() if k != KEY and not r.delivered and (
        r.status is Status.WITHHELD or b.fp32_changed() or gone_from_out(k))]
    folders = (repo / model_name(b.cfg.export.stem, k) for k in stale)
    b.remove_leftovers(*(f for f in folders if f.is_dir()))  # model folders only: a stray file is not ours
