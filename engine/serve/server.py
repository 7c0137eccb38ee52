"""``python -m engine.serve``: serve a :class:`Detector` through NVIDIA Triton Inference Server.

The Triton here is the one PyPI's ``nvidia-pytriton`` bundles (the ``tritonserver`` binary with its Python
backend; :mod:`engine.serve.triton_process`): Triton owns HTTP/gRPC, the dynamic batcher, request
validation and Prometheus metrics; each model instance is a Python-backend stub process holding its own
``Detector`` (:mod:`engine.serve.triton_model`), so a request makes one hop from Triton to the process that
runs it. Two models are served:

``<name>`` (default ``yolo``)
    input ``image``: uint8 BGR frames, shape ``(batch, height, width, 3)`` (any frame size; a request
    may carry several frames of one size). With Triton's dynamic batcher on, the requests it gathers go
    through one ``Detector`` call (one batched inference for a dynamic-batch model).
``<name>_encoded``
    input ``encoded``: bytes, shape ``(batch, 1)``, each a JPEG/PNG/BMP/WebP file, decoded in the stub.
    No dynamic batching, so a request whose bytes are not an image fails alone.

Both answer, per request, ``num_detections`` int32 ``(batch, 1)``, ``boxes`` float32 ``(batch, K, 4)``
(xyxy, source pixels), ``scores`` float32 ``(batch, K)``, ``class_ids`` int32 ``(batch, K)`` and
``class_names`` bytes ``(batch, K)``; rows past ``num_detections`` are padding (K >= 1).
:func:`detections_from_outputs` turns them back into :class:`Detections`.

Clients reach the front (:mod:`engine.serve.front`): this process's own HTTP and gRPC endpoints, which
pass every request on to Triton's, on private loopback ports, after checking what an inference request
declares. Bad requests get a client error (HTTP 400 / gRPC INVALID_ARGUMENT; 404 / NOT_FOUND for an unknown
model) with the project's one line (reason; fix), never a traceback: a wrong dtype, rank, channel count,
input name, batch size, byte count or a zero-size frame is refused by the front, which Triton would refuse
in its own, sometimes misleading, words; content the ``Detector`` cannot take (bytes that are not an image,
a truncated file) by the model in Triton. The other requests of a batch are answered as usual, each bad
request is one warning line in the log (at most :data:`~engine.serve.handler.BAD_REQUEST_LOG_LINES` per
:data:`~engine.serve.handler.BAD_REQUEST_LOG_WINDOW_S` for the front and per model instance), and the server
keeps serving. ``ServeConfig(front=False)`` (``--no-front``) lets clients reach Triton's endpoints instead.

Stopping: SIGINT (Ctrl-C) and SIGTERM set a flag (:mod:`engine.signals`); the server then closes the front
(its listeners and the clients' connections), unloads both models (each stub closes its Detector and exits),
stops Triton, which waits at most :data:`EXIT_TIMEOUT_S` for connections still open (an HTTP keep-alive kept
it 30 s before the front), and removes its model repository folder. ``serve`` then raises
``KeyboardInterrupt`` for SIGINT and :class:`~engine.cli.Terminated` for SIGTERM.

Triton is Linux-only; ``import engine.serve`` works anywhere. Triton's Python-backend stub needs a venv made
from Debian's ``/usr/bin/python3``: ``bash .ci/setup_triton.sh``.
"""
from __future__ import annotations

import dataclasses
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cli import Terminated
from ..errors import ConfigError, DeployError, ModelLoadError, ServeError
from ..signals import StopSignals
from .front import LOOPBACK, Front, loopback_ports, port_taken
from .handler import BAD_REQUEST_LOG_LINES, BAD_REQUEST_LOG_WINDOW_S, DetectorModel, LogLimit  # noqa: F401
from .protocol import ENCODED_INPUT, IMAGE_INPUT
from .settings import StubSettings
from .triton_process import SETUP_HINT, ServedModel, TritonProcess, ended, find_triton

