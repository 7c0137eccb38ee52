"""Live video through a :class:`~engine.Detector`: many sources, reconnects, metrics, sinks.

    python -m engine.stream --model model.onnx --source rtsp://cam/1 --source clip.mp4 --save out/

or from Python::

    from engine.stream import Stream
    with Stream("model.onnx", ["rtsp://cam/1", "clip.mp4"], on_result=print) as s:
        s.run()

One capture thread per source (:mod:`engine.stream.sources`) feeds the pipeline thread (the one that
calls :meth:`Stream.run`), which batches the ready frames of several sources when the model takes a
batch, runs the detector, and hands each :class:`~engine.stream.sinks.StreamResult` to the sinks and the
callbacks of its source. Between the detector and the sinks, :mod:`.processors` (a tracker, incident
rules, the status page) see each result in frame order. Ctrl-C and SIGTERM stop it cleanly: capture
threads joined, videos finalized.

Signals: while :meth:`Stream.run` runs on the main thread, SIGINT, SIGTERM (and SIGBREAK) only set a
flag that the pipeline loop polls (:mod:`engine.signals`); the stream then closes in order and ``run``
raises ``KeyboardInterrupt`` for SIGINT (returns for SIGTERM).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..errors import ConfigError
from ..signals import StopSignals
from .metrics import PrometheusExporter, StreamMetrics
from .processors import Processor, StreamContext
from .sinks import CallbackSink, Sink, StreamResult, VideoSink, check_file_names
from .sources import (FFMPEG_OPTIONS, CaptureConfig, CaptureThread, EventKind, Frame, FrameSlot,
                             SourceKind, SourceSpec, StreamEvent)

log = logging.getLogger("engine.stream")

# close() waits at most this long for capture threads: a file or folder reader stops at its next frame;
# a live read in flight ends only by its timeout (up to --read-timeout), and such a thread is left to
# end alone (a daemon) so that a stop takes seconds whatever the sources do.
STOP_JOIN_S = 2.0

ResultCallback = Callable[[StreamResult], None]
EventCallback = Callable[[StreamEvent], None]

__all__ = ["Stream", "StreamConfig", "StreamResult", "StreamEvent", "EventKind", "CaptureConfig"]


@dataclass(frozen=True)
class StreamConfig:
    """The pipeline's settings (capture settings are in :attr:`capture`).

    Attributes:
        capture: how sources are read, reconnected and timed out.
        batch: most frames per detector call; ``None``: the model's static batch (times the workers of
            a pool), or for a dynamic-batch model one frame per source and at least one per worker (per
            infer request for an OpenVINO IR in throughput mode fed by a file or folder).
        log_interval: seconds between metric log lines (0: never).
        max_frames: stop after this many results in all (``None``: until the sources end or stop).
        duration: stop after this many seconds (``None``: no limit).
        workers: CPU detectors run side by side when the stream loads an ``.onnx`` model itself
            (:class:`~engine.pool.DetectorPool`, cores // workers threads each): more frames per second
            from a file or several sources on a CPU, each frame a little slower. 1: one detector on all
            cores. ``None``: :func:`~engine.pool.auto_workers` (2 on a CPU of two cores or more when a
            file, a folder or two live sources can keep both busy, else 1; 1 when the detector options
            set ``intra_op_threads``).
    """

    capture: CaptureConfig = CaptureConfig()
    batch: int | None = None
    log_interval: float = 10.0
    max_frames: int | None = None
    duration: float | None = None
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"max_frames={self.max_frames}", "use 1 or more (--max-frames N), or leave it out")
        if self.duration is not None and not self.duration > 0:
            raise ConfigError(f"duration={self.duration}", "use seconds above 0 (--duration S), or leave it out")


class Stream:
    """Run a detector over several video sources until they end or :meth:`stop` is called.

    Args:
        detector: a :class:`~engine.Detector` or :class:`~engine.pool.DetectorPool`, or a model path (the
            stream then owns and closes it; a pool when ``config.workers`` > 1).
        sources: ``[NAME=]URI`` strings: video files, image folders, rtsp/http URLs, webcam indices.
        config: :class:`StreamConfig`.
        sinks: extra :class:`~engine.stream.sinks.Sink` objects (video, JSON lines, window).
        on_result: a callback for every source, or ``{source_name: callback}``.
        on_event: called with each :class:`StreamEvent` (connected, disconnected, reconnected, ended, failed).
        metrics_port: serve Prometheus metrics on this port (needs the ``stream`` extra).
        metrics_host: the address the metrics server binds.
        tracker: track objects per source (:mod:`engine.track`, the ``track`` extra): ``"bytetrack"``,
            ``"ocsort"``, ``"sort"`` or a :class:`~engine.track.TrackerConfig`. Each detection then has a
            ``track_id``; each source has its own tracker.
        processors: :class:`~engine.stream.processors.Processor` stages run on every result before the
            sinks, after the tracker (incident rules, the status page).
        **detector_options: passed to :class:`~engine.Detector` when ``detector`` is a path.
    """

    def __init__(self, detector: Any, sources: Sequence[str], config: StreamConfig = StreamConfig(),
                 sinks: Iterable[Sink] = (), on_result: ResultCallback | Mapping[str, ResultCallback] | None = None,
                 on_event: EventCallback | None = None, metrics_port: int | None = None,
                 metrics_host: str = "127.0.0.1", tracker: Any = None, processors: Iterable[Processor] = (),
                 **detector_options: Any) -> None:
        if not sources:
            raise ConfigError("no source given", "pass at least one --source (file, folder, URL or webcam index)")
        self.specs = [SourceSpec.parse(s, i) for i, s in enumerate(sources)]
        names = [s.name for s in self.specs]
        if len(set(names)) != len(names):
            raise ConfigError(f"source names repeat: {names}", "give each source its own NAME= prefix")
        sinks = list(sinks)
        if any(isinstance(s, VideoSink) for s in sinks):  # one MP4 per source (the events: one snapshot folder)
            check_file_names(names, ".mp4")
        if config.batch is not None and config.batch < 1:
            raise ConfigError(f"batch={config.batch}", "use a batch of 1 or more")
        if config.workers is not None and config.workers < 1:
            raise ConfigError(f"workers={config.workers}", "use 1 worker or more")
        self.config = config
        self.workers = config.workers  # resolved at start (None: StreamConfig.workers says how)
        self.sinks: list[Sink] = sinks
        if callable(on_result):
            self.sinks.append(CallbackSink(on_result))
        elif on_result:
            for name, fn in on_result.items():
                if name not in names:
                    raise ConfigError(f"callback for unknown source '{name}'", f"use one of {names}")
                self.sinks.append(CallbackSink(fn, name))
        self.processors: list[Processor] = list(processors)
        if tracker is not None:
            from ..track import TrackingProcessor

            self.processors.insert(0, TrackingProcessor(tracker))
        self._on_event = on_event
        self._metrics_port, self._metrics_host = metrics_port, metrics_host
        self._detector_arg, self._detector_options = detector, detector_options
        self.detector: Any = None
        self._owns_detector = False
        self.metrics = StreamMetrics()
        self._stop = threading.Event()
        self._signals = StopSignals()  # SIGINT/SIGTERM during run(): a flag the loop polls
        self._ready = threading.Event()
        self._threads: list[CaptureThread] = []
        self._slots: list[FrameSlot] = []
        self._exporter: PrometheusExporter | None = None
        self._started = self._closed = False
        self._next = 0  # round-robin start of the next batch
        self.frames_out = 0

    # --- lifecycle -------------------------------------------------------------------------------
    def add_callback(self, fn: ResultCallback, source: str | None = None) -> None:
        """Call ``fn(result)`` for every result (of ``source`` only, when given)."""
        self.sinks.append(CallbackSink(fn, source))

    def start(self) -> "Stream":
        """Load the model, start the metrics server and one capture thread per source."""
        if self._started:
            return self
        self._started = True
        try:
            self._start()
        except BaseException:
            self.close()  # a model that loaded, or a metrics server that started, is released
            raise
        return self

    def _start(self) -> None:
        cap = self.config.capture
        live = sum(spec.kind.live or cap.realtime for spec in self.specs)
        path = self._detector_arg if isinstance(self._detector_arg, (str, Path)) else None
        self.workers = self.config.workers or (self._auto_workers(path, live) if path is not None else 1)
        if path is not None:
            self._load_detector(path, live)
        elif self.workers > 1:
            raise ConfigError(f"workers={self.workers} given with a ready detector",
                              "pass a model path to Stream, or a DetectorPool as the detector")
        elif self._detector_options:
            raise ConfigError(f"detector options {sorted(self._detector_options)} given with a ready Detector",
                              "pass the options to Detector(...) or pass a model path to Stream")
        else:
            self.detector = self._detector_arg
        self.batch = self._batch_size(fills=live < len(self.specs))
        context = StreamContext(tuple(self.detector.names), {s.name: s for s in self.specs}, self.metrics,
                                any(p.adds_track_ids for p in self.processors), str(path or "the model"))
        for spec in self.specs:
            self.metrics.add(spec.name)
        for p in self.processors:  # before any source opens: a bad rule fails here, no camera touched
            p.start(context)
        if self._metrics_port is not None:
            self._exporter = PrometheusExporter(self.metrics, self._metrics_port, self._metrics_host)
            log.info("metrics: http://%s:%d/metrics", self._exporter.host, self._exporter.port)
        if any(spec.kind is SourceKind.URL for spec in self.specs):  # now: setenv in threads is unsafe
            os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", FFMPEG_OPTIONS)
        for spec in self.specs:
            m = self.metrics[spec.name]
            slot = FrameSlot(cap.queue_size, latest_only=spec.kind.live or cap.realtime, ready=self._ready)
            m.dropped_fn = lambda slot=slot: slot.dropped
            thread = CaptureThread(spec, cap, slot, self._stop, self._event, m.record_in)
            self._slots.append(slot)
            self._threads.append(thread)
        if self.workers > 1 and live == len(self.specs) and live < self.workers:
            log.warning("workers=%d with %d live source(s): each call gets at most one frame per live source, "
                        "so %d worker(s) idle while each frame runs on fewer threads; use workers <= sources",
                        self.workers, live, self.workers - live)
        log.info("streaming %d source(s), batch %d, %d worker(s): %s", len(self.specs), self.batch, self.workers,
                 ", ".join(f"{s.name}={s.label} ({s.kind.value})" for s in self.specs))
        for t in self._threads:
            t.start()

    def _load_detector(self, path: str | Path, live: int) -> None:
        """The stream's own Detector (or DetectorPool); a tracker may ask for weaker boxes (ByteTrack). One
        OpenVINO detector fed by several sources runs in its throughput mode unless the caller set ``hint``."""
        def load(options: dict[str, Any]) -> Any:
            if self.workers > 1:
                from ..pool import DetectorPool

                return DetectorPool(path, self.workers, **options)
            from ..detector import Detector

            return Detector(path, **{**self._auto_hint(path, live), **options})  # the caller's options win

        options = self._detector_options
        for p in self.processors:
            options = p.detector_options(options)
        try:
            self.detector = load(options)
        except ConfigError as e:  # e.g. an end-to-end model refuses a conf below the one baked in
            if options is self._detector_options:
                raise
            log.warning("tracking with the model's own conf: %s", e.message)
            self.detector = load(self._detector_options)
        self._owns_detector = True

    def _auto_hint(self, path: str | Path, live: int) -> dict[str, str]:
        from ..pool import auto_hint

        return auto_hint(path, live if live == len(self.specs) else None, self._detector_options.get("backend", "auto"))

    def _auto_workers(self, path: str | Path, live: int) -> int:
        from ..pool import auto_workers

        opts = self._detector_options
        if "intra_op_threads" in opts:  # the caller laid out one detector's threads
            return 1
        fill = live if live == len(self.specs) else None  # a file or folder fills any batch
        return auto_workers(path, fill, opts.get("device", "auto"), opts.get("backend", "auto"))

    def _batch_size(self, fills: bool) -> int:
        """``fills``: a file or folder is among the sources, so any batch fills (live sources give one frame each)."""
        backend = getattr(self.detector, "backend", None)
        static = getattr(backend if backend is not None else self.detector, "max_batch", 1)
        if static:  # a static-batch model: up to its batch (Detector pads a short one)
            return min(self.config.batch, static) if self.config.batch else static
        # a dynamic model: one frame per source, and at least one per worker of a pool (one file fills them all)
        # or per infer request of an OpenVINO detector in throughput mode (one frame would leave the others idle)
        in_flight = getattr(backend, "requests", 1) if fills and getattr(backend, "hint", None) == "throughput" else 1
        return self.config.batch or max(len(self.specs), getattr(self.detector, "workers", 1), in_flight)

    def stop(self) -> None:
        """Ask the stream to stop (thread-safe; :meth:`run` returns soon after)."""
        self._stop.set()
        self._ready.set()

    def close(self) -> None:
        """Stop, join the capture threads, close the sinks, the metrics server and an owned detector."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        join_s = STOP_JOIN_S
        deadline = time.monotonic() + join_s
        for t in self._threads:
            if t.ident is None:  # never started (start() failed part-way)
                continue
            t.join(timeout=max(deadline - time.monotonic(), 0.1))
            if t.is_alive():
                log.warning("capture thread %s did not stop within %.0fs; leaving it (daemon)", t.name, join_s)
        for sink in (*self.processors, *self.sinks):  # processors first: they flush events and stop servers
            try:
                sink.close()
            except Exception as e:  # noqa: BLE001 - close the others anyway
                log.error("closing %s failed: %s", type(sink).__name__, e)
        if self._exporter is not None:
            self._exporter.close()
        if self._owns_detector and self.detector is not None:
            self.detector.close()

    def __enter__(self) -> "Stream":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the pipeline thread -------------------------------------------------------------------
    def _event(self, ev: StreamEvent) -> None:
        """Called from capture threads."""
        m = self.metrics.sources.get(ev.source)
        if m is not None:
            if ev.kind in (EventKind.CONNECTED, EventKind.RECONNECTED):
                m.connected = True
                m.reconnects += ev.kind is EventKind.RECONNECTED
            elif ev.kind is EventKind.DISCONNECTED:
                m.connected, m.disconnects = False, m.disconnects + 1
            else:
                m.connected = False
        level = logging.WARNING if ev.kind in (EventKind.DISCONNECTED, EventKind.FAILED) else logging.INFO
        log.log(level, "%s %s%s", ev.source, ev.kind.value, f": {ev.detail}" if ev.detail else "")
        for p in self.processors:
            p.on_event(ev)
        if self._on_event is not None:
            self._on_event(ev)
        self._ready.set()  # wake the pipeline: a source may have ended or failed

    def _gather(self, limit: int) -> list[Frame]:
        """Up to ``limit`` ready frames, one per source per round, starting after the last served."""
        batch: list[Frame] = []
        n = len(self._slots)
        progress = True
        while len(batch) < limit and progress:
            progress = False
            for k in range(n):
                i = (self._next + k) % n
                frame = self._slots[i].take()
                if frame is not None:
                    batch.append(frame)
                    progress = True
                    if len(batch) == limit:
                        self._next = (i + 1) % n
                        return batch
        self._next = (self._next + 1) % n
        return batch

    def _check_sources(self) -> bool:
        """Raise the first source failure; ``True`` while any source may still produce frames."""
        for t in self._threads:
            if t.error is not None:
                raise t.error
        return any(t.is_alive() for t in self._threads) or any(len(s) for s in self._slots)

    def _process(self, frames: list[Frame]) -> None:
        detections = self.detector.predict([f.image for f in frames])
        done = time.perf_counter()
        for f, d in zip(frames, detections):
            latency = done - f.t_capture
            self.metrics[f.source].record_out(done, latency)
            result = StreamResult(f.source, f.index, f.timestamp, f.image, d, latency * 1e3, f.fps, f.t_capture)
            for p in self.processors:
                result = p.process(result)
            for sink in self.sinks:
                sink.write(result)
        self.frames_out += len(frames)

    def run(self) -> dict[str, dict[str, Any]]:
        """Process until every source ended, :meth:`stop`, SIGTERM, ``max_frames`` or ``duration``.

        Returns each source's final metrics. Raises :class:`~engine.errors.SourceError` when a source
        fails (a dead URL after its connect attempts, a corrupt file). Ctrl-C closes everything, then
        raises ``KeyboardInterrupt``; SIGTERM closes everything and returns.
        """
        with self._signals:
            try:
                self.start()
                self._loop()
            finally:
                self.close()
        if self._signals.interrupted:
            raise KeyboardInterrupt
        snap = self.metrics.snapshot()
        for name, s in snap.items():
            log.info("final %s", StreamMetrics.format(name, s))
        return snap

    def _loop(self) -> None:
        cfg = self.config
        t_end = time.monotonic() + cfg.duration if cfg.duration is not None else None
        next_log = time.monotonic() + cfg.log_interval if cfg.log_interval > 0 else None
        while not self._stop.is_set() and self._signals.signum is None:
            self._ready.clear()
            alive = self._check_sources()
            # never past --max-frames: the last call takes only the frames still wanted
            wanted = self.batch if cfg.max_frames is None else min(self.batch, cfg.max_frames - self.frames_out)
            frames = self._gather(wanted)
            if frames:
                self._process(frames)
            elif not alive:
                log.info("every source ended")
                break
            else:
                self._ready.wait(0.1)
            now = time.monotonic()
            if next_log is not None and now >= next_log:
                for name, s in self.metrics.snapshot().items():
                    log.info(StreamMetrics.format(name, s))
                next_log = now + cfg.log_interval
            if (cfg.max_frames is not None and self.frames_out >= cfg.max_frames) or (t_end is not None and now >= t_end):
                break
        if self._signals.signum is None:
            self._check_sources()
