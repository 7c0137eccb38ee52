"""Calibration images: from a folder, a ``.txt`` list, a YOLO ``data.yaml`` split, or a video.

:func:`open_source` resolves and lists a source without decoding anything (so a cache check costs a
directory listing), applying the seeded shuffle and the count limit. :class:`CalibrationImages`
then decodes, letterboxes with the runtime's own :class:`engine.preprocess.Letterbox` (the exact
preprocessing the deployed model sees) and yields model-ready batches, skipping and counting files
that cannot be decoded.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np

from engine.eval.datasets import IMAGE_SUFFIXES, list_images, read_data_yaml, read_image
from engine.errors import CalibrationError, DatasetError
from engine.preprocess import Letterbox

from .config import CalibrationConfig
from .progress import progress

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".ts"})
_FIX_IMAGES = f"point --calib at a folder of images ({', '.join(sorted(IMAGE_SUFFIXES))}), a video, or a data.yaml"


class SourceKind(str, Enum):
    IMAGES = "images"  # a folder, a .txt list, one image, or a data.yaml split
    VIDEO = "video"


@dataclass(frozen=True)
class CalibrationSource:
    """A listed calibration source: which files (or video frames) will be read, in which order.

    Attributes:
        kind: images or video frames.
        path: the folder, list, data.yaml or video given.
        items: image paths, or frame indices of the video, after the shuffle and the count limit.
        available: how many there were before the count limit.
        description: a human-readable summary for logs and reports.
    """

    kind: SourceKind
    path: Path
    items: tuple = field(repr=False)
    available: int = 0
    description: str = ""

    def __len__(self) -> int:
        return len(self.items)

    def fingerprint(self) -> str:
        """A hash of what would be read (names, sizes and modification times, not folders: a dataset moved
        with its times keeps its cache), for the range cache's key. Other pictures under the same names
        and sizes (fixed-size frames saved as BMP), or files replaced in place, change it."""
        h = hashlib.sha256()
        if self.kind is SourceKind.VIDEO:
            h.update(f"{self.path.name}:{_stat(self.path)}:".encode())
            h.update(",".join(str(i) for i in self.items).encode())
        else:
            for p in sorted(self.items):
                h.update(f"{p.name}:{_stat(p)}\n".encode())
        return h.hexdigest()[:32]


def _stat(p: Path) -> str:
    try:
        st = p.stat()
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


def open_source(cfg: CalibrationConfig) -> CalibrationSource:
    """List ``cfg.source`` (nothing is decoded), shuffle it with ``cfg.seed`` and keep ``cfg.max_images``.

    Raises:
        CalibrationError: the source is missing, of an unknown kind, a data.yaml without the split,
            or holds no images.
    """
    src = cfg.source
    if not src.exists():
        raise CalibrationError(f"calibration source not found: {src}", _FIX_IMAGES)
    suffix = src.suffix.lower()
    if src.is_file() and suffix in VIDEO_SUFFIXES:
        return _video_source(cfg)
    if src.is_file() and suffix in (".yaml", ".yml"):
        files, where = _data_yaml_images(src, cfg.split)
    elif src.is_dir() or suffix == ".txt" or suffix in IMAGE_SUFFIXES:
        try:
            files, where = list_images(src), str(src)
        except DatasetError as e:
            raise CalibrationError(e.message, e.fix or _FIX_IMAGES) from None
    else:
        raise CalibrationError(f"calibration source {src} is not a folder, image list, data.yaml or video "
                               f"(videos: {', '.join(sorted(VIDEO_SUFFIXES))})", _FIX_IMAGES)
    if not files:
        others = [p.name for p in src.iterdir() if p.is_file()][:3] if src.is_dir() else []
        hint = f" (it has other files, e.g. {', '.join(others)})" if others else ""
        raise CalibrationError(f"no images found in {where}{hint}", _FIX_IMAGES)
    items = _pick(files, cfg.max_images, cfg.seed)
    desc = f"{len(items)} of {len(files)} images from {where}" + (f" (seed {cfg.seed})" if len(items) < len(files) else "")
    return CalibrationSource(SourceKind.IMAGES, src, tuple(items), len(files), desc)


def _pick(items: Sequence, limit: int, seed: int) -> list:
    """A seeded shuffle, then the first ``limit``: the subset does not depend on the listing order."""
    order = np.random.default_rng(seed).permutation(len(items))
    return [items[i] for i in order[:limit]]


def _data_yaml_images(yaml_path: Path, split: str) -> tuple[list[Path], str]:
    try:
        data = read_data_yaml(yaml_path)
    except DatasetError as e:
        raise CalibrationError(e.message, e.fix) from None
    if split not in data.splits:
        raise CalibrationError(f"{yaml_path} has no '{split}:' split to calibrate on "
                               f"(it has: {', '.join(data.splits) or 'none'})",
                               f"add '{split}: <images folder>' to {yaml_path.name}, or pass --calib with an image folder")
    try:
        files = list_images(data.splits[split])
    except DatasetError as e:
        raise CalibrationError(f"{yaml_path} '{split}:' split: {e.message}", e.fix) from None
    return files, f"split '{split}' of {yaml_path}"


def _video_source(cfg: CalibrationConfig) -> CalibrationSource:
    cap = cv2.VideoCapture(str(cfg.source))
    try:
        if not cap.isOpened():
            raise CalibrationError(f"cannot open video {cfg.source} (unsupported codec or corrupt file)",
                                   "re-encode it (e.g. ffmpeg -i in.mkv -c:v libx264 out.mp4) or pass a folder of images")
        frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        cap.release()
    if frames <= 0:  # unknown length (some containers): read sequentially up to the limit
        indices = [i * cfg.video_every for i in range(cfg.max_images)]
        desc = f"up to {cfg.max_images} frames (every {cfg.video_every}th) of {cfg.source}"
        return CalibrationSource(SourceKind.VIDEO, cfg.source, tuple(indices), 0, desc)
    candidates = list(range(0, frames, cfg.video_every))
    indices = sorted(_pick(candidates, cfg.max_images, cfg.seed))  # decoded in order: seeking is slow
    desc = f"{len(indices)} frames (every {cfg.video_every}th of {frames}) of {cfg.source}"
    return CalibrationSource(SourceKind.VIDEO, cfg.source, tuple(indices), len(candidates), desc)


@dataclass
class ReadStats:
    """What a pass over a source decoded and skipped."""

    used: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file or frame, reason)

    def summary(self) -> str:
        s = f"{self.used} calibration images read"
        if self.skipped:
            first = "; ".join(f"{name}: {why}" for name, why in self.skipped[:3])
            s += f", {len(self.skipped)} unreadable skipped ({first}{'; ...' if len(self.skipped) > 3 else ''})"
        return s


def iter_frames(source: CalibrationSource, stats: ReadStats) -> Iterator[np.ndarray]:
    """Decoded BGR frames of ``source``; failures are recorded in ``stats`` and skipped."""
    if source.kind is SourceKind.VIDEO:
        yield from _video_frames(source, stats)
        return
    for path in source.items:
        try:
            frame = read_image(path)
        except DatasetError as e:
            stats.skipped.append((str(path), e.message.split(" (")[0].replace(f" {path}", "")))
            continue
        stats.used += 1
        yield frame


def _video_frames(source: CalibrationSource, stats: ReadStats) -> Iterator[np.ndarray]:
    cap = cv2.VideoCapture(str(source.path))
    try:
        pos = 0
        for index in source.items:
            while pos < index:  # grab() skips without decoding
                if not cap.grab():
                    return
                pos += 1
            ok, frame = cap.read()
            pos += 1
            if not ok or frame is None:
                if source.available == 0:  # unknown length: the video ended
                    return
                stats.skipped.append((f"{source.path.name}#frame{index}", "cannot decode frame"))
                continue
            stats.used += 1
            yield frame
    finally:
        cap.release()


class CalibrationImages:
    """Model-ready calibration batches: letterboxed, RGB, NCHW float32 in 0..1.

    Args:
        source: from :func:`open_source`.
        imgsz: the model input (height, width).
        batch: the model's static batch (a short last batch is padded by repeating its first image);
            ``None`` for a dynamic batch (batches of 1).
        show_progress: a progress bar while decoding.
        log: where the summary line goes.

    Iterating yields fresh arrays (the calibrator may keep them). After a full pass, :attr:`stats`
    says how many images were used and skipped; a pass that read nothing raises
    :class:`CalibrationError`.
    """

    def __init__(self, source: CalibrationSource, imgsz: tuple[int, int], batch: int | None = 1,
                 show_progress: bool = True, log: Callable[[str], None] = print) -> None:
        self.source = source
        self.batch = batch or 1
        self.letterbox = Letterbox(imgsz, batch=self.batch)
        self.show_progress = show_progress
        self.log = log
        self.stats = ReadStats()

    def __len__(self) -> int:
        return -(-len(self.source) // self.batch)

    def __iter__(self) -> Iterator[np.ndarray]:
        self.stats = ReadStats()
        frames = progress(iter_frames(self.source, self.stats), len(self.source), "calibrating", self.show_progress)
        chunk: list[np.ndarray] = []
        for frame in frames:
            chunk.append(frame)
            if len(chunk) == self.batch:
                yield self._pack(chunk)
                chunk = []
        if chunk:
            yield self._pack(chunk + [chunk[0]] * (self.batch - len(chunk)))
        if self.stats.used == 0:
            raise CalibrationError(f"none of the {len(self.source)} calibration files could be read "
                                   f"({self.source.description}); e.g. {self.stats.skipped[0][0]}: "
                                   f"{self.stats.skipped[0][1]}" if self.stats.skipped else
                                   f"no calibration images in {self.source.description}", _FIX_IMAGES)
        self.log(self.stats.summary())

    def fingerprint(self) -> str:
        """A hash of what this preprocessing makes of two fixed synthetic frames, for the range cache's key.

        The frames (one wider and one taller than the input) are resized and padded on each axis, so a
        change to the input size, the interpolation, the padding value, the channel order or the scaling
        changes the hash, and ranges observed under an older letterbox are not reused.
        """
        h, w = self.letterbox.imgsz
        probes = [_probe_frame(h // 2 + 3, w + 17), _probe_frame(h + 11, w // 2 + 5)]
        x, _ = self.letterbox.resized(len(probes))(probes)
        d = hashlib.sha256(f"{x.shape}:{x.dtype}:".encode())
        d.update(np.ascontiguousarray(x).tobytes())
        return d.hexdigest()[:32]

    def _pack(self, frames: list[np.ndarray]) -> np.ndarray:
        x, _ = self.letterbox(frames)
        return x.copy()


def _probe_frame(h: int, w: int) -> np.ndarray:
    """A deterministic ``(h, w, 3)`` uint8 BGR pattern with detail in every channel (no random generator)."""
    i = np.arange(h * w * 3, dtype=np.uint64).reshape(h, w, 3)
    return ((i * 2654435761) >> 13).astype(np.uint8)
