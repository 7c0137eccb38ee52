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

from engine.errors import ConfigError, DeployError

from .artifacts import (ModelSource, build_ours, engine_unavailable_reason, form_of, form_rank, is_engine,
                        random_checkpoint, ultralytics_export)
from .candidates import OURS, PEER, PEERS, Candidate
from .harness import Group, native_imgsz, to_16x9
from .worker import in_fresh_process

Log = Callable[[str], None]
RANDOM_NOTE = "random weights: timing only (the model detects nothing; no mAP)"
RANDOM_FORMS = ("fp32", "ov-fp32", "ov-int8", "int8-cpu")  # of a random-weight model: the CPU's forms (ONNX Runtime, OpenVINO)
REFERENCE_FORMS = ("fp32", "int8-cpu")  # the square builds shown in the native group


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


def native_frames(frames: Frames) -> tuple[list[np.ndarray], str]:
    """The frames of the native group: the frames themselves when they share one non-square shape (a video),
    else their 16:9 center crops at 1280x720 (a camera's frame)."""
    shapes = {f.shape for f in frames.frames}
    if len(shapes) == 1 and frames.frames[0].shape[0] != frames.frames[0].shape[1]:
        return frames.frames, frames.desc
    return ([to_16x9(f) for f in frames.frames],
            f"the same {len(frames.frames)} frames, center-cropped to 16:9 and resized to 1280x720")


def _ours(path: Path, imgsz, suffix: str = "", reference: bool = False) -> Candidate:
    form, label = form_of(path)
    skip = engine_unavailable_reason() if is_engine(path) else None
    return Candidate(f"ours {form}{suffix}", OURS, form, path, tuple(imgsz), label, skip=skip, reference=reference)


def _peers(args, src: ModelSource, imgsz, dynamic: bool, log: Log, pt_imgsz=None) -> list[Candidate]:
    """The Ultralytics peers of ``--peers``, exported at ``imgsz`` and run there exactly (``rect=False``); the
    ``.pt`` at ``pt_imgsz`` with its own letterbox when given (the native group: what a .pt user gets)."""
    out = []
    for p in PEERS:
        if p.key not in args.peers:
            continue
        why = p.missing() or ("needs a labelled --data: Ultralytics calibrates its INT8 on it"
                              if p.calibrated and src.data is None and not src.random else None)
        path = src.weights
        if why is None and p.export is not None:
            try:
                path = ultralytics_export(src, p, imgsz, dynamic, args.cache, args.rebuild, log)
            except DeployError as e:
                why = f"Ultralytics' export failed: {e.message}"
                log(f"{p.name}: {e}")
        size, rect = (pt_imgsz, None) if p.export is None and pt_imgsz else (imgsz, False)
        out.append(Candidate(p.name, PEER, p.key, path, tuple(size), p.label, skip=why, rect=rect))
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
        out.append(ModelSource(f"{arch}-random", random_checkpoint(arch, args.cache), None, random=True))
    return out


def _sorted_ours(files: list[Path], imgsz, random: bool, suffix: str = "", reference: bool = False) -> list[Candidate]:
    cands = [_ours(p, imgsz, suffix, reference) for p in files]
    if random:  # timing only: the INT8 TensorRT form is slow on a CPU by design and says nothing more here
        cands = [c for c in cands if c.form in RANDOM_FORMS]
    return sorted(cands, key=lambda c: form_rank(c.form))


def plan(args: argparse.Namespace, frames: Frames, log: Log) -> list[Group]:
    """Every group this run measures (building what is missing)."""
    root = args.cache
    groups: list[Group] = []
    if args.models:
        groups += _models_groups(args, frames, log)
    for src in sources(args, log):
        for b in args.batch:
            dynamic = b > 1
            built = build_ours(src, args.imgsz, dynamic, root, args.rebuild, log)
            h, w = args.imgsz
            title = (f"{src.label}, everyone at {h}x{w}, batch {b}" + (" (dynamic-batch exports)" if dynamic else "")
                     + (f" — {RANDOM_NOTE}" if src.random else ""))
            notes = list(built.notes) + ([RANDOM_NOTE] if src.random else [])
            groups.append(Group(f"{src.label} {h}x{w} b{b}", title, src.label, src.random, b, frames.frames,
                                frames.desc, _sorted_ours(built.files, args.imgsz, src.random)
                                + _peers(args, src, args.imgsz, dynamic, log),
                                imgsz=tuple(args.imgsz), data=None if src.random else src.data, notes=notes))
        if args.native and not src.random and 1 in args.batch:
            group = _native_group(args, src, frames, log)
            if group is not None:
                groups.append(group)
    return groups


