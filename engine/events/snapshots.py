"""Incident snapshots: the frame as a JPEG with the incident's box, label and zone drawn.

Written atomically (a temporary file in the same folder, then a rename), so a reader — the status page,
a webhook receiver fetching it — never sees half a file, and a killed process leaves at most a
``.tmp`` file that the next start removes. The oldest snapshots are deleted beyond a count or a size.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np

from ..detections import Detections
from ..errors import OutputDirError
from ..stream.sinks import annotate, check_writable
from .rules import SnapshotConfig

log = logging.getLogger("engine.events")
SNAPSHOT_DIR = "snapshots"


class SnapshotStore:
    """JPEGs under ``<root>/snapshots``, pruned to ``config.max_count`` files and ``config.max_megabytes``.

    Args:
        root: the save folder; event paths are relative to it.
        config: the limits and the JPEG quality.
    """

    def __init__(self, root: str | Path, config: SnapshotConfig = SnapshotConfig()) -> None:
        self.root, self.config = Path(root), config
        self.dir = self.root / SNAPSHOT_DIR
        if self.dir.exists() and not self.dir.is_dir():
            raise OutputDirError(f"cannot create {self.dir}: it is a file", "choose another --save folder")
        check_writable(self.dir, "choose a writable --save folder")  # created with the first snapshot
        self._files: OrderedDict[Path, int] = OrderedDict()  # oldest first, with sizes
        self._bytes = 0
        self.written = self.pruned = self.failed = 0
        self._lock = threading.Lock()
        existing = []
        for p in self.dir.rglob("*"):
            if p.is_file() and p.name.endswith(".tmp"):
                p.unlink(missing_ok=True)  # left by a killed run
            elif p.is_file() and p.suffix == ".jpg":
                st = p.stat()
                existing.append((st.st_mtime, p, st.st_size))
        for _, p, size in sorted(existing):
            self._files[p] = size
            self._bytes += size
        self._prune(keep=None)

    def write(self, rel: str, image: np.ndarray, detection: Detections, zone: np.ndarray | None = None) -> bool:
        """Draw ``detection`` (one box) and ``zone`` (pixel polygon) on a copy of ``image``; write ``rel``.

        Returns ``False`` (logged, counted in :attr:`failed`) when the file cannot be written.
        """
        out = annotate(image, detection)
        if zone is not None:
            cv2.polylines(out, [np.round(zone).astype(np.int32)], True, (0, 255, 255), 1, cv2.LINE_AA)
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, self.config.quality])
        path = self.root / rel
        tmp = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not ok:
                raise OSError("JPEG encoding failed")
            with open(tmp, "wb") as f:
                f.write(buf.tobytes())
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            with self._lock:
                self.failed += 1
            log.warning("snapshot %s not written: %s", path, e)
            return False
        with self._lock:
            self._bytes += len(buf) - self._files.pop(path, 0)
            self._files[path] = len(buf)
            self.written += 1
            self._prune(keep=path)
        return True

    def _prune(self, keep: Path | None) -> None:
        limit = self.config.max_megabytes * 1e6
        while self._files and (len(self._files) > self.config.max_count or self._bytes > limit):
            oldest, size = next(iter(self._files.items()))
            if oldest == keep:  # never the file just written, even when it alone is over the size limit
                break
            del self._files[oldest]
            self._bytes -= size
            try:
                oldest.unlink()
                self.pruned += 1
            except FileNotFoundError:
                pass
            except OSError as e:  # e.g. open in a viewer on Windows: try again after the next write
                self._files[oldest] = size
                self._files.move_to_end(oldest, last=False)
                self._bytes += size
                log.debug("cannot prune %s yet: %s", oldest, e)
                break

    @property
    def count(self) -> int:
        return len(self._files)
