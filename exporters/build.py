"""``python -m exporters.build``: a trained ``.pt`` becomes deployable artifacts, each checked.

With no arguments it builds the bundled demo model (``assets/demo/demo.pt``) into ``deploy/``.

The build is a pipeline of stages (:data:`STAGES`), each a module with ``run(build)``. A stage asks
:meth:`Build.produce` for each artifact it makes; ``produce`` builds and checks it, and records what
became of it (:class:`~exporters.records.ArtifactRecord`): delivered, withheld (its check failed or its
build raised; no file is left under its name) or skipped (not asked for, or its source was withheld).
Only the FP32 ONNX is required: if it fails, the build fails. Everything else that fails is withheld
with its figures, and the stages after it go on.

Exit codes (:func:`main`): 0 when every artifact built was delivered; 3 when some were withheld (the
rest are usable); 2 when the build failed (a bad flag or input, the FP32 ONNX failed, ``--strict``
with a withheld artifact, a full disk); 130 on Ctrl-C; 1 on an unexpected error (with its traceback).
"""
from __future__ import annotations

import importlib
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from engine.cli import run_cli
from engine.errors import ArtifactWithheld, DeployError, OutputDirError

from .config import BuildConfig
from .records import ArtifactRecord, Check, Status, table, write_report

STAGES: tuple[str, ...] = (
    "exporters.onnx_stage",
    "exporters.fp16_stage",
    "exporters.openvino_stage",  # before the INT8 stage, whose accuracy report lists the IRs too
    "exporters.quantize_stage",
    "exporters.end2end_stage",
    "exporters.engine_stage",
    "exporters.triton_stage",
)
EXIT_OK, EXIT_FAILED, EXIT_WITHHELD = 0, 2, 3
HEARTBEAT_S = 30.0  # a log line this often while one artifact is built and checked (a log file has no progress bar)
Log = Callable[[str], None]


@dataclass(frozen=True)
class Outcome:
    """What an artifact's make function hands back: the file it wrote, the checks it passed, its figures."""

    path: Path
    checks: tuple[Check, ...] = ()
    figures: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BuildResult:
    """What a build ended with: every record in build order, the exit code, and the report's path."""

    records: tuple[ArtifactRecord, ...]
    exit_code: int
    report: Path | None

    def record(self, key: str) -> ArtifactRecord | None:
        return next((r for r in self.records if r.key == key), None)

    @property
    def delivered(self) -> dict[str, Path]:
        return {r.key: r.path for r in self.records if r.delivered and r.path is not None}

    @property
    def withheld(self) -> tuple[ArtifactRecord, ...]:
        return tuple(r for r in self.records if r.status is Status.WITHHELD)


