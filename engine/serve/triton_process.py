"""Triton Inference Server as a child process: the binary nvidia-pytriton bundles, our model repository.

:func:`find_triton` locates what ``nvidia-pytriton`` ships (the ``tritonserver`` binary, its libraries,
the Python backend and the backend stub for this Python); nothing of pytriton's own Python is used.
:class:`TritonProcess` writes a model repository into a private temporary folder (each model's
``config.pbtxt`` and a ``model.py`` that imports :mod:`engine.serve.triton_model`), starts Triton on it,
waits until the models are ready, and at :meth:`~TritonProcess.stop` unloads them (the stubs finalize
their Detectors), stops Triton and removes the folder and the stubs' shared-memory regions.

Triton runs in its own session (a terminal's Ctrl-C reaches only ``engine.serve``, which stops it in
order) and, on Linux, gets SIGTERM if ``engine.serve`` dies, so a killed server leaves no orphan.
"""
from __future__ import annotations

import json
import os
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

SETUP_HINT = "make the serving venv with `bash .ci/setup_triton.sh` and run `.venv-triton/bin/python -m engine.serve`"
SHM_DIR = Path("/dev/shm")
SHM_BYTES = 4 << 20


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
    return found


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class ServedModel:
    """One model of the repository: a Python-backend model whose stub runs a Detector."""

    name: str
    input_name: str
    input_type: str  # Triton data type of the input (TYPE_UINT8, TYPE_STRING)
    input_dims: tuple[int, ...]
    max_batch: int
    instances: int
    queue_delay_us: int | None  # None: no dynamic batcher
    settings: dict  # what engine.serve.triton_model reads (model file, thresholds, threads, warm-up)

    def config_pbtxt(self) -> str:
        dims = lambda d: "[ " + ", ".join(str(x) for x in d) + " ]"  # noqa: E731
        outputs = (("num_detections", "TYPE_INT32", (1,)), ("boxes", "TYPE_FP32", (-1, 4)),
                   ("scores", "TYPE_FP32", (-1,)), ("class_ids", "TYPE_INT32", (-1,)),
                   ("class_names", "TYPE_STRING", (-1,)))
        lines = [f"name: {_quote(self.name)}", 'backend: "python"', f"max_batch_size: {self.max_batch}",
                 f"input [ {{ name: {_quote(self.input_name)} data_type: {self.input_type} "
                 f"dims: {dims(self.input_dims)} }} ]",
                 "output [",
                 ",\n".join(f"  {{ name: {_quote(n)} data_type: {t} dims: {dims(d)} }}" for n, t, d in outputs),
                 "]",
                 f"instance_group [ {{ count: {self.instances} kind: KIND_CPU }} ]"]
        if self.queue_delay_us is not None:
            lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {self.queue_delay_us} }}")
        from .triton_model import PARAMETERS_KEY

        lines.append(f"parameters {{ key: {_quote(PARAMETERS_KEY)} value {{ string_value: "
                     f"{_quote(json.dumps(self.settings))} }} }}")
        return "\n".join(lines) + "\n"


def model_py() -> str:
    """The ``model.py`` of each served model: this project's model class, importable from inside the stub."""
    paths = list(dict.fromkeys([str(Path(__file__).resolve().parents[2]),  # the folder that holds `engine`
                                sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]))
    return ("# written by engine.serve: Triton's Python backend runs engine.serve.triton_model in this stub\n"
            "import sys\n"
            f"sys.path[:0] = [p for p in {paths!r} if p not in sys.path]\n"
            "from engine.serve.triton_model import TritonPythonModel  # noqa: E402,F401\n")


