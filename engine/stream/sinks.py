"""Where stream results go: callbacks, annotated video files, JSON lines, a window.

A sink has ``write(result)`` and ``close()``. :class:`StreamResult` is what every sink and callback
receives: the source's name, the frame's index and wall-clock timestamp, the image and its
:class:`~engine.detections.Detections`. Sinks run on the pipeline's thread, one result at a time.
"""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np

from ..detections import Detections
from ..errors import ConfigError, OutputDirError
from .sources import DEFAULT_FPS

log = logging.getLogger("engine.stream")

DEFAULT_VIDEO_FPS = DEFAULT_FPS  # a source without a frame rate (a folder): the rate its frames are paced and timed at


@dataclass
class StreamResult:
    """One processed frame.

    Attributes:
        source: the source's name (``s0``… or the ``NAME=`` given with ``--source``).
        index: the frame's index in its source (live sources skip the indices of dropped frames).
        timestamp: wall-clock capture time, Unix seconds.
        image: the BGR frame (do not modify it: sinks share it).
        detections: boxes in the frame's pixels.
        latency_ms: capture to detections.
        fps: the source's nominal frame rate (0 when unknown).
        t_capture: ``time.perf_counter()`` at capture (0: not known), a clock no system-time change moves.
    """

    source: str
    index: int
    timestamp: float
    image: np.ndarray
    detections: Detections
    latency_ms: float
    fps: float = 0.0
    t_capture: float = 0.0
    _annotated: np.ndarray | None = field(default=None, repr=False)

    def annotated(self) -> np.ndarray:
        """A copy of the image with boxes and labels drawn (made once, shared by the sinks)."""
        if self._annotated is None:
            self._annotated = annotate(self.image, self.detections)
        return self._annotated

    def to_json(self) -> dict:
        return {"source": self.source, "frame": self.index, "timestamp": round(self.timestamp, 6),
                "latency_ms": round(self.latency_ms, 2), **self.detections.to_dict()}


