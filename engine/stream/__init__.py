"""Live video through a Detector: sources, the pipeline, sinks, metrics and the ``python -m engine.stream`` CLI.

    from engine.stream import Stream
    with Stream("model.onnx", ["rtsp://cam/1", "clip.mp4"], on_result=print) as s:
        s.run()

:mod:`.sources` reads cameras, files and folders (one capture thread each); :mod:`.pipeline` runs the
detector over them; :mod:`.processors` are the stages between detector and sinks (a tracker, incident
rules, the status page: :mod:`engine.track`, :mod:`engine.events`, :mod:`engine.status`); :mod:`.sinks`
writes results; :mod:`.metrics` counts; :mod:`.cli` is the command line.
"""
from .pipeline import Stream, StreamConfig
from .sinks import StreamResult
from .sources import CaptureConfig, EventKind, StreamEvent

__all__ = ["Stream", "StreamConfig", "StreamResult", "StreamEvent", "EventKind", "CaptureConfig", "main"]


def main(argv: list[str] | None = None) -> int:
    """``python -m engine.stream`` (see :mod:`engine.stream.cli` for the flags)."""
    from .cli import main as cli_main

    return cli_main(argv)
