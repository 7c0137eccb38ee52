"""Video sources for :mod:`engine.stream`: what a source is, and the thread that reads it.

A source is a video file, an image folder, an RTSP/HTTP URL or a webcam index. Each gets one
:class:`CaptureThread` that hands frames to the pipeline through a :class:`FrameSlot`:

* live sources (URLs, webcams) keep only the latest frame: a frame the pipeline had no time for is
  replaced by a newer one and counted as dropped. A failed or timed-out read is a ``disconnected``
  event, then reconnects with capped exponential backoff until the source answers (``reconnected``).
  A source that never answers at start fails after ``connect_attempts`` tries with :class:`SourceError`.
* files and folders are read frame by frame: the capture thread waits while its queue is full, so
  nothing is dropped (``realtime=True`` reads a file at its frame rate like a camera instead).

Reading uses OpenCV (FFmpeg for files and URLs). Only the capture thread touches its
``cv2.VideoCapture``: releasing it from another thread while a read is in flight crashes FFmpeg.
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from ..errors import SourceError
from ..eval.datasets import DatasetError, read_image

log = logging.getLogger("engine.stream")

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
# FFmpeg options for network sources (OpenCV reads this variable at each open; a value the user set
# wins). TCP survives packet loss; a short probe makes a reconnect take ~0.8 s instead of ~2 s.
FFMPEG_OPTIONS = "rtsp_transport;tcp|analyzeduration;500000|probesize;500000"
DEFAULT_FPS = 25.0
STABLE_S = 5.0  # a live connection that lasted this long reconnects at once when lost; a shorter one backs off


class SourceKind(str, Enum):
    FILE = "file"
    FOLDER = "folder"
    URL = "url"
    WEBCAM = "webcam"

    @property
    def live(self) -> bool:
        return self in (SourceKind.URL, SourceKind.WEBCAM)


def redact(uri: str) -> str:
    """``uri`` with any ``user:password@`` replaced by ``***@`` (for logs, JSON lines and metric labels)."""
    # up to the last '@' before the path, as FFmpeg and urlsplit read it: a password may hold an '@'
    return re.sub(r"^([a-z][a-z0-9+.-]*://)[^/?#]*@", r"\1***@", uri, flags=re.IGNORECASE)


@dataclass(frozen=True)
class SourceSpec:
    """One ``--source``: ``uri`` as given, a short ``name`` (``NAME=URI`` or ``s0``, ``s1``…) and its kind."""

    uri: str
    name: str
    kind: SourceKind

    @classmethod
    def parse(cls, text: str, index: int = 0) -> "SourceSpec":
        """Classify ``[NAME=]URI``; a missing file or folder is a :class:`SourceError` right away."""
        name, uri = f"s{index}", str(text).strip()
        m = re.match(r"^([A-Za-z_][\w.-]*)=(.+)$", uri)
        if m and "://" not in m.group(1):
            name, uri = m.group(1), m.group(2)
        if re.fullmatch(r"\d+", uri):
            return cls(uri, name, SourceKind.WEBCAM)
        if uri.lower().startswith(URL_SCHEMES):
            return cls(uri, name, SourceKind.URL)
        path = Path(uri).expanduser()
        if path.is_dir():
            return cls(str(path), name, SourceKind.FOLDER)
        if path.is_file():
            return cls(str(path), name, SourceKind.FILE)
        raise SourceError(f"source '{uri}' is not a file, folder, URL or webcam index",
                          "pass a video file, an image folder, rtsp://…/http://… or a webcam number such as 0")

    @property
    def label(self) -> str:
        return redact(self.uri)


@dataclass
class Frame:
    """A captured frame: ``index`` counts frames read from the source (dropped ones included)."""

    source: str
    index: int
    image: np.ndarray
    timestamp: float  # wall clock, Unix seconds
    t_capture: float  # time.perf_counter() at capture, for latency
    fps: float = 0.0  # the source's nominal frame rate (0: unknown)


class EventKind(str, Enum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    RECONNECTED = "reconnected"
    ENDED = "ended"
    FAILED = "failed"


@dataclass(frozen=True)
class StreamEvent:
    source: str
    kind: EventKind
    timestamp: float
    detail: str = ""


@dataclass(frozen=True)
class CaptureConfig:
    """How sources are read (the stream CLI's flags; defaults in brackets).

    Attributes:
        reconnect_max: cap of the backoff between reconnect attempts, seconds [8].
        reconnect_base: first backoff delay, doubled per failed attempt [0.25].
        read_timeout: a live read (or open) waiting longer is a disconnect, seconds [10].
        connect_attempts: tries to reach a live source at start before failing; 0 = forever [5].
        queue_size: frames a file or folder source decodes ahead [4].
        realtime: read files at their frame rate and keep only the latest frame, like a camera.
        loop: start files and folders over at the end (demos, soak tests).
    """

    reconnect_max: float = 8.0
    reconnect_base: float = 0.25
    read_timeout: float = 10.0
    connect_attempts: int = 5
    queue_size: int = 4
    realtime: bool = False
    loop: bool = False


def backoff(base: float, cap: float) -> Iterator[float]:
    """``base, 2·base, 4·base, …`` capped at ``cap`` (forever)."""
    delay = min(base, cap)
    while True:
        yield delay
        delay = min(delay * 2, cap)


class FrameSlot:
    """Hands frames from one capture thread to the pipeline.

    ``latest_only``: a new frame replaces any unconsumed one (counted in :attr:`dropped`).
    Otherwise a bounded queue: :meth:`put` waits for room (or for ``stop``).
    ``ready`` is set on every put so the pipeline can wait on all slots at once.
    """

    def __init__(self, capacity: int, latest_only: bool, ready: threading.Event) -> None:
        self.capacity = 1 if latest_only else max(int(capacity), 1)
        self.latest_only = latest_only
        self.dropped = 0
        self._q: deque[Frame] = deque()
        self._cond = threading.Condition()
        self._ready = ready

    def put(self, frame: Frame, stop: threading.Event) -> bool:
        with self._cond:
            if self.latest_only:
                self.dropped += len(self._q)
                self._q.clear()
            else:
                while len(self._q) >= self.capacity and not stop.is_set():
                    self._cond.wait(0.1)
                if stop.is_set():
                    return False
            self._q.append(frame)
        self._ready.set()
        return True

    def take(self) -> Frame | None:
        with self._cond:
            if not self._q:
                return None
            frame = self._q.popleft()
            self._cond.notify()
            return frame

    def __len__(self) -> int:
        return len(self._q)


class _FolderReader:
    """Images of a folder in name order, read like a video."""

    def __init__(self, folder: Path) -> None:
        self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise SourceError(f"image folder {folder} has no {'/'.join(sorted(IMAGE_SUFFIXES))} files",
                              "point --source at a folder of images, or at a video file")
        self.pos, self.fps = 0, 0.0

    def read(self) -> np.ndarray | None:
        while self.pos < len(self.files):
            path = self.files[self.pos]
            self.pos += 1
            try:
                return read_image(path)  # not cv2.imread: it cannot open a non-ASCII path on Windows
            except DatasetError:
                log.warning("skipping unreadable image %s", path)
        return None

    def release(self) -> None:
        pass


class _VideoReader:
    """``cv2.VideoCapture`` with timeouts for URLs; raises :class:`SourceError` when it cannot open."""

    def __init__(self, spec: SourceSpec, timeout_s: float) -> None:
        ms = int(timeout_s * 1000)
        if spec.kind is SourceKind.WEBCAM:
            cap = cv2.VideoCapture(int(spec.uri))
        elif spec.kind is SourceKind.URL:
            cap = cv2.VideoCapture(spec.uri, cv2.CAP_FFMPEG,
                                   [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
        else:
            cap = cv2.VideoCapture(spec.uri)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {spec.kind.value} source {spec.label}", _open_fix(spec))
        self.cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if 0.5 <= fps <= 240 else 0.0

    def read(self) -> np.ndarray | None:
        ok, image = self.cap.read()
        return image if ok and image is not None and image.size else None

    def release(self) -> None:
        self.cap.release()


def _open_fix(spec: SourceSpec) -> str:
    if spec.kind is SourceKind.FILE:
        return ("the file is corrupt or not a video OpenCV/FFmpeg can decode: "
                "re-encode it (e.g. ffmpeg -i in.mp4 -c:v libx264 out.mp4)")
    if spec.kind is SourceKind.WEBCAM:
        return "check the camera is plugged in and not used by another program, or try another index"
    return "check the URL, credentials and that the camera is reachable from this machine"


def open_reader(spec: SourceSpec, timeout_s: float) -> _FolderReader | _VideoReader:
    if spec.kind is SourceKind.URL:
        os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", FFMPEG_OPTIONS)
    return _FolderReader(Path(spec.uri)) if spec.kind is SourceKind.FOLDER else _VideoReader(spec, timeout_s)


class CaptureThread(threading.Thread):
    """Reads one source into its :class:`FrameSlot` until the source ends or ``stop`` is set.

    ``on_frame(t)`` is called per captured frame (metrics), ``on_event(event)`` on connect, disconnect,
    reconnect, end and failure. A failure is kept in :attr:`error` (a :class:`SourceError`).
    """

    def __init__(self, spec: SourceSpec, cfg: CaptureConfig, slot: FrameSlot, stop: threading.Event,
                 on_event: Callable[[StreamEvent], None], on_frame: Callable[[float], None] = lambda t: None) -> None:
        super().__init__(name=f"capture-{spec.name}", daemon=True)
        self.spec, self.cfg, self.slot, self.stop = spec, cfg, slot, stop
        self._on_event, self._on_frame = on_event, on_frame
        self.error: BaseException | None = None
        self.index = 0

    def _emit(self, kind: EventKind, detail: str = "") -> None:
        self._on_event(StreamEvent(self.spec.name, kind, time.time(), detail))

    def run(self) -> None:
        try:
            if self.spec.kind.live:
                self._run_live()
            else:
                self._run_file()
            if not self.stop.is_set():
                self._emit(EventKind.ENDED, f"{self.index} frames")
        except BaseException as e:  # noqa: BLE001 - handed to the pipeline, which re-raises it
            if isinstance(e, SourceError):
                self.error = e
            else:  # not a source's own failure: its traceback goes to the log the message points at
                log.error("source %s: unexpected error", self.spec.name, exc_info=e)
                self.error = SourceError(f"source {self.spec.name} ({self.spec.label}) failed: "
                                         f"{type(e).__name__}: {e}", "see the log above")
                self.error.__cause__ = e
            self._emit(EventKind.FAILED, str(self.error.message))

    def _push(self, image: np.ndarray, fps: float) -> bool:
        t = time.perf_counter()
        self._on_frame(t)
        frame = Frame(self.spec.name, self.index, image, time.time(), t, fps)
        self.index += 1
        return self.slot.put(frame, self.stop)

    def _run_file(self) -> None:
        first = True
        while not self.stop.is_set():
            reader = open_reader(self.spec, self.cfg.read_timeout)
            try:
                if first:
                    self._emit(EventKind.CONNECTED, self.spec.label)
                n = self._read_all(reader)
            finally:
                reader.release()
            if n == 0 and first and not self.stop.is_set():  # stopped before its first frame: not a failure
                raise SourceError(f"{self.spec.label}: no frame could be decoded (corrupt or empty video?)",
                                  _open_fix(self.spec))
            first = False
            if not self.cfg.loop or n == 0:
                return

    def _read_all(self, reader: _FolderReader | _VideoReader) -> int:
        fps = reader.fps or DEFAULT_FPS
        t0, n = time.perf_counter(), 0
        while not self.stop.is_set():
            image = reader.read()
            if image is None:
                break
            if self.cfg.realtime:  # pace like a camera; the slot then keeps only the latest frame
                wait = t0 + n / fps - time.perf_counter()
                if wait > 0 and self.stop.wait(wait):
                    break
            n += 1
            if not self._push(image, reader.fps):
                break
        return n

    def _run_live(self) -> None:
        attempts, connected_before = 0, False
        delays = backoff(self.cfg.reconnect_base, self.cfg.reconnect_max)
        while not self.stop.is_set():
            try:
                reader = open_reader(self.spec, self.cfg.read_timeout)
            except SourceError as e:
                attempts += 1
                limit = self.cfg.connect_attempts
                if not connected_before and limit and attempts >= limit:
                    raise SourceError(
                        f"{self.spec.name}: could not connect to {self.spec.label} after {attempts} attempts "
                        f"({e.message})",
                        f"{_open_fix(self.spec)}; or allow more tries with --connect-attempts (0 = forever)") from None
                delay = next(delays)
                log.info("%s: connect attempt %d failed; retrying in %.2fs", self.spec.name, attempts, delay)
                self.stop.wait(delay)
                continue
            self._emit(EventKind.RECONNECTED if connected_before else EventKind.CONNECTED, self.spec.label)
            connected_before, attempts = True, 0
            t_open = time.perf_counter()
            try:
                reason, frames = self._read_live(reader)
            finally:
                reader.release()
            if not reason:
                return
            self._emit(EventKind.DISCONNECTED, reason)
            lasted = time.perf_counter() - t_open
            if frames and lasted >= STABLE_S:  # it worked a while: reconnect at once
                delays = backoff(self.cfg.reconnect_base, self.cfg.reconnect_max)
            else:  # sends nothing, or a frame or two and ends (a snapshot URL): back off, or this loop would spin
                if frames:
                    log.warning("%s: %s gave %d frame(s) in %.1fs and ended; retrying with backoff (a still-image "
                                "URL is not a video stream: use the camera's RTSP or MJPEG address)",
                                self.spec.name, self.spec.label, frames, lasted)
                self.stop.wait(next(delays))

    def _read_live(self, reader: _VideoReader) -> tuple[str, int]:
        """Read until stop (returns ``""``) or a failed read (returns why); and how many frames came."""
        n = 0
        while not self.stop.is_set():
            t = time.perf_counter()
            image = reader.read()
            if image is None:
                waited = time.perf_counter() - t
                if waited >= 0.9 * self.cfg.read_timeout:
                    return f"stalled: no frame for {waited:.1f}s (read timeout {self.cfg.read_timeout:g}s)", n
                return "read failed (stream ended or connection lost)", n
            n += 1
            self._push(image, reader.fps)
        return "", n
