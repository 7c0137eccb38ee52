"""Render a results dict (the content of results.json) as rich tables, Markdown and a PNG chart."""
from __future__ import annotations

import json
from pathlib import Path

from .candidates import OURS
from .env import describe

STAGE_LABELS = (("preprocess", "pre"), ("inference", "infer"), ("postprocess", "post"))


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _x(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}×"


def _map(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def _peers(group: dict) -> list[str]:
    return [c["name"] for c in group["candidates"] if c["role"] != OURS and not c.get("skipped")]


def _ratio(group: dict, ours: str, peer: str) -> float | None:
    for r in group["ratios"]:
        if r["ours"] == ours and r["peer"] == peer:
            return r["end_to_end"]
    return None


def table_rows(group: dict, accuracy: bool, why: bool = True) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a group's main table (one row per candidate; skipped ones say why, or
    "skipped (below)" when ``why`` is false and the reason is printed under the table).

    ``e2e ms`` is the median over rounds of each round's median; ``rounds`` the fastest and slowest round."""
    peers = _peers(group)
    head = ["candidate", "file", "input", "pre ms", "infer ms", "post ms", "e2e ms", "rounds min–max", "e2e p95", "FPS"]
    head += [f"× {p}" for p in peers]
    head += ["mAP50", "mAP50-95"] if accuracy else []
    rows = []
    for c in group["candidates"]:
        if c.get("skipped"):
            rows.append([c["name"], c["file"], c.get("asked", ""), f"not run: {c['skipped']}" if why else
                         "not run (below)"] + [""] * (len(head) - 4))
            continue
        s = c["per_frame_ms"]
        e2e = s["end_to_end"]
        row = [c["name"], c["file"], c.get("input", "")] + [_ms(s[k]["p50"]) for k, _ in STAGE_LABELS]
        row += [_ms(e2e["p50"]), f"{_ms(e2e.get('min'))}–{_ms(e2e.get('max'))}", _ms(e2e["p95"]), f"{c['fps']:.1f}"]
        row += [_x(_ratio(group, c["name"], p)) if c["role"] == OURS else "" for p in peers]
        row += [_map(c.get("map50")), _map(c.get("map50_95"))] if accuracy else []
        rows.append(row)
    return head, rows


def percentile_rows(group: dict) -> tuple[list[str], list[list[str]]]:
    head = ["candidate", "end-to-end median of each round", "spread", "preprocess p50 / p95 / p99",
            "inference p50 / p95 / p99", "postprocess p50 / p95 / p99", "end-to-end p50 / p95 / p99 (all calls)"]
    rows = []
    for c in group["candidates"]:
        if c.get("skipped"):
            continue
        s = c["per_frame_ms"]
        e2e = s["end_to_end"]
        rows.append([c["name"], " ".join(_ms(x) for x in e2e.get("rounds", [])), f"{e2e.get('spread_pct', 0):.1f} %"]
                    + [" / ".join(_ms(s[k][q]) for q in ("p50", "p95", "p99"))
                       for k in ("preprocess", "inference", "postprocess")]
                    + [" / ".join(_ms(_pooled(e2e, q)) for q in ("p50", "p95", "p99"))])
    return head, rows


def _pooled(summary: dict, q: str) -> float:
    return summary["p50_all"] if q == "p50" and "p50_all" in summary else summary[q]


def _load_text(group: dict) -> str:
    load = group.get("load_avg") or []
    if len(load) != 2 or not all(load):
        return ""
    text = f" 1-minute load average {load[0][0]:.2f} when its timing started, {load[1][0]:.2f} when it ended."
    return text + (" BUSY: load above the core count, other work shared the machine; rerun." if group.get("busy")
                   else "")


def md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _verdict(t: dict) -> str:
    if t["ratio"] is None:
        return t["note"]
    return "met" if t["met"] else f"**missed** by {t['missed_by']:.3f} ({t['missed_by_pct']:.1f} %)"


def target_rows(targets: list[dict]) -> tuple[list[str], list[list[str]]]:
    head = ["group", "target", "limit", "measured", "verdict", "set by"]
    rows = [[t.get("group", ""), t["target"], f"{t.get('op', '<=').replace('<=', '≤').replace('>=', '≥')} "
             f"{t['limit']:.2f}", "—" if t["ratio"] is None else f"{t['ratio']:.3f}", _verdict(t), t.get("source", "")]
            for t in targets]
    return head, rows


