"""``python -m engine.serve``: serve a :class:`Detector` through NVIDIA Triton Inference Server.

The Triton here is the one PyPI's ``nvidia-pytriton`` bundles (Triton with its Python backend): Triton
owns HTTP/gRPC, the dynamic batcher, request validation and Prometheus metrics; our ``Detector`` runs in
this process behind it. Two models are served:

``<name>`` (default ``yolo``)
    input ``image``: uint8 BGR frames, shape ``(batch, height, width, 3)`` (any frame size; a request
    may carry several frames of one size). Triton's dynamic batcher gathers requests into one
    ``Detector`` call (one batched inference for a dynamic-batch model).
``<name>_encoded``
    input ``encoded``: bytes, shape ``(batch, 1)``, each a JPEG/PNG/BMP/WebP file, decoded here.
    No dynamic batching, so a request whose bytes are not an image fails alone.

Both answer, per request, ``num_detections`` int32 ``(batch, 1)``, ``boxes`` float32 ``(batch, K, 4)``
(xyxy, source pixels), ``scores`` float32 ``(batch, K)``, ``class_ids`` int32 ``(batch, K)`` and
``class_names`` bytes ``(batch, K)``; rows past ``num_detections`` are padding (K >= 1).
:func:`detections_from_outputs` turns them back into :class:`Detections`.

Bad requests get a client error (HTTP 400 / gRPC INVALID_ARGUMENT) with one line, never a traceback: a
wrong dtype, rank, channel count, input name or batch size is refused by Triton itself, before it
reaches us (Triton's one-line message); content the ``Detector`` cannot take (bytes that are not an
image, a truncated file, a zero-size frame) gets the project's message naming the request and the fix
(:mod:`engine.serve.stub`). The other requests of a batch are answered as usual, each bad request is
one warning line in the server log (at most :data:`BAD_REQUEST_LOG_LINES` per
:data:`BAD_REQUEST_LOG_WINDOW_S`), and the server keeps serving.

Stopping: SIGINT (Ctrl-C) and SIGTERM set a flag (:mod:`engine.signals`); the server then unloads both
models (Triton's Python-backend stubs exit and remove their folders under /tmp), stops Triton, which waits at most
:data:`EXIT_TIMEOUT_S` for clients that hold connections open (an HTTP keep-alive kept it 30 s), and
closes the detectors. ``serve`` then raises ``KeyboardInterrupt`` for SIGINT and returns for SIGTERM.

pytriton is imported only by :func:`serve`, so ``import engine.serve`` works without it. Triton's
Python-backend stub needs a venv made from Debian's ``/usr/bin/python3``: ``bash .ci/setup_triton.sh``.
"""
from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..cli import Terminated
from ..errors import BackendUnavailableError, ConfigError, DeployError
from ..signals import StopSignals
from .protocol import (
    ENCODED_INPUT,
    IMAGE_INPUT,
    error_outputs,
    frames_from_encoded_input,
    frames_from_image_input,
    one_line,
    pack_outputs,
)

log = logging.getLogger("engine.serve")

# Triton's wait at stop for in-flight requests, open client connections and its models' unloading (its default:
# 30 s). 6 s: the CPU default of two instances per model did not unload within 3 s on a busy 2-core machine
# (the stop test saw it), and a stub that Triton does not wait for leaves its folder under /tmp.
EXIT_TIMEOUT_S = 6
UNLOAD_WAIT_S = 4.0  # at stop, how long the models may take to unload before Triton is stopped anyway
BAD_REQUEST_LOG_LINES, BAD_REQUEST_LOG_WINDOW_S = 10, 10.0

SETUP_HINT = "make the serving venv with `bash .ci/setup_triton.sh` and run `.venv-triton/bin/python -m engine.serve`"


