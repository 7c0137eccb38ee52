"""Stop signals as a flag, for the long-running commands (``engine.stream``, ``engine.serve``); and
:func:`pid_alive`, which tells a killed process's leftovers from a live one's.

While installed (``with StopSignals() as stop:`` on the main thread), SIGINT, SIGTERM and SIGBREAK
(Windows) only record which signal came in :attr:`StopSignals.signum`; the command's loop polls it,
stops in order, and raises ``KeyboardInterrupt`` afterwards for Ctrl-C (:attr:`interrupted`). The
default ``KeyboardInterrupt`` is raised at whatever bytecode the main thread is running, which can be
inside a lock's bookkeeping (a ``threading.Condition``, a pool's wait) and leave that lock held, so the
shutdown itself hangs; a flag cannot. A second Ctrl-C raises at once (the user will not wait). A SIGINT
that a parent left ignored (a background job) stays ignored.

On Windows, closing the console window also stops the command in order: the C runtime turns it into SIGBREAK
too, but Windows ends the process as soon as the console handler returns, before Python's own handler can
run, so the MP4s were never finalized. :class:`StopSignals` registers a console handler
(``SetConsoleCtrlHandler``) that records the stop as SIGBREAK and holds the process until the command has
unwound or :data:`CLOSE_WAIT_S` have passed (Windows gives about 5 s, then ends it). Logoff and shutdown are
not delivered to a console process that has loaded user32.dll, as OpenCV does (that function's
documentation): they are not covered.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

__all__ = ["StopSignals", "pid_alive"]

CLOSE_WAIT_S = 4.5  # how long a console close holds the process for the shutdown (Windows allows about 5 s)
_CLOSE_EVENTS = (2, 5, 6)  # CTRL_CLOSE_EVENT, CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT


class StopSignals:
    """Record SIGINT / SIGTERM / SIGBREAK in :attr:`signum` while installed (a context manager)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._console: _ConsoleClose | None = None

    @property
    def interrupted(self) -> bool:
        """Whether the stop came from Ctrl-C (the caller then raises ``KeyboardInterrupt``)."""
        return self.signum == signal.SIGINT

    def __call__(self, signum: int, _frame: object) -> None:
        if self.interrupted and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum  # the only thing a handler does: it runs between any two bytecodes

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # signal.signal works only there
            for name in ("SIGINT", "SIGTERM", "SIGBREAK"):
                sig = getattr(signal, name, None)
                if sig is not None and (sig != signal.SIGINT or signal.getsignal(sig) is not signal.SIG_IGN):
                    self._previous[sig] = signal.signal(sig, self)
            if sys.platform == "win32":
                self._console = _ConsoleClose(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        if self._console is not None:
            self._console.close()  # the command has unwound: a held console close may now end the process
            self._console = None


class _ConsoleClose:
    """A Windows console handler: a window close (or a logoff or shutdown, where Windows sends them) sets
    ``stop.signum`` (SIGBREAK) and holds the process until :meth:`close` (the command unwound) or
    :data:`CLOSE_WAIT_S`; Ctrl-C and Ctrl-Break pass on to the C runtime, whose signals :class:`StopSignals`
    handles."""

    def __init__(self, stop: StopSignals) -> None:
        import ctypes
        from ctypes import wintypes

        self.unwound = threading.Event()

        def handler(event: int) -> bool:
            if event not in _CLOSE_EVENTS:
                return False
            stop.signum = getattr(signal, "SIGBREAK", signal.SIGTERM)
            self.unwound.wait(CLOSE_WAIT_S)
            return True  # handled: Windows now ends the process

        self._kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        self._handler = ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.DWORD)(handler)  # kept: Windows calls it
        self._installed = bool(self._kernel32.SetConsoleCtrlHandler(self._handler, True))

    def close(self) -> None:
        self.unwound.set()
        if self._installed:
            self._kernel32.SetConsoleCtrlHandler(self._handler, False)
            self._installed = False


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (this process does; another user's counts as running).

    Used to tell leftovers of killed processes (named after their pid) from those of live ones.
    """
    if pid == os.getpid():
        return True
    if sys.platform == "win32":  # os.kill(pid, 0) would terminate the process on Windows
        import ctypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return ctypes.get_last_error() == 5  # ERROR_ACCESS_DENIED: it exists (another user's); else gone
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
