"""``<save>/events.jsonl``: one JSON object per line, flushed as written."""
from __future__ import annotations

from pathlib import Path
from typing import TextIO

from ...errors import OutputDirError
from ...stream.sinks import check_writable
from ..delivery import EventSink, Payload, Retry


class JsonLinesEvents(EventSink):
    """Append each event to ``path``. An unwritable folder is an error now, before the stream starts; the
    file is created with the first event, so a run whose sources all fail leaves no empty file."""

    def __init__(self, path: str | Path, queue_size: int = 1000, backoff_max: float = 5.0) -> None:
        super().__init__("jsonl", queue_size, backoff_max)
        self.path = Path(path)
        if self.path.is_dir():
            raise OutputDirError(f"cannot write {self.path}: it is a folder", "choose another --save folder")
        check_writable(self.path.parent, "choose a writable --save folder")
        self._f: TextIO | None = None

    def deliver(self, payload: Payload) -> None:
        try:
            if self._f is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._f = open(self.path, "a", encoding="utf-8", newline="\n")
            self._f.write(payload.body + "\n")
            self._f.flush()
        except OSError as e:  # a full disk: retried, so the line is written once there is room
            raise Retry(f"cannot write {self.path}: {e}") from None

    def shutdown(self) -> None:
        if self._f is not None:
            self._f.close()
