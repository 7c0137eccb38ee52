"""engine/signals.py on Windows, through a fake kernel32 (no Windows here: these check our logic against the
documented API, not Windows itself)."""
from __future__ import annotations

import ctypes
import signal
import sys
import threading
import time

import pytest

from engine import signals
from engine.signals import StopSignals, pid_alive


class FakeKernel32:
    def __init__(self, handle: int = 0, last_error: int = 0, exit_code: int = 259) -> None:
        self.handle, self.last_error, self.exit_code = handle, last_error, exit_code
        self.handlers: list = []

    def SetConsoleCtrlHandler(self, fn, add):  # noqa: N802 (Windows' name)
        (self.handlers.append if add else self.handlers.remove)(fn)
        return 1

    def OpenProcess(self, access, inherit, pid):  # noqa: N802
        return self.handle

    def GetExitCodeProcess(self, handle, ref):  # noqa: N802
        ref._obj.value = self.exit_code
        return 1

    def CloseHandle(self, handle):  # noqa: N802
        return 1


@pytest.fixture()
def windows(monkeypatch):
    k = FakeKernel32()
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(ctypes, "WinDLL", lambda name, use_last_error=False: k, raising=False)
    monkeypatch.setattr(ctypes, "WINFUNCTYPE", ctypes.CFUNCTYPE, raising=False)
    monkeypatch.setattr(ctypes, "get_last_error", lambda: k.last_error, raising=False)
    return k


def test_a_console_close_stops_in_order_and_holds_the_process_until_the_command_unwound(windows, monkeypatch):
    """Closing the console window: Windows ends the process when the console handler returns, before
    Python's SIGBREAK handler runs, so the stream never finalized its MP4s."""
    monkeypatch.setattr(signals, "CLOSE_WAIT_S", 10.0)
    returned = []
    with StopSignals() as stop:
        assert len(windows.handlers) == 1
        handler = windows.handlers[0]
        assert handler(0) == 0 and stop.signum is None  # Ctrl-C: passed on to the C runtime's signal
        t = threading.Thread(target=lambda: returned.append((handler(2), time.monotonic())))  # CTRL_CLOSE_EVENT
        t.start()
        deadline = time.monotonic() + 5
        while stop.signum is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stop.signum == getattr(signal, "SIGBREAK", signal.SIGTERM) and not stop.interrupted
        time.sleep(0.2)
        assert not returned  # held while the command unwinds
        unwound = time.monotonic()
    t.join(5)
    assert returned and returned[0][0] and returned[0][1] >= unwound  # released only once the block exited
    assert windows.handlers == []


def test_a_held_console_close_gives_up_after_the_wait(windows, monkeypatch):
    monkeypatch.setattr(signals, "CLOSE_WAIT_S", 0.2)
    with StopSignals():
        t0 = time.monotonic()
        assert windows.handlers[0](6)  # CTRL_SHUTDOWN_EVENT: at most CLOSE_WAIT_S, whatever the command does
        assert time.monotonic() - t0 < 2


def test_pid_alive_on_windows_counts_a_process_it_may_not_open(windows):
    """OpenProcess fails with ERROR_ACCESS_DENIED for another user's process: it runs, and its temporaries
    must not be removed as a killed run's."""
    windows.handle, windows.last_error = 0, 5
    assert pid_alive(123456)
    windows.last_error = 87  # ERROR_INVALID_PARAMETER: no such process
    assert not pid_alive(123456)
    windows.handle, windows.exit_code = 42, 259  # STILL_ACTIVE
    assert pid_alive(123456)
    windows.exit_code = 0
    assert not pid_alive(123456)
