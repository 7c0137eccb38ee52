"""Getting events out without ever holding up inference.

The pipeline thread hands each event to :meth:`EventBus.publish`, which only appends to a bounded queue.
The bus's own thread writes the event's snapshot (JPEG encoding is milliseconds), serializes the event
once, and puts the same JSON text into the queue of every :class:`EventSink`. Each sink delivers from
its queue, in order, on its own thread, retrying a failed delivery with capped exponential backoff; a
queue that is full drops its oldest event and counts it. So a broker or webhook that is down at start or
dies mid-run costs the pipeline nothing: the events queued meanwhile arrive once it is back (up to
the queue size), and the rest are counted as dropped.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterable, TypeVar

from ..stream.sources import backoff
from .metrics import AlertMetrics

log = logging.getLogger("engine.events")
T = TypeVar("T")
FRAMES_WAITING = 64  # events whose frame waits for its snapshot; beyond, events go on without a new snapshot


class DropOldestQueue(Generic[T]):
    """A bounded FIFO that never blocks the producer: when full, the oldest waiting item is dropped.

    The consumer takes an item with :meth:`get` and calls :meth:`done` once it is delivered or given up;
    the item in flight counts towards ``maxsize`` but is never the one dropped.
    """

    def __init__(self, maxsize: int, on_drop: Callable[[T], None] | None = None) -> None:
        self.maxsize = max(int(maxsize), 1)
        self.dropped = 0
        self.on_drop = on_drop  # called (under the queue's lock) with each item dropped
        self._q: deque[T] = deque()
        self._inflight = 0
        self._cond = threading.Condition()

    def put(self, item: T) -> bool:
        """Queue ``item``; ``False`` when something (the oldest, or ``item`` itself) was dropped to make room."""
        with self._cond:
            lost = False
            while len(self._q) + self._inflight >= self.maxsize and self._q:
                self._dropped(self._q.popleft())
                lost = True
            if len(self._q) + self._inflight >= self.maxsize:  # only the in-flight item fits
                self._dropped(item)
                return False
            self._q.append(item)
            self._cond.notify_all()
            return not lost

    def _dropped(self, item: T) -> None:
        self.dropped += 1
        if self.on_drop is not None:
            self.on_drop(item)

    def get(self, timeout: float) -> T | None:
        """The oldest item (now in flight), or ``None`` after ``timeout`` seconds without one."""
        with self._cond:
            if not self._q and not self._cond.wait_for(lambda: bool(self._q), timeout):
                return None
            self._inflight += 1
            return self._q.popleft()

    def done(self) -> None:
        with self._cond:
            self._inflight -= 1
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or in flight; ``False`` on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._q and not self._inflight, timeout)

    def drain(self) -> int:
        """Drop whatever waits (at shutdown); return how many."""
        with self._cond:
            n = len(self._q)
            self._q.clear()
            self.dropped += n
            return n

    def __len__(self) -> int:
        return len(self._q) + self._inflight


@dataclass(frozen=True)
class Payload:
    """An event as every sink gets it: the dict and its JSON text (the exact bytes each sink sends)."""

    data: dict[str, Any]
    body: str


class Retry(Exception):
    """Delivery failed for now (connection refused, timeout, HTTP 5xx): back off and try again."""


class Reject(Exception):
    """The receiver refused this event for good (HTTP 4xx): count it failed and go on with the next."""


class EventSink:
    """Delivers payloads from its own bounded queue on its own thread; subclasses implement :meth:`deliver`.

    Args:
        name: the ``sink`` label in metrics and logs.
        queue_size: events held while the receiver is down (the oldest dropped beyond it).
        backoff_max: cap of the delay between retries, seconds (0.5, 1, 2 … this).
    """

    def __init__(self, name: str, queue_size: int = 1000, backoff_max: float = 30.0) -> None:
        self.name, self.backoff_max = name, backoff_max
        self.queue: DropOldestQueue[Payload] = DropOldestQueue(queue_size)
        self.metrics = AlertMetrics()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- for subclasses ---------------------------------------------------------------------------
    def open(self) -> None:
        """Runs first on the sink's thread (connect, check the receiver); an exception is logged, not fatal."""

    def deliver(self, payload: Payload) -> None:
        """Deliver one event or raise :class:`Retry` / :class:`Reject` (any other exception: retry)."""
        raise NotImplementedError

    def shutdown(self) -> None:
        """Runs last on the sink's thread (disconnect, close files)."""

    # --- the machinery ----------------------------------------------------------------------------
    def start(self, metrics: AlertMetrics) -> None:
        self.metrics = metrics
        metrics.queue_fns[self.name] = lambda: len(self.queue)
        metrics.dropped_fns[self.name] = lambda: self.queue.dropped
        self._thread = threading.Thread(target=self._run, name=f"events-{self.name}", daemon=True)
        self._thread.start()

    def put(self, payload: Payload) -> None:
        if not self.queue.put(payload):
            log.debug("%s: queue full (%d), dropped the oldest event", self.name, self.queue.maxsize)

    def _run(self) -> None:
        try:
            self.open()
        except Exception as e:  # noqa: BLE001 - a receiver down at start is a warning and a retry
            log.warning("%s: %s; events will be retried", self.name, e)
        try:
            while not self._stop.is_set():
                payload = self.queue.get(0.2)
                if payload is not None:
                    try:
                        self._deliver_with_retries(payload)
                    finally:
                        self.queue.done()
        finally:
            try:
                self.shutdown()
            except Exception as e:  # noqa: BLE001
                log.debug("%s: shutdown: %s", self.name, e)

    def _deliver_with_retries(self, payload: Payload) -> None:
        delays = backoff(0.5, self.backoff_max)
        failures = 0
        while True:
            try:
                self.deliver(payload)
            except Reject as e:
                self.metrics.count("rejected", self.name)
                log.error("%s: event %s refused, not retried: %s", self.name, payload.data.get("event_id"), e)
                return
            except Exception as e:  # noqa: BLE001 - Retry, or anything unexpected: back off and retry
                failures += 1
                self.metrics.count("failures", self.name)
                (log.warning if failures == 1 else log.debug)(
                    "%s: delivery failed (%s); retrying with backoff up to %gs", self.name, e, self.backoff_max)
                if self._stop.wait(next(delays)):
                    self.queue.dropped += 1  # closing: the event in flight is given up
                    return
                self.metrics.count("retries", self.name)
                continue
            self.metrics.count("sent", self.name)
            if failures:
                log.info("%s: delivered again after %d failed attempt(s)", self.name, failures)
            return

    def close(self, timeout: float) -> None:
        """Deliver what is queued for up to ``timeout`` seconds, then stop; the rest counts as dropped."""
        if self._thread is None:
            return
        if not self.queue.wait_idle(timeout) and len(self.queue):
            log.warning("%s: %d event(s) undelivered at shutdown", self.name, len(self.queue))
        self._stop.set()
        self._thread.join(timeout=10)
        self.queue.drain()


