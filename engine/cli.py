"""The one error policy of every command-line entry point (``exporters.build``, ``engine.stream``,
``engine.serve``, ``benchmarks.*``).

=====================================  ======================================================  =====
what ended the command                 what it prints (stderr)                                  exit
=====================================  ======================================================  =====
the action returned                    its own output                                           0, or the int it returned
a typed error (:class:`DeployError`)   ``error: <what, naming the file or flag>`` and           2
                                       ``  fix: <what to do>``; no traceback (``--debug``
                                       re-raises it, with the traceback)
Ctrl-C (``KeyboardInterrupt``)         ``interrupted: <what was cleaned up>``                   130
SIGTERM, where the command turns it    ``stopped (SIGTERM)``                                    0
into :class:`Terminated`
anything else (a bug, a library's      the traceback, then ``hint: ...`` when the command       1
own failure)                           gives one
=====================================  ======================================================  =====

Ctrl-C and SIGTERM are caught only after the action has unwound, so every ``with`` block and ``finally``
in it (threads joined, files finalized, servers stopped, GPU memory freed) has run: "exit 130 after a
clean shutdown".
"""
from __future__ import annotations

import sys
import traceback
from typing import Callable

from .errors import DeployError

EXIT_OK, EXIT_BUG, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised by a command's signal handler so that it unwinds as for Ctrl-C, but exits 0
    (``docker stop``, a service manager: a requested stop, not an interruption)."""


def terminate(*_: object) -> None:
    """A ``signal.signal(signal.SIGTERM, terminate)`` handler: raise :class:`Terminated`."""
    raise Terminated


def safe_console() -> None:
    """Let stdout and stderr print every character the commands use (``Δ``, ``≤``, ``…``, a camera's or a
    class's name): where their encoding lacks one (Windows writes a file or a pipe in its ANSI code page,
    cp1252, which has no ``Δ``: ``python -m exporters.build > build.log`` ended in a ``UnicodeEncodeError``
    at the summary table, before the report was written), it is written as an escape instead."""
    for stream in (sys.stdout, sys.stderr):
        encoding = getattr(stream, "encoding", None) or "ascii"
        try:
            "Δ≤≥…→×—".encode(encoding)
        except (UnicodeEncodeError, LookupError):
            reconfigure = getattr(stream, "reconfigure", None)
            if reconfigure is not None:
                reconfigure(errors="backslashreplace")


def run_cli(action: Callable[[], object], debug: bool, interrupted: str = "interrupted", hint: str = "") -> int:
    """Run ``action`` under the policy above and return the exit code.

    Args:
        action: the command's work. Returning an ``int`` makes it the exit code (a command with its own
            verdicts, e.g. ``benchmarks.verify``); any other value exits 0.
        debug: re-raise typed errors with their traceback instead of the two-line message.
        interrupted: what Ctrl-C prints (say what was cleaned up).
        hint: printed after the traceback of an unexpected error (where to look first).
    """
    safe_console()
    try:
        result = action()
    except DeployError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except Terminated:
        print("stopped (SIGTERM)", file=sys.stderr)
        return EXIT_OK
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:  # a bug or a library's own failure: the traceback is what helps
        traceback.print_exc()
        if hint:
            print(f"hint: {hint}", file=sys.stderr)
        return EXIT_BUG
    return result if isinstance(result, int) and not isinstance(result, bool) else EXIT_OK
