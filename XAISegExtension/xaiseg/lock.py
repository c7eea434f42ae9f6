"""One xaiseg run at a time per output folder.

:func:`output_lock` holds an exclusive lock on a hidden file in the output folder while a run
writes there: ``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows, and where neither works
(some network file systems) a lock file created with ``O_EXCL``.  A second run into the same
folder gets :class:`OutputBusyError` naming the pid of the first.  The lock file is removed on
the way out; its name starts with ``.xaiseg`` like the staging folders, so it is never an output.
"""
from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Union

from .diskspace import missing_folders, remove_empty
from .errors import OutputBusyError, OutputError
from .processes import process_ended
from .signals import deferred_signals

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
try:  # Windows
    import msvcrt
except ImportError:
    msvcrt = None  # type: ignore[assignment]

PathLike = Union[str, "os.PathLike[str]"]
LOCK_NAME = ".xaiseg.lock"
_WIN_LOCK_AT = 1 << 20  # Windows locks a byte range; lock one past the pid so the pid stays readable


def is_internal(name: str) -> bool:
    """Whether a file name in an output folder is xaiseg's own (lock, staging, temporary), not an output."""
    return name.startswith(".xaiseg") or (name.startswith(".") and ".part" in name)


def _read_pid(path: Path) -> Optional[int]:
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
        return int(text.split()[0]) if text else None
    except (OSError, ValueError, IndexError):
        return None


def _busy(outdir: Path, path: Path, unchecked: bool = False) -> OutputBusyError:
    """``unchecked``: the lock is a file whose owner this system cannot be asked about (the fallback
    without OS locks, off POSIX, or a pid that cannot be one), so it may be left by a run that died."""
    pid = _read_pid(path)
    who = f"pid {pid}" if pid is not None else "pid unknown"
    stale = (f"; if no such run is going, its lock file {path} was left by one that died: remove it"
             if unchecked else "")
    return OutputBusyError(f"output folder {outdir} is in use by another xaiseg run ({who}); expected one run per "
                           f"output folder at a time - wait for it to finish or choose another folder{stale}")


def _write_pid(fd: int) -> None:
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode("ascii"))


def _try_os_lock(fd: int) -> bool:
    """Take the OS lock on ``fd`` without waiting: True if taken, False if held by another,
    raise OSError if this file system has no such locks."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
    if msvcrt is not None:  # pragma: no cover - Windows
        os.lseek(fd, _WIN_LOCK_AT, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EDEADLK):
                return False
            raise
    raise OSError(errno.ENOLCK, "no OS file locks on this platform")


def _release_os_lock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    elif msvcrt is not None:  # pragma: no cover - Windows
        os.lseek(fd, _WIN_LOCK_AT, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def _os_lock(outdir: Path, path: Path) -> Optional[int]:
    """An fd holding the OS lock on ``path`` (None if OS locks do not work here)."""
    while True:
        fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            taken = _try_os_lock(fd)
        except OSError:
            os.close(fd)
            return None
        if not taken:
            os.close(fd)
            raise _busy(outdir, path)
        try:  # the file may have been removed by the run that held it: lock the one on disk
            same = os.path.samestat(os.fstat(fd), os.stat(str(path)))
        except FileNotFoundError:
            same = False
        if same:
            _write_pid(fd)
            return fd
        _release_os_lock(fd)
        os.close(fd)


def _excl_lock(outdir: Path, path: Path) -> None:
    """Fallback: create the lock file exclusively; a lock left by a dead process is taken over."""
    for _ in range(2):
        try:
            fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if not process_ended(_read_pid(path)):  # an unknown owner is taken to be running
                raise _busy(outdir, path, unchecked=True) from None
            try:
                os.unlink(str(path))  # stale: its run died without removing it
            except FileNotFoundError:
                pass
            continue
        try:
            _write_pid(fd)
        finally:
            os.close(fd)
        return
    raise _busy(outdir, path)


@contextmanager
def output_lock(outdir: PathLike, use_os_lock: bool = True) -> Iterator[Path]:
    """Hold ``outdir`` (created if needed) for this run; :class:`OutputBusyError` if another holds it.
    Folders it created are removed on the way out if the run left them empty.

    ``use_os_lock=False`` forces the ``O_EXCL`` fallback (for tests and file systems without locks)."""
    outdir = Path(outdir)
    created = missing_folders(outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {outdir}: {exc.strerror or exc}") from exc
    path = outdir / LOCK_NAME
    taken, fd = False, None
    try:
        with deferred_signals():  # an interrupt waits until the lock is ours to release
            try:
                fd = _os_lock(outdir, path) if use_os_lock else None
                if fd is None:
                    _excl_lock(outdir, path)
                taken = True
            except OutputBusyError:
                raise
            except OSError as exc:
                remove_empty(created)
                raise OutputError(f"cannot create the lock file {path}: {exc.strerror or exc}") from exc
        yield path
    finally:
        if taken:
            with deferred_signals():  # and cannot cut the release short
                _release(path, fd, created)


def _release(path: Path, fd: Optional[int], created) -> None:
    """Remove the lock file, let go of the lock and remove the folders the run left empty."""
    if fd is not None and fcntl is not None:
        _remove(path)  # while still locked, so no one else can be holding this file
        _release_os_lock(fd)
        os.close(fd)
    else:
        if fd is not None:  # pragma: no cover - Windows: an open file cannot be removed
            _release_os_lock(fd)
            os.close(fd)
        _remove(path)
    remove_empty(created)


def _remove(path: Path) -> None:
    try:
        os.unlink(str(path))
    except OSError:
        pass
