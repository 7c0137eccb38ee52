"""Build stage (last): ``--triton DIR`` writes a Triton model repository of every model artifact delivered.

Runs after every other stage, so it sees which artifacts were delivered, and writes ``DIR/<stem>_<kind>/``
for each (see :mod:`exporters.triton`). Without ``--triton`` it records the repository as not asked for.
"""
from __future__ import annotations

from pathlib import Path

from .records import NOT_ASKED

KEY = "triton"


def run(b) -> None:
    settings = b.cfg.triton
    if settings is None:
        b.skip(KEY, f"{NOT_ASKED} (--triton DIR)")
        return
    models = {k: r.path for k, r in b.records.items() if r.delivered and r.path is not None}
    inputs = {"options": {k: str(v) for k, v in settings.options.__dict__.items()},
              "models": {k: b.fingerprint(k) for k in models}}

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
