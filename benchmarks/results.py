"""From timings to the results dict (``results.json``): per group the candidates' figures, the sizes they ran,
the ratios, the machine's load and whether it was busy; the raw calls go to ``raw.json`` beside it."""
from __future__ import annotations

import os

from .candidates import OURS
from .harness import Group, GroupRun, group_ratios, ran_text, summarize_group
from .stats import busy
from .targets import verdicts

SCHEMA = 2


def _kind_fields(c) -> dict:
    """Backend and precision of our artifact, from the artifact table (how targets find our OpenVINO forms)."""
    if c.role != OURS:
        return {}
    from engine.artifacts import kind_of

    kind = kind_of(c.path)
    if kind is None:
        return {}
    return {"backend": kind.backends[0], "precision": kind.precision.value if kind.precision else None}


def group_result(g: Group, run: GroupRun) -> dict:
    """One group of results.json."""
    summary = summarize_group(g, run.times)
    cands = []
    for c in g.candidates:
        row = {"name": c.name, "role": c.role, "form": c.form, "label": c.label, "file": c.path.name,
               "path": str(c.path), "asked": f"{c.imgsz[0]}x{c.imgsz[1]}", "reference": c.reference,
               "skipped": c.skip, **_kind_fields(c)}
        if c.rect is not None:
            row["rect"] = c.rect
        if c.skip is None and c.name in summary:
            text, exact = ran_text(run.sizes[c.name], g.imgsz if not c.reference else c.imgsz)
            row.update(summary[c.name], input=text, worker=run.info.get(c.name, {}),
                       ran={f"{h}x{w}": n for (h, w), n in run.sizes[c.name].items()})
            if not exact:
                g.notes.append(f"{c.name} ran at {text}, not the group's {g.imgsz[0]}x{g.imgsz[1]}")
            acc = run.accuracy.get(c.name)
            if isinstance(acc, dict):
                row.update(map50=acc["map50"], map50_95=acc["map50_95"])
            elif isinstance(acc, str):
                g.notes.append(acc)
        cands.append(row)
    cores = os.cpu_count()
    was_busy = any(busy(x, cores) for x in run.load_avg)
    res = {"id": g.id, "title": g.title, "kind": g.kind, "model": g.model, "random_weights": g.random,
           "batch": g.batch, "imgsz": f"{g.imgsz[0]}x{g.imgsz[1]}", "frames": g.frames_desc, "notes": g.notes,
           "accuracy": any("map50" in c for c in cands), "candidates": cands,
           "ratios": group_ratios(g, summary), "load_avg": run.load_avg, "busy": was_busy, "orders": run.orders}
    res["targets"] = verdicts(res)
    return res


def raw_calls(g: Group, run: GroupRun) -> dict:
    """Every timed call of every candidate of ``g``, per round, in milliseconds per call (for raw.json)."""
    return {name: [[[t.preprocess, t.inference, t.postprocess, t.end_to_end] for t in calls] for calls in rounds]
            for name, rounds in run.times.items()}


def busy_warnings(res: dict) -> list[str]:
    """One line per part of the run that ran while the machine was busy (load above its cores)."""
    cores = res["env"].get("logical_cores")
    out = [f"group '{g['id']}': 1-minute load average {max(x[0] for x in g['load_avg'] if x):.2f} above the "
           f"{cores} cores while it was timed: other work shared the machine; rerun on a quiet machine"
           for g in res["groups"] if g.get("busy")]
    hot = [s for s in res.get("streams", []) if s.get("busy")]
    if hot:
        out.append(f"streams: {len(hot)} of {len(res['streams'])} runs saw a load average above the {cores} cores "
                   f"(up to {max(s['load_avg'][0] for s in hot):.2f}); rerun on a quiet machine")
    for when in ("load_avg_start", "load_avg_end"):
        load = res["env"].get(when)
        if busy(load, cores):
            out.append(f"the machine's load average was {load[0]:.2f} at the {when.split('_')[-1]} of the run, "
                       f"above its {cores} cores: the figures are not trustworthy; rerun on a quiet machine")
    return out