def _die_with_parent() -> None:  # runs in the child between fork and exec (Linux only)
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class TritonProcess:
    """Triton serving ``models`` on the given ports, from a private model repository (a context manager)."""

    def __init__(self, dist: TritonDist, models: Sequence[ServedModel], host: str, http_port: int, grpc_port: int,
                 metrics_port: int, exit_timeout_s: int, verbose: bool = False) -> None:
        self.dist, self.models, self.host = dist, list(models), host
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.exit_timeout_s, self.verbose = exit_timeout_s, verbose
        self.workspace: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.shm_prefix = f"engine-serve-{os.getpid()}-{uuid.uuid4().hex[:8]}-"

    # ---- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> "TritonProcess":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self.workspace = Path(tempfile.mkdtemp(prefix="engine-serve-"))
        repo, backends = self.workspace / "models", self.workspace / "backends" / "python"
        backends.mkdir(parents=True)
        for f in self.dist.python_backend.iterdir():  # Triton finds the stub beside the backend library
            if f.is_file():
                os.symlink(f, backends / f.name)
        os.symlink(self.dist.stub, backends / "triton_python_backend_stub")
        for m in self.models:
            (repo / m.name / "1").mkdir(parents=True)
            (repo / m.name / "config.pbtxt").write_text(m.config_pbtxt(), encoding="utf-8")
            (repo / m.name / "1" / "model.py").write_text(model_py(), encoding="utf-8")
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (env.get("LD_LIBRARY_PATH"), str(self.dist.libs)) if p)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])  # the stub's Python
        on = lambda port: "true" if port else "false"  # noqa: E731
        cmd = [str(self.dist.binary), "--model-repository", str(repo), "--backend-directory", str(backends.parent),
               "--model-control-mode", "explicit", *[a for m in self.models for a in ("--load-model", m.name)],
               "--disable-auto-complete-config",
               "--allow-http", on(self.http_port), "--allow-grpc", on(self.grpc_port),
               "--allow-metrics", on(self.metrics_port), "--allow-gpu-metrics", "false",
               "--exit-on-error", "true", "--exit-timeout-secs", str(self.exit_timeout_s),
               "--pinned-memory-pool-byte-size", "0",  # the stubs take host memory: no CUDA pinned pool
               "--backend-config", f"python,shm-region-prefix-name={self.shm_prefix}",
               # each stub's request/response region: 4 MiB holds a 720p frame; it grows for larger ones (a
               # Docker container's /dev/shm is 64 MiB by default, so not more per stub)
               "--backend-config", f"python,shm-default-byte-size={SHM_BYTES}",
               "--backend-config", f"python,shm-growth-byte-size={SHM_BYTES}",
               "--log-info", "true" if self.verbose else "false"]
        for flag, port in (("http", self.http_port), ("grpc", self.grpc_port), ("metrics", self.metrics_port)):
            if port:
                cmd += [f"--{flag}-address", self.host, f"--{flag}-port", str(port)]
        self.proc = subprocess.Popen(cmd, env=env, start_new_session=True,
                                     preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _client(self):
        if self.http_port:
            import tritonclient.http as mod

            return mod.InferenceServerClient(f"{self.host}:{self.http_port}", network_timeout=10.0)
        import tritonclient.grpc as mod

        return mod.InferenceServerClient(f"{self.host}:{self.grpc_port}")

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
                    raise ServeError(f"Triton exited with code {self.proc.returncode} while loading "
                                     f"{', '.join(m.name for m in self.models)}; its log above says why",
                                     f"if the Python-backend stub failed to start: {SETUP_HINT}")
                try:
                    if all(client.is_model_ready(m.name) for m in self.models):
                        return True
                except Exception:  # noqa: BLE001 - not listening yet
                    pass
                time.sleep(0.2)
        finally:
            client.close()
        raise ServeError(f"Triton did not make {', '.join(m.name for m in self.models)} ready in {timeout_s:.0f} s",
                         "read Triton's log above; a large engine on a busy machine may need longer")

    def _unload(self, wait_s: float) -> None:
        """Unload the models while Triton still runs: their stubs finalize (Detectors closed) and exit."""
        try:
            client = self._client()
            try:
                for m in self.models:
                    client.unload_model(m.name)
                deadline = time.monotonic() + wait_s
                while time.monotonic() < deadline and any(client.is_model_ready(m.name) for m in self.models):
                    time.sleep(0.1)
            finally:
                client.close()
        except Exception as e:  # noqa: BLE001 - the stop goes on: Triton unloads them itself at exit
            print(f"engine.serve: could not unload the models before stopping Triton ({type(e).__name__}: {e})",
                  file=sys.stderr)

    def stop(self, unload_wait_s: float = 4.0) -> None:
        """Unload the models, then stop Triton (SIGINT; SIGKILL if it outlives its exit timeout)."""
        if self.alive():
            self._unload(unload_wait_s)
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=self.exit_timeout_s + 4)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def close(self) -> None:
        """Stop Triton if it runs; remove the repository folder and the stubs' shared-memory regions."""
        if self.proc is not None:
            if self.alive():
                self.stop()
            self.proc.wait()
        if self.workspace is not None:
            shutil.rmtree(self.workspace, ignore_errors=True)
        if SHM_DIR.is_dir():
            for f in SHM_DIR.glob(self.shm_prefix + "*"):
                f.unlink(missing_ok=True)
