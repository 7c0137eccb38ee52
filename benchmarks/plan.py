"""From the command line to groups of candidates: which models, which files, which frames.

Building happens here (through :mod:`benchmarks.artifacts`, cached), so after planning every
candidate's file exists and only the timing is left.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from engine.errors import ConfigError

from .artifacts import (ModelSource, build_ours, engine_unavailable_reason, form_of, form_rank, is_engine,
                        random_checkpoint, ultralytics_onnx)
from .candidates import OURS, PEER, PEER_ONNX, PEER_PT, Candidate
from .harness import Group, to_16x9

Log = Callable[[str], None]
RANDOM_NOTE = "random weights: timing only (the model detects nothing; no INT8 gate, no mAP)"
WIDE_FORMS = ("fp32", "int8-cpu")  # the forms compared on 16:9 frames at both input sizes


@dataclass
class Frames:
    frames: list[np.ndarray]
    desc: str
    data: Path | None  # labelled data the frames come from, if any


def load_frames(args: argparse.Namespace) -> Frames:
    """The frames every candidate runs on, decoded once up front (decoding is never timed)."""
    from engine.eval.datasets import list_images, read_data_yaml, read_image
    from exporters.config import DEMO_DATA, DEMO_DIR

    n = args.max_frames
    if args.video:
        import cv2

        cap = cv2.VideoCapture(str(args.video))
        frames = []
        while len(frames) < n:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(f)
        cap.release()
        if not frames:
            raise ConfigError(f"--video {args.video}: no frame could be read", "pass a video file OpenCV can open")
        h, w = frames[0].shape[:2]
        return Frames(frames, f"{len(frames)} frames of {args.video} ({w}x{h})", None)
    if args.images:
        src, data = args.images, None
    elif args.data:
        src, data = read_data_yaml(args.data).splits.get("val"), args.data
        if not src:
            raise ConfigError(f"--data {args.data} has no val split", "add 'val:' to it, or pass --images DIR")
    else:
        src, data = DEMO_DIR / "val" / "images", DEMO_DATA
    files = list_images(src)[:n]
    if not files:
        raise ConfigError(f"no images in {src}", "pass --images with a folder of images, or --video FILE")
    frames = [read_image(p) for p in files]
    sizes = sorted({f"{f.shape[1]}x{f.shape[0]}" for f in frames})
    where = args.images or (f"val split of {Path(args.data).name}" if args.data else "the demo val set")
    return Frames(frames, f"{len(frames)} images from {where} (sizes {', '.join(sizes[:4])}"
                          f"{', ...' if len(sizes) > 4 else ''})", data)


def _ours(path: Path, imgsz, suffix_name: bool = False) -> Candidate:
    form, label = form_of(path)
    name = f"ours {form}" + (f" {imgsz[0]}x{imgsz[1]}" if suffix_name else "")
    skip = engine_unavailable_reason() if is_engine(path) else None
    return Candidate(name, OURS, form, path, imgsz, label, skip=skip)


def _peers(args, src: ModelSource, imgsz, dynamic: bool, log: Log) -> list[Candidate]:
    import importlib.util

    from engine.errors import BackendUnavailableError

    if args.peers and importlib.util.find_spec("ultralytics") is None:
        raise BackendUnavailableError("the Ultralytics peers need the 'ultralytics' package",
                                      "pip install -e .[export,bench], or pass --peers none")
    out = []
    if "pt" in args.peers:
        out.append(Candidate(PEER_PT, PEER, "pt", src.weights, imgsz, "Ultralytics predict, PyTorch .pt"))
    if "onnx" in args.peers:
        onnx = ultralytics_onnx(src, imgsz, dynamic, args.out / "artifacts", args.rebuild, log)
        out.append(Candidate(PEER_ONNX, PEER, "onnx", onnx, imgsz, "Ultralytics predict, its own ONNX export"))
    return out


def sources(args: argparse.Namespace, log: Log) -> list[ModelSource]:
    """The demo (when nothing else is named), the user's weights, and the random-weight archs."""
    from exporters.config import DEMO_DATA, DEMO_WEIGHTS

    out = []
    if args.demo:
        out.append(ModelSource("demo", DEMO_WEIGHTS, DEMO_DATA))
    if not args.models:
        for w in args.weights:
            if not w.is_file():
                raise ConfigError(f"--weights {w}: file not found", "pass an Ultralytics detect .pt")
            out.append(ModelSource(w.stem, w, args.data))
    for arch in args.arch:
        log(f"random-weight model: {arch}.yaml (seed 0)")
        out.append(ModelSource(f"{arch}-random", random_checkpoint(arch, args.out / "artifacts"), None, random=True))
    return out


