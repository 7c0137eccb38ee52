"""``<save>/events.jsonl``: one JSON object per line, flushed as written."""
from __future__ import annotations

from pathlib import Path

from ...errors import OutputDirError
from ..delivery import EventSink, Payload, Retry


class JsonLinesEvents(EventSink):
    """Append each event to ``path`` (opened now, so an unwritable folder is an error before the stream starts)."""

    def __init__(self, path: str | Path, queue_size: int = 1000, backoff_max: float = 5.0) -> None:
        super().__init__("jsonl", queue_size, backoff_max)
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a", encoding="utf-8", newline="\n")
        except OSError as e:
            raise OutputDirError(f"cannot write {self.path}: {e}", "choose a writable --save folder") from None

    def deliver(self, payload: Payload) -> None:
        try:
            self._f.write(payload.body + "\n")
            self._f.flush()
        except OSError as e:  # a full disk: retried, so the line is written once there is room
            raise Retry(f"cannot write {self.path}: {e}") from None

    def shutdown(self) -> None:
        self._f.close()
