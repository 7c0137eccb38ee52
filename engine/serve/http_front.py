"""``engine.serve``'s HTTP endpoint: checks each inference request, passes every request on to Triton.

Triton's own HTTP endpoint listens on a loopback port only this process uses. Each client request is read
whole, an inference request's JSON header (never its binary data) is checked
(:func:`~engine.serve.request_check.check`), and a bad one is answered here, ``{"error": "<reason>; fix: <fix>"}``
with status 400 (404 for an unknown model), and logged as one rate-limited line. Everything else, health,
metadata and metrics reads included, goes to Triton byte for byte, one kept-alive connection per client
connection, and Triton's answer comes back as it sent it. While Triton does not answer (starting, stopping)
the answer is 503.
"""
from __future__ import annotations

import http.client
import json
import logging
import re
import socket
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import unquote, urlsplit

from .request_check import Check, Refusal, Tensor

log = logging.getLogger("engine.serve")

INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/[^/]+)?/infer")
HEADER_LENGTH = "Inference-Header-Content-Length"
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "host", "content-length", "expect"}
MAX_BODY = 1 << 30  # a request body over 1 GiB is refused before it is read (a batch of 8 4K frames is 200 MB)
UPSTREAM_TIMEOUT_S = 600.0
IDLE_TIMEOUT_S = 120.0
NOT_ANSWERING = "engine.serve: Triton is not answering (starting or stopping); fix: retry in a few seconds"