class Build:
    """One run's state: its config, the records so far, and what stages share (metadata, scores).

    Stages read :attr:`cfg` and earlier records, and add their own through :meth:`produce` / :meth:`skip`.
    """

    def __init__(self, cfg: BuildConfig, log: Log = print) -> None:
        from .reuse import previous_records

        self.cfg = cfg
        self.log = log
        self.records: dict[str, ArtifactRecord] = {}
        self.metadata = None  # engine.metadata.ModelMetadata of the FP32 ONNX, set by the ONNX stage
        self.shared: dict[str, Any] = {}  # lazily computed inputs several stages use (val items, scores)
        # the last build's records: for reuse (not with --rebuild) and, always, to tell another model's leftovers
        self.last = previous_records(cfg.export.out, cfg.export.stem)
        self.previous = {} if cfg.rebuild else self.last

    def path(self, key: str) -> Path | None:
        """The delivered file of ``key``, else ``None``."""
        rec = self.records.get(key)
        return rec.path if rec is not None and rec.delivered else None

    def fingerprint(self, key: str) -> str:
        rec = self.records.get(key)
        return rec.fingerprint if rec is not None else ""

    def skip(self, key: str, reason: str, fix: str = "", label: str | None = None) -> ArtifactRecord:
        """Record that ``key`` was not built, and why.

        A file an earlier build left under the kind's name stays while it was made from the same FP32
        ONNX (an engine built on a GPU box survives a rerun where TensorRT is missing); once the FP32
        ONNX changed it is another model's, and goes (with an engine's sidecar).
        """
        rec = ArtifactRecord(key, label or _label(key), Status.SKIPPED, reason=reason, fix=fix)
        self.records[key] = rec
        self.log(f"{rec.label}: skipped ({reason})")
        if key != "onnx" and self.fp32_changed():
            from engine.artifacts import kind as kind_of_key
            from engine.backends.trt_sidecar import sidecar_path

            try:
                spec = kind_of_key(key)
            except KeyError:  # triton: a folder shared with other models, never removed here
                return rec
            final = spec.path(self.cfg.export.out, self.cfg.export.stem)
            self.remove_leftovers(final, *((sidecar_path(final),) if spec.is_engine else ()))
        return rec

    def fp32_changed(self) -> bool:
        """This build's FP32 ONNX is another model than the last build's (its graph and weights, not its
        export date or the flags that made it): what was derived from that one is stale. Unknown (no earlier
        build, or one that did not record its graph) counts as unchanged: nothing is removed on a guess."""
        prev, cur = self.last.get("onnx"), self.records.get("onnx")
        if prev is None or cur is None or not cur.delivered:
            return False
        old, new = prev.figures.get("graph"), cur.figures.get("graph")
        return bool(old and new and old != new)

    def produce(self, key: str, make: Callable[[Path], Outcome], inputs: Mapping[str, Any], *,
                final: Path | None = None, sources: Sequence[str] | None = None, label: str | None = None,
                stale: Sequence[Path] = (), owns_final: bool = True) -> ArtifactRecord:
        """Build, check and record one artifact.

        Args:
            key: the artifact kind's key (``fp16.onnx``) or ``triton``.
            make: ``make(final_path) -> Outcome``; writes the artifact atomically (nothing under
                ``final`` unless it passed), raises :class:`~engine.errors.ArtifactWithheld` when a check
                fails, any other error when the build itself fails.
            inputs: everything the artifact is made from besides its sources (settings, data
                fingerprints); with the sources' fingerprints it decides whether a rerun may reuse it.
            final: where the file goes (default: the kind's name in the output folder).
            sources: keys of the artifacts it is built from (default: the kind's ``built_from``); when
                one of them was not delivered this one is skipped.
            stale: more files that must go when this one is not delivered (an engine's sidecar).
            owns_final: ``final`` is this artifact's alone, so a failure removes what an earlier build left
                there; ``False`` for a folder shared with others (a Triton repository), which ``make``
                cleans up itself.

        Raises:
            DeployError: the artifact is required (the FP32 ONNX) and failed; or an output error (a full
                or read-only disk), which fails the whole build.
        """
        from engine.artifacts import kind as kind_of_key

        from .reuse import fingerprint, reusable

        spec = kind_of_key(key) if key != "triton" else None
        required = spec is not None and spec.required
        label = label or _label(key)
        final = Path(final) if final is not None else spec.path(self.cfg.export.out, self.cfg.export.stem)
        # what a failure removes; never for the required artifact: the build stops and an earlier good file stays
        gone = () if required else ((final,) if owns_final else ()) + tuple(stale)
        sources = tuple(sources) if sources is not None else ((spec.built_from,) if spec and spec.built_from else ())
        missing = [s for s in sources if self.path(s) is None]
        if missing:
            self.remove_leftovers(*gone)
            src = self.records.get(missing[0])
            why = f"its source {_label(missing[0])} was {src.status.value if src else 'not built'}"
            return self.skip(key, why, src.fix if src else "", label)
        fp = fingerprint({"key": key, "inputs": inputs, "sources": {s: self.fingerprint(s) for s in sources}})
        prev = self.previous.get(key)
        if reusable(prev, fp) and (prev.status is Status.WITHHELD or (prev.path == final and all(
                Path(x).exists() for x in stale))):  # an engine without its sidecar is rebuilt, not reused
            rec = ArtifactRecord(prev.key, label, prev.status, prev.path, prev.checks, prev.figures, prev.reason,
                                 prev.fix, prev.seconds, True, fp)
            self.records[key] = rec
            self.log(f"{label}: {rec.status.value}, reused from the last build into {final.parent} (same inputs)")
            return rec
        t0 = time.perf_counter()
        try:
            from .progress import heartbeat

            with heartbeat(self.log, label, every=HEARTBEAT_S):  # YOLO11m's FP16 check runs minutes on 2 cores
                out = make(final)
            files = _file_figures(out.path) if owns_final else {}  # a shared repository: not every model's bytes
            rec = ArtifactRecord(key, label, Status.DELIVERED, out.path, out.checks, {**out.figures, **files},
                                 seconds=time.perf_counter() - t0, fingerprint=fp)
        except (OutputDirError, KeyboardInterrupt):
            self.remove_leftovers(*gone)
            raise
        except DeployError as e:
            self.remove_leftovers(*gone)
            if required:
                raise
            rec = ArtifactRecord(key, label, Status.WITHHELD, None, tuple(getattr(e, "checks", ())),
                                 dict(getattr(e, "figures", {})), e.message, e.fix, time.perf_counter() - t0,
                                 fingerprint=fp)
        except Exception as e:  # an optional artifact's unexpected failure withholds it; the build goes on
            self.remove_leftovers(*gone)
            if required:
                raise
            if self.cfg.debug:
                traceback.print_exc()
            rec = ArtifactRecord(key, label, Status.WITHHELD, reason=f"its build raised {type(e).__name__}: {e}",
                                 fix="rerun with --debug for the traceback and report it with the model",
                                 seconds=time.perf_counter() - t0, fingerprint=fp)
        self.records[key] = rec
        if rec.delivered:
            self.log(f"{label}: delivered {rec.path} ({rec.seconds:.1f}s)")
        else:
            self.log(f"{label}: WITHHELD: {rec.reason}" + (f"\n  fix: {rec.fix}" if rec.fix else ""))
        return rec

    def remove_leftovers(self, *paths: Path) -> None:
        """What an earlier build left under the name of an artifact this build did not deliver goes (a file,
        or a folder: an IR, a Triton model); the build's own source never does."""
        import shutil

        source = self.cfg.export.source.resolve()
        for p in paths:
            if p.resolve() == source:  # the user's own --onnx, given inside --out: never ours to remove
                continue
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists():
                p.unlink()
            else:
                continue
            self.log(f"removed {p} left by an earlier build (this build did not deliver it)")