@dataclass(frozen=True)
class ServeConfig:
    """What ``python -m engine.serve`` serves, and how.

    Attributes:
        model: the model file (any file ``Detector`` loads: ``.onnx``, ``.engine``).
        name: Triton model name of the raw-frame model (``<name>_encoded`` takes encoded images).
        host: address HTTP, gRPC and metrics bind to (loopback by default).
        http_port, grpc_port, metrics_port: ports (0 = that endpoint is off; metrics may be off).
        max_batch: most frames Triton gathers into one ``Detector`` call.
        dynamic_batching: let Triton's dynamic batcher gather requests (else one request per call);
            ``None``: on where the model runs on a GPU, off on a CPU (:mod:`engine.serve.defaults`).
        queue_delay_us: how long the batcher may hold a request waiting for more.
        instances: model instances (each a ``Detector``) running side by side; ``None``: 1 on a GPU, 2 on a
            CPU of two cores or more.
        conf, iou, max_det: the ``Detector``'s thresholds.
        threads: ONNX Runtime intra-op threads per instance (0 = all cores); ``None``: the cores shared out
            between the instances.
    """

    model: Path
    name: str = "yolo"
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = 8
    dynamic_batching: bool | None = None
    queue_delay_us: int = 2000
    instances: int | None = None
    conf: float = 0.25
    iou: float = 0.45
    max_det: int = 300
    threads: int | None = None

    def __post_init__(self) -> None:
        if not Path(self.model).is_file():
            raise ConfigError(f"--model {self.model}: no such file",
                              "pass a model built by python -m exporters.build (.onnx or .engine)")
        if not self.name or not all(c.isalnum() or c in "._-" for c in self.name):
            raise ConfigError(f"--name {self.name!r}: Triton model names take letters, digits, '.', '_' and '-'",
                              "use --name yolo (default)")
        if (not 1 <= self.max_batch <= 1024 or (self.instances or 1) < 1 or self.queue_delay_us < 0
                or (self.threads or 0) < 0):
            raise ConfigError(f"--max-batch {self.max_batch}, --instances {self.instances}, "
                              f"--queue-delay-us {self.queue_delay_us}, --threads {self.threads} out of range",
                              "use 1 <= --max-batch <= 1024, --instances >= 1, --queue-delay-us >= 0, --threads >= 0")
        ports = [p for p in (self.http_port, self.grpc_port, self.metrics_port) if p]
        if any(not 0 < p < 65536 for p in ports) or len(set(ports)) != len(ports):
            raise ConfigError(f"ports http {self.http_port}, grpc {self.grpc_port}, metrics {self.metrics_port} "
                              "must be distinct and in 1..65535 (0 = off)", "pick free ports, e.g. 8000 8001 8002")
        if not (self.http_port or self.grpc_port):
            raise ConfigError("--http-port 0 and --grpc-port 0 turn off both endpoints", "keep at least one on")


# ---- the inference callable Triton calls --------------------------------------------------------

class LogLimit:
    """At most ``lines`` log lines per ``window_s`` seconds, then one line counting those left out."""

    def __init__(self, lines: int = BAD_REQUEST_LOG_LINES, window_s: float = BAD_REQUEST_LOG_WINDOW_S,
                 clock=time.monotonic) -> None:
        self.lines, self.window_s, self.clock = lines, window_s, clock
        self._lock = threading.Lock()
        self._start, self._count, self._dropped = clock(), 0, 0

    def warning(self, message: str) -> None:
        with self._lock:
            now = self.clock()
            if now - self._start >= self.window_s:
                if self._dropped:
                    log.warning("%d more bad requests in the last %.0f s were not logged", self._dropped, self.window_s)
                self._start, self._count, self._dropped = now, 0, 0
            if self._count < self.lines:
                self._count += 1
                log.warning("%s", message)
            else:
                self._dropped += 1


class DetectorModel:
    """Triton's inference callable: a list of requests in, a list of output dicts out.

    All frames of all good requests Triton batched together go through one ``Detector.predict`` call
    (batched inference for a dynamic-batch model; frames one by one for a static one). A request whose
    input the Detector cannot take is answered with its own client error; the others are not affected.
    """

    def __init__(self, detector: Any, input_name: str, lock: threading.Lock | None = None, model: str = "yolo",
                 bad_requests: LogLimit | None = None) -> None:
        self.detector = detector
        self.input_name = input_name
        self.lock = lock or threading.Lock()  # one inference at a time per Detector, whichever model asks
        self.model = model
        self.bad_requests = bad_requests or LogLimit()
        self._decode = frames_from_encoded_input if input_name == ENCODED_INPUT else frames_from_image_input

    def __call__(self, requests: Sequence[Any]) -> list[dict[str, np.ndarray]]:
        out: list[dict[str, np.ndarray] | None] = [None] * len(requests)
        good: list[tuple[int, list[np.ndarray]]] = []
        for i, r in enumerate(requests):
            try:
                good.append((i, self._decode(r[self.input_name], i)))
            except DeployError as e:
                out[i] = self._refuse(e)
        if good:
            try:
                with self.lock:
                    dets = self.detector.predict([f for _, frames in good for f in frames])
            except DeployError as e:  # checked frames the Detector still refused: the whole batch's input
                dets, failed = None, [self._refuse(e) for _ in good]
            except Exception as e:  # noqa: BLE001 - a bug of ours: the traceback to our log, one line to clients
                log.exception("inference failed on %d request(s) to '%s'", len(good), self.model)
                dets, failed = None, [error_outputs(f"engine.serve: internal error ({type(e).__name__}); see the "
                                                    "server log", server=True) for _ in good]
            start = 0
            for k, (i, frames) in enumerate(good):
                out[i] = pack_outputs(dets[start:start + len(frames)]) if dets is not None else failed[k]
                start += len(frames)
        return out

    def _refuse(self, err: DeployError) -> dict[str, np.ndarray]:
        line = one_line(err)
        self.bad_requests.warning(f"bad request to '{self.model}': {line}")
        return error_outputs(line)


