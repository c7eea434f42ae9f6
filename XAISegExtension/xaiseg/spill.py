"""A run's private folder for what it keeps on disk instead of in memory.

Two stores use it: the activation caches kept from segmentation to the Dice drop
(:mod:`.kept_caches`) and the finished planes of an explanation kept until its files are written
(:mod:`.plane_store`).  The folder is made on the first write, inside xaiseg's cache folder
(``XAISEG_CACHE``, else ``~/.cache/xaiseg``), not in the system's temporary folder, which is often
memory itself (tmpfs).  It is removed when its owner closes it, is garbage-collected or the
interpreter exits; folders that this machine's killed processes left are removed by the next run.
A file is written under a temporary name and renamed when complete, so a half-written file is
never read.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import weakref
from pathlib import Path
from typing import Callable, Optional

from .diskspace import PathLike, free_bytes
from .weights import default_cache_dir

PREFIX = "run-"  # a run's folder: run-<host>-<process id>-<random>
#: free space left on the folder's file system after a file is written
DISK_RESERVE_BYTES = 512 << 20


def _prefix() -> str:
    """This machine's folders: run-<host>-<process id>-<random> (a cache folder may be shared by hosts)."""
    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname()) or "host"
    return f"{PREFIX}{host}-"


def remove_stale(parent: Path) -> None:
    """Remove the folders in ``parent`` left by this machine's runs whose process no longer exists
    (POSIX only: elsewhere a folder stays until it is deleted by hand)."""
    if os.name != "posix" or not parent.is_dir():
        return
    mine = _prefix()
    for folder in parent.glob(f"{mine}*"):
        try:
            pid = int(folder.name[len(mine):].split("-")[0])
            os.kill(pid, 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, OSError):
            continue


class SpillFolder:
    """One run's folder under ``parent`` (default: ``<cache folder>/<kind>``), made when the first
    file is written."""

    def __init__(self, kind: str, parent: Optional[PathLike] = None) -> None:
        self.parent = Path(parent) if parent is not None else default_cache_dir() / kind
        remove_stale(self.parent)
        self.folder: Optional[Path] = None
        self._remove: Optional[weakref.finalize] = None

    def write(self, name: str, save: Callable[[Path], None], nbytes: int) -> Optional[Path]:
        """``save(path)`` writes about ``nbytes`` to ``path``; the file is published as ``name`` in the
        folder.  None, with nothing left behind, when the disk would keep less than
        :data:`DISK_RESERVE_BYTES` free or the write fails."""
        try:
            if self.folder is None:
                self.parent.mkdir(parents=True, exist_ok=True)
                self.folder = Path(tempfile.mkdtemp(prefix=f"{_prefix()}{os.getpid()}-", dir=str(self.parent)))
                self._remove = weakref.finalize(self, shutil.rmtree, str(self.folder), True)
            if free_bytes(self.folder) < nbytes + DISK_RESERVE_BYTES:
                return None
            path = self.folder / name
            part = self.folder / f".{name}.part"
            try:
                save(part)
                os.replace(part, path)
            finally:
                if part.exists():
                    part.unlink()
            return path
        except (OSError, RuntimeError):  # torch reports a failed write as a RuntimeError
            return None

    def close(self) -> None:
        """Remove the folder and everything in it."""
        if self._remove is not None:
            self._remove()
        self.folder, self._remove = None, None
