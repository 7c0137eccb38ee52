"""One candidate per process: a spawned (never forked) worker loads one model and the frames, then times calls.

Why a process each: in one process every candidate's thread pools (ONNX Runtime's spinning workers,
PyTorch's OpenMP pool, OpenVINO's TBB arena) and caches stay alive side by side on the same cores, and a
2-core machine then times each candidate slower than it runs alone, unevenly enough to reorder them. A
worker that waits on its pipe costs nothing while another candidate runs.

The parent (:class:`Worker`) spawns a worker, which loads its frames (a memory-mapped file every worker
shares: :class:`FrameSet`) and its model, warms up, and answers ``ready``. Then each ``run`` message makes it
run a few untimed calls and ``n`` timed calls on the frames of call numbers ``start .. start + n - 1``
(the same frames for every candidate in a round) and send back their :class:`CallTimes` and the input
sizes the calls really ran. ``map`` scores it on labelled data; ``close`` ends it.
"""
from __future__ import annotations

import multiprocessing as mp
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from engine.errors import DeployError

START_TIMEOUT_S = 900.0  # a worker loads a model and warms up (an Ultralytics .pt of YOLO11m on 2 cores: a minute)
CALL_TIMEOUT_S = 1800.0


def _ctx():
    return mp.get_context("spawn")  # never fork: a fork copies the parent's threads' state and its imports


@dataclass(frozen=True)
class CallTimes:
    """Milliseconds of one call (a batch of frames)."""

    preprocess: float
    inference: float
    postprocess: float
    end_to_end: float


@dataclass(frozen=True)
class FrameSet:
    """Decoded frames in one flat ``.npy`` file that every worker memory-maps (the pages are shared).

    Attributes:
        path: the file.
        shapes: each frame's ``(height, width, 3)``.
        desc: where the frames came from, for the report.
    """

    path: Path
    shapes: tuple[tuple[int, int, int], ...]
    desc: str

    @classmethod
    def write(cls, frames: Sequence[np.ndarray], path: Path, desc: str) -> "FrameSet":
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npy")
        flat = np.concatenate([np.ascontiguousarray(f, np.uint8).ravel() for f in frames])
        np.save(tmp, flat)
        tmp.replace(path)
        return cls(path, tuple(tuple(int(d) for d in f.shape) for f in frames), desc)

    def load(self) -> list[np.ndarray]:
        """Read-only views of the frames; every page is touched here so that no call pays a page fault."""
        flat = np.load(self.path, mmap_mode="r")
        out, at = [], 0
        for shape in self.shapes:
            n = int(np.prod(shape))
            out.append(flat[at:at + n].reshape(shape))
            at += n
        for f in out:
            int(f[::8].sum())  # one read per 4 KiB page at least (rows of >= 512 bytes)
        return out

    def __len__(self) -> int:
        return len(self.shapes)


def batch_frames(frames: Sequence[Any], call: int, batch: int) -> list[Any]:
    """The frames of call number ``call``: the next ``batch`` frames, cycling."""
    n = len(frames)
    return [frames[(call * batch + k) % n] for k in range(batch)]


@dataclass(frozen=True)
class WorkerSpec:
    """What one worker runs.

    Attributes:
        name: the candidate's name in its group.
        role: ``"ours"`` (our ``Detector``) or ``"peer"`` (Ultralytics ``predict``).
        path: the model file or folder.
        imgsz: the input size asked for (height, width); what really ran is reported back.
        frames: the frames, shared.
        batch: frames per call.
        warmup: untimed calls after loading.
        conf, iou: thresholds, the same for every candidate.
        device: ``"cpu"`` or ``"cuda"``.
        rect: Ultralytics' minimal-padding letterbox (``None``: its default, on for a ``.pt``).
        threads: ONNX Runtime intra-op threads of our detector (0: ONNX Runtime's default, all cores); with
            ``pool``, of each detector (0: the pool's default, cores // pool).
        pool: our detectors side by side (a :class:`~engine.DetectorPool` when above 1; a call then takes
            ``batch`` frames, one per detector).
    """

    name: str
    role: str
    path: Path
    imgsz: tuple[int, int]
    frames: FrameSet
    batch: int = 1
    warmup: int = 10
    conf: float = 0.25
    iou: float = 0.45
    device: str = "cpu"
    rect: bool | None = None
    threads: int = 0
    pool: int = 1


def _serve(conn, spec: WorkerSpec) -> None:
    """The worker process: load, warm up, then answer messages until ``close``."""
    from .candidates import make_runner

    runner = None
    try:
        frames = spec.frames.load()
        runner = make_runner(spec)
        for i in range(spec.warmup):
            runner(batch_frames(frames, i, spec.batch))
        runner.sizes.clear()
        conn.send(("ready", runner.info))
        while True:
            msg = conn.recv()
            if msg[0] == "run":
                _, start, n, settle = msg
                for k in range(settle):  # untimed: the caches and thread pools of this process wake up
                    runner(batch_frames(frames, start - settle + k, spec.batch))
                runner.sizes.clear()
                times = [runner(batch_frames(frames, start + i, spec.batch)) for i in range(n)]
                conn.send(("times", times, dict(runner.sizes)))
            elif msg[0] == "map":
                conn.send(("map", _score(spec, msg[1])))
            else:
                break
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which names the candidate
        conn.send(_error(e))
    finally:
        if runner is not None:
            runner.close()
        conn.close()


