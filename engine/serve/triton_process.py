"""Triton Inference Server as a child process: the binary nvidia-pytriton bundles, our model repository.

:func:`find_triton` locates what ``nvidia-pytriton`` ships (the ``tritonserver`` binary, its libraries,
the Python backend and the backend stub for this Python); nothing of pytriton's own Python is used.
:class:`TritonProcess` writes a model repository into a private temporary folder (each model's
``config.pbtxt`` and a ``model.py`` that imports :mod:`engine.serve.triton_model`), starts Triton on it,
waits until the models are ready, and at :meth:`~TritonProcess.stop` unloads them (the stubs finalize
their Detectors), stops Triton and removes the folder and the stubs' shared-memory regions.

Triton runs in its own session (a terminal's Ctrl-C reaches only ``engine.serve``, which stops it in
order) and, on Linux, gets SIGTERM if ``engine.serve`` dies, so a killed server leaves no process behind;
the folder and regions such a server leaves are removed by the next ``engine.serve`` of the same user to
start. Triton's administrative endpoints (model repository: load and unload; shared memory, statistics,
trace, logging) take a random token that ``engine.serve`` uses to unload the models at stop, as pytriton
did: clients can infer and read health, metadata and metrics, not unload the model or load code. The
token is on Triton's command line, so a local user who can read other users' ``/proc/<pid>/cmdline`` can
read it too (mount ``/proc`` with ``hidepid=2`` on a machine shared with untrusted users).
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..errors import BackendUnavailableError, ServeError
from ..signals import pid_alive
from .protocol import OUTPUTS
from .settings import PARAMETERS_KEY, StubSettings

SETUP_HINT = "make the serving venv with `bash .ci/setup_triton.sh` and run `.venv-triton/bin/python -m engine.serve`"
SHM_DIR = Path("/dev/shm")
SHM_BYTES = 4 << 20
MAX_IMAGE_PIXELS = 64_000_000
PREFIX = "engine-serve-"  # + the pid of the engine.serve that made it: its temporary folder and shm regions
PROTECTED = "shared-memory,model-repository,statistics,trace,logging"  # Triton's admin APIs: token only
TOKEN_HEADER = "triton-access-token"


@dataclass(frozen=True)
class TritonDist:
    """The parts of the Triton that ``nvidia-pytriton`` bundles."""

    binary: Path
    python_backend: Path  # the folder with libtriton_python.so and triton_python_backend_utils.py
    stub: Path  # triton_python_backend_stub built for this Python version
    libs: Path  # shared libraries the binary needs (LD_LIBRARY_PATH)


def find_triton() -> TritonDist:
    """Where this Python's nvidia-pytriton keeps Triton; :class:`BackendUnavailableError` if it has none."""
    try:
        import pytriton
    except ImportError as e:
        raise BackendUnavailableError(f"python -m engine.serve needs nvidia-pytriton, which {sys.executable} lacks ({e})",
                                      SETUP_HINT) from None
    root = Path(pytriton.__file__).resolve().parent
    dist = root / "tritonserver"
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    found = TritonDist(binary=dist / "bin" / "tritonserver", python_backend=dist / "backends" / "python",
                       stub=dist / "python_backend_stubs" / version / "triton_python_backend_stub",
                       libs=root.parent / "nvidia_pytriton.libs")
    if not found.libs.is_dir():  # an editable pytriton keeps them beside the binary
        found = TritonDist(found.binary, found.python_backend, found.stub, dist / "external_libs")
    missing = [p for p in (found.binary, found.python_backend / "libtriton_python.so", found.stub) if not p.exists()]
    if missing:
        raise BackendUnavailableError(f"nvidia-pytriton at {root} has no {', '.join(str(p) for p in missing)} "
                                      f"(Python {version}: pytriton ships stubs for 3.8-3.13)", SETUP_HINT)
    try:
        import tritonclient.grpc  # noqa: F401 - engine.serve asks Triton for readiness and unloads through it
        import tritonclient.http  # noqa: F401
    except ImportError as e:
        raise BackendUnavailableError(f"python -m engine.serve needs tritonclient[http,grpc], which {sys.executable} "
                                      f"lacks ({e})", SETUP_HINT) from None
    return found


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dims(d: tuple[int, ...]) -> str:
    return "[ " + ", ".join(str(x) for x in d) + " ]"


