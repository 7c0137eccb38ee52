"""``python -m benchmarks.refresh``: regenerate the measured sections of ``benchmarks/RESULTS.md``, one run each.

Each section of :data:`SECTIONS` is one run of the commands that measure it (in ``--out/<key>``), and its
block in RESULTS.md (between ``<!-- refresh:KEY begin -->`` and ``<!-- refresh:KEY end -->``) is replaced by
what that run printed or wrote, under a line giving the commands, the date, the machine, the library
versions and the 1-minute load average before and after (with a warning where it was above the core
count). A step that fails replaces the block with the failure, never leaves the old figures standing.
Text outside the blocks (the analysis) is left alone. ``python -m benchmarks.run``'s chart is copied to
``benchmarks/charts/`` and its ``results.json`` and ``raw.json`` to ``benchmarks/results/``.

    python -m benchmarks.refresh                    # every section this machine can run (not the slow ones)
    python -m benchmarks.refresh --sections run,triton
    python -m benchmarks.refresh --all --dry-run    # what would run, and roughly how long

Run it on a quiet machine: it measures speed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .env import describe, environment, gpus, load_average
from .stats import busy

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "RESULTS.md"
STDOUT = "stdout"

# files several sections use, built once per refresh (the demo at its training size, 320)
RESOURCES = {
    "deploy": ("-m", "exporters.build", "--out", "{root}/deploy", "--engine", "none"),
    "served": ("-m", "exporters.build", "--dynamic", "--no-int8", "--no-fp16", "--no-end2end", "--engine", "none",
               "--out", "{root}/served"),
}


@dataclass(frozen=True)
class Section:
    """One block of RESULTS.md and the run that fills it.

    Attributes:
        key: the block's name in the markers.
        title: what it measures.
        steps: command lines (after ``python``); ``{out}``: this section's folder, ``{root}``: the refresh's.
        report: the file (under ``{out}``) whose Markdown fills the block, or :data:`STDOUT` (the steps' output).
        uses: :data:`RESOURCES` it needs.
        needs: ``"triton"`` (the serving venv) or ``"gpu"`` (an NVIDIA GPU), ``None``: any machine.
        slow: left out unless ``--all``.
        minutes: roughly how long it takes on the 2-core machine, builds included.
        missed_rc: the exit code by which the last step says it measured and a target was missed (selfcheck's
            1: a candidate disagreed): the block keeps the figures and says so, rather than "not measured".
    """

    key: str
    title: str
    steps: tuple[tuple[str, ...], ...]
    report: str = STDOUT
    uses: tuple[str, ...] = ()
    needs: str | None = None
    slow: bool = False
    minutes: int = 5
    missed_rc: int | None = None


SECTIONS: tuple[Section, ...] = (
    Section("run", "our artifacts beside Ultralytics (python -m benchmarks.run)",
            (("-m", "benchmarks.run", "--accuracy", "--no-progress", "--out", "{out}", "--cache", "{root}/cache"),),
            "results.md", minutes=50),
    Section("selfcheck", "the harness against each candidate alone (python -m benchmarks.selfcheck)",
            (("-m", "benchmarks.selfcheck", "--no-progress", "--rounds", "9", "--iters", "30", "--out", "{out}",
              "--cache", "{root}/cache"),),
            "selfcheck.md", minutes=14, missed_rc=1),
    Section("runtime", "stage speed: letterbox and NMS beside Ultralytics'",
            (("-m", "benchmarks.runtime_speed", "--iters", "300"),), minutes=2),
    Section("int8-accuracy", "the demo's accuracy report (python -m exporters.build, 320)",
            (), "{root}/deploy/demo.accuracy.md", uses=("deploy",), minutes=4),
    Section("int8-speed", "CPU speed of each precision, one detector and a pool of two; INT8 breakdown",
            (("-m", "benchmarks.int8_speed", "--deploy", "{root}/deploy"),
             ("-m", "benchmarks.int8_speed", "--deploy", "{root}/deploy", "--workers", "2"),
             ("-m", "benchmarks.int8_breakdown", "--deploy", "{root}/deploy")), uses=("deploy",), minutes=12),
    Section("openvino-speed", "our OpenVINO IRs vs Ultralytics' OpenVINO predict (python -m benchmarks.openvino_speed)",
            (("-m", "benchmarks.openvino_speed", "--imgsz", "320,640", "--streams", "4", "--out", "{out}"),),
            minutes=15),
    Section("triton", "served throughput (scripts/triton_load.py)",
            (("scripts/triton_load.py", "--model", "{root}/served/demo.onnx", "--log-dir", "{out}", "--json",
              "{out}/triton.json", "--md", "{out}/triton.md"),), "triton.md", uses=("served",), needs="triton",
            minutes=10),
    Section("soak", "a 10,000-frame soak of engine.stream (scripts/soak_stream.py)",
            (("scripts/soak_stream.py", "--json", "{out}/soak.json"),), slow=True, minutes=15),
    Section("gpu-kernels", "CUDA kernels (python -m benchmarks.gpu_kernels)",
            (("-m", "benchmarks.gpu_kernels", "--iters", "200"),), needs="gpu", minutes=3),
)
# the TensorRT engines (python -m benchmarks.verify) and the builder's times are measured by hand on a GPU machine


def unavailable(section: Section) -> str | None:
    """Why ``section`` cannot run on this machine, or ``None``."""
    if section.needs == "triton" and not (ROOT / ".venv-triton" / "bin" / "python").exists():
        return "no .venv-triton (bash .ci/setup_triton.sh)"
    if section.needs == "gpu" and not gpus():
        return "no NVIDIA GPU"
    return None


def _fill(parts: tuple[str, ...], out: Path, root: Path) -> list[str]:
    return [p.format(out=out, root=root) for p in parts]


def _run(argv: list[str], log: Path) -> tuple[int, str]:
    """``python ARGV`` from the repository root; its output is appended to ``log`` and returned."""
    env = dict(os.environ, YOLO_OFFLINE="1", PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT),
                                                                                      os.environ.get("PYTHONPATH")])))
    print("$ python " + shlex.join(argv), file=sys.stderr, flush=True)
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"$ python {shlex.join(argv)}\n{proc.stdout}\n{proc.stderr}\n")
    return proc.returncode, proc.stdout


def demote(markdown: str, levels: int = 2) -> str:
    """The report's headings ``levels`` deeper (its ``# title`` dropped), to sit inside a RESULTS.md section."""
    out = []
    for line in markdown.splitlines():
        m = re.match(r"^(#+) ", line)
        if m and len(m.group(1)) == 1:
            continue
        out.append("#" * levels + line if m else line)
    return "\n".join(out).strip()


SETTLE_MAX_S, SETTLE_POLL_S = 180.0, 5.0


def settle(max_s: float = SETTLE_MAX_S, sleep=time.sleep, load=load_average) -> list[float] | None:
    """Wait (at most ``max_s``) until the 1-minute load average is under half the cores, so that a section
    does not start in the previous one's wake: the load average decays over about a minute, and a 2-core
    benchmark that ran a moment ago reads as "busy". Returns the load it starts at."""
    limit = (os.cpu_count() or 1) / 2
    waited, now = 0.0, load()
    while now and now[0] >= limit and waited < max_s:
        sleep(SETTLE_POLL_S)
        waited += SETTLE_POLL_S
        now = load()
    return now


def run_section(section: Section, root: Path, built: set[str]) -> str:
    """Run ``section`` and return its block's Markdown (the failure, if a step failed)."""
    from exporters.build import EXIT_OK, EXIT_WITHHELD

    out = root / section.key
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    log = out / "refresh.log"
    env, started = environment(), dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    commands, printed, failed, missed = [], [], None, False
    for name in section.uses:
        if name not in built:
            argv = _fill(RESOURCES[name], out, root)
            commands.append(argv)
            rc, _ = _run(argv, log)
            if rc not in (EXIT_OK, EXIT_WITHHELD):  # 3: the build finished and its gate withheld an artifact
                # (the demo's INT8 TensorRT form on its 100 val images); the sections read what it delivered
                failed = (argv, rc)
                break
            built.add(name)
    for step in section.steps if failed is None else ():
        argv = _fill(step, out, root)
        commands.append(argv)
        rc, text = _run(argv, log)
        printed.append(text)
        if rc and not (rc == section.missed_rc and step is section.steps[-1]):
            failed = (argv, rc)
            break
        missed = bool(rc)
    load_end, cores = load_average(), os.cpu_count()
    head = (f"_Generated by `python -m benchmarks.refresh --sections {section.key}` from "
            + "; ".join(f"`python {shlex.join(c)}`" for c in commands)
            + f"; {started} (UTC); commit {env.get('commit') or 'unknown'}; {describe(env)}, at end {_load(load_end)}. Versions: "
            + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + "._")
    if busy(env["load_avg_start"], cores) or busy(load_end, cores):
        head += (f"\n\n**Warning: the load average was above the {cores} cores during this run: other work shared "
                 "the machine, so these figures are not trustworthy; rerun on a quiet machine.**")
    if failed:
        argv, rc = failed
        return head + f"\n\n**Not measured: `python {shlex.join(argv)}` exited with {rc}** (log: {log})."
    if missed:
        head += f"\n\n**Target missed: `python {shlex.join(commands[-1])}` exited with {section.missed_rc}** (see below)."
    if section.report == STDOUT:
        body = "```\n" + "\n".join(t.strip() for t in printed) + "\n```"
    else:
        body = demote(Path(section.report.format(out=out, root=root) if "{" in section.report
                           else out / section.report).read_text(encoding="utf-8"))
    return head + "\n\n" + body + _keep(section, out)


def _load(load: list[float] | None) -> str:
    return f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}" if load else "load average unknown"


