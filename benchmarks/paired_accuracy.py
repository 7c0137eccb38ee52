"""mAP of any set of models on one labelled split, each against a reference, with paired-bootstrap intervals.

    python -m benchmarks.paired_accuracy --data fresh/data.yaml [--imgsz 320] --ref fp32=deploy/demo.onnx \
        --model cpu=deploy/demo.int8-cpu.onnx --model trt=deploy/demo.int8.onnx \
        --peer ov=runs/openvino/320/ultralytics_int8_openvino_model --vs cpu:ov [--bootstrap 1000] [--out r.json]

The tool behind the INT8 peer tables of ``benchmarks/RESULTS.md``: every model scores the same split with the
build's accuracy-report settings (conf 0.001, IoU 0.7, 300 boxes, COCO mAP). ``--ref`` and ``--model`` run
through our ``Detector`` (an ``.onnx`` file or an OpenVINO IR), ``--peer`` through Ultralytics ``predict`` (its
``.pt`` or one of its exports). Each model's drop against the reference (points of mAP50-95, positive: it
loses) and each ``--vs A:B`` difference (A's mAP minus B's, positive: A is ahead) come with 90 % and 95 %
intervals over the same resampled images for every model, so they are paired. The interval covers the draw of
the scored images, not of the calibration images; on 600 images it is about ±0.3 point wide, so a lead of a
tenth or two needs a few thousand (``scripts/make_demo.py --data-only --n-val N`` makes more).
"""
from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.cli import run_cli
from engine.errors import ConfigError, DatasetError, ModelLoadError

LEVELS = (90, 95)
NAME = re.compile(r"[A-Za-z0-9_.+-]+")


@dataclass(frozen=True)
class Entry:
    """One model to score: its name in the tables, its path, and whether Ultralytics runs it."""

    name: str
    path: Path
    peer: bool = False


@dataclass(frozen=True)
class Interval:
    """A difference in points of mAP50-95 with its paired-bootstrap intervals (``{level: (low, high)}``)."""

    value: float
    bounds: dict[int, tuple[float, float]]

    def text(self) -> str:
        return f"{_pts(self.value)} " + " ".join(f"[{_pts(lo)}, {_pts(hi)}]" for lo, hi in self.bounds.values())

    def as_json(self) -> dict:
        return {"points": self.value, "intervals": {str(k): v for k, v in self.bounds.items()}}

    @classmethod
    def from_json(cls, d: dict) -> "Interval":
        return cls(d["points"], {int(k): tuple(v) for k, v in d["intervals"].items()})


def _pts(v: float) -> str:
    """Points with a sign and two decimals; a value that rounds to zero is +0.00, never -0.00."""
    text = f"{v:+.2f}"
    return "+0.00" if text == "-0.00" else text


def entry(spec: str, peer: bool = False, flag: str = "--model") -> Entry:
    """``NAME=PATH`` (given with ``flag``) as an :class:`Entry`; the path must exist."""
    name, sep, path = spec.partition("=")
    if not sep or not NAME.fullmatch(name) or not path:
        raise ConfigError(f"{flag} '{spec}' is not NAME=PATH",
                          f"name it with letters, digits and _ . + - only, e.g. {flag} cpu=deploy/demo.int8-cpu.onnx")
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"{p} not found (model '{name}')", "pass the path of a built model or export")
    if not peer and p.suffix == ".pt":
        raise ConfigError(f"{flag} {spec}: a .pt runs only through Ultralytics",
                          f"pass it with --peer {name}=...; --ref and --model take our .onnx files and OpenVINO IRs")
    return Entry(name, p, peer)