# Triton's wait at stop for in-flight requests, open client connections and its models' unloading (its default:
# 30 s). 6 s: two instances per model did not unload within 3 s on a busy 2-core machine.
EXIT_TIMEOUT_S = 6
UNLOAD_WAIT_S = 4.0  # at stop, how long the models may take to unload before Triton is stopped anyway
READY_TIMEOUT_S = 300.0  # every instance loads its model and warms up; an engine on a busy machine is slow


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
        instances: Detectors running side by side, each in its own Triton Python-backend stub process (the
            encoded-image model gets as many decoding stubs, which pass frames on to them); ``None``: 1 on a
            GPU, 2 on a CPU of two cores or more.
        conf, iou, max_det: the ``Detector``'s thresholds.
        threads: ONNX Runtime intra-op threads per instance (0 = all cores); ``None``: the cores shared out
            between the instances.
        front: clients reach ``engine.serve``'s own endpoints, which check each request and answer a bad one
            with the project's message (:mod:`engine.serve.front`); ``False``: they reach Triton's, one hop
            less, and a malformed request gets Triton's words.
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
    conf: float | None = None  # None: 0.25, or what an end-to-end model baked in (as Detector)
    iou: float | None = None
    max_det: int | None = None
    threads: int | None = None
    front: bool = True

    def __post_init__(self) -> None:
        if not Path(self.model).is_file():
            raise ConfigError(f"--model {self.model}: no such file",
                              "pass a model built by python -m exporters.build (.onnx or .engine)")
        if (not self.name or self.name.startswith(".") or not self.name.isascii()
                or not all(c.isalnum() or c in "._-" for c in self.name)):
            raise ConfigError(f"--name {self.name!r}: Triton model names take ASCII letters, digits, '.', '_' and '-' "
                              "and do not start with '.'",
                              "use --name yolo (default)")
        if len(self.name) + len("_encoded") > 200:  # a folder of that name (plus _encoded) goes in the repository
            raise ConfigError(f"--name of {len(self.name)} characters is too long", "use at most 192, e.g. --name yolo")
        if (not 1 <= self.max_batch <= 1024 or (self.instances is not None and self.instances < 1)
                or self.queue_delay_us < 0 or (self.threads or 0) < 0):
            raise ConfigError(f"--max-batch {self.max_batch}, --instances {self.instances}, "
                              f"--queue-delay-us {self.queue_delay_us}, --threads {self.threads} out of range",
                              "use 1 <= --max-batch <= 1024, --instances >= 1, --queue-delay-us >= 0, --threads >= 0")
        ports = [p for p in (self.http_port, self.grpc_port, self.metrics_port) if p]
        if any(not 0 < p < 65536 for p in ports) or len(set(ports)) != len(ports):
            raise ConfigError(f"ports http {self.http_port}, grpc {self.grpc_port}, metrics {self.metrics_port} "
                              "must be distinct and in 1..65535 (0 = off)", "pick free ports, e.g. 8000 8001 8002")
        if not (self.http_port or self.grpc_port):
            raise ConfigError("--http-port 0 and --grpc-port 0 turn off both endpoints", "keep at least one on")


def _check_ports(cfg: ServeConfig) -> None:
    """Fail in a second, naming the flag, when a port is taken (Triton itself would exit with a bind error)."""
    for flag, port in (("--http-port", cfg.http_port), ("--grpc-port", cfg.grpc_port),
                       ("--metrics-port", cfg.metrics_port)):
        if not port:
            continue
        with socket.socket(socket.AF_INET6 if ":" in cfg.host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # only a listening socket counts
            try:
                s.bind((cfg.host, port))
            except OSError as e:
                raise port_taken(flag, cfg.host, port, e) from None


@dataclass(frozen=True)
class ModelInfo:
    """What ``engine.serve`` reads from the model before starting Triton (loading it also checks it)."""

    classes: int
    imgsz: tuple[int, int]
    dynamic: bool  # a dynamic batch axis (Triton's batches run as one inference)
    onnx: bool


def _load(cfg: ServeConfig) -> ModelInfo:
    from ..detector import Detector

    onnx = Path(cfg.model).suffix.lower() == ".onnx"
    with Detector(cfg.model, conf=cfg.conf, iou=cfg.iou, max_det=cfg.max_det,
                  **({"intra_op_threads": 1} if onnx else {})) as det:
        return ModelInfo(len(det.names), tuple(det.imgsz), det.backend.max_batch is None, onnx)


def _load_reporting(cfg: ServeConfig) -> tuple[str, Any]:
    """:func:`_load` in a child process: the info, or the typed error's class name, args and attributes."""
    try:
        return "info", _load(cfg)
    except DeployError as e:
        return "error", (type(e).__name__, e.args, dict(vars(e)))


def _ignore_stop_signals() -> None:  # the probe child: Ctrl-C and SIGTERM are the parent's to handle
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _rebuilt(name: str, args: tuple, attrs: dict) -> DeployError:
    """The child's typed error, rebuilt here whatever its constructor takes."""
    from .. import errors

    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, DeployError)):
        return DeployError(attrs.get("message", str(args[0]) if args else name), attrs.get("fix", ""))
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(attrs)
    return err


def probe(cfg: ServeConfig, isolated: bool | None = None) -> ModelInfo:
    """Load the model once before Triton starts, so that a bad file fails in a second with the Detector's
    typed error, and read what the serving line says of it.

    ``isolated`` (default: where the model runs on a GPU) loads it in a spawned process instead: this
    process then stays idle for as long as Triton serves, and must not keep a CUDA context (hundreds of MB
    of a laptop GPU's memory) from a load it no longer needs. (A script that calls :func:`serve` for a GPU
    model needs the usual ``if __name__ == "__main__":`` guard of a spawned child.)
    """
    if isolated is None:
        from .defaults import runs_on_gpu

        isolated = runs_on_gpu(cfg.model)
    if not isolated:
        return _load(cfg)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    try:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_ignore_stop_signals) as pool:
            kind, payload = pool.submit(_load_reporting, cfg).result()
    except BrokenProcessPool:
        raise ModelLoadError(f"loading {cfg.model} crashed the process that tried it (a segmentation fault, or "
                             "killed for memory)", "check that the model runs with python -m engine.cli "
                             "(or Detector) on this machine; rebuild it for this GPU and runtime if it does not") from None
    if kind == "error":
        raise _rebuilt(*payload)
    return payload


