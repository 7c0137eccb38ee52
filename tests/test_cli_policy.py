"""One policy for every command line (engine/cli.py): typed error → 2, Ctrl-C → 130, SIGTERM → 0, a bug → 1."""
from __future__ import annotations

import subprocess
import sys

import pytest

from engine.cli import Terminated, run_cli
from engine.errors import ConfigError, DeployError
from tests.conftest import ROOT


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


def test_a_console_without_the_characters_gets_escapes_not_a_crash(tmp_path):
    """Windows writes a redirected stdout in cp1252, which has no 'Δ': the build's summary table (and the
    accuracy report's) ended in a UnicodeEncodeError, exit 1, before build_report.json was written."""
    import os

    code = ("import sys; from engine.cli import run_cli; from engine.errors import ConfigError\n"
            "from exporters.records import table\n"
            "def act():\n    print(table([]))\n    raise ConfigError('camera \u2192 gone', 'fix \u2264 2')\n"
            "sys.exit(run_cli(act, False))")
    env = {**os.environ, "PYTHONIOENCODING": "cp1252", "PYTHONUTF8": "0"}
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert p.returncode == 2, p.stderr.decode("cp1252", "replace")
    assert b"\\u0394 pts" in p.stdout and b"UnicodeEncodeError" not in p.stderr
    assert b"error: camera \\u2192 gone" in p.stderr and b"fix: fix \\u2264 2" in p.stderr


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
    (["benchmarks.rank_stability", "--deploy", "{tmp}/none", "--data", "{tmp}"], "none/demo.onnx not found"),
    (["benchmarks.rank_stability", "--deploy", "{tmp}", "--data", "{tmp}", "--images", "8"], "need 256 images"),
    (["benchmarks.rank_stability", "--deploy", "{tmp}", "--data", "{tmp}", "--sizes", "0,x"], "--sizes '0,x'"),
    (["benchmarks.runtime_speed", "--imgsz", "abc"], "--imgsz"),
], ids=lambda v: v[0] if isinstance(v, list) else None)
def test_benchmark_commands_exit_2_with_the_file_and_the_fix(tmp_path, argv, needle):
    argv = [a.format(tmp=tmp_path) for a in argv]
    p = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "error:" in p.stderr and needle in p.stderr and "fix:" in p.stderr and "Traceback" not in p.stderr