def _pytriton():
    try:
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig
    except ImportError as e:
        raise BackendUnavailableError(f"python -m engine.serve needs nvidia-pytriton, which {sys.executable} lacks ({e})",
                                      SETUP_HINT) from None
    return DynamicBatcher, ModelConfig, Tensor, Triton, TritonConfig


def _check_ports(cfg: ServeConfig) -> None:
    """Fail in a second, naming the flag, when a port is taken (Triton itself would time out after a minute)."""
    for flag, port in (("--http-port", cfg.http_port), ("--grpc-port", cfg.grpc_port),
                       ("--metrics-port", cfg.metrics_port)):
        if not port:
            continue
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # only a listening socket counts
            try:
                s.bind((cfg.host, port))
            except OSError as e:
                raise ConfigError(f"{flag} {port}: {cfg.host}:{port} is not available ({e.strerror or e})",
                                  f"stop what listens there, or pass another {flag}") from None


def _detector(cfg: ServeConfig):
    from ..detector import Detector

    # no spinning: Triton's and the stub's threads need the cores between calls (engine.serve.defaults)
    opts = ({"intra_op_threads": cfg.threads, "spin_wait": False} if Path(cfg.model).suffix.lower() == ".onnx"
            else {})
    det = Detector(cfg.model, conf=cfg.conf, iou=cfg.iou, max_det=cfg.max_det, **opts)
    # warm up every batch size the batcher may form: a backend's first run at a new shape is several
    # times slower (ONNX Runtime plans memory per shape), which would land on some client's request
    blank = np.full((*det.imgsz, 3), 114, np.uint8)
    for b in range(1, (cfg.max_batch if det.backend.max_batch is None and cfg.dynamic_batching else 1) + 1):
        det.predict([blank] * b)
    return det


