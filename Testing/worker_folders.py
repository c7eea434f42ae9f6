"""The test workers' own temporary folders (``make test`` runs the suite in several processes): each
worker holds a lock on a file beside its folder while it runs, and the controlling process removes
the folders whose worker ended without removing its own (a worker that crashed).

A held lock says the worker runs even where a process id cannot: two containers sharing a temporary
folder but not their process ids.  A folder without a lock file (made before locks, or where file
locks are not available) falls back on its name's process id."""
import os
import shutil
from pathlib import Path
from typing import List, Optional, Tuple

# the engine's output-folder lock: an OS file lock taken without waiting, on the file that is on disk
# (xaiseg.lock; its errors say "output folder", which no caller here shows)
from xaiseg import lock as _file_lock
from xaiseg.errors import OutputBusyError
from xaiseg.processes import process_ended

#: the start of every worker folder's name: PREFIX, the worker's name (gw0, gw1, ...), "-", its process id
PREFIX = "pytest-xaiseg-"
LOCK_SUFFIX = ".lock"


def folder_for(tmp: Path, worker: str, pid: int, token: str = "") -> Path:
    """The folder of worker ``worker`` with process id ``pid`` in the temporary folder ``tmp``; ``token``
    (random letters) keeps apart two workers of one name and process id (two containers sharing the
    temporary folder, each numbering its own processes)."""
    return Path(tmp) / "{}{}-{}{}".format(PREFIX, worker, pid, "-" + token if token else "")


def _pid_of(name: str) -> str:
    """The process id in a worker folder's name (text; not a number where the name is not a worker's)."""
    parts = name[len(PREFIX):].split("-")
    return parts[1] if len(parts) > 1 else ""


def _lock_path(folder: Path) -> Path:
    return Path(str(folder) + LOCK_SUFFIX)


def take(tmp: Path, worker: str, pid: int) -> Tuple[Path, Optional[int]]:
    """A folder of its own for worker ``worker`` (process id ``pid``) in ``tmp``: its lock file is
    locked first, then the folder made, so a folder that exists has its lock held while its worker
    runs.  Returns the folder and the file descriptor holding the lock, to keep until :func:`release`
    (None where file locks are not available: the folder's process id then says whether its worker
    runs)."""
    while True:
        folder = folder_for(tmp, worker, pid, os.urandom(4).hex())
        try:
            # a sweep that took the new lock file for a crashed worker's (no folder yet) and removed it
            # before this lock is noticed there: the file on disk is locked again
            fd = _file_lock._os_lock(Path(tmp), _lock_path(folder))
        except OutputBusyError:  # another process holds this name: draw another
            continue
        break
    if fd is None:  # no locks on this file system (some network ones): fall back on the process id
        _unlink(_lock_path(folder))
    folder.mkdir(parents=True)
    return folder, fd


def release(folder: Path, fd: Optional[int]) -> None:
    """Remove ``folder`` (what a test left there, each test checks itself), then its lock file."""
    shutil.rmtree(str(folder), ignore_errors=True)
    if fd is not None:
        _unlink(_lock_path(folder))
        os.close(fd)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:  # removed meanwhile (another run's end)
        pass


def _mine(path: Path) -> bool:
    """Whether ``path`` is this user's and not a link."""
    try:
        return not path.is_symlink() and path.stat().st_uid == os.getuid()
    except OSError:  # removed meanwhile
        return False


def sweep(tmp: Path) -> List[Path]:
    """Remove this user's worker folders in ``tmp`` (and their lock files) whose worker no longer runs:
    its lock file can be locked, or, with no lock file, no process has the id in its name.  Lock files
    left without a folder go too.  Returns the folders removed."""
    removed = []
    names = {p.name[:-len(LOCK_SUFFIX)] if p.name.endswith(LOCK_SUFFIX) else p.name
             for p in Path(tmp).glob(PREFIX + "gw*-*")}
    for name in sorted(names):
        folder, lock_path = Path(tmp) / name, _lock_path(Path(tmp) / name)
        pid = _pid_of(name)
        has_folder = folder.is_dir() and _mine(folder)
        if lock_path.exists() and _mine(lock_path):
            try:
                fd = os.open(str(lock_path), os.O_RDWR)
            except OSError:  # removed meanwhile (its worker's end)
                continue
            try:
                if _file_lock._try_os_lock(fd):
                    # its worker ended: remove while holding the lock, the folder before its lock file
                    if has_folder:
                        shutil.rmtree(str(folder), ignore_errors=True)
                        removed.append(folder)
                    _unlink(lock_path)
            except OSError:  # no locks on this file system: a lock file is then never left (take)
                pass
            finally:
                os.close(fd)
        elif has_folder and not lock_path.exists() and pid.isdigit() and process_ended(int(pid)):
            shutil.rmtree(str(folder), ignore_errors=True)
            removed.append(folder)
    return removed
