"""A real RTSP server on loopback for the stream tests: GStreamer's RTSP server serving a clip.

Two halves in one file:

* run as a script by Debian's ``/usr/bin/python3`` (the Python that has ``gi``)::

      /usr/bin/python3 tests/rtsp_server.py --clip clip.mp4 --port 8554 --mount /cam

  it serves ``rtsp://127.0.0.1:PORT/cam`` (H.264, a fresh pipeline per client, so every client starts
  at the clip's first frame, a keyframe) and prints ``ready PORT`` once it listens;
* imported by the tests (the venv's Python, no ``gi`` needed): :class:`RtspServer` starts that script
  as a child process, waits for ``ready``, and can :meth:`~RtspServer.kill` it and
  :meth:`~RtspServer.start` it again on the same port (a camera that drops and comes back).

Packages (Debian): ``gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-good
gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav`` (``.ci/install_stream_deps.sh``).
Nothing here imports ``gi`` or ``cv2`` at module level.
"""
from __future__ import annotations

import argparse
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

SYSTEM_PYTHON = os.environ.get("RTSP_TEST_PYTHON", "/usr/bin/python3")
PIPELINE = ('( filesrc location="{clip}" ! qtdemux ! decodebin ! videoconvert ! '
            'x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! '
            'rtph264pay name=pay0 pt=96 config-interval=1 )')


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports on 127.0.0.1 that nothing listens on right now (all held while picked)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def unavailable_reason(python: str = SYSTEM_PYTHON) -> str | None:
    """Why the RTSP server cannot run here (``None`` when it can)."""
    if not Path(python).is_file():
        return f"{python} not found (Debian's python3 with gi runs the RTSP server)"
    probe = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0');"
             "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
             "missing = [e for e in ('qtdemux', 'decodebin', 'x264enc', 'rtph264pay', 'avdec_mpeg4')"
             " if Gst.ElementFactory.find(e) is None]; print('missing', *missing)")
    try:
        p = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{python} cannot probe GStreamer: {e}"
    if p.returncode != 0:
        return f"GStreamer RTSP server not importable by {python}: {p.stderr.strip().splitlines()[-1:]}"
    missing = p.stdout.split()[1:]
    if missing:
        return f"GStreamer elements missing: {', '.join(missing)}"
    return None


def make_clip(path: Path, frames: int = 300, size: tuple[int, int] = (320, 240), fps: float = 15.0) -> Path:
    """Write an MPEG-4 clip of coloured shapes (like the demo data) moving over a gradient."""
    import cv2
    import numpy as np

    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    grad = np.linspace(40, 200, w, dtype=np.uint8)[None, :, None].repeat(h, 0).repeat(3, 2)
    for i in range(frames):
        img = grad.copy()
        x = 20 + (i * 3) % (w - 80)
        cv2.circle(img, (x + 25, h // 3), 22, (40, 40, 230), -1)
        cv2.rectangle(img, (w - x - 60, h // 2), (w - x - 15, h // 2 + 45), (230, 60, 30), -1)
        tri = np.array([[x, h - 20], [x + 50, h - 20], [x + 25, h - 70]], np.int32)
        cv2.fillPoly(img, [tri], (30, 200, 40))
        writer.write(img)
    writer.release()
    return path


class RtspServer:
    """The RTSP server as a child process: ``start()``, ``kill()``, ``start()`` again (same port).

    Args:
        clip: the video file to serve (MP4 that GStreamer's ``qtdemux ! decodebin`` reads).
        port: TCP port on 127.0.0.1 (a free one when omitted).
        mount: the URL path.
        python: the interpreter with ``gi`` (Debian's ``/usr/bin/python3``).
    """

    def __init__(self, clip: Path, port: int | None = None, mount: str = "/cam",
                 python: str = SYSTEM_PYTHON) -> None:
        self.clip, self.mount, self.python = Path(clip), mount, python
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.log: list[str] = []

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{self.mount}"

    def start(self, timeout: float = 20.0) -> "RtspServer":
        """Start serving; return once the server listens (or raise with its output)."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        lines: queue.Queue[str] = queue.Queue()
        cmd = [self.python, str(Path(__file__).resolve()), "--clip", str(self.clip), "--port", str(self.port),
               "--mount", self.mount]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        def drain(stream=self.proc.stdout) -> None:  # keep the pipe from filling up with GStreamer warnings
            for line in stream:
                self.log.append(line.rstrip())
                lines.put(line)

        threading.Thread(target=drain, daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if line.startswith("ready"):
                return self
        self.kill()
        raise RuntimeError(f"RTSP server did not start on port {self.port}: {self.log[-10:]}")

    def kill(self) -> None:
        """Kill the server at once (SIGKILL: no goodbye to the clients, like a camera losing power)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, no data flows — a stalled camera."""
        import signal
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        import signal
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def __enter__(self) -> "RtspServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def serve(clip: str, port: int, mount: str) -> int:
    """Run the server (inside the Python that has ``gi``) until killed."""
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE.format(clip=Path(clip).resolve().as_posix()))
    factory.set_shared(False)  # each client gets its own pipeline from the clip's start
    server.get_mount_points().add_factory(mount, factory)
    if server.attach(None) == 0:
        print(f"error: cannot listen on 127.0.0.1:{port}", flush=True)
        return 3
    print(f"ready {port}", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Serve a clip over RTSP on 127.0.0.1 (GStreamer).")
    ap.add_argument("--clip", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mount", default="/cam")
    a = ap.parse_args()
    sys.exit(serve(a.clip, a.port, a.mount))
