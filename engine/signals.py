"""Stop signals as a flag, for the long-running commands (``engine.stream``, ``engine.serve``); and
:func:`pid_alive`, which tells a killed process's leftovers from a live one's.

While installed (``with StopSignals() as stop:`` on the main thread), SIGINT, SIGTERM and SIGBREAK
(Windows) only record which signal came in :attr:`StopSignals.signum`; the command's loop polls it,
stops in order, and raises ``KeyboardInterrupt`` afterwards for Ctrl-C (:attr:`interrupted`). The
default ``KeyboardInterrupt`` is raised at whatever bytecode the main thread is running, which can be
inside a lock's bookkeeping (a ``threading.Condition``, a pool's wait) and leave that lock held, so the
shutdown itself hangs; a flag cannot. A second Ctrl-C raises at once (the user will not wait). A SIGINT
that a parent left ignored (a background job) stays ignored.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

__all__ = ["StopSignals", "pid_alive"]


class StopSignals:
    """Record SIGINT / SIGTERM / SIGBREAK in :attr:`signum` while installed (a context manager)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

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
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (this process does; another user's counts as running).

    Used to tell leftovers of killed processes (named after their pid) from those of live ones.
    """
    if pid == os.getpid():
        return True
    if sys.platform == "win32":  # os.kill(pid, 0) would terminate the process on Windows
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        ctypes.windll.kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        ctypes.windll.kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