def _native_group(args, src: ModelSource, frames: Frames, log: Log) -> Group | None:
    """Everyone at the rect size Ultralytics' predictor picks for the native frames (ours through a build at
    that size), plus our square FP32 and INT8 CPU form as reference rows for the rect-vs-square comparison."""
    root = args.cache
    nframes, desc = native_frames(frames)
    fh, fw = nframes[0].shape[:2]
    size = args.native if args.native != "auto" else native_imgsz((fh, fw), args.imgsz)
    if tuple(size) == tuple(args.imgsz):
        log(f"native group: {fw}x{fh} frames run at {size[0]}x{size[1]}, the size of --imgsz; no separate group")
        return None
    narrow = build_ours(src, size, False, root, args.rebuild, log)
    square = build_ours(src, args.imgsz, False, root, args.rebuild, log)
    sq = f" {args.imgsz[0]}x{args.imgsz[1]}"
    refs = [c for c in _sorted_ours(square.files, args.imgsz, False, sq, reference=True) if c.form in REFERENCE_FORMS]
    cands = _sorted_ours(narrow.files, size, False) + refs + _peers(args, src, size, False, log, pt_imgsz=args.imgsz)
    title = (f"{src.label} on {fw}x{fh} frames, everyone at {size[0]}x{size[1]} (the size Ultralytics' .pt "
             f"predictor picks for them at imgsz {max(args.imgsz)}), batch 1")
    return Group(f"{src.label} native {size[0]}x{size[1]} b1", title, src.label, False, 1, nframes, desc, cands,
                 imgsz=tuple(size), data=src.data, kind="native",
                 notes=list(narrow.notes) + [f"reference rows (ours at{sq}): the square builds on the same frames, "
                                             "for the rect-vs-square comparison"])


def _models_groups(args, frames: Frames, log: Log) -> list[Group]:
    """``--models``: the files as given, one group per input size and batch; peers from ``--weights`` when given.

    A file joins the groups of the batch sizes it takes: a dynamic-batch file every one, a static one its own.
    """
    found: list[tuple[Path, tuple[int, int], int | None]] = []
    skipped = []
    for path in args.models:
        if not path.exists():
            raise ConfigError(f"--models {path}: not found", "pass artifacts written by python -m exporters.build")
        form, _ = form_of(path)
        reason = engine_unavailable_reason() if is_engine(path) else None
        if reason:
            skipped.append(Candidate(f"ours {form}", OURS, form, path, (0, 0), skip=reason))
            continue
        shape = in_fresh_process(loaded_shape, path, args.device, name=f"reading {path.name}")
        found.append((path, *shape))  # the model's own size, from its metadata
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
            groups.append(Group(f"models {size[0]}x{size[1]} b{b}", f"--models, everyone at {size[0]}x{size[1]}, "
                                f"batch {b}", "models", False, b, frames.frames, frames.desc, cands + peers,
                                imgsz=tuple(size), data=args.data or frames.data, kind="models", notes=note))
    if not groups and skipped:
        groups.append(Group("models", "--models", "models", False, 1, frames.frames, frames.desc, skipped,
                            kind="models"))
    if not groups:
        raise ConfigError(f"none of --models takes batch {','.join(map(str, args.batch))}",
                          "export with --dynamic for batch sizes above 1, or drop --batch")
    return groups


def loaded_shape(path: Path, device: str) -> tuple[tuple[int, int], int | None]:
    """(input size, static batch or ``None`` for dynamic) of a model, as the runtime reads it (run in a fresh
    process: this one never loads a model)."""
    from engine import Detector

    from .candidates import our_options

    with Detector(path, **our_options(path, device)) as det:
        return tuple(det.imgsz), det.backend.max_batch
