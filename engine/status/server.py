"""The live status page of ``python -m engine.stream --http PORT``: standard library HTTP, read-only.

Routes (GET and HEAD only; anything else is ``405``):

* ``/`` — the page (:mod:`engine.status.page`): each stream's latest annotated frame and figures, the
  last 20 events with snapshot thumbnails;
* ``/frame/<stream>.jpg`` — the stream's latest frame with boxes and track ids drawn (encoded when
  asked for, at most once per frame); ``/mjpeg/<stream>`` — the same as an MJPEG stream (VLC, a browser);
* ``/snapshots/<path>`` — the incident snapshots under the save folder;
* ``/api/streams``, ``/api/events?n=20`` — JSON; ``/metrics`` — Prometheus text (the ``stream`` extra).

The server runs on its own threads; the pipeline only stores a reference to each stream's newest result.
It binds 127.0.0.1 unless told otherwise: the page shows camera pictures.
"""
from __future__ import annotations

import json
import logging
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2

from ..errors import ConfigError
from ..ports import refuse_held_port
from ..stream.processors import Processor, StreamContext
from ..stream.sinks import StreamResult, annotate
from .page import figures, render

log = logging.getLogger("engine.stream")
MAX_WIDTH = 960  # frames are shrunk to this width for the page
MJPEG_FPS = 5.0


class StatusPage(Processor):
    """Serve the status page while the stream runs (``Stream(..., processors=[StatusPage(8080)])``).

    Args:
        port: TCP port (0 picks a free one: see :attr:`port` after start).
        host: address to bind (``0.0.0.0`` lets other machines see the cameras: mind who can reach it).
        events: an :class:`~engine.events.sinks.EventLog` the events processor also feeds (``None``: no events).
        save_dir: the folder whose ``snapshots/`` the page may serve.
        title: the page's title.
    """

    def __init__(self, port: int = 8080, host: str = "127.0.0.1", events: Any = None,
                 save_dir: str | Path | None = None, title: str = "yolo-deploy streams") -> None:
        self.port, self.host, self.events, self.title = port, host, events, title
        self.snapshot_root = (Path(save_dir) / "snapshots").resolve() if save_dir is not None else None
        self.latest: dict[str, StreamResult] = {}
        self.stopping = threading.Event()
        self._jpeg: dict[str, tuple[int, bytes]] = {}
        self._jpeg_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._registry = None

    def start(self, context: StreamContext) -> None:
        self.context = context
        try:
            from ..stream.metrics import registry

            self._registry = registry(context.metrics)
        except ConfigError as e:
            log.warning("status page without /metrics: %s", e.fix)
        handler = type("Handler", (_Handler,), {"page": self})
        try:
            refuse_held_port(self.host, self.port)
            self._server = ThreadingHTTPServer((self.host, self.port), handler)
        except (OSError, OverflowError) as e:
            why = getattr(e, "strerror", None) or e  # OverflowError (a port over 65535) has no strerror
            raise ConfigError(f"cannot serve the status page on {self.host}:{self.port}: {why}",
                              "pick a free port with --http, or another address with --http-host") from None
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="status-page", daemon=True).start()
        log.info("status page: http://%s:%d/", self.host, self.port)

    def process(self, result: StreamResult) -> StreamResult:
        self.latest[result.source] = result  # one reference: the page encodes it if and when asked
        return result

    def close(self) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # --- what the handler reads (server threads) ---------------------------------------------------
    def frame_jpeg(self, name: str) -> bytes | None:
        result = self.latest.get(name)
        if result is None:
            return None
        with self._jpeg_lock:
            cached = self._jpeg.get(name)
            if cached is not None and cached[0] == result.index:
                return cached[1]
        image = annotate(result.image, result.detections)  # our own copy: the sinks' cache is not shared
        h, w = image.shape[:2]
        if w > MAX_WIDTH:
            image = cv2.resize(image, (MAX_WIDTH, round(h * MAX_WIDTH / w)), interpolation=cv2.INTER_AREA)
        data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()
        with self._jpeg_lock:
            self._jpeg[name] = (result.index, data)
        return data

    def streams(self) -> dict[str, Any]:
        snap = self.context.metrics.snapshot()
        out = {}
        for name, spec in self.context.sources.items():
            s = snap.get(name)
            if s is None:
                continue
            latest = self.latest.get(name)
            out[name] = {"label": spec.label, "kind": spec.kind.value, "connected": s["connected"],
                         "frame": latest.index if latest else None,
                         "detections": len(latest.detections) if latest else 0,
                         "figures": figures(s), "metrics": s}
        return out

    def recent_events(self, n: int | None = 20) -> list[dict[str, Any]]:
        return self.events.latest(n) if self.events is not None else []

    def html(self) -> str:
        streams = [(name, s["label"], s["metrics"]) for name, s in self.streams().items()]
        return render(self.title, streams, self.recent_events(20), "/metrics" if self._registry else None)

    def metrics_text(self) -> tuple[bytes, str] | None:
        if self._registry is None:
            return None
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self._registry), CONTENT_TYPE_LATEST

    def snapshot_file(self, rel: str) -> Path | None:
        """A snapshot under the save folder, or ``None`` (never a path outside it)."""
        if self.snapshot_root is None or not rel.endswith(".jpg"):
            return None
        parts = rel.split("/")
        # plain names only, checked before the file system is touched: on Windows "\\\\host\\share\\x.jpg" or
        # "//host/share/x.jpg" would make resolve() open a network share (an SMB connection, the user's NTLM hash)
        if any(p in ("", ".", "..") or "\\" in p or ":" in p for p in parts):
            return None
        try:
            path = (self.snapshot_root / rel).resolve()
            return path if path.is_relative_to(self.snapshot_root) and path.is_file() else None
        except (OSError, ValueError):  # a NUL byte, a name too long for the file system: no such snapshot
            return None


