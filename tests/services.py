"""Real services on 127.0.0.1 for the alert tests: a Mosquitto broker and a webhook receiver.

* :class:`Broker` runs Debian's ``/usr/sbin/mosquitto`` (package ``mosquitto``, installed by
  ``.ci/install_alert_deps.sh``) with a config of its own: plain, with a password file, or with TLS
  from a throwaway CA made by ``openssl``. :meth:`Broker.kill` and :meth:`Broker.start` again on the
  same port make a broker that dies and comes back; it keeps its sessions on disk, so a durable
  :class:`Subscriber` gets what was published while it was reconnecting.
* :class:`Subscriber` collects what a topic receives (paho-mqtt, a durable session: QoS 1 messages wait
  for it at the broker).
* :class:`Webhook` is a standard-library HTTP server that records each POST (headers and body) and
  answers a status code of the test's choosing; it too can stop and start on the same port.
"""
from __future__ import annotations

import getpass
import json
import os
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.rtsp_server import free_port

MOSQUITTO = "/usr/sbin/mosquitto"


def _missing(reason: str | None) -> str | None:
    """``reason`` to skip for, or a failure under CI (``CI=true``), where .ci/install_alert_deps.sh installs it."""
    if reason and os.environ.get("CI"):
        import pytest

        pytest.fail(f"CI must run the alert tests: {reason} (run .ci/install_alert_deps.sh)")
    return reason


def mosquitto_missing() -> str | None:
    return _missing(None if Path(MOSQUITTO).is_file() else f"{MOSQUITTO} not found (apt-get install mosquitto)")


def wait_for(predicate, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def make_tls(folder: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1 (openssl); returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    f = {k: folder / f"{k}.pem" for k in ("ca", "ca_key", "cert", "key", "csr")}

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", str(f["ca_key"]), "-out", str(f["ca"]))
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(f["key"]),
        "-out", str(f["csr"]))
    ext = folder / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", str(f["csr"]), "-CA", str(f["ca"]), "-CAkey", str(f["ca_key"]), "-CAcreateserial",
        "-days", "2", "-extfile", str(ext), "-out", str(f["cert"]))
    return f


class Broker:
    """A Mosquitto broker on 127.0.0.1:``port`` (a fresh free port unless given)."""

    def __init__(self, folder: Path, port: int | None = None, users: dict[str, str] | None = None,
                 tls: dict[str, Path] | None = None) -> None:
        self.folder, self.port = folder, port or free_port()
        folder.mkdir(parents=True, exist_ok=True)
        # run as whoever runs the tests: started by root, mosquitto would switch to its own user and then
        # fail to read the password file and certificates made here
        lines = [f"listener {self.port} 127.0.0.1", f"user {getpass.getuser()}", "persistence true",
                 f"persistence_location {folder}/", "log_dest stdout", "log_type error"]
        if users:
            pw = folder / "passwd"
            pw.write_text("")
            for user, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pw), user, password], check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        if tls:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}"]
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Broker":
        import socket

        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False

        if not wait_for(listening, 10):
            self.kill()
            raise RuntimeError(f"mosquitto did not listen on {self.port}")
        return self

    def kill(self) -> None:
        """Stop the broker (SIGTERM: clients lose the connection; sessions are saved for the next start)."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


class Subscriber:
    """Collects the JSON payloads published under ``topic`` (a paho client on its own thread)."""

    def __init__(self, port: int, topic: str = "#") -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, dict]] = []
        self.raw: list[bytes] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{port}", clean_session=False)
        self.client.reconnect_delay_set(0.2, 0.5)
        self.ready = threading.Event()

        def on_connect(client, userdata, flags, rc, props):
            client.subscribe(topic, qos=1)

        self.client.on_connect = on_connect
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self.ready.wait(10):
            raise RuntimeError("the test subscriber could not subscribe")

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.raw.append(msg.payload)
            self.messages.append((msg.topic, json.loads(msg.payload)))

    def ids(self) -> list[str]:
        with self._lock:
            return [m["event_id"] + "/" + m["type"] for _, m in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Webhook:
    """Records POSTs on 127.0.0.1:``port``; answers ``status`` (settable while running)."""

    def __init__(self, port: int | None = None, status: int = 200) -> None:
        self.port, self.status = port or free_port(), status
        self.location: str | None = None  # sent as Location (with a 3xx status)
        self.requests: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> "Webhook":
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hook._lock:
                    hook.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                          "status": hook.status})
                    if hook.status < 300 and self.command == "POST":
                        hook.bodies.append(body)
                self.send_response(hook.status)
                if hook.location:
                    self.send_header("Location", hook.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST  # a client that followed a redirect as a GET is recorded too

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def events(self) -> list[dict]:
        with self._lock:
            return [json.loads(b) for b in self.bodies]


def chromium() -> str | None:
    """The headless browser's path, ``None`` where there is none (a failure under CI)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    _missing("Chromium is not installed (apt-get install chromium)")
    return None
