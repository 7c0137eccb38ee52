"""The one error policy of every command-line entry point."""
from __future__ import annotations

import sys
from typing import Callable

from .errors import DeployError


def run_cli(action: Callable[[], object], debug: bool, interrupted: str = "interrupted") -> int:
    """Run ``action`` as a CLI does: 0 on success; a :class:`DeployError` prints ``error: …`` (with its
    ``fix:`` line) to stderr and returns 2, or is re-raised with its traceback when ``debug``; Ctrl-C
    prints ``interrupted`` and returns 130."""
    try:
        action()
    except DeployError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
    return 0