def declared_inputs(body: bytes, header_length: str | None,
                    encoding: str | None) -> tuple[list[Tensor], str] | None:
    """The inputs an inference request's JSON header declares, and its id; ``None`` where it cannot be read
    (Triton then answers in its own words)."""
    try:
        size = int(header_length) if header_length else None
        if encoding in ("gzip", "deflate"):  # only as far as the header: never a whole decompression bomb
            body = zlib.decompressobj(31 if encoding == "gzip" else 15).decompress(body, size or MAX_BODY)
        elif encoding not in (None, "", "identity"):
            return None
        head = json.loads(body[:size] if size is not None else body)
        out = []
        for item in head["inputs"]:
            params = item.get("parameters") or {}
            size = params.get("binary_data_size")
            nbytes = size if isinstance(size, int) and "shared_memory_region" not in params else None
            out.append(Tensor(str(item["name"]), str(item["datatype"]), tuple(int(d) for d in item["shape"]),
                              nbytes))
        return out, str(head.get("id") or "")
    except Exception:  # noqa: BLE001 - whatever the header is (Infinity, nesting 100,000 deep ...): Triton's to say
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a client's kept-alive connection never holds up the stop
    allow_reuse_address = True
    request_queue_size = 1024  # connections waiting to be accepted, as Triton's (socketserver's 5 stalled bursts)

    def __init__(self, address: tuple[str, int], upstream_port: int, check: Check,
                 on_refusal: Callable[[str, str], None]) -> None:
        self.upstream_port, self.check, self.on_refusal = upstream_port, check, on_refusal
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that went away or sent a malformed chunk: its connection closes, no traceback; anything
        else (a bug of ours) is one line in the log."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, (OSError, ValueError)):
            log.warning("HTTP front: %s: %s (client %s)", type(exc).__name__, exc, client_address)

    def close_connections(self) -> None:
        with self.connections_lock:
            for conn in list(self.connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # kept-alive connections, as Triton's
    timeout = IDLE_TIMEOUT_S  # a connection silent this long is closed (a client that opens many and sends nothing)
    server: _Server

    def version_string(self) -> str:  # the Server header: not Python's version
        return "engine.serve"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._upstream: http.client.HTTPConnection | None = None
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        if self._upstream is not None:
            self._upstream.close()
        try:
            super().finish()
        except OSError:  # the client went away
            pass

    def log_message(self, *args: object) -> None:  # no line per request
        pass

    def handle_expect_100(self) -> bool:  # a body over the limit is refused before the client sends it
        length = self.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > MAX_BODY:
            self._too_large()
            return False
        return super().handle_expect_100()

    def do_GET(self) -> None:
        body = self._body()
        if body is None:
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        infer = INFER_PATH.fullmatch(urlsplit(self.path).path)
        if infer is not None and self.command == "POST":
            model = unquote(infer[1])
            refusal = self._check(model, body)
            if refusal is not None:
                self.server.on_refusal(model, refusal.message)
                self._send_json(400 if refusal.found else 404, {"error": refusal.message})
                return
            # Triton 2.51 parses an HTML form's body: a large inference request sent as one (curl --data-binary's
            # default Content-Type) crashed it, taking every client's server down; the type means nothing here
            headers = {k: v for k, v in headers.items() if k.lower() != "content-type"
                       or not v.lower().startswith(("application/x-www-form-urlencoded", "multipart/form-data"))}
        self._forward(body, headers)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def _check(self, model: str, body: bytes) -> Refusal | None:
        found = declared_inputs(body, self.headers.get(HEADER_LENGTH), self.headers.get("Content-Encoding"))
        return None if found is None else self.server.check(model, *found)

    def _body(self) -> bytes | None:
        """The request's body (Content-Length or chunked); ``None`` after answering a body it cannot take."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts, total = [], 0
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                if size < 0:
                    raise ValueError("a negative chunk size")  # the connection closes (handle_error)
                total += size
                if total > MAX_BODY:
                    return self._too_large()
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                if len(parts[-1]) < size:  # the client went away mid-upload
                    self.close_connection = True
                    return None
                self.rfile.readline(3)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._send_json(400, {"error": "engine.serve: the request's Content-Length is not a number; fix: send a "
                                           "valid HTTP request (tritonclient.http does)"})
            return None
        if length > MAX_BODY:
            return self._too_large()
        body = self.rfile.read(length) if length else b""
        if len(body) < length:  # the client went away mid-upload: nothing to pass on, no one to answer
            self.close_connection = True
            return None
        return body

    def _too_large(self) -> None:
        self.close_connection = True
        self._send_json(413, {"error": f"engine.serve: a request body over {MAX_BODY >> 20} MiB; fix: send fewer or "
                                       "smaller frames per request, or image files to the encoded model"})
        return None

    def _forward(self, body: bytes, headers: dict[str, str]) -> None:
        for attempt in (0, 1):
            reused = self._upstream is not None
            try:
                if self._upstream is None:
                    self._upstream = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port,
                                                                timeout=UPSTREAM_TIMEOUT_S)
                    self._upstream.connect()
                    self._upstream.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._upstream.request(self.command, self.path, body=body, headers=headers)
                reply = self._upstream.getresponse()
                data = reply.read()
                break
            except TimeoutError:
                self._drop_upstream()
                self._send_json(504, {"error": f"engine.serve: Triton did not answer in {UPSTREAM_TIMEOUT_S:.0f} s; "
                                               "fix: read the server log"})
                return
            except (OSError, http.client.HTTPException):
                self._drop_upstream()
                if not (reused and attempt == 0):  # only a kept-alive connection Triton closed is tried again
                    self._send_json(503, {"error": NOT_ANSWERING})
                    return
        self.send_response(reply.status, reply.reason)
        for key, value in reply.getheaders():
            if key.lower() not in HOP_BY_HOP and key.lower() not in ("server", "date"):  # send_response wrote them
                self.send_header(key, value)
        head = self.command == "HEAD"  # no body: the length a GET would get
        self.send_header("Content-Length", reply.getheader("Content-Length", "0") if head else str(len(data)))
        self._connection_header()
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _drop_upstream(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
        self._upstream = None

    def _send_json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self._connection_header()
        self.end_headers()
        self.wfile.write(data)

    def _connection_header(self) -> None:
        """Say whether the connection stays open, as Triton does: ``close`` when it will close (the client
        asked, or an HTTP/1.0 client did not ask to keep it), ``keep-alive`` to an HTTP/1.0 client that asked."""
        if self.close_connection:
            self.send_header("Connection", "close")
        elif self.request_version == "HTTP/1.0":
            self.send_header("Connection", "keep-alive")


class HttpFront:
    """The public HTTP endpoint (a context manager): bound at construction, served from :meth:`start`."""

    def __init__(self, host: str, port: int, upstream_port: int, check: Check,
                 on_refusal: Callable[[str, str], None]) -> None:
        self.server = _Server((host, port), upstream_port, check, on_refusal)
        self.port = self.server.server_address[1]
        self._thread: threading.Thread | None = None

    def start(self) -> "HttpFront":
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="engine-serve-http", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop listening and close every client connection (a request in flight gets no answer)."""
        if self._thread is not None:
            self.server.shutdown()
            self._thread = None
        self.server.server_close()
        self.server.close_connections()

    def __enter__(self) -> "HttpFront":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