def stream_rows(streams: list[dict]) -> tuple[list[str], list[list[str]]]:
    """One row per (candidate, cameras, pace): frames/s in all and per camera, latency, drops per camera."""
    head = ["candidate", "cameras", "pace", "workers", "input", "frames/s (all)", "frames/s per camera",
            "latency p50 ms", "latency p95 ms", "dropped per camera", "load"]
    rows = []
    for s in streams:
        if s.get("skipped"):
            rows.append([s["name"], str(s["cameras"]), s["pace"], "", "", f"not run: {s['skipped']}"] + [""] * 5)
            continue
        per = s["per_camera"]
        rows.append([s["name"], str(s["cameras"]), s["pace"], str(s.get("workers", "")), s.get("input", ""),
                     f"{s['fps_total']:.1f}", " / ".join(f"{c['fps']:.1f}" for c in per),
                     _ms(s.get("latency_p50_ms")), _ms(s.get("latency_p95_ms")),
                     " / ".join("—" if c.get("dropped") is None else str(c["dropped"]) for c in per),
                     f"{s['load_avg'][0]:.2f}" if s.get("load_avg") else ""])
    return head, rows


def settings_line(res: dict) -> str:
    s = res["settings"]
    return (f"each candidate in its own spawned process; {s['rounds']} rounds in a random order each (seed "
            f"{s['seed']}), {s['iters']} timed calls per candidate per round after {s['settle']} untimed ones, "
            f"{s['warmup']} warm-up calls after loading, {s['pause']} s between turns; batch "
            f"{','.join(map(str, s['batch']))}, conf {s['conf']}, IoU {s['iou']}, device {s['device']}")


def header(res: dict, title: str = "# Benchmark results") -> list[str]:
    """The lines every report starts with: command, date, machine, versions, and any busy warning."""
    out = [title, "", "```", res["command"], "```", "",
           f"Run {res.get('started', '?')} to {res.get('finished', '?')} (UTC) on {describe(res['env'])}.", "",
           "Versions: " + ", ".join(f"{k} {v}" for k, v in res["env"]["versions"].items()) + ".", ""]
    out += [f"**Warning: {w}.**" for w in res.get("warnings", [])] + ([""] if res.get("warnings") else [])
    return out


def markdown(res: dict) -> str:
    """results.md: the command, the machine, one table per group, the streams, the targets."""
    acc = res["settings"]["accuracy"]
    out = header(res)
    out += [f"Settings: {settings_line(res)}. Milliseconds per frame; e2e ms = the median over rounds of each "
            "round's median, with the fastest and slowest round; FPS = 1000 / e2e ms; × peer = our e2e / the "
            "peer's (below 1: ours is faster). input = the size each candidate really ran.", ""]
    for g in res["groups"]:
        out += [f"## {g['title']}", "", f"Frames: {g['frames']}." + _load_text(g)]
        out += [f"Note: {n}" for n in g.get("notes", [])]
        out += ["", md_table(*table_rows(g, acc and g.get("accuracy", False))), "",
                "<details><summary>rounds and percentiles</summary>", "", md_table(*percentile_rows(g)), "",
                "</details>", ""]
    if res.get("streams"):
        out += ["## Cameras through engine.stream vs Ultralytics predict(stream=True)", "",
                STREAMS_NOTE, "", md_table(*stream_rows(res["streams"])), ""]
    if res.get("targets"):
        out += ["## Targets", "", md_table(*target_rows(res["targets"])), ""]
    if res.get("skipped"):
        out += ["## Not run here", ""] + [f"- {s.get('name', s['file'])} ({s['file']}): {s['reason']}"
                                          for s in res["skipped"]] + [""]
    return "\n".join(out)


STREAMS_NOTE = ("Synthetic 720p cameras (clips made from the frames), each source its own capture thread. "
                "'frame rate': each clip read at its frame rate, latest frame only (a camera: frames the detector "
                "cannot keep up with are dropped); 'max rate': read as fast as they decode, nothing dropped. "
                "Latency: capture to result. Ultralytics reads several sources with LoadStreams (a .streams file, "
                "buffered: nothing dropped) at max rate only; it reports no capture time, so no latency.")


