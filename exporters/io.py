"""Writing artifacts safely: into a checked output folder, through a temporary file and a rename.

Every temporary file or folder the build makes in the output folder is named ``.<what>-p<pid>-…``
(or ``.<file>.p<pid>.….tmp``): a later build removes those whose process is gone (a build killed
half-way), and leaves those of a build still running. A write that fails for want of space or
permission is an :class:`~engine.errors.OutputDirError` naming the file, the free space and the space
it needed.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from engine.errors import OutputDirError
from engine.signals import pid_alive

# errnos that mean "this folder cannot take the write", as opposed to a bug or a missing input
_WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
                 getattr(errno, "EDQUOT", errno.ENOSPC)}
# ours: ".<file>.p<pid>.<random>.tmp", ".<what>-p<pid>-<random>"; older builds: ".export-*", ".int8-*", ".write-test-*"
_TEMP = re.compile(r"^\.(?:.+\.p(?P<pid1>\d+)\..*\.tmp|[a-z0-9-]+?-p(?P<pid2>\d+)-.*|export-.*|int8-.*|write-test-.*)$")


def temp_prefix(what: str) -> str:
    """The prefix of a temporary file or folder of this process in an output folder (``.int8-p1234-``)."""
    return f".{what}-p{os.getpid()}-"


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Remove the temporary files and folders that builds no longer running left in ``out``; return them."""
    removed = []
    for p in Path(out).iterdir() if Path(out).is_dir() else ():
        m = _TEMP.match(p.name)
        if not m:
            continue
        pid = m.group("pid1") or m.group("pid2")
        if pid is not None and pid_alive(int(pid)):
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()
        removed.append(p)
    return removed


def write_failure(e: OSError, path: Path, need: int | None = None) -> OutputDirError | None:
    """The typed error for an OS error while writing ``path`` (no space, read-only, no permission), or
    ``None`` when ``e`` is not a write failure (then it is a bug or a missing input: re-raise it)."""
    if e.errno not in _WRITE_ERRNOS:
        return None
    folder = Path(path).parent
    try:
        free = f"{shutil.disk_usage(folder).free / 1e6:,.0f} MB free"
    except OSError:
        free = "free space unknown"
    needed = f", about {need / 1e6:,.1f} MB needed" if need else ""
    what = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only"}.get(
        e.errno, "no permission" if e.errno in (errno.EACCES, errno.EPERM) else e.strerror or str(e))
    return OutputDirError(f"cannot write {path}: {what} ({free}{needed}); nothing half-written was left",
                          f"free space on the disk of {folder}, or pass --out with a writable folder that has room")


def ensure_out_dir(out: Path) -> Path:
    """Create ``out`` if needed and prove it is writable, or raise :class:`OutputDirError`."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=temp_prefix("write-test")):
            pass
    except OSError as e:
        raise OutputDirError(f"output directory {out} is not writable ({e.strerror or e})",
                             "pass --out with a folder you can write to") from None
    return out


@contextlib.contextmanager
def atomic_path(final: Path, need: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` only if the block succeeds.

    A failed or interrupted build therefore never leaves a half-written artifact under the final
    name (``os.replace`` is atomic on one filesystem, on POSIX and Windows alike). A write that fails
    for want of space or permission becomes an :class:`OutputDirError` (``need``: the bytes it needed).
    """
    final = Path(final)
    try:
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.p{os.getpid()}.", suffix=".tmp")
    except OSError as e:
        raise (write_failure(e, final, need) or e) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; artifacts get the usual mode
        os.replace(tmp_path, final)
    except OSError as e:
        ours = e.filename is None or Path(e.filename).parent == final.parent
        typed = write_failure(e, final, need) if ours else None
        if typed is None:
            raise
        raise typed from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def staged(final: Path) -> Iterator[Path]:
    """Like :func:`atomic_path`, but the temporary file keeps ``final``'s name (inside a temporary folder
    beside it), so checks that pick a loader by file name can run on it before it is moved into place.

    The staged path may be made a folder (an OpenVINO IR: ``.xml`` + ``.bin``): an older ``final`` is then
    moved aside into the temporary folder before the rename (a folder cannot replace a folder in one
    step), so ``final`` is never a mix of two builds, and goes with the temporary folder.
    """
    final = Path(final)
    try:
        folder = Path(tempfile.mkdtemp(prefix=temp_prefix("stage"), dir=final.parent))
    except OSError as e:
        raise (write_failure(e, final) or e) from None
    try:
        yield folder / final.name
        if (folder / final.name).is_dir() and (final.exists() or final.is_symlink()):
            os.replace(final, folder / f"{final.name}.old")
        os.replace(folder / final.name, final)
    except OSError as e:
        typed = write_failure(e, final)
        if typed is None:
            raise
        raise typed from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_bytes_atomic(final: Path, data: bytes) -> Path:
    """Write ``data`` to ``final`` through :func:`atomic_path`."""
    with atomic_path(final, need=len(data)) as tmp:
        tmp.write_bytes(data)
    return Path(final)


def save_onnx(model, final: Path) -> Path:
    """``onnx.save`` through :func:`atomic_path`, after the full ``onnx.checker`` check (every ONNX the
    project writes must pass it, so it can be given back with ``--onnx``)."""
    import onnx

    onnx.checker.check_model(model, full_check=True)
    with atomic_path(final, need=model.ByteSize()) as tmp:
        onnx.save(model, str(tmp))
    return Path(final)
