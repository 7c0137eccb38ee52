"""Render a results dict (the content of results.json) as a rich table, Markdown and a PNG chart."""
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
    "skipped (below)" when ``why`` is false and the reason is printed under the table)."""
    peers = _peers(group)
    head = ["candidate", "file", "pre ms", "infer ms", "post ms", "e2e p50", "e2e p95", "e2e p99", "FPS"]
    head += [f"× {p}" for p in peers]
    head += ["mAP50", "mAP50-95"] if accuracy else []
    rows = []
    for c in group["candidates"]:
        if c.get("skipped"):
            rows.append([c["name"], c["file"], f"skipped: {c['skipped']}" if why else "skipped (below)"]
                        + [""] * (len(head) - 3))
            continue
        s = c["per_frame_ms"]
        row = [c["name"], c["file"]] + [_ms(s[k]["p50"]) for k, _ in STAGE_LABELS]
        row += [_ms(s["end_to_end"][q]) for q in ("p50", "p95", "p99")] + [f"{c['fps']:.1f}"]
        row += [_x(_ratio(group, c["name"], p)) if c["role"] == OURS else "" for p in peers]
        row += [_map(c.get("map50")), _map(c.get("map50_95"))] if accuracy else []
        rows.append(row)
    return head, rows


def percentile_rows(group: dict) -> tuple[list[str], list[list[str]]]:
    head = ["candidate", "preprocess p50 / p95 / p99", "inference p50 / p95 / p99", "postprocess p50 / p95 / p99",
            "end-to-end p50 / p95 / p99"]
    rows = []
    for c in group["candidates"]:
        if c.get("skipped"):
            continue
        s = c["per_frame_ms"]
        rows.append([c["name"]] + [" / ".join(_ms(s[k][q]) for q in ("p50", "p95", "p99"))
                                   for k in ("preprocess", "inference", "postprocess", "end_to_end")])
    return head, rows


def _load_text(group: dict) -> str:
    load = group.get("load_avg") or []
    if len(load) != 2 or not all(load):
        return ""
    return f" 1-minute load average {load[0][0]:.2f} when its timing started, {load[1][0]:.2f} when it ended."


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _target_line(t: dict) -> str:
    where = f"| {t.get('group', '')} | {t['target']} | ≤ {t['limit']:.2f} "
    if t["ratio"] is None:
        return where + f"| — | {t['note']} |"
    verdict = "met" if t["met"] else f"**missed** by {t['missed_by']:.3f} ({t['missed_by_pct']:+.1f} %)"
    return where + f"| {t['ratio']:.3f} | {verdict} |"


def settings_line(res: dict) -> str:
    s = res["settings"]
    return (f"batch {','.join(map(str, s['batch']))}, warm-up {s['warmup']} calls, {s['iters']} timed calls per "
            f"candidate in round-robin turns of {s['block']} (each after {s.get('settle', 0)} untimed), "
            f"conf {s['conf']}, IoU {s['iou']}, device {s['device']}")


def markdown(res: dict) -> str:
    """results.md: the command, the machine, one table per group, the 16:9 comparison and the targets."""
    acc = res["settings"]["accuracy"]
    out = ["# Benchmark results", "", "```", res["command"], "```", "",
           f"Machine: {describe(res['env'])}.", "",
           "Versions: " + ", ".join(f"{k} {v}" for k, v in res["env"]["versions"].items()) + ".", "",
           f"Settings: {settings_line(res)}. Milliseconds per frame; FPS = 1000 / median end-to-end; "
           "× peer = our median end-to-end / the peer's (below 1: ours is faster).", ""]
    for g in res["groups"]:
        out += [f"## {g['title']}", "", f"Frames: {g['frames']}." + _load_text(g)]
        out += [f"Note: {n}" for n in g.get("notes", [])]
        out += ["", _md_table(*table_rows(g, acc and g.get("accuracy", False))), "",
                "<details><summary>percentiles</summary>", "", _md_table(*percentile_rows(g)), "", "</details>", ""]
    if res.get("comparisons"):
        out += ["## 16:9 frames: the 16:9 input against the square one", "",
                "| comparison | group | ratio (end-to-end p50) |", "|---|---|---|"]
        out += [f"| {c['name']} | {c['group']} | {c['ratio']:.3f}× |" for c in res["comparisons"]]
        out += [""]
    if res.get("targets"):
        out += ["## Targets (issue 8)", "", "| group | target | limit | measured | verdict |", "|---|---|---|---|---|"]
        out += [_target_line(t) for t in res["targets"]] + [""]
    if res.get("skipped"):
        out += ["## Not run here", ""] + [f"- {s['file']}: {s['reason']}" for s in res["skipped"]] + [""]
    return "\n".join(out)


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

    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(f"[bold]{describe(res['env'])}[/bold]")
    console.print(settings_line(res))
    acc = res["settings"]["accuracy"]
    for g in res["groups"]:
        head, rows = table_rows(g, acc and g.get("accuracy", False), why=False)
        t = Table(title=f"{escape(g['title'])}\n[dim]{escape(g['frames'] + _load_text(g))}[/dim]", title_justify="left")
        for i, h in enumerate(head):
            t.add_column(h, justify="left" if i < 2 else "right", no_wrap=i == 0)
        for r in rows:
            t.add_row(*r)
        console.print(t)
        for n in g.get("notes", []):
            console.print(f"[yellow]note:[/yellow] {n}")
    for c in res.get("comparisons", []):
        console.print(f"16:9 frames: {c['name']}: [bold]{c['ratio']:.3f}×[/bold]")
    for tg in res.get("targets", []):
        where = escape(f"[{tg['group']}] target {tg['target']} (≤ {tg['limit']:.2f})")
        if tg["ratio"] is None:
            console.print(f"{where}: not measured ({tg['note']})")
        else:
            v = "[green]met[/green]" if tg["met"] else f"[red]missed by {tg['missed_by']:.3f}[/red]"
            console.print(f"{where}: {tg['ratio']:.3f} {v}")
    for s in res.get("skipped", []):
        console.print(f"[yellow]not run:[/yellow] {s['file']}: {s['reason']}")


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
            ax.text(left[y], y, f" {c['per_frame_ms']['end_to_end']['p50']:.1f} ms", va="center", fontsize=8)
        ax.invert_yaxis()
        ax.set_title(g["title"], fontsize=9, loc="left")
        ax.set_xlim(0, max(left) * 1.18 if left else 1)
        ax.tick_params(labelsize=8)
    axes[-1, 0].set_xlabel("milliseconds per frame, medians (overhead: wall time of a call outside the three stages); "
                           "labels: median end-to-end")
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
