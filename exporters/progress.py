"""Progress of long build steps that report none of their own (a TensorRT engine build, a calibration)."""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, Iterator


@contextlib.contextmanager
def heartbeat(log: Callable[[str], None], what: str, every: float = 30.0) -> Iterator[None]:
    """Log ``"<what>: still running, N s"`` every ``every`` seconds until the block ends."""
    done = threading.Event()
    t0 = time.perf_counter()

    def beat() -> None:
        while not done.wait(every):
            log(f"  {what}: still running, {time.perf_counter() - t0:.0f} s")

    thread = threading.Thread(target=beat, name=f"heartbeat {what}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
