"""A listening port that another process holds is an error on Windows too.

Python's HTTP servers (``http.server``, and ``prometheus_client``'s) set ``SO_REUSEADDR``. On POSIX that only
lets a port in ``TIME_WAIT`` be reused; on Windows it lets a second listener bind a port another socket is
listening on (CPython issue 85307), so a second ``engine.stream --http 8080`` started silently and the two
shared the port. :func:`refuse_held_port` binds the port once with ``SO_EXCLUSIVEADDRUSE`` first, which
fails while any other socket holds it.
"""
from __future__ import annotations

import socket
import sys


def refuse_held_port(host: str, port: int) -> None:
    """Raise ``OSError`` when another socket holds ``host:port`` (a no-op off Windows, where the server's own
    bind already fails, and for port 0, which picks a free one)."""
    if sys.platform != "win32" or port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        exclusive = getattr(socket, "SO_EXCLUSIVEADDRUSE", None)  # Windows only
        if exclusive is not None:
            probe.setsockopt(socket.SOL_SOCKET, exclusive, 1)
        probe.bind((host, port))