def served_models(cfg: ServeConfig, info: ModelInfo) -> list[ServedModel]:
    """The raw-frame model (``cfg.instances`` stubs, each running a Detector) and the encoded-image model
    (as many stubs that decode and pass the frames on to the raw-frame model: no Detector of their own)."""
    s = StubSettings(model=str(Path(cfg.model).resolve()), conf=cfg.conf, iou=cfg.iou, max_det=cfg.max_det,
                     threads=cfg.threads, onnx=info.onnx, input=IMAGE_INPUT,
                     warmup_batch=cfg.max_batch if cfg.dynamic_batching and info.dynamic else 1,
                     log_lines=BAD_REQUEST_LOG_LINES, log_window_s=BAD_REQUEST_LOG_WINDOW_S)
    return [ServedModel(cfg.name, IMAGE_INPUT, "TYPE_UINT8", (-1, -1, 3), cfg.max_batch, cfg.instances,
                        cfg.queue_delay_us if cfg.dynamic_batching else None, s),
            ServedModel(f"{cfg.name}_encoded", ENCODED_INPUT, "TYPE_STRING", (1,), cfg.max_batch, cfg.instances,
                        None, dataclasses.replace(s, input=ENCODED_INPUT, warmup_batch=0, target=cfg.name))]


def serve(cfg: ServeConfig, log=print, verbose: bool = False) -> None:
    """Start Triton with the two models and block until SIGINT/SIGTERM or Triton stops.

    Fields of ``cfg`` left ``None`` take this machine's defaults (:func:`.defaults.resolve`).

    Raises:
        KeyboardInterrupt: after Ctrl-C, once Triton stopped and its models were unloaded.
        engine.cli.Terminated: the same after SIGTERM.
        ServeError: Triton failed to start or load the models, or stopped on its own.
    """
    from .defaults import resolve

    cfg = resolve(cfg)
    _check_ports(cfg)
    dist = find_triton()  # before loading the model: a missing pytriton fails in a second
    with StopSignals() as stop:  # signals only set a flag that each step below checks
        info = probe(cfg)
        if stop.signum is None:
            _run(cfg, dist, info, stop, log, verbose)
    # Triton has stopped and its folder is gone (the with block): now the signal decides the exit
    if stop.interrupted:
        raise KeyboardInterrupt
    raise Terminated


def _run(cfg: ServeConfig, dist, info: ModelInfo, stop: StopSignals, log, verbose: bool) -> None:
    """Start Triton, say what it serves, serve until a stop signal; :class:`ServeError` if Triton ends first."""
    models = served_models(cfg, info)
    if cfg.front:  # Triton's own endpoints on loopback, behind the front
        triton_http, triton_grpc = (p if on else 0 for p, on in zip(loopback_ports(2), (cfg.http_port, cfg.grpc_port)))
        front = Front(cfg.host, cfg.http_port, cfg.grpc_port, triton_http, triton_grpc, models)
        endpoints = (LOOPBACK, triton_http, triton_grpc)
    else:
        front, endpoints = Front(cfg.host, 0, 0, 0, 0, models), (cfg.host, cfg.http_port, cfg.grpc_port)
    with front, TritonProcess(dist, models, *endpoints, cfg.metrics_port, EXIT_TIMEOUT_S, verbose,
                              metrics_host=cfg.host) as triton:
        front.start()  # 503 / UNAVAILABLE until Triton answers
        if triton.wait_ready(READY_TIMEOUT_S, stopped=lambda: stop.signum is not None):
            where = ", ".join(f"{k} {cfg.host}:{p}" for k, p in (("http", cfg.http_port), ("grpc", cfg.grpc_port),
                                                                 ("metrics", cfg.metrics_port)) if p)
            log(f"serving {Path(cfg.model).name} ({info.classes} classes, {info.imgsz[0]}x{info.imgsz[1]}, "
                f"{'dynamic' if info.dynamic else 'static'} batch) as '{cfg.name}' (raw frames) and "
                f"'{cfg.name}_encoded' (image files) on {where}; max batch {cfg.max_batch}, dynamic batching "
                f"{'on' if cfg.dynamic_batching else 'off'}, {cfg.instances} Detector(s) x {cfg.threads or 'all'} "
                f"thread(s), {'requests checked by engine.serve' if cfg.front else 'clients reach Triton directly'}; "
                "Ctrl+C stops")
            sys.stdout.flush()
            while stop.signum is None and triton.alive():
                time.sleep(0.1)
        if stop.signum is None:
            raise ServeError(f"Triton {ended(triton.proc.returncode)} on its own", "read Triton's log above")
        front.close()  # clients first: nothing new reaches Triton, and no client connection holds it up
        triton.stop(UNLOAD_WAIT_S)
