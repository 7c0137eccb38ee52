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

A wrong dtype or shape is refused by Triton before it reaches us; content the ``Detector`` cannot take
(an empty frame, bytes that are not an image) is an error response naming the request and the fix.
Either way the server keeps serving.

pytriton is imported only by :func:`serve`, so ``import engine.serve`` works without it. Triton's
Python-backend stub needs a venv made from Debian's ``/usr/bin/python3``: ``bash .ci/setup_triton.sh``.
"""
from __future__ import annotations

import signal
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import BackendUnavailableError, ConfigError
from .protocol import ENCODED_INPUT, IMAGE_INPUT, frames_from_encoded_input, frames_from_image_input, pack_outputs

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

class DetectorModel:
    """Triton's inference callable: a list of requests in, a list of output dicts out.

    All frames of all requests Triton batched together go through one ``Detector.predict`` call
    (batched inference for a dynamic-batch model; frames one by one for a static one).
    """

    def __init__(self, detector: Any, input_name: str, lock: threading.Lock | None = None) -> None:
        self.detector = detector
        self.input_name = input_name
        self.lock = lock or threading.Lock()  # shared by the models that share this Detector
        self._decode = frames_from_encoded_input if input_name == ENCODED_INPUT else frames_from_image_input

    def __call__(self, requests: Sequence[Any]) -> list[dict[str, np.ndarray]]:
        per_request = [self._decode(r[self.input_name], i) for i, r in enumerate(requests)]
        with self.lock:  # a Detector reuses its buffers: one call at a time
            dets = self.detector.predict([f for frames in per_request for f in frames])
        out, start = [], 0
        for frames in per_request:
            out.append(pack_outputs(dets[start:start + len(frames)]))
            start += len(frames)
        return out


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


def _interrupt(*_: object) -> None:
    """SIGTERM (docker stop, a test's teardown) shuts down like Ctrl+C: Triton and its stubs stop too."""
    raise KeyboardInterrupt


def serve(cfg: ServeConfig, log=print) -> None:
    """Start Triton with the two models and block until SIGINT/SIGTERM or Triton stops."""
    from .defaults import resolve

    cfg = resolve(cfg)
    _check_ports(cfg)
    DynamicBatcher, ModelConfig, Tensor, Triton, TritonConfig = _pytriton()
    detectors = [_detector(cfg) for _ in range(cfg.instances)]
    outputs = [Tensor(name="num_detections", dtype=np.int32, shape=(1,)),
               Tensor(name="boxes", dtype=np.float32, shape=(-1, 4)),
               Tensor(name="scores", dtype=np.float32, shape=(-1,)),
               Tensor(name="class_ids", dtype=np.int32, shape=(-1,)),
               Tensor(name="class_names", dtype=np.bytes_, shape=(-1,))]
    batcher = DynamicBatcher(max_queue_delay_microseconds=cfg.queue_delay_us) if cfg.dynamic_batching else None
    tcfg = TritonConfig(http_address=cfg.host, http_port=cfg.http_port or None, allow_http=bool(cfg.http_port),
                        grpc_address=cfg.host, grpc_port=cfg.grpc_port or None, allow_grpc=bool(cfg.grpc_port),
                        metrics_address=cfg.host, metrics_port=cfg.metrics_port or None,
                        allow_metrics=bool(cfg.metrics_port), allow_gpu_metrics=False, exit_on_error=True)
    signal.signal(signal.SIGTERM, _interrupt)
    locks = [threading.Lock() for _ in detectors]  # the raw and the encoded model share each Detector
    with Triton(config=tcfg) as triton:
        triton.bind(model_name=cfg.name, infer_func=[DetectorModel(d, IMAGE_INPUT, k) for d, k in zip(detectors, locks)],
                    inputs=[Tensor(name=IMAGE_INPUT, dtype=np.uint8, shape=(-1, -1, 3))], outputs=outputs,
                    config=ModelConfig(max_batch_size=cfg.max_batch, batcher=batcher), strict=True)
        triton.bind(model_name=f"{cfg.name}_encoded",
                    infer_func=[DetectorModel(d, ENCODED_INPUT, k) for d, k in zip(detectors, locks)],
                    inputs=[Tensor(name=ENCODED_INPUT, dtype=np.bytes_, shape=(1,))], outputs=outputs,
                    config=ModelConfig(max_batch_size=cfg.max_batch, batcher=None), strict=True)
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
        triton.serve()
    for det in detectors:
        det.close()