def plan(args: argparse.Namespace, frames: Frames, log: Log) -> list[Group]:
    """Every group this run measures (building what is missing)."""
    root = args.out / "artifacts"
    groups: list[Group] = []
    if args.models:
        groups += _models_groups(args, frames, log)
    for src in sources(args, log):
        for b in args.batch:
            dynamic = b > 1
            built = build_ours(src, args.imgsz, dynamic, root, args.rebuild, log)
            ours = sorted((_ours(p, args.imgsz) for p in built.files), key=lambda c: form_rank(c.form))
            h, w = args.imgsz
            title = f"{src.label} at {h}x{w}, batch {b}" + (" (dynamic-batch export)" if dynamic else "")
            notes = list(built.notes) + ([RANDOM_NOTE] if src.random else [])
            data = src.data if not src.random else None
            groups.append(Group(f"{src.label} {h}x{w} b{b}", title + (f" — {RANDOM_NOTE}" if src.random else ""),
                                src.label, src.random, b, frames.frames, frames.desc,
                                ours + _peers(args, src, args.imgsz, dynamic, log), data=data, notes=notes))
        if args.wide and not src.random and 1 in args.batch:
            groups.append(_wide_group(args, src, frames, log))
    return groups


def _wide_group(args, src: ModelSource, frames: Frames, log: Log) -> Group:
    """Our square and 16:9 inputs (and the peers at the square size) on 16:9 versions of the frames."""
    root = args.out / "artifacts"
    wide = args.wide
    square = build_ours(src, args.imgsz, False, root, args.rebuild, log)
    narrow = build_ours(src, wide, False, root, args.rebuild, log)
    cands = []
    for form in WIDE_FORMS:
        for built, size in ((square, args.imgsz), (narrow, wide)):
            hit = [p for p in built.files if form_of(p)[0] == form]
            if hit:
                cands.append(_ours(hit[0], size, suffix_name=True))
    peers = _peers(args, src, args.imgsz, False, log)
    for p in peers:
        p.name += f" {args.imgsz[0]}x{args.imgsz[1]}"
    wide_frames = [to_16x9(f) for f in frames.frames]
    h, w = args.imgsz
    title = f"{src.label} on 16:9 frames (1280x720): {wide[0]}x{wide[1]} input vs {h}x{w}, batch 1"
    return Group(f"{src.label} 16:9 b1", title, src.label, False, 1, wide_frames,
                 f"the same {len(wide_frames)} frames, center-cropped to 16:9 and resized to 1280x720", cands + peers,
                 data=src.data, kind="wide", notes=list(narrow.notes))


def _models_groups(args, frames: Frames, log: Log) -> list[Group]:
    """``--models``: the files as given, one group per input size and batch; peers from ``--weights`` when given.

    A file joins the groups of the batch sizes it takes: a dynamic-batch file every one, a static one its own.
    """
    found: list[tuple[Path, tuple[int, int], int | None]] = []
    skipped = []
    for path in args.models:
        if not path.exists():  # a file, or an OpenVINO IR folder
            raise ConfigError(f"--models {path}: file not found", "pass artifacts written by python -m exporters.build")
        form, _ = form_of(path)
        reason = engine_unavailable_reason() if is_engine(path) else None
        if reason:
            skipped.append(Candidate(f"ours {form}", OURS, form, path, (0, 0), skip=reason))
            continue
        found.append((path, *_loaded_shape(path, args.device)))  # the model's own size, from its metadata
    src = ModelSource(args.weights[0].stem, args.weights[0], args.data) if args.weights else None
    groups = []
    for b in args.batch:
        by_size: dict[tuple[int, int], list[Candidate]] = {}
        for path, size, static in found:
            if static is None or static == b:
                by_size.setdefault(size, []).append(_ours(path, size))
        for size, cands in by_size.items():
            names = [c.name for c in cands]
            for c in cands:  # two files of one form: tell them apart by file name
                if names.count(c.name) > 1:
                    c.name = f"{c.name} ({c.path.name})"
            if not groups:
                cands += skipped
            peers = _peers(args, src, size, b > 1, log) if src else []
            note = [] if src else ["no Ultralytics peers: pass --weights with the .pt these models came from"]
            groups.append(Group(f"models {size[0]}x{size[1]} b{b}", f"--models at {size[0]}x{size[1]}, batch {b}",
                                "models", False, b, frames.frames, frames.desc, cands + peers,
                                data=args.data or frames.data, kind="models", notes=note))
    if not groups and skipped:
        groups.append(Group("models", "--models", "models", False, 1, frames.frames, frames.desc, skipped,
                            kind="models"))
    if not groups:
        raise ConfigError(f"none of --models takes batch {','.join(map(str, args.batch))}",
                          "export with --dynamic for batch sizes above 1, or drop --batch")
    return groups


def _loaded_shape(path: Path, device: str) -> tuple[tuple[int, int], int | None]:
    """(input size, static batch or ``None`` for dynamic) of a model, as the runtime reads it."""
    from engine import Detector

    with Detector(path, **({"device": device} if path.suffix == ".onnx" else {})) as det:
        return tuple(det.imgsz), det.backend.max_batch