def _colour(class_id: int) -> tuple[int, int, int]:
    hue = (class_id * 47) % 180
    bgr = cv2.cvtColor(np.uint8([[[hue, 220, 255]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


def annotate(image: np.ndarray, detections: Detections) -> np.ndarray:
    """``image`` copied, with each box and ``name score`` drawn (``#id name score`` when tracked)."""
    out = image.copy()
    thick = max(1, round(sum(out.shape[:2]) / 600))
    ids = detections.track_id.tolist() if detections.track_id is not None else [-1] * len(detections)
    for ((x1, y1, x2, y2), score, class_id, name), tid in zip(detections, ids):
        colour = _colour(class_id)
        p1, p2 = (int(x1), int(y1)), (int(x2), int(y2))
        cv2.rectangle(out, p1, p2, colour, thick, cv2.LINE_AA)
        text = f"#{tid} {name} {score:.2f}" if tid >= 0 else f"{name} {score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, 1)
        top = max(p1[1] - th - base, 0)
        left = max(min(p1[0], out.shape[1] - tw), 0)  # a label at the right edge stays readable
        cv2.rectangle(out, (left, top), (left + tw, top + th + base), colour, -1)
        cv2.putText(out, text, (left, top + th), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, (0, 0, 0), 1, cv2.LINE_AA)
    return out


class Sink:
    """Base sink: override :meth:`write`, and :meth:`close` when it holds files or windows."""

    def write(self, result: StreamResult) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class CallbackSink(Sink):
    """Call ``fn(result)`` for every result, or only for ``source`` when given."""

    def __init__(self, fn: Callable[[StreamResult], None], source: str | None = None) -> None:
        self.fn, self.source = fn, source

    def write(self, result: StreamResult) -> None:
        if self.source is None or result.source == self.source:
            self.fn(result)


def check_writable(directory: Path, fix: str) -> None:
    """Fail now, naming ``directory``, if it cannot be created or written; create nothing (a run whose
    sources all fail must leave no empty files or folders behind, so sinks open on their first result)."""
    d = directory
    while not d.exists() and d != d.parent:
        d = d.parent
    if not d.is_dir():
        raise OutputDirError(f"cannot write into {directory}: {d} is a file, not a folder", fix)
    if not os.access(d, os.W_OK | os.X_OK):
        raise OutputDirError(f"cannot write into {directory}: {d} is not writable", fix)
    import tempfile

    try:  # os.access says every folder is writable on Windows (it reads only the read-only attribute), and
        # root passes it on POSIX: a file created and removed at once is the real test, and leaves nothing
        with tempfile.TemporaryFile(dir=d):
            pass
    except OSError as e:
        raise OutputDirError(f"cannot write into {directory}: {d} refuses new files ({e.strerror or e})", fix) from None


class JsonLinesSink(Sink):
    """One JSON object per processed frame: source, frame, timestamp (Unix s), latency_ms, detections.

    Lines are flushed as written, so a stopped or crashed run loses at most the line in progress. The
    file is created with the first line: a run that processed nothing leaves no empty file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise OutputDirError(f"cannot write {self.path}: it is a folder", "pass a file path to --jsonl")
        check_writable(self.path.parent, "choose a writable --save/--jsonl path")
        self._f = None

    def write(self, result: StreamResult) -> None:
        if self._f is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._f = open(self.path, "a", encoding="utf-8", newline="\n", buffering=1)
            except OSError as e:
                raise OutputDirError(f"cannot write {self.path}: {e}", "choose a writable --save/--jsonl path") from None
        try:
            self._f.write(json.dumps(result.to_json(), separators=(",", ":")) + "\n")
        except OSError as e:  # a full disk mid-run: a typed stop (exit 2), the lines so far kept
            raise OutputDirError(f"cannot write {self.path}: {e.strerror or e}",
                                 "free space on that disk or choose another --save/--jsonl path") from None

    def close(self) -> None:
        if self._f is not None and not self._f.closed:
            self._f.close()


# names Windows keeps for devices, with any extension (``nul.mp4`` is the null device there)
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10))}


def safe_filename(name: str) -> str:
    """``name`` as a file or folder name on any OS: runs of other characters become ``_``, and a name
    Windows reserves for a device (``con``, ``nul``, ``com1``...) gets a trailing ``_``."""
    safe = re.sub(r"[^\w.-]+", "_", name).strip("._") or "source"
    return safe + "_" if safe.split(".")[0].upper() in _RESERVED else safe


def check_file_names(names: Iterable[str], what: str) -> None:
    """Refuse sources whose names would write the same file or folder (``what`` follows the name in the message:
    ``".mp4"``, ``"/ snapshot folder"``): names that differ only in case (one file on Windows and macOS) or in
    characters :func:`safe_filename` drops.

    Raises:
        ConfigError: naming both sources.
    """
    files: dict[str, str] = {}
    for name in names:
        other = files.setdefault(safe_filename(name).casefold(), name)
        if other != name:
            raise ConfigError(f"sources {other!r} and {name!r} would write the same {safe_filename(name)}{what} "
                              "(Windows and macOS ignore case)",
                              "give them names that differ in more than case and punctuation")


class VideoSink(Sink):
    """An annotated MP4 per source, ``DIR/<source>.mp4``, at the source's frame rate.

    Live sources drop frames; each written frame is repeated over the indices of the frames dropped
    before it, so the video keeps real time. :meth:`close` finalizes every file (an MP4 without it
    does not play): the pipeline calls it on Ctrl-C and SIGTERM too.
    """

    def __init__(self, directory: str | Path, fourcc: str = "mp4v", suffix: str = ".mp4") -> None:
        self.dir = Path(directory)
        check_writable(self.dir, "choose a writable --save folder")  # created with the first video
        self.fourcc, self.suffix = fourcc, suffix
        self._writers: dict[str, tuple[cv2.VideoWriter, tuple[int, int], float]] = {}
        self._last: dict[str, int] = {}
        self.paths: dict[str, Path] = {}

    def _writer(self, result: StreamResult) -> tuple[cv2.VideoWriter, tuple[int, int], float]:
        entry = self._writers.get(result.source)
        if entry is None:
            h, w = result.image.shape[:2]
            fps = result.fps or DEFAULT_VIDEO_FPS
            path = self.dir / f"{safe_filename(result.source)}{self.suffix}"
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise OutputDirError(f"cannot create {self.dir}: {e}", "choose a writable --save folder") from None
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*self.fourcc), fps, (w, h))
            if not writer.isOpened():
                raise OutputDirError(f"OpenCV cannot write {path} with codec {self.fourcc}",
                                     "check the folder is writable; use another --save folder")
            entry = self._writers[result.source] = (writer, (w, h), fps)
            self.paths[result.source] = path
        return entry

    def write(self, result: StreamResult) -> None:
        writer, size, fps = self._writer(result)
        image = result.annotated()
        if (image.shape[1], image.shape[0]) != size:  # a camera that came back at another resolution
            image = cv2.resize(image, size)
        last = self._last.get(result.source)
        repeats = 1 if last is None else min(max(result.index - last, 1), int(2 * fps) + 1)
        self._last[result.source] = result.index
        for _ in range(repeats):
            writer.write(image)

    def close(self) -> None:
        for writer, _, _ in self._writers.values():
            writer.release()
        self._writers.clear()


def _no_display() -> str | None:
    """Why OpenCV could not open a window here (``None``: it can). Set is not enough: a stale ``ssh -X``
    session or a service's inherited ``DISPLAY`` makes Qt abort the process, so a child process tries it."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "DISPLAY / WAYLAND_DISPLAY is not set"
    probe = "import cv2; cv2.namedWindow('yolo-deploy'); cv2.waitKey(1); cv2.destroyAllWindows()"
    try:
        p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "opening a window did not finish within 30 s"
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["no message"])[0][:160]
        where = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
        return f"OpenCV cannot open a window on {where} ({last})"
    return None


class WindowSink(Sink):
    """Show each source in a window (``--show``); ``q`` or Esc in a window asks the stream to stop."""

    def __init__(self, request_stop: Callable[[], None]) -> None:
        if sys.platform.startswith("linux"):  # OpenCV's GUI aborts the whole process when it finds no display
            why = _no_display()
            if why:
                raise ConfigError(f"--show needs a display: {why}",
                                  "drop --show on a headless machine; use --save DIR to review annotated video")
        self.request_stop = request_stop
        self._open: set[str] = set()

    def write(self, result: StreamResult) -> None:
        cv2.imshow(result.source, result.annotated())
        self._open.add(result.source)
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            self.request_stop()

    def close(self) -> None:
        if self._open:
            cv2.destroyAllWindows()
            self._open.clear()