def preflight(entries: list[Entry], imgsz: int | None, names: tuple[str, ...]) -> int:
    """Load every model once before any is scored: a file that cannot run, was built for another size or
    knows another number of classes fails here, not after minutes of scoring the ones before it. Returns
    the size they run at (``imgsz``, or the reference's when ``None``: the reference is ours and first)."""
    for e in entries:
        if e.peer:
            from exporters.ultralytics_ref import UltralyticsPredictor

            try:  # one frame too: Ultralytics loads some exports only at the first predict
                pred = UltralyticsPredictor(e.path, imgsz)
                pred(np.zeros((imgsz, imgsz, 3), np.uint8))
                model_names = pred.names
            except Exception as err:  # Ultralytics raises many types for files it cannot run
                raise ModelLoadError(f"Ultralytics cannot run {e.path} (model '{e.name}'): {err}",
                                     "pass an Ultralytics .pt or export (an .onnx it wrote, a folder ending "
                                     "_openvino_model); our own files go with --model") from None
        else:
            from engine import Detector

            with Detector(e.path, device="cpu") as det:
                model_names, size = det.names, det.imgsz
            imgsz = size[0] if imgsz is None else imgsz
            if size != (imgsz, imgsz):
                raise ConfigError(f"{e.path} (model '{e.name}') runs at {size[0]}x{size[1]}, not --imgsz {imgsz}",
                                  f"pass --imgsz {size[0]} if square, or the file built at {imgsz}")
        if names and len(model_names) != len(names):
            raise ConfigError(f"{e.path} (model '{e.name}') knows {len(model_names)} classes, the data "
                              f"{len(names)} ({', '.join(names[:6])}{', ...' if len(names) > 6 else ''})",
                              "score each model on data of its own classes")
    return imgsz


def pairs(specs: list[str], names: list[str]) -> list[tuple[str, str]]:
    """``A:B`` specs as name pairs, each name one of ``names``."""
    out = []
    for spec in specs:
        a, sep, b = spec.partition(":")
        bad = [n for n in (a, b) if n not in names]
        if not sep or bad or a == b:
            raise ConfigError(f"--vs '{spec}' is not two different model names", f"use A:B with A, B among {names}")
        if (a, b) not in out:
            out.append((a, b))
    return out


def interval(value: float, samples: np.ndarray) -> Interval:
    """``value`` with the central ``LEVELS`` % ranges of the bootstrap ``samples`` (both in points)."""
    return Interval(value, {lv: (float(np.percentile(samples, (100 - lv) / 2)),
                                 float(np.percentile(samples, 100 - (100 - lv) / 2))) for lv in LEVELS})


def measure(data: Path, imgsz: int, entries: list[Entry], vs: list[tuple[str, str]], rounds: int,
            split: str = "val", log=print) -> dict:
    """Score every entry (the first is the reference) and return the report."""
    from benchmarks.openvino_accuracy import bootstrap_maps, detections
    from engine.eval.datasets import load_split
    from engine.eval.evaluate import evaluate_detections

    items = load_split(data, split)
    if not any(len(i.boxes) for i in items):
        raise DatasetError(f"the {split} split of {data} has no labelled object in its {len(items)} images",
                           "score on a labelled split (YOLO .txt labels beside images/ in labels/)")
    dets, rows = {}, {}
    for e in entries:
        dets[e.name] = detections("peer" if e.peer else "ours", e.path, imgsz, items)
        r = evaluate_detections(items, dets[e.name])
        rows[e.name] = {"file": str(e.path), "runner": "Ultralytics" if e.peer else "ours",
                        "map50": r.map50, "map50_95": r.map50_95}
        log(f"{e.name}: mAP50-95 {r.map50_95:.4f} ({e.path})")
    boot = bootstrap_maps(items, dets, rounds)
    ref = entries[0].name
    for e in entries[1:]:
        d = interval(100 * (rows[ref]["map50_95"] - rows[e.name]["map50_95"]), 100 * (boot[ref] - boot[e.name]))
        rows[e.name]["drop"] = d.as_json()
    diffs = []
    for a, b in vs:
        d = interval(100 * (rows[a]["map50_95"] - rows[b]["map50_95"]), 100 * (boot[a] - boot[b]))
        diffs.append({"a": a, "b": b, **d.as_json()})
    return {"data": str(data), "split": split, "images": len(items), "imgsz": imgsz, "bootstrap": rounds,
            "reference": ref, "models": rows, "differences": diffs}