@dataclass(frozen=True)
class ServedModel:
    """One model of the repository: a Python-backend model whose stubs run :mod:`engine.serve.triton_model`."""

    name: str
    input_name: str
    input_type: str  # Triton data type of the input (TYPE_UINT8, TYPE_STRING)
    input_dims: tuple[int, ...]
    max_batch: int
    instances: int
    queue_delay_us: int | None  # None: no dynamic batcher
    settings: StubSettings

    def config_pbtxt(self) -> str:
        types = {"num_detections": ("TYPE_INT32", (1,)), "boxes": ("TYPE_FP32", (-1, 4)),
                 "scores": ("TYPE_FP32", (-1,)), "class_ids": ("TYPE_INT32", (-1,)),
                 "class_names": ("TYPE_STRING", (-1,))}
        lines = [f"name: {_quote(self.name)}", 'backend: "python"', f"max_batch_size: {self.max_batch}",
                 f"input [ {{ name: {_quote(self.input_name)} data_type: {self.input_type} "
                 f"dims: {_dims(self.input_dims)} }} ]",
                 "output [",
                 ",\n".join(f"  {{ name: {_quote(n)} data_type: {types[n][0]} dims: {_dims(types[n][1])} }}"
                            for n in OUTPUTS),
                 "]",
                 f"instance_group [ {{ count: {self.instances} kind: KIND_CPU }} ]"]
        if self.queue_delay_us is not None:
            lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {self.queue_delay_us} }}")
        lines.append(f"parameters {{ key: {_quote(PARAMETERS_KEY)} value {{ string_value: "
                     f"{_quote(self.settings.to_json())} }} }}")
        return "\n".join(lines) + "\n"


def model_py() -> str:
    """The ``model.py`` of each served model: this project's model class, importable from inside the stub.

    The stub embeds the Python this venv was made from; the venv's site-packages (with their ``.pth``
    files) and the folder that holds ``engine`` are added to its path.
    """
    sites = list(dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]))
    project = str(Path(__file__).resolve().parents[2])
    return ("# written by engine.serve: Triton's Python backend runs engine.serve.triton_model in this stub\n"
            "import site\n"
            "import sys\n"
            f"for _p in {sites!r}:\n"
            "    site.addsitedir(_p)\n"
            f"if {project!r} not in sys.path:\n"
            f"    sys.path.insert(0, {project!r})\n"
            "from engine.serve.triton_model import TritonPythonModel  # noqa: E402,F401\n")


def remove_stale(tmp: Path | None = None, shm: Path = SHM_DIR) -> list[Path]:
    """Remove the temporary folders of ``engine.serve`` processes of this user that no longer run (a server
    killed with SIGKILL cannot remove its own), with the shared-memory regions of the same server.

    A folder is ``engine-serve-<pid>-<key>-<random>`` and its Triton's regions ``engine-serve-<pid>-<key>-*``:
    only real folders (not links) owned by this user, whose pid no longer runs, go, and only the regions of
    such a folder (a region alone may belong to a server in another container sharing ``/dev/shm``).
    Returns what was removed.
    """
    removed = []
    folder = Path(tmp or tempfile.gettempdir())
    if not folder.is_dir():
        return removed
    for path in folder.glob(PREFIX + "*"):
        parts = path.name[len(PREFIX):].split("-")
        if len(parts) < 3 or not parts[0].isdigit() or pid_alive(int(parts[0])):
            continue
        try:
            st = path.lstat()
            if not path.is_dir() or path.is_symlink() or st.st_uid != os.geteuid():
                continue
            shutil.rmtree(path)
            removed.append(path)
        except OSError:  # gone meanwhile, or not ours to remove
            continue
        if shm.is_dir():
            for region in shm.glob(f"{PREFIX}{parts[0]}-{parts[1]}-*"):
                try:
                    if not region.is_symlink() and region.lstat().st_uid == os.geteuid():
                        region.unlink()
                        removed.append(region)
                except OSError:
                    pass
    return removed


_PRCTL = None
_PARENT = 0  # the pid that starts Triton, set before the fork


def _die_with_parent() -> None:
    """Between fork and exec (Linux): ask for SIGTERM when the thread that started Triton ends, and end now if
    it already has (the parent died between the fork and this call). Only the prctl call: no allocations."""
    _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != _PARENT:  # re-parented: to init, or to a subreaper
        os._exit(1)