def print_tables(res: dict) -> None:
    """The tables on stdout: rich when installed, else the Markdown."""
    try:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table
    except ImportError:
        print(markdown(res))
        return
    import sys

    console = Console(width=None if sys.stdout.isatty() else 220)
    console.print(f"[bold]{escape(describe(res['env']))}[/bold]")
    console.print(escape(settings_line(res)))
    for w in res.get("warnings", []):
        console.print(f"[bold red]warning:[/bold red] {escape(w)}")
    acc = res["settings"]["accuracy"]

    def show(title: str, head: list[str], rows: list[list[str]]) -> None:
        t = Table(title=title, title_justify="left")
        for i, h in enumerate(head):
            t.add_column(h, justify="left" if i < 3 else "right", no_wrap=i == 0)
        for r in rows:
            t.add_row(*(escape(x) for x in r))
        console.print(t)

    for g in res["groups"]:
        show(f"{escape(g['title'])}\n[dim]{escape(g['frames'] + _load_text(g))}[/dim]",
             *table_rows(g, acc and g.get("accuracy", False), why=False))
        for n in g.get("notes", []):
            console.print(f"[yellow]note:[/yellow] {escape(n)}")
    if res.get("streams"):
        show("cameras through engine.stream vs Ultralytics predict(stream=True)", *stream_rows(res["streams"]))
    for tg in res.get("targets", []):
        op = "≥" if tg.get("op") == ">=" else "≤"
        where = escape(f"[{tg['group']}] target {tg['target']} ({op} {tg['limit']:.2f}, {tg.get('source', '')})")
        if tg["ratio"] is None:
            console.print(f"{where}: [yellow]{escape(tg['note'])}[/yellow]")
        else:
            v = "[green]met[/green]" if tg["met"] else f"[bold red]MISSED by {tg['missed_by']:.3f}[/bold red]"
            console.print(f"{where}: {tg['ratio']:.3f} {v}")
    for s in res.get("skipped", []):
        console.print(f"[yellow]not run:[/yellow] {escape(s.get('name', s['file']))}: {escape(s['reason'])}")


def chart(res: dict, path: Path) -> Path | None:
    """A PNG of median ms per stage per candidate, one panel per group; ``None`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    groups = [g for g in res["groups"] if any(not c.get("skipped") for c in g["candidates"])]
    if not groups:
        return None
    heights = [max(1, sum(not c.get("skipped") for c in g["candidates"])) for g in groups]
    fig, axes = plt.subplots(len(groups), 1, figsize=(10, 1.2 + 0.45 * sum(heights) + 0.9 * len(groups)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    colors = {"preprocess": "#4C72B0", "inference": "#DD8452", "postprocess": "#55A868", "overhead": "#BBBBBB"}
    for ax, g in zip(axes[:, 0], groups):
        cands = [c for c in g["candidates"] if not c.get("skipped")]
        names = [c["name"] for c in cands]
        left = [0.0] * len(cands)
        for stage in ("preprocess", "inference", "postprocess", "overhead"):
            vals = [max(0.0, c["per_frame_ms"][stage]["p50"]) for c in cands]
            ax.barh(names, vals, left=left, color=colors[stage], label=stage if ax is axes[0, 0] else None)
            left = [a + b for a, b in zip(left, vals)]
        for y, c in enumerate(cands):
            e2e = c["per_frame_ms"]["end_to_end"]
            if "min" in e2e:  # the fastest and slowest round
                ax.plot([e2e["min"], e2e["max"]], [y, y], color="black", linewidth=1)
            ax.text(max(left[y], e2e.get("max", 0)), y, f" {e2e['p50']:.1f} ms  ({c.get('input', '')})", va="center",
                    fontsize=8)
        ax.invert_yaxis()
        ax.set_title(g["title"], fontsize=9, loc="left")
        ax.set_xlim(0, max(max(left), *(c["per_frame_ms"]["end_to_end"].get("max", 0) for c in cands)) * 1.3
                    if left else 1)
        ax.tick_params(labelsize=8)
    axes[-1, 0].set_xlabel("milliseconds per frame, median of round medians (overhead: wall time of a call outside "
                           "the three stages)\nline: fastest to slowest round of end to end; label: end to end "
                           "(the input size it ran)", fontsize=8)
    fig.legend(loc="upper right", fontsize=8, ncol=4)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_all(res: dict, out: Path) -> dict[str, Path]:
    """results.json, results.md and chart.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "results.json", "md": out / "results.md"}
    files["json"].write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    files["md"].write_text(markdown(res), encoding="utf-8")
    png = chart(res, out / "chart.png")
    if png:
        files["png"] = png
    return files
