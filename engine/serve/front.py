"""The endpoints clients reach: ``engine.serve``'s HTTP and gRPC front, with Triton's own on loopback behind it.

Triton checks each request against the model config before any code of ours runs, and no option turns that
off; its words for some mistakes mislead (a frame without its batch axis reads "batch-size must be <= 8").
So ``engine.serve`` listens on the public ports itself (:mod:`~engine.serve.http_front`,
:mod:`~engine.serve.grpc_front`), checks each inference request's declared inputs
(:mod:`~engine.serve.request_check`) and answers a bad one with the project's one line (reason; fix), and
passes everything else to Triton's endpoints on 127.0.0.1 ports of its own, bytes unchanged. The cost of the
extra hop is measured in ``benchmarks/RESULTS.md`` (Triton). At stop the front closes first, so clients'
open connections never hold Triton up.
"""
from __future__ import annotations

import socket
from typing import Sequence

from ..errors import ConfigError
from .handler import LogLimit
from .request_check import Refusal, Tensor, check, shown
from .triton_process import ServedModel

LOOPBACK = "127.0.0.1"


def loopback_ports(n: int) -> list[int]:
    """``n`` free ports on 127.0.0.1 for Triton's own endpoints (held together while chosen, so distinct)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            socks.append(s)
            s.bind((LOOPBACK, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_taken(flag: str, host: str, port: int, error: OSError) -> ConfigError:
    """The error for a port that cannot be bound, naming its flag."""
    return ConfigError(f"{flag} {port}: {host}:{port} is not available ({error.strerror or error})",
                       f"stop what listens there, or pass another {flag}")


class Front:
    """The public HTTP and gRPC endpoints (a context manager); a port of 0 leaves that endpoint off.

    Binds at construction (a held port is a :class:`~engine.errors.ConfigError` naming its flag) and serves
    from :meth:`start`: until Triton answers, requests get 503 / ``UNAVAILABLE``.
    """

    def __init__(self, host: str, http_port: int, grpc_port: int, triton_http: int, triton_grpc: int,
                 models: Sequence[ServedModel], refusals: LogLimit | None = None) -> None:
        self.models = list(models)
        self.refusals = refusals or LogLimit()
        self.http = self.grpc = None
        try:
            if http_port:
                from .http_front import HttpFront

                self.http = self._bind("--http-port", host, http_port, HttpFront, triton_http)
            if grpc_port:
                from .grpc_front import GrpcFront

                self.grpc = self._bind("--grpc-port", host, grpc_port, GrpcFront, triton_grpc)
        except BaseException:
            self.close()
            raise

    def _bind(self, flag: str, host: str, port: int, kind, upstream: int):
        try:
            return kind(host, port, upstream, self.check, self._refused)
        except OSError as e:
            raise port_taken(flag, host, port, e) from None

    def check(self, model: str, inputs: list[Tensor], request_id: str = "") -> Refusal | None:
        """:func:`~engine.serve.request_check.check` against the served models."""
        return check(model, inputs, self.models, request_id)

    def _refused(self, model: str, message: str) -> None:
        self.refusals.warning(f"bad request to '{shown(model)}': {message}")

    def start(self) -> "Front":
        for endpoint in (self.http, self.grpc):
            if endpoint is not None:
                endpoint.start()
        return self

    def close(self) -> None:
        """Stop listening and close the clients' connections (idempotent)."""
        for endpoint in (self.http, self.grpc):
            if endpoint is not None:
                endpoint.close()
        self.http = self.grpc = None

    def __enter__(self) -> "Front":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
