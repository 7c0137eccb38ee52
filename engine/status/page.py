"""The status page's HTML: one page, rendered on the server with the current figures, no JS framework.

A few lines of plain JavaScript refresh each stream's picture every second and the figures and events
every two seconds (through ``/api/streams`` and ``/api/events``); without JavaScript a ``<noscript>``
refresh reloads the page every five seconds. Every value from outside (stream names, rule names, class
names) is escaped; nothing on the page changes state.
"""
from __future__ import annotations

import html
import time
import urllib.parse
from typing import Any, Mapping, Sequence

STYLE = """
body{font:14px system-ui,sans-serif;margin:16px;background:#111;color:#ddd}
h1{font-size:18px;margin:0 0 12px} h2{font-size:15px;margin:18px 0 8px}
.streams{display:flex;flex-wrap:wrap;gap:12px}
.stream{background:#1c1c1c;border:1px solid #333;border-radius:6px;padding:8px;width:480px}
.stream img{width:100%;background:#000;min-height:120px;display:block}
.stream h3{margin:0 0 6px;font-size:15px} .up{color:#6c6} .down{color:#e66}
table{border-collapse:collapse} td,th{padding:3px 8px;text-align:left;border-bottom:1px solid #2a2a2a}
.figs td:first-child{color:#999} .events img{width:120px;display:block}
.start{color:#fc6} .end{color:#8ac} .update{color:#cf8} small{color:#888} a{color:#8cf}
"""

SCRIPT = """
const frames = () => document.querySelectorAll('img.frame');
function refreshFrames() {
  frames().forEach(img => {
    if (img.dataset.busy) return;
    img.dataset.busy = '1';
    const next = new Image();
    next.onload = () => { img.src = next.src; delete img.dataset.busy; };
    next.onerror = () => { delete img.dataset.busy; };
    next.src = img.dataset.src + '?t=' + Date.now();
  });
}
function cell(row, text, cls) {
  const td = row.insertCell(); td.textContent = text; if (cls) td.className = cls; return td;
}
async function refreshData() {
  try {
    const streams = await (await fetch('/api/streams')).json();
    for (const [name, s] of Object.entries(streams)) {
      const table = document.getElementById('figs-' + name);
      if (!table) continue;
      for (const [key, value] of Object.entries(s.figures)) {
        const td = table.querySelector('td[data-key="' + key + '"]');
        if (td) td.textContent = value;
      }
      const state = document.getElementById('state-' + name);
      state.textContent = s.connected ? 'up' : 'down'; state.className = s.connected ? 'up' : 'down';
    }
    const events = await (await fetch('/api/events?n=20')).json();
    const body = document.getElementById('events');
    body.replaceChildren();
    for (const e of events) {
      const row = body.insertRow();
      const img = cell(row, '');
      if (e.snapshot) {
        const i = document.createElement('img'); i.src = '/' + encodeURI(e.snapshot); img.appendChild(i);
      }
      cell(row, new Date(e.timestamp * 1000).toLocaleTimeString());
      cell(row, e.type, e.type); cell(row, e.stream); cell(row, e.rule); cell(row, e.class_name);
      cell(row, e.score.toFixed(2)); cell(row, '#' + e.track_id);
    }
  } catch (err) { /* the stream stopped: keep the last figures */ }
}
setInterval(refreshFrames, 1000);
setInterval(refreshData, 2000);
"""

FIGURES = (("fps in / out", "fps"), ("latency p50 / p95", "latency"), ("frames out / in", "frames"),
           ("dropped", "dropped"), ("reconnects", "reconnects"), ("tracker / rules p95", "stages"))


def figures(snap: Mapping[str, Any]) -> dict[str, str]:
    """One stream's metrics snapshot as the page shows it."""
    stages = snap.get("stages_ms", {})
    stage = " / ".join(f"{stages[k]['p95']:.2f} ms" if k in stages else "-" for k in ("track", "rules"))
    return {"fps": f"{snap['fps_in']:.1f} / {snap['fps_out']:.1f}",
            "latency": f"{snap['latency_p50_ms']:.0f} / {snap['latency_p95_ms']:.0f} ms",
            "frames": f"{snap['frames_out']} / {snap['frames_in']}", "dropped": str(snap["dropped"]),
            "reconnects": str(snap["reconnects"]), "stages": stage}


def _stream(name: str, label: str, snap: Mapping[str, Any]) -> str:
    e = html.escape
    q = urllib.parse.quote(name)
    state = "up" if snap["connected"] else "down"
    rows = "".join(f'<tr><td>{e(title)}</td><td data-key="{key}">{e(figures(snap)[key])}</td></tr>'
                   for title, key in FIGURES)
    return (f'<div class="stream"><h3>{e(name)} <span id="state-{e(name)}" class="{state}">{state}</span> '
            f'<small>{e(label)}</small></h3>'
            f'<img class="frame" alt="latest frame of {e(name)}" src="/frame/{q}.jpg" data-src="/frame/{q}.jpg">'
            f'<table class="figs" id="figs-{e(name)}">{rows}</table></div>')


def _event(ev: Mapping[str, Any]) -> str:
    e = html.escape
    snap = f'<img alt="snapshot" src="/{e(urllib.parse.quote(ev["snapshot"]))}">' if ev.get("snapshot") else ""
    when = time.strftime("%H:%M:%S", time.localtime(ev["timestamp"]))
    cells = [snap, e(when), f'<span class="{e(ev["type"])}">{e(ev["type"])}</span>', e(ev["stream"]),
             e(ev["rule"]), e(ev["class_name"]), f'{ev["score"]:.2f}', f'#{int(ev["track_id"])}']
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def render(title: str, streams: Sequence[tuple[str, str, Mapping[str, Any]]], events: Sequence[Mapping[str, Any]],
           metrics_url: str | None) -> str:
    """The whole page: ``streams`` as (name, label, metrics snapshot), ``events`` newest first."""
    e = html.escape
    links = '<a href="/api/streams">/api/streams</a> · <a href="/api/events">/api/events</a>'
    if metrics_url:
        links += f' · <a href="{e(metrics_url)}">/metrics</a>'
    head = "<tr><th>snapshot</th><th>time</th><th>event</th><th>stream</th><th>rule</th><th>class</th>" \
           "<th>score</th><th>track</th></tr>"
    return ("<!doctype html><html><head><meta charset=\"utf-8\">"
            f"<title>{e(title)}</title><style>{STYLE}</style>"
            '<noscript><meta http-equiv="refresh" content="5"></noscript></head><body>'
            f"<h1>{e(title)}</h1><small>{links}</small>"
            f'<h2>Streams</h2><div class="streams">{"".join(_stream(*s) for s in streams)}</div>'
            f'<h2>Last events</h2><table class="events"><thead>{head}</thead>'
            f'<tbody id="events">{"".join(_event(ev) for ev in events)}</tbody></table>'
            f"<script>{SCRIPT}</script></body></html>")