class TritonProcess:
    """Triton serving ``models`` on the given ports, from a private model repository (a context manager).

    Start it from the thread that will outlive it (``engine.serve`` uses its main thread): on Linux Triton
    gets SIGTERM when that thread ends.
    """

    def __init__(self, dist: TritonDist, models: Sequence[ServedModel], host: str, http_port: int, grpc_port: int,
                 metrics_port: int, exit_timeout_s: int, verbose: bool = False,
                 metrics_host: str | None = None) -> None:
        self.dist, self.models, self.host = dist, list(models), host
        self.metrics_host = metrics_host or host
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.exit_timeout_s, self.verbose = exit_timeout_s, verbose
        self.workspace: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.ready = False
        self._stopping = False
        self.token = secrets.token_urlsafe(24)
        self.key = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"  # ties the folder to its Triton's shm regions
        self.shm_prefix = f"{PREFIX}{self.key}-"

    # ---- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> "TritonProcess":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        self.close(fast=exc_type is KeyboardInterrupt)  # a second Ctrl-C: no more waiting

    def start(self) -> None:
        """Write the repository and start Triton on it (returns at once: :meth:`wait_ready` waits)."""
        global _PRCTL, _PARENT
        remove_stale()
        self.workspace = Path(tempfile.mkdtemp(prefix=self.shm_prefix))
        repo, backends = self.workspace / "models", self.workspace / "backends" / "python"
        backends.mkdir(parents=True)
        for f in self.dist.python_backend.iterdir():  # Triton finds the stub beside the backend library
            if f.is_file() and f.name != "triton_python_backend_stub":
                os.symlink(f, backends / f.name)
        os.symlink(self.dist.stub, backends / "triton_python_backend_stub")
        for m in self.models:
            (repo / m.name / "1").mkdir(parents=True)
            (repo / m.name / "config.pbtxt").write_text(m.config_pbtxt(), encoding="utf-8")
            (repo / m.name / "1" / "model.py").write_text(model_py(), encoding="utf-8")
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (env.get("LD_LIBRARY_PATH"), str(self.dist.libs)) if p)
        env["PATH"] = os.pathsep.join(p for p in (str(Path(sys.executable).parent), env.get("PATH")) if p)
        # a decoded file may hold at most this many pixels (OpenCV's own default, 2^30, lets a few small
        # hostile PNGs in one request take gigabytes); 8K is 33 million
        env.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))
        cmd = [str(self.dist.binary), "--model-repository", str(repo), "--backend-directory", str(backends.parent),
               # explicit: at stop the models are unloaded (the stubs finalize) before Triton is told to exit,
               # which it would otherwise do without unloading while a client holds a connection open
               "--model-control-mode", "explicit", *[a for m in self.models for a in ("--load-model", m.name)],
               "--disable-auto-complete-config",
               "--allow-http", _on(self.http_port), "--allow-grpc", _on(self.grpc_port),
               "--allow-metrics", _on(self.metrics_port), "--allow-gpu-metrics", "false",
               "--http-restricted-api", f"{PROTECTED}:{TOKEN_HEADER}={self.token}",
               "--grpc-restricted-protocol", f"{PROTECTED}:{TOKEN_HEADER}={self.token}",
               "--exit-on-error", "true", "--exit-timeout-secs", str(self.exit_timeout_s),
               "--pinned-memory-pool-byte-size", "0",  # the stubs take host memory: no CUDA pinned pool
               "--backend-config", f"python,shm-region-prefix-name={self.shm_prefix}",
               # each stub's request/response region: 4 MiB holds a 720p frame; it grows for larger ones (a
               # Docker container's /dev/shm is 64 MiB by default, so not more per stub)
               "--backend-config", f"python,shm-default-byte-size={SHM_BYTES}",
               "--backend-config", f"python,shm-growth-byte-size={SHM_BYTES}",
               "--log-info", "true" if self.verbose else "false"]
        for flag, host, port in (("http", self.host, self.http_port), ("grpc", self.host, self.grpc_port),
                                 ("metrics", self.metrics_host, self.metrics_port)):
            if port:
                cmd += [f"--{flag}-address", host, f"--{flag}-port", str(port)]
        linux = sys.platform.startswith("linux")
        if linux and _PRCTL is None:  # looked up here, not in the forked child
            import ctypes

            _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
        _PARENT = os.getpid()
        try:
            self.proc = subprocess.Popen(cmd, env=env, start_new_session=True,
                                         preexec_fn=_die_with_parent if linux else None)
        except OSError as e:
            raise ServeError(f"cannot start Triton ({self.dist.binary}): {e.strerror or e}", SETUP_HINT) from None

    def alive(self) -> bool:
        """Whether Triton still runs."""
        return self.proc is not None and self.proc.poll() is None

    def _client(self):
        """A tritonclient of the first endpoint that is on."""
        if self.http_port:
            import tritonclient.http as mod

            return mod.InferenceServerClient(f"{self.host}:{self.http_port}", network_timeout=10.0)
        import tritonclient.grpc as mod

        # short reconnect backoff: polled while Triton starts, a channel's default backoff grows to minutes
        return mod.InferenceServerClient(f"{self.host}:{self.grpc_port}", channel_args=[
            ("grpc.initial_reconnect_backoff_ms", 200), ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 1000)])

    def _call_opts(self) -> dict:
        """Per-call options: a deadline for gRPC calls (the HTTP client has its network timeout)."""
        return {} if self.http_port else {"client_timeout": 5.0}

    def _ready(self, client) -> bool:
        return all(client.is_model_ready(m.name, **self._call_opts()) for m in self.models)

    def _ready_now(self) -> bool:
        """Whether every model is ready at this moment (``False`` while Triton does not answer)."""
        try:
            client = self._client()
            try:
                return self._ready(client)
            finally:
                client.close()
        except Exception:  # noqa: BLE001 - not listening (yet, or any more)
            return False

    def wait_ready(self, timeout_s: float, stopped: Callable[[], bool] = lambda: False) -> bool:
        """Block until every model is ready (``True``) or ``stopped()`` (``False``); :class:`ServeError`
        if Triton exits or ``timeout_s`` passes first."""
        client = self._client()
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if stopped():
                    return False
                if not self.alive():
                    raise ServeError(f"Triton {ended(self.proc.returncode)} while loading "
                                     f"{', '.join(m.name for m in self.models)}; its log above says why",
                                     f"if the Python-backend stub failed to start: {SETUP_HINT}")
                try:
                    if self._ready(client):
                        self.ready = True
                        return True
                except Exception:  # noqa: BLE001 - not listening yet
                    pass
                time.sleep(0.2)
        finally:
            client.close()
        raise ServeError(f"Triton did not make {', '.join(m.name for m in self.models)} ready in {timeout_s:.0f} s",
                         "read Triton's log above; a large engine on a busy machine may need longer")

    def _admin_headers(self) -> dict[str, str]:
        return ({TOKEN_HEADER: self.token} if self.http_port
                else {f"triton-grpc-protocol-{TOKEN_HEADER}": self.token})

    def _unload(self, wait_s: float) -> None:
        """Unload the models while Triton still runs: their stubs finalize (Detectors closed) and exit.
        The encoded-image model first: it sends its frames on to the raw-frame one."""
        try:
            client = self._client()
            try:
                for m in reversed(self.models):
                    client.unload_model(m.name, headers=self._admin_headers(), **self._call_opts())
                deadline = time.monotonic() + wait_s
                while time.monotonic() < deadline and self._ready(client):
                    time.sleep(0.1)
            finally:
                client.close()
        except Exception as e:  # noqa: BLE001 - the stop goes on: Triton unloads them itself at exit
            print(f"engine.serve: could not unload the models before stopping Triton ({type(e).__name__}: {e})",
                  file=sys.stderr)

    def stop(self, unload_wait_s: float = 4.0) -> None:
        """Unload the models (when they were ready), then stop Triton: SIGINT, SIGKILL after its exit timeout."""
        if not self.alive():
            return
        self._stopping = True
        if self.ready or self._ready_now():  # a stop may come after Triton made them ready, before we saw it
            self._unload(unload_wait_s)
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=self.exit_timeout_s + 4)
        except subprocess.TimeoutExpired:
            self._kill()

    def _kill(self) -> None:
        self._kill_group()
        self.proc.wait()

    def _kill_group(self) -> None:
        """SIGKILL Triton's process group: Triton leads its own session, so its stubs go with it (the group
        outlives its leader only while a member runs)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self, fast: bool = False) -> None:
        """Stop Triton if it runs (at once if ``fast``, or when a stop was already under way); then remove
        the repository folder and the stubs' shared-memory regions, whatever happened."""
        try:
            if self.alive():
                if fast or self._stopping:
                    self._kill()
                else:
                    self.stop()
        finally:
            if self.proc is not None:  # Triton has exited: a stop while it was still loading the models left
                self._kill_group()  # Python-backend stubs (ignoring SIGTERM, 150 MB each) running under init
            if self.workspace is not None:
                shutil.rmtree(self.workspace, ignore_errors=True)
            if SHM_DIR.is_dir():
                for f in SHM_DIR.glob(self.shm_prefix + "*"):
                    f.unlink(missing_ok=True)


def _on(port: int) -> str:
    return "true" if port else "false"


def ended(code: int) -> str:
    """How a process ended, in words, from its return code."""
    return f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
