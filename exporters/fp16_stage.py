"""Build stage: the FP32 ONNX → ``<stem>.fp16.onnx``, delivered when its detections agree with FP32's
(and, with ``--data``, its mAP holds); see :mod:`exporters.fp16` for the check and its bars."""
from __future__ import annotations

from pathlib import Path

from engine.errors import ArtifactWithheld

from .records import NOT_ASKED

KEY = "fp16.onnx"


def run(b) -> None:
    if not b.cfg.fp16:
        b.skip(KEY, f"{NOT_ASKED} (--no-fp16)")
        return
    from . import evidence
    from .agreement import AgreementConfig
    from .fp16 import MAX_MAP_DROP

    inputs = {"agreement": AgreementConfig().__dict__, "max_map_drop": MAX_MAP_DROP,
              "data": evidence.data_fingerprint(b), "parity_images": str(b.cfg.export.parity_images)}
    b.produce(KEY, lambda final: _make(b, final), inputs)


def _make(b, final: Path):
    import onnx

    from engine.metadata import Precision

    from . import evidence
    from .agreement import compare_runners, onnx_runner
    from .build import Outcome
    from .fp16 import MAX_MAP_DROP, convert_fp16
    from .io import staged
    from .onnx_export import write_metadata
    from .records import Check

    fp32 = b.path("onnx")
    m16 = convert_fp16(onnx.load(str(fp32)))
    write_metadata(m16, b.metadata.replace(precision=Precision.FP16, source_sha256=_sha(fp32), source_name=fp32.name))
    onnx.checker.check_model(m16, full_check=True)
    with staged(final) as tmp:
        onnx.save(m16, str(tmp))
        agree = compare_runners(onnx_runner(fp32), onnx_runner(tmp), evidence.check_images(b), b.metadata.batch)
        checks = [Check("detections vs FP32", agree.ok, agree.summary(), agree.figures())]
        figures = {"agreement": round(agree.agreement, 5)}
        b.log(f"FP16 {agree.summary()} -> {'OK' if agree.ok else 'FAIL'}")
        if agree.ok and evidence.val_items(b) is not None:
            check, figs, _ = evidence.map_check(b, tmp, "mAP vs FP32", MAX_MAP_DROP)
            checks.append(check)
            figures.update(figs)
            b.log(f"FP16 {check.summary} -> {'OK' if check.passed else 'FAIL'}")
        failed = [c for c in checks if not c.passed]
        if failed:
            raise ArtifactWithheld(f"the FP16 graph's output differs from FP32's: {failed[0].summary}",
                                   "use the FP32 or INT8 artifacts for this model (the FP16 graph is numerically "
                                   "off for it), or report it with the model", checks, figures)
    return Outcome(final, tuple(checks), figures)


def _sha(path: Path) -> str:
    from engine.metadata import file_sha256

    return file_sha256(path)