def _detectors(cfg: ServeConfig, stack: ExitStack) -> list:
    """``cfg.instances`` Detectors, each closed by ``stack``.

    For an engine they share one deserialized TensorRT engine, each with its own execution context
    (the TensorRT backend shares engines of one file). They are made and warmed up on a helper thread
    that then ends, so each one's context and buffers go back to its pool and Triton's instance thread
    takes them over: N instances hold N execution contexts, not one more per Detector for this thread.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="serve-load") as pool:
        detectors = []
        for _ in range(cfg.instances):
            det = pool.submit(_detector, cfg).result()
            stack.callback(det.close)
            detectors.append(det)
    return detectors


def _unload(triton: Any, cfg: ServeConfig, models: Sequence[str]) -> None:
    """Unload ``models`` through Triton's repository API while it still runs: its Python-backend stubs
    then exit cleanly and remove their model folders under /tmp (a stop that times out leaves them)."""
    scheme, port = ("http", cfg.http_port) if cfg.http_port else ("grpc", cfg.grpc_port)
    try:
        from pytriton.client.auth import create_auth_headers
        from pytriton.client.utils import create_client_from_url

        client = create_client_from_url(f"{scheme}://{cfg.host}:{port}", network_timeout_s=10)
        headers = create_auth_headers(triton.get_access_token(), scheme)
        try:
            for name in models:
                client.unload_model(name, headers=headers)
            deadline = time.monotonic() + UNLOAD_WAIT_S  # a loaded machine unloads slowly: Triton's exit
            while time.monotonic() < deadline and any(client.is_model_ready(n) for n in models):  # timeout must
                time.sleep(0.1)  # not be spent on it, or Triton exits without finalizing its Python backend
        finally:
            client.close()
    except Exception as e:  # noqa: BLE001 - the stop goes on; Triton unloads them itself, slower
        log.warning("could not unload the models before stopping Triton (%s: %s)", type(e).__name__, e)


def serve(cfg: ServeConfig, log=print) -> None:
    """Start Triton with the two models and block until SIGINT/SIGTERM or Triton stops.

    Fields of ``cfg`` left ``None`` take this machine's defaults (:func:`.defaults.resolve`).

    Raises:
        KeyboardInterrupt: after Ctrl-C, once Triton stopped and the Detectors closed.
        engine.cli.Terminated: the same after SIGTERM.
    """
    from .defaults import resolve

    cfg = resolve(cfg)
    _check_ports(cfg)
    _pytriton()  # before loading models: a missing pytriton fails in a second
    with StopSignals() as stop, ExitStack() as stack:  # signals only set a flag the serving loop polls
        _run_triton(cfg, _detectors(cfg, stack), stop, log)
    # Triton has stopped and the Detectors are closed (the with block): now the signal decides the exit
    if stop.interrupted:
        raise KeyboardInterrupt
    if stop.signum is not None:
        raise Terminated


def _run_triton(cfg: ServeConfig, detectors: list, stop: StopSignals, log) -> None:
    """Bind the two models to ``detectors`` and serve until a stop signal or Triton stops."""
    DynamicBatcher, ModelConfig, Tensor, Triton, TritonConfig = _pytriton()
    from pytriton.models.model import Model

    from .stub import install

    install(Model, BAD_REQUEST_LOG_LINES, BAD_REQUEST_LOG_WINDOW_S)  # bad requests: INVALID_ARG, one line (stub.py)
    outputs = [Tensor(name="num_detections", dtype=np.int32, shape=(1,)),
               Tensor(name="boxes", dtype=np.float32, shape=(-1, 4)),
               Tensor(name="scores", dtype=np.float32, shape=(-1,)),
               Tensor(name="class_ids", dtype=np.int32, shape=(-1,)),
               Tensor(name="class_names", dtype=np.bytes_, shape=(-1,))]
    batcher = DynamicBatcher(max_queue_delay_microseconds=cfg.queue_delay_us) if cfg.dynamic_batching else None
    tcfg = TritonConfig(http_address=cfg.host, http_port=cfg.http_port or None, allow_http=bool(cfg.http_port),
                        grpc_address=cfg.host, grpc_port=cfg.grpc_port or None, allow_grpc=bool(cfg.grpc_port),
                        metrics_address=cfg.host, metrics_port=cfg.metrics_port or None,
                        allow_metrics=bool(cfg.metrics_port), allow_gpu_metrics=False, exit_on_error=True,
                        exit_timeout_secs=EXIT_TIMEOUT_S)
    locks = [threading.Lock() for _ in detectors]  # the raw and the encoded model share each Detector
    bad_requests = LogLimit()
    names = (cfg.name, f"{cfg.name}_encoded")
    # strict=False: a refused request's response carries an error key in place of the outputs (see stub.py)
    with Triton(config=tcfg) as triton:
        triton.bind(model_name=names[0],
                    infer_func=[DetectorModel(d, IMAGE_INPUT, k, names[0], bad_requests)
                                for d, k in zip(detectors, locks)],
                    inputs=[Tensor(name=IMAGE_INPUT, dtype=np.uint8, shape=(-1, -1, 3))], outputs=outputs,
                    config=ModelConfig(max_batch_size=cfg.max_batch, batcher=batcher), strict=False)
        triton.bind(model_name=names[1],
                    infer_func=[DetectorModel(d, ENCODED_INPUT, k, names[1], bad_requests)
                                for d, k in zip(detectors, locks)],
                    inputs=[Tensor(name=ENCODED_INPUT, dtype=np.bytes_, shape=(1,))], outputs=outputs,
                    config=ModelConfig(max_batch_size=cfg.max_batch, batcher=None), strict=False)
        triton.connect()  # raises if Triton or a model fails to start
        d = detectors[0]
        where = ", ".join(f"{k} {cfg.host}:{p}" for k, p in (("http", cfg.http_port), ("grpc", cfg.grpc_port),
                                                             ("metrics", cfg.metrics_port)) if p)
        log(f"serving {Path(cfg.model).name} ({len(d.names)} classes, {d.imgsz[0]}x{d.imgsz[1]}, "
            f"{'dynamic' if d.backend.max_batch is None else 'static'} batch) as '{cfg.name}' (raw frames) and "
            f"'{cfg.name}_encoded' (image files) on {where}; max batch {cfg.max_batch}, dynamic batching "
            f"{'on' if cfg.dynamic_batching else 'off'}, {cfg.instances} instance(s) x {cfg.threads or 'all'} "
            "thread(s); Ctrl+C stops")
        sys.stdout.flush()
        while stop.signum is None and triton.is_alive():
            time.sleep(0.1)
        if stop.signum is not None:
            _unload(triton, cfg, names)
