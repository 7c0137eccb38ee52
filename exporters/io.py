"""Writing artifacts safely: into a checked output folder, through a temporary file and a rename."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from engine.errors import OutputDirError


def ensure_out_dir(out: Path) -> Path:
    """Create ``out`` if needed and prove it is writable, or raise :class:`OutputDirError`."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as e:
        raise OutputDirError(f"output directory {out} is not writable ({e.strerror or e})",
                             "pass --out with a folder you can write to") from None
    return out


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` only if the block succeeds.

    A failed or interrupted build therefore never leaves a half-written artifact under the final
    name (``os.replace`` is atomic on one filesystem, on POSIX and Windows alike).
    """
    final = Path(final)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; artifacts get the usual mode
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(final: Path, data: bytes) -> Path:
    """Write ``data`` to ``final`` through :func:`atomic_path`."""
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return Path(final)


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; it replaces ``final`` only if the block succeeds.

    For artifacts that are folders (an OpenVINO IR: ``.xml`` + ``.bin``). An older ``final`` is moved
    aside, the new folder renamed into place, then the old one deleted, so ``final`` is never a mix of
    two builds; a failed block deletes the temporary folder and leaves ``final`` as it was.
    """
    final = Path(final)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; artifacts get the usual mode
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".old"))
            os.replace(final, old / final.name)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