class EventBus:
    """Takes events from the pipeline (never blocking), writes snapshots, fans the JSON out to the sinks.

    Args:
        sinks: where events go (each behind its own queue).
        metrics: the counters.
        write_snapshot: ``fn(job) -> bool`` for events that bring a new snapshot (``None``: no snapshots).
        queue_size: events waiting for the bus's thread (the rules file's ``queue_size``); the oldest
            dropped beyond it.
        frames: of those, how many may hold a frame for their snapshot (a full-HD frame is 6 MB). An
            event published while that many wait goes on without a new snapshot (a ``start`` then says
            ``"snapshot": null``) and is counted in ``snapshots_skipped``: a burst of incidents (every car
            in view reaching ``min_duration`` together) loses snapshots, never events.
    """

    def __init__(self, sinks: Iterable[EventSink], metrics: AlertMetrics,
                 write_snapshot: Callable[[Any], bool] | None = None, queue_size: int = 1000,
                 frames: int = FRAMES_WAITING) -> None:
        self.sinks, self.metrics, self.write_snapshot = list(sinks), metrics, write_snapshot
        self.jobs: DropOldestQueue[tuple[Any, Any]] = DropOldestQueue(queue_size, on_drop=self._dropped)
        self.frames, self._frames_waiting = frames, 0
        self._frames_lock = threading.Lock()
        # incidents whose snapshot file was never written, oldest first (bounded: an end may be lost too)
        self._unwritten: OrderedDict[str, None] = OrderedDict()
        self._unwritten_max = 10 * max(int(queue_size), 1)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.metrics.dropped_fns["bus"] = lambda: self.jobs.dropped
        for sink in self.sinks:
            sink.start(self.metrics)
        self._thread = threading.Thread(target=self._run, name="events-bus", daemon=True)
        self._thread.start()

    def publish(self, event: Any, snapshot_job: Any = None) -> None:
        """Queue ``event`` (an :class:`~engine.events.incidents.Event`) and what its snapshot needs."""
        if snapshot_job is not None:
            with self._frames_lock:
                room = self._frames_waiting < self.frames
                self._frames_waiting += room
            if not room:  # the frame is let go (an Event carries it too), the event goes on
                snapshot_job = None
                if dataclasses.is_dataclass(event) and getattr(event, "image", None) is not None:
                    event = dataclasses.replace(event, image=None)
                self.metrics.count("snapshots_skipped", "bus")
        self.jobs.put((event, snapshot_job))

    def _release(self, job: tuple[Any, Any]) -> None:
        """A job left the queue (dispatched or dropped): its frame no longer waits."""
        if job[1] is not None:
            with self._frames_lock:
                self._frames_waiting -= 1

    def _dropped(self, job: tuple[Any, Any]) -> None:
        """A job the full queue dropped: its frame is freed, and a dropped start's snapshot is never written."""
        self._release(job)
        event = job[0]
        if getattr(event, "type", None) == "start" and getattr(event, "snapshot", None):
            self._mark_unwritten(event.event_id)

    def _mark_unwritten(self, incident: str) -> None:
        with self._frames_lock:
            self._unwritten[incident] = None
            while len(self._unwritten) > self._unwritten_max:
                self._unwritten.popitem(last=False)

    def _has_unwritten(self, incident: str) -> bool:
        with self._frames_lock:
            return incident in self._unwritten

    def _forget_unwritten(self, incident: str) -> None:
        with self._frames_lock:
            self._unwritten.pop(incident, None)

    def _run(self) -> None:
        while not self._stop.is_set():
            job = self.jobs.get(0.2)
            if job is None:
                continue
            try:
                self._dispatch(*job)
            except Exception as e:  # noqa: BLE001 - one bad event must not stop the others
                log.error("events: dispatch failed: %s", e)
            finally:
                self._release(job)
                self.jobs.done()

    def _dispatch(self, event: Any, snapshot_job: Any) -> None:
        data = event.to_json()
        written = snapshot_job is not None and self.write_snapshot is not None and self.write_snapshot(snapshot_job)
        incident = data.get("event_id")
        if written:
            self.metrics.count("snapshots", "bus")
            self._forget_unwritten(incident)  # an update wrote the incident's snapshot after all
        elif event.type == "start" or self._has_unwritten(incident):
            # nothing was written (skipped in a burst, a failed write, or the start itself dropped from a full
            # queue): say so rather than point at no file, on the start and on the incident's later events
            if event.type == "start" and data.get("snapshot"):
                self._mark_unwritten(incident)
            data["snapshot"] = None
        if event.type == "end":
            self._forget_unwritten(incident)
        payload = Payload(data, json.dumps(data, separators=(",", ":")))
        for sink in self.sinks:
            sink.put(payload)

    def close(self, timeout: float = 5.0) -> None:
        """Dispatch what is queued, give the sinks up to ``timeout`` seconds in all to deliver, stop."""
        deadline = time.monotonic() + timeout
        if self._thread is not None:
            self.jobs.wait_idle(timeout)
            self._stop.set()
            self._thread.join(timeout=10)
            self.jobs.drain()
        for sink in self.sinks:
            sink.close(max(deadline - time.monotonic(), 0.0))
