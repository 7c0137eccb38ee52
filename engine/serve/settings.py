"""What ``engine.serve`` tells each Triton Python-backend stub: :class:`StubSettings`, stored as JSON in the
model config's ``parameters`` under :data:`PARAMETERS_KEY` (written by :mod:`.triton_process`, read by
:mod:`.triton_model`)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

PARAMETERS_KEY = "engine_serve"


@dataclass(frozen=True)
class StubSettings:
    """What each model's stub needs (:mod:`engine.serve.triton_model`).

    ``target`` is set for the encoded-image model: it runs no Detector, decodes, and sends the frames to
    ``target`` (the raw-frame model) through Triton (BLS), so ``--instances N`` means N Detectors in all.
    """

    model: str
    conf: float | None
    iou: float | None
    max_det: int | None
    threads: int
    onnx: bool
    input: str
    warmup_batch: int
    log_lines: int
    log_window_s: float
    target: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "StubSettings":
        return cls(**json.loads(text))