def table(report: dict) -> str:
    """The report as Markdown: one row per model, then one line per ``--vs`` pair."""
    levels = " ".join(f"[{lv} %]" for lv in LEVELS)
    lines = [f"{report['images']} images of {report['data']} ({report['split']}), imgsz {report['imgsz']}; "
             f"points of mAP50-95, paired bootstrap ({report['bootstrap']} resamples)", "",
             f"| model | runs on | file | mAP50 | mAP50-95 | drop vs {report['reference']} (positive: loses) "
             f"{levels} |",
             "|---|---|---|---|---|---|"]
    for name, r in report["models"].items():
        drop = r.get("drop")
        cell = Interval.from_json(drop).text() if drop else "reference"
        file = r["file"].replace("|", "\\|")
        lines.append(f"| {name} | {r['runner']} | {file} | {r['map50']:.4f} | {r['map50_95']:.4f} | {cell} |")
    for d in report["differences"]:
        lines.append(f"\n{d['a']} minus {d['b']} (positive: {d['a']} ahead): {Interval.from_json(d).text()}")
    return "\n".join(lines)


def out_path(out: Path | None) -> Path | None:
    """``--out`` checked before any scoring: not a folder, its folder made (or a :class:`ConfigError`)."""
    if out is None:
        return None
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder", f"name a file, e.g. --out {out / 'paired_accuracy.json'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out}: its folder cannot be made ({e.strerror})", "name a file in a writable folder")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="labelled data.yaml (its --split is scored)")
    ap.add_argument("--split", default="val", help="split scored (default: val)")
    ap.add_argument("--imgsz", type=int, help="square size every model runs at (default: the reference's); "
                                              "our files must have been built at it")
    ap.add_argument("--ref", required=True, help="NAME=PATH of the reference (ours, e.g. the FP32 ONNX)")
    ap.add_argument("--model", action="append", default=[], help="NAME=PATH run by our Detector (repeatable)")
    ap.add_argument("--peer", action="append", default=[], help="NAME=PATH run by Ultralytics (repeatable)")
    ap.add_argument("--vs", action="append", default=[], help="A:B, report A's mAP minus B's (repeatable)")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default: 1000)")
    ap.add_argument("--out", type=Path, help="also write the report as JSON here")
    ap.add_argument("--debug", action="store_true", help="full tracebacks")
    args = ap.parse_args(argv)

    def run() -> int:
        from engine.eval.datasets import read_data_yaml

        entries = ([entry(args.ref, flag="--ref")] + [entry(s) for s in args.model]
                   + [entry(s, peer=True, flag="--peer") for s in args.peer])
        names = [e.name for e in entries]
        if len(set(names)) != len(names):
            raise ConfigError(f"model names repeat: {names}", "give each --ref/--model/--peer its own NAME")
        if args.bootstrap < 100:
            raise ConfigError(f"--bootstrap {args.bootstrap} is too few resamples", "use 100 or more (default 1000)")
        if args.imgsz is not None and args.imgsz < 32:
            raise ConfigError(f"--imgsz {args.imgsz} is not an inference size",
                              "pass the size the models were built at")
        vs = pairs(args.vs, names)
        out = out_path(args.out)
        classes = read_data_yaml(args.data).names if args.data.suffix in (".yaml", ".yml") else ()
        imgsz = preflight(entries, args.imgsz, classes)
        report = measure(args.data, imgsz, entries, vs, args.bootstrap, args.split)
        print(table(report))
        if out is not None:
            from exporters.io import write_bytes_atomic

            write_bytes_atomic(out, json.dumps(report, indent=1).encode())
        return 0

    return run_cli(run, args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
