"""``python -m benchmarks.selfcheck``: does the harness time each candidate as it runs alone?

It times the groups of ``python -m benchmarks.run`` (same flags; by default the demo at 640, square group
only), then times every candidate again standalone: a fresh process that loads only that candidate and
times calls on the same frames with the same thresholds in one loop, nothing else alive
(:func:`benchmarks.worker.time_alone`). Each candidate runs alone ``--standalone-runs`` times (default 5),
in passes that run every candidate once each in a shuffled order, the harness's calls split between its
runs; its standalone figure is the median of its runs' medians. One continuous run catches whatever the
machine does in that minute: on the shared 2-core VM, single standalone runs of the same candidate were
up to a third slower than its usual figure while the harness, interleaved over rounds, was not (with three
runs, two slow ones of the same candidate decided its figure: five need three). A candidate
agrees when its harness end-to-end figure is within ``--tolerance`` (10 %) of its standalone figure. Output: a table on
stdout, ``selfcheck.json`` and ``selfcheck.md`` in ``--out``; exit code 1 when a candidate disagrees, and a
warning when the machine was busy (load above its cores), where no agreement can be expected.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import random
import shlex
import statistics
import sys
from pathlib import Path

from engine.cli import run_cli
from engine.errors import ConfigError

from . import report
from .env import environment, load_average
from .harness import Timing, run_group, summarize_group
from .run import build_parser, resolve
from .stats import agreement, busy, per_frame, summarize
from .worker import FrameSet, WorkerError, in_fresh_process, time_alone

SELF_DEFAULTS = {"arch": "none", "native": "none", "streams": "none"}


def parser():
    ap = build_parser()
    ap.prog = "python -m benchmarks.selfcheck"
    ap.description = ("Time the candidates with the harness, then each alone in a fresh process; report whether the "
                      "harness's end-to-end figure is within --tolerance of the standalone one.")
    ap.set_defaults(out=Path("runs/selfcheck"), **SELF_DEFAULTS)
    ap.add_argument("--tolerance", type=float, default=0.10, help="largest |harness / standalone - 1| that agrees")
    ap.add_argument("--standalone-calls", type=int, default=None, metavar="N",
                    help="timed calls of each candidate alone, over all its runs (None: rounds x iters, as many "
                         "as the harness)")
    ap.add_argument("--standalone-runs", type=int, default=5, metavar="K",
                    help="fresh processes per candidate alone, in K shuffled passes; the figure is the median of "
                         "their medians")
    return ap


def check(args, argv: list[str]) -> dict:
    from .plan import load_frames, plan

    calls = args.standalone_calls or args.rounds * args.iters
    if args.standalone_runs < 1 or calls < args.standalone_runs:  # before any work
        raise ConfigError(f"--standalone-runs {args.standalone_runs} with {calls} standalone calls",
                          "use at least one run, and at least as many calls as runs")
    per_run = split_calls(calls, args.standalone_runs)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    env = environment()
    frames = load_frames(args)
    timing = Timing(args.rounds, args.iters, args.warmup, args.settle, args.pause, args.seed)
    opts = {"conf": args.conf, "iou": args.iou, "device": args.device}
    rows = []
    for k, g in enumerate(plan(args, frames, log)):
        fs = FrameSet.write(g.frames, args.out / "frames" / f"group{k}.npy", g.frames_desc)
        try:
            log(f"{g.id}: the harness ({len(g.running())} candidates, {args.rounds} rounds)")
            run = run_group(g, fs, timing, opts, log)
            summary = summarize_group(g, run.times)
            alone = standalone(g, [c for c in g.running() if c.name in summary], fs, opts, args, per_run, log)
            for c in (c for c in g.running() if c.name in alone):
                a = alone[c.name]
                if "error" in a:
                    rows.append({"group": g.id, "name": c.name, "error": a["error"]})
                    continue
                rows.append({"group": g.id, "name": c.name, "file": c.path.name, "load_avg": a["load_avg"],
                             "harness_load_avg": run.load_avg, "standalone_runs_ms": a["runs_ms"],
                             "busy": any(busy(x, os.cpu_count()) for x in a["load_avg"] + run.load_avg),
                             **agreement(summary[c.name]["per_frame_ms"]["end_to_end"]["p50"],
                                         statistics.median(a["runs_ms"]), args.tolerance)})
        finally:
            fs.path.unlink(missing_ok=True)
    env["load_avg_end"] = load_average()
    res = {"command": "python -m benchmarks.selfcheck" + (" " + shlex.join(argv) if argv else ""), "env": env,
           "started": started, "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "tolerance": args.tolerance, "standalone_calls": calls,
           "standalone_runs": len(per_run), "standalone_calls_per_run": per_run,
           "settings": {"rounds": args.rounds, "iters": args.iters, "warmup": args.warmup, "settle": args.settle,
                        "pause": args.pause, "seed": args.seed, "imgsz": list(args.imgsz), "frames": frames.desc},
           "rows": rows}
    res["warnings"] = [f"{r['name']}: load average above the {os.cpu_count()} cores while it was timed; rerun on a "
                       "quiet machine" for r in rows if r.get("busy")]
    (args.out / "selfcheck.json").write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    (args.out / "selfcheck.md").write_text(markdown(res), encoding="utf-8")
    print(markdown(res))
    return res


def split_calls(calls: int, runs: int) -> list[int]:
    """``calls`` timed calls split over ``runs`` standalone runs as evenly as they go (the first runs take the
    remainder), so that the runs together make exactly ``calls``."""
    return [calls // runs + (k < calls % runs) for k in range(runs)]


def standalone(g, cands: list, fs: FrameSet, opts: dict, args, per_run: list[int], log) -> dict[str, dict]:
    """Each candidate of group ``g`` timed alone once per entry of ``per_run`` (that many calls), each run a
    fresh process with nothing else alive, in passes of every candidate once (shuffled per pass): ``{name:
    {"runs_ms": [median ms per frame of each run], "load_avg": [before, after each run]}}``, or ``{"error":
    ...}`` naming the run of a candidate that failed (a candidate that fails once is not timed again)."""
    rng = random.Random(args.seed)
    out: dict[str, dict] = {c.name: {"runs_ms": [], "load_avg": []} for c in cands}
    for k, calls in enumerate(per_run):
        order = list(cands)
        rng.shuffle(order)
        for c in order:
            if "error" in out[c.name]:
                continue
            log(f"{g.id}: {c.name} alone, run {k + 1} of {len(per_run)} ({calls} calls)")
            load = load_average()
            try:
                times = in_fresh_process(time_alone, c.spec(fs, g.batch, args.warmup, **opts), calls,
                                         name=f"{c.name} alone")
            except WorkerError as e:
                out[c.name] = {"error": f"run {k + 1} of {len(per_run)}: {e.message}"}
                continue
            out[c.name]["load_avg"] += [load, load_average()]
            out[c.name]["runs_ms"].append(summarize(per_frame([t.end_to_end for t in times], g.batch))["p50"])
    return out


def rows_table(res: dict) -> tuple[list[str], list[list[str]]]:
    head = ["group", "candidate", "harness e2e ms", "alone e2e ms", "harness / alone", "within ±"
            f"{res['tolerance'] * 100:.0f} %", "load (harness; alone)"]
    out = []
    for r in res["rows"]:
        if "error" in r:
            out.append([r["group"], r["name"], "", "", "", f"not run: {r['error']}", ""])
            continue
        hl, al = r.get("harness_load_avg") or [], r.get("load_avg") or []
        alone_load = [x[0] for x in al if x]
        load = (f"{'–'.join(f'{x[0]:.2f}' for x in hl if x)}; "
                + (f"{min(alone_load):.2f}–{max(alone_load):.2f}" if alone_load else "")
                + (" BUSY" if r.get("busy") else ""))
        each = r["standalone_runs_ms"]
        alone = f"{r['standalone_ms']:.2f}" + (f" ({', '.join(f'{x:.2f}' for x in each)})" if len(each) > 1 else "")
        out.append([r["group"], r["name"], f"{r['harness_ms']:.2f}", alone,
                    f"{r['ratio']:.3f}", "yes" if r["agrees"] else "**no**", load])
    return head, out


def markdown(res: dict) -> str:
    out = report.header(res, "# Harness vs standalone")
    out += [f"Harness: {res['settings']['rounds']} rounds x {res['settings']['iters']} calls per candidate, each in "
            f"its own process, random order per round (seed {res['settings']['seed']}); alone: "
            f"{res['standalone_runs']} fresh processes per candidate with nothing else running, "
            f"{'/'.join(map(str, sorted(set(res['standalone_calls_per_run']), reverse=True)))} calls each, in "
            "shuffled passes. "
            "End-to-end ms per frame: the harness's median of round medians; alone, the median of the runs' "
            "medians (each run's in brackets).", "",
            report.md_table(*rows_table(res)), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    result: dict = {}

    def go():
        result.update(check(resolve(args), argv))

    rc = run_cli(go, args.debug)
    if rc == 0 and any(r.get("agrees") is False for r in result.get("rows", [])):
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