class _Handler(BaseHTTPRequestHandler):
    page: StatusPage
    server_version = "yolo-deploy-status"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the page polls every second
        log.debug("status page: " + format, *args)

    def _send(self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value: Any) -> None:
        self._send(200, json.dumps(value).encode(), "application/json")

    def _missing(self) -> None:
        self._send(404, b"not found\n", "text/plain; charset=utf-8")

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        page = self.page
        if path in ("/", "/index.html"):
            self._send(200, page.html().encode(), "text/html; charset=utf-8")
        elif path == "/api/streams":
            self._json(page.streams())
        elif path == "/api/events":
            n = urllib.parse.parse_qs(url.query).get("n", ["100"])[0]
            self._json(page.recent_events(int(n) if n.isascii() and n.isdigit() else 100))  # '²' is a digit too
        elif path == "/metrics":
            got = page.metrics_text()
            if got is None:
                self._send(503, b"metrics need prometheus-client: pip install 'yolo-deploy[stream]'\n",
                           "text/plain; charset=utf-8")
            else:
                self._send(200, *got)
        elif path.startswith("/mjpeg/"):
            self._mjpeg(path[len("/mjpeg/"):])
        else:
            data = None
            if path.startswith("/frame/") and path.endswith(".jpg"):
                data = page.frame_jpeg(path[len("/frame/"):-len(".jpg")])
            elif path.startswith("/snapshots/"):
                file = page.snapshot_file(path[len("/snapshots/"):])
                data = file.read_bytes() if file is not None else None
            if data is None:
                self._missing()
            else:
                self._send(200, data, "image/jpeg")

    do_HEAD = do_GET  # noqa: N815

    def _refuse(self) -> None:
        self._send(405, b"read-only: GET and HEAD only\n", "text/plain; charset=utf-8", {"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse  # noqa: N815

    def _mjpeg(self, name: str) -> None:
        if name not in self.page.context.sources:
            return self._missing()
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command == "HEAD":
            return
        last = None
        try:
            while not self.page.stopping.wait(1.0 / MJPEG_FPS):
                data = self.page.frame_jpeg(name)
                if data is None or data is last:
                    continue
                last = data
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                 + str(len(data)).encode() + b"\r\n\r\n" + data + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the viewer went away