def _keep(section: Section, out: Path) -> str:
    """Copy what a section keeps beside RESULTS.md (the chart, the raw figures); a link to the chart."""
    if section.key != "run":
        return ""
    (HERE / "results").mkdir(exist_ok=True)
    for name in ("results.json", "raw.json"):
        if (out / name).is_file():
            shutil.copy2(out / name, HERE / "results" / f"run.{name}")
    if not (out / "chart.png").is_file():
        return ""
    (HERE / "charts").mkdir(exist_ok=True)
    shutil.copy2(out / "chart.png", HERE / "charts" / "run.png")
    return ("\n\n![milliseconds per frame per stage, each group](charts/run.png)\n\nEvery timed call: "
            "[results/run.raw.json](results/run.raw.json); the summary: [results/run.results.json]"
            "(results/run.results.json).")


def replace_block(text: str, key: str, body: str) -> str:
    """``text`` with the block ``key`` replaced by ``body``; a ``KeyError`` if RESULTS.md has no such block."""
    begin, end = f"<!-- refresh:{key} begin -->", f"<!-- refresh:{key} end -->"
    a, b = text.find(begin), text.find(end)
    if a < 0 or b < a:
        raise KeyError(f"RESULTS.md has no block {begin} ... {end}")
    return text[:a + len(begin)] + "\n" + body.strip() + "\n" + text[b:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.refresh", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--sections", default=None, help=f"comma list of {', '.join(s.key for s in SECTIONS)} "
                                                     "(None: every one this machine can run, the slow ones with --all)")
    ap.add_argument("--all", action="store_true", help="include the slow sections (the soak)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "refresh", help="where the runs write")
    ap.add_argument("--results", type=Path, default=RESULTS, help="the file whose blocks are replaced")
    ap.add_argument("--dry-run", action="store_true", help="say what would run and how long it may take")
    args = ap.parse_args(argv)
    by_key = {s.key: s for s in SECTIONS}
    keys = [k.strip() for k in args.sections.split(",")] if args.sections else [
        s.key for s in SECTIONS if args.all or not s.slow]
    if set(keys) - set(by_key):
        print(f"error: --sections {args.sections!r}\n  fix: use some of {', '.join(by_key)}", file=sys.stderr)
        return 2
    chosen = [by_key[k] for k in keys]
    skipped = {s.key: unavailable(s) for s in chosen if unavailable(s)}
    todo = [s for s in chosen if s.key not in skipped]
    for key, why in skipped.items():
        print(f"not run here: {key} ({why})", file=sys.stderr)
    print(f"sections: {', '.join(s.key for s in todo)}; about {sum(s.minutes for s in todo)} minutes on a 2-core "
          "machine", file=sys.stderr)
    load, cores = load_average(), os.cpu_count()
    if busy(load, cores):
        print(f"warning: load average {load[0]:.2f} above the {cores} cores: the figures will say so; a quiet "
              "machine gives figures worth publishing", file=sys.stderr)
    if args.dry_run:
        for s in todo:
            for step in [RESOURCES[u] for u in s.uses] + list(s.steps):
                print(f"[{s.key}] python {shlex.join(_fill(step, args.out / s.key, args.out))}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    built: set[str] = set()
    failed = 0
    for s in todo:
        settle()
        t0 = time.monotonic()
        body = run_section(s, args.out.resolve(), built)
        failed += "**Not measured:" in body
        args.results.write_text(replace_block(args.results.read_text(encoding="utf-8"), s.key, body), encoding="utf-8")
        print(f"{s.key}: {time.monotonic() - t0:.0f} s, block written to {args.results}", file=sys.stderr)
    (args.out / "refresh.json").write_text(json.dumps({"sections": [s.key for s in todo], "skipped": skipped}) + "\n",
                                           encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