def time_alone(spec: WorkerSpec, calls: int) -> list[CallTimes]:
    """A standalone timing (run it with :func:`in_fresh_process`): load, warm up, then ``calls`` timed calls in
    one loop on the frames of call numbers ``0..calls-1``, with nothing else alive."""
    from .candidates import make_runner

    frames = spec.frames.load()
    runner = make_runner(spec)
    try:
        for i in range(spec.warmup):
            runner(batch_frames(frames, i, spec.batch))
        return [runner(batch_frames(frames, i, spec.batch)) for i in range(calls)]
    finally:
        runner.close()


def _error(e: BaseException) -> tuple:
    if isinstance(e, DeployError):
        return ("error", e.message, e.fix, "")
    return ("error", f"{type(e).__name__}: {e}", "the candidate's library failed; its traceback is in the benchmark log",
            traceback.format_exc(limit=6))


def _score(spec: WorkerSpec, data: Path) -> dict:
    from engine.eval.evaluate import evaluate

    from .candidates import accuracy_predictor

    pred, close = accuracy_predictor(spec)
    try:
        r = evaluate(pred, data, progress=False)
    finally:
        close()
    return {"map50": r.map50, "map50_95": r.map50_95}


class WorkerError(DeployError):
    """A worker could not load or run its candidate (the candidate is reported as not run, with this reason).

    ``detail``: the worker's traceback when the failure was not one of ours (for the log).
    """

    def __init__(self, message: str, fix: str = "", detail: str = "") -> None:
        super().__init__(message, fix)
        self.detail = detail


class Worker:
    """The parent's handle on one worker process (a context manager: the process ends on exit)."""

    def __init__(self, spec: WorkerSpec, start_timeout: float = START_TIMEOUT_S) -> None:
        self.spec = spec
        self.info: dict = {}
        self._start_timeout = start_timeout
        self._conn = self._proc = None

    def __enter__(self) -> "Worker":
        ctx = _ctx()
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, self.spec), name=f"bench:{self.spec.name}", daemon=True)
        self._proc.start()
        child.close()
        try:
            self.info = self._expect("ready", self._start_timeout)[1]
        except BaseException:
            self.close()
            raise
        return self

    def _expect(self, kind: str, timeout: float) -> tuple:
        if not self._conn.poll(timeout):
            raise WorkerError(f"{self.spec.name}: its worker sent nothing in {timeout:.0f}s",
                              "see the model's size and the machine's load; rerun")
        try:
            msg = self._conn.recv()
        except EOFError:
            self._proc.join(5)
            raise WorkerError(f"{self.spec.name}: its worker process ended (exit code {self._proc.exitcode})",
                              "run the candidate alone to see why (out of memory?)") from None
        if msg[0] == "error":
            raise WorkerError(f"{self.spec.name}: {msg[1]}", msg[2], msg[3])
        if msg[0] != kind:
            raise WorkerError(f"{self.spec.name}: its worker answered {msg[0]!r} to {kind!r}", "report this bug")
        return msg

    def run(self, start: int, n: int, settle: int = 0) -> tuple[list[CallTimes], dict]:
        """``n`` timed calls on the frames of call numbers ``start..start+n-1``, after ``settle`` untimed ones;
        returns their times and ``{(h, w): frames}`` of the input sizes they ran."""
        self._conn.send(("run", start, n, settle))
        _, times, sizes = self._expect("times", CALL_TIMEOUT_S)
        return times, sizes

    def score(self, data: Path) -> dict:
        """mAP50 and mAP50-95 of this candidate on ``data`` (conf 0.001, IoU 0.7), scored in the worker."""
        self._conn.send(("map", Path(data)))
        return self._expect("map", CALL_TIMEOUT_S)[1]

    def close(self) -> None:
        if self._proc is None:
            return
        try:
            if self._proc.is_alive():
                self._conn.send(("close",))
        except (OSError, ValueError):
            pass
        self._proc.join(30)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        self._conn.close()
        self._proc = None

    def __exit__(self, *exc: object) -> None:
        self.close()


def _call(conn, fn: Callable, args: tuple) -> None:
    try:
        conn.send(("ok", fn(*args)))
    except BaseException as e:  # noqa: BLE001 - the parent raises it with its name
        conn.send(_error(e))
    finally:
        conn.close()


def in_fresh_process(fn: Callable, *args: Any, timeout: float = CALL_TIMEOUT_S, name: str = "bench") -> Any:
    """``fn(*args)`` in a spawned process of its own (``fn`` a module-level function); its result, or a
    :class:`WorkerError` with the process's error."""
    ctx = _ctx()
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_call, args=(child, fn, args), name=name, daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            raise WorkerError(f"{name}: no answer in {timeout:.0f}s", "rerun with a shorter run")
        try:
            msg = parent.recv()
        except EOFError:
            proc.join(5)
            raise WorkerError(f"{name}: its process ended (exit code {proc.exitcode})",
                              "run it alone to see why (out of memory?)") from None
        if msg[0] == "error":
            raise WorkerError(f"{name}: {msg[1]}", msg[2], msg[3])
        return msg[1]
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        parent.close()


def size_text(sizes: Counter | dict) -> str:
    """``{(384, 640): 100}`` → ``384x640``; several sizes with their counts."""
    items = sorted(((tuple(k), v) for k, v in dict(sizes).items()), key=lambda kv: -kv[1])
    if len(items) == 1:
        return f"{items[0][0][0]}x{items[0][0][1]}"
    return ", ".join(f"{h}x{w} ({n})" for (h, w), n in items) or "—"