def _label(key: str) -> str:
    from engine.artifacts import kind

    if key == "triton":
        return "Triton model repository"
    try:
        return kind(key).label
    except KeyError:
        return key


def _file_figures(path: Path) -> dict[str, Any]:
    from engine.metadata import file_sha256

    if path.is_file():
        return {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
    if path.is_dir():  # an IR folder: each file's digest, so a rerun reuses it only when all are intact
        files = {str(f.relative_to(path).as_posix()): file_sha256(f) for f in sorted(path.rglob("*")) if f.is_file()}
        return {"bytes": sum(f.stat().st_size for f in path.rglob("*") if f.is_file()), "files": files}
    return {}


def _stages():
    return [importlib.import_module(name) for name in STAGES]


def build(cfg: BuildConfig, log: Log = print) -> BuildResult:
    """Run every stage; return the records and the exit code (see the module docstring).

    Raises:
        DeployError: the build failed (the FP32 ONNX, an output error, ``--strict`` with a withheld artifact).
    """
    from .io import ensure_out_dir, remove_stale_temporaries
    from .reuse import REPORT_NAME

    cfg.export.check_source()
    out = ensure_out_dir(cfg.export.out)
    removed = remove_stale_temporaries(out)
    if removed:
        log(f"removed {len(removed)} temporary file(s) or folder(s) a killed earlier build left in {out}")
    b = Build(cfg, log)
    t0 = time.perf_counter()
    for stage in _stages():
        stage.run(b)
    records = tuple(b.records.values())
    withheld = [r for r in records if r.status is Status.WITHHELD]
    code = (EXIT_FAILED if cfg.strict else EXIT_WITHHELD) if withheld else EXIT_OK  # the report says what the run exits
    log(f"\nbuild {'finished with withheld artifacts' if withheld else 'done'} in {time.perf_counter() - t0:.1f}s "
        f"({sum(r.delivered for r in records)} delivered, {len(withheld)} withheld, "
        f"{sum(r.status is Status.SKIPPED for r in records)} skipped):\n" + table(list(records)))
    report = write_report(out / REPORT_NAME, list(records), {
        "stem": cfg.export.stem, "source": str(cfg.export.source), "exit_code": code,
        "seconds": round(time.perf_counter() - t0, 1), "argv": list(cfg.argv or ())})
    log(f"report: {report}")
    if withheld and cfg.strict:
        raise ArtifactWithheld(f"--strict: {len(withheld)} artifact(s) withheld: "
                               + "; ".join(f"{r.label}: {r.reason}" for r in withheld) + f" (report: {report})",
                               "see the fixes in the table above, or drop --strict to keep the delivered artifacts")
    return BuildResult(records, code, report)


def build_argv(argv: Sequence[str], log: Log = print) -> BuildResult:
    """Build from command-line flags, as ``python -m exporters.build`` does, but raising instead of exiting
    (for benchmarks and scripts that build as a user would)."""
    from dataclasses import replace

    from .cli import build_parser, config_from_args

    return build(replace(config_from_args(build_parser().parse_args(list(argv))), argv=tuple(argv)), log)


def main(argv: list[str] | None = None) -> int:
    from dataclasses import replace

    from .cli import build_parser, config_from_args

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    result: list[BuildResult] = []

    def action() -> None:
        result.append(build(replace(config_from_args(args), argv=tuple(argv))))

    code = run_cli(action, args.debug, "interrupted: nothing half-written was left in the output folder")
    return result[0].exit_code if code == 0 and result else code


__all__ = ["Build", "BuildResult", "Outcome", "build", "build_argv", "main", "STAGES", "EXIT_OK", "EXIT_FAILED",
           "EXIT_WITHHELD"]

if __name__ == "__main__":
    sys.exit(main())
