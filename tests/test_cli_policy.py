"""One policy for every command line (engine/cli.py): typed error → 2, Ctrl-C → 130, SIGTERM → 0, a bug → 1."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from engine.cli import Terminated, run_cli
from engine.errors import ConfigError, DeployError
from tests.conftest import ROOT
from tests.rtsp_server import free_ports


def _raise(e: BaseException):
    def action():
        raise e
    return action


# ---- the policy, in process ------------------------------------------------------------------------

@pytest.mark.parametrize("action, code, says, not_says", [
    (lambda: None, 0, "", "Traceback"),
    (lambda: {"frames": 3}, 0, "", "Traceback"),
    (lambda: 3, 3, "", "Traceback"),  # a command's own verdict (benchmarks.verify)
    (_raise(ConfigError("--imgsz 300 is not a multiple of 32", "try --imgsz 320")), 2,
     "error: --imgsz 300 is not a multiple of 32\n  fix: try --imgsz 320", "Traceback"),
    (_raise(KeyboardInterrupt()), 130, "interrupted: files closed", "Traceback"),
    (_raise(Terminated()), 0, "stopped (SIGTERM)", "Traceback"),
    (_raise(ZeroDivisionError("a bug")), 1, "Traceback", "error:"),
], ids=["none", "a-value", "an-int", "typed-error", "ctrl-c", "sigterm", "a-bug"])
def test_run_cli_policy(capsys, action, code, says, not_says):
    assert run_cli(action, debug=False, interrupted="interrupted: files closed") == code
    err = capsys.readouterr().err
    assert says in err and not_says not in err


def test_a_bug_prints_its_traceback_then_the_hint(capsys):
    assert run_cli(_raise(RuntimeError("stub died")), False, hint="read the server log above") == 1
    err = capsys.readouterr().err
    assert err.index("RuntimeError: stub died") < err.index("hint: read the server log above")


def test_debug_reraises_a_typed_error_with_its_traceback():
    with pytest.raises(DeployError, match="bad"):
        run_cli(_raise(DeployError("bad", "fix it")), debug=True)


def test_the_action_unwinds_before_the_exit_code(capsys):
    """Ctrl-C exits 130 only after the action's with blocks and finally clauses ran (a clean shutdown)."""
    closed = []

    def action():
        try:
            raise KeyboardInterrupt
        finally:
            closed.append("sinks closed")

    assert run_cli(action, False) == 130 and closed == ["sinks closed"]


def test_options_without_help_finds_a_bare_option():
    import argparse

    from tests.cli_help import options_without_help

    ap = argparse.ArgumentParser(prog="x")
    ap.add_argument("--documented", help="says what it does")
    ap.add_argument("--a-very-long-option-name-here", metavar="VALUE", help="its help on the next line")
    ap.add_argument("--bare")
    ap.add_argument("-q", "--quiet", action="store_true")
    assert options_without_help(ap.format_help()) == ["--bare", "--quiet"]


# ---- every command line, as a user runs it ---------------------------------------------------------

@pytest.mark.parametrize("argv, needle", [
    (["benchmarks.int8_speed", "--deploy", "{tmp}/none"], "none/demo.onnx not found"),
    (["benchmarks.int8_breakdown", "--deploy", "{tmp}/none"], "none/demo.onnx not found"),
    (["benchmarks.runtime_speed", "--imgsz", "abc"], "--imgsz"),
], ids=lambda v: v[0] if isinstance(v, list) else None)
def test_benchmark_commands_exit_2_with_the_file_and_the_fix(tmp_path, argv, needle):
    argv = [a.format(tmp=tmp_path) for a in argv]
    p = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "error:" in p.stderr and needle in p.stderr and "fix:" in p.stderr and "Traceback" not in p.stderr


# ---- engine.serve's signals, with a fake pytriton --------------------------------------------------

FAKE_PYTRITON = {
    "__init__.py": "",
    "model_config.py": textwrap.dedent('''
        class _Kw:
            def __init__(self, *args, **kwargs):
                self.kwargs = kwargs
        DynamicBatcher = ModelConfig = Tensor = _Kw
    '''),
    "models/__init__.py": "",
    "models/model.py": "class Model:\n    pass\n",  # no get_proxy_model_files: the error shim says so, serves on
    # what engine.serve uses of pytriton 0.7's Triton: bind, connect, is_alive, and the with block that stops it
    "triton.py": textwrap.dedent('''
        class TritonConfig:
            def __init__(self, **kwargs):
                self.kwargs = kwargs
        class Triton:
            def __init__(self, config=None):
                self.bound = []
            def __enter__(self):
                return self
            def __exit__(self, *exc):
                print("fake triton: closed", flush=True)
            def bind(self, model_name, infer_func, **kwargs):
                self.bound.append(model_name)
            def connect(self):
                pass
            def is_alive(self):
                return True
            def get_access_token(self):
                raise RuntimeError("no model repository API in the fake")
    '''),
}


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("sig, code, says", [(signal.SIGINT, 130, "interrupted: Triton stopped, detectors closed"),
                                             (signal.SIGTERM, 0, "stopped (SIGTERM)")], ids=["ctrl-c", "sigterm"])
def test_serve_exits_130_on_ctrl_c_and_0_on_sigterm_after_stopping(tmp_path, sig, code, says):
    from tests.fakes.tiny_onnx import write_tiny_onnx

    fake = tmp_path / "fake" / "pytriton"
    fake.mkdir(parents=True)
    for name, text in FAKE_PYTRITON.items():
        (fake / name).parent.mkdir(exist_ok=True)
        (fake / name).write_text(text)
    model = write_tiny_onnx(tmp_path / "tiny.onnx", dynamic=True)
    http, grpc, metrics = map(str, free_ports(3))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake.parent), str(ROOT)])}
    p = subprocess.Popen([sys.executable, "-m", "engine.serve", "--model", str(model), "--http-port", http,
                          "--grpc-port", grpc, "--metrics-port", metrics, "--max-batch", "2"], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line, deadline = "", time.monotonic() + 60
        while "Ctrl+C stops" not in line and time.monotonic() < deadline and p.poll() is None:
            line = p.stdout.readline()
        assert "Ctrl+C stops" in line, p.stderr.read() if p.poll() is not None else "no serving line"
        p.send_signal(sig)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == code, err
    assert says in err and "Traceback" not in err
    assert "fake triton: closed" in out  # Triton was stopped before the exit code was decided
