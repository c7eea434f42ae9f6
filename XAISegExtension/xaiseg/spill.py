"""A run's private folder for what it keeps on disk instead of in memory, and the store that fills it.

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
from collections import OrderedDict
from typing import Callable, Dict, Hashable, Optional

from .diskspace import PathLike, free_bytes
from .processes import POSIX, process_ended
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
    if not POSIX or not parent.is_dir():
        return
    mine = _prefix()
    for folder in parent.glob(f"{mine}*"):
        try:
            pid = int(folder.name[len(mine):].split("-")[0])
        except ValueError:
            continue
        if process_ended(pid):
            shutil.rmtree(folder, ignore_errors=True)


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


class SpillingStore:
    """Values by key, the newest in memory up to ``memory_bytes`` and older ones written to files in a
    :class:`SpillFolder` of ``kind``.  A subclass says how a value is sized, named, saved and read
    back, and what a failed write means (:meth:`_unwritten`)."""

    kind = "spill"

    def __init__(self, memory_bytes: int, folder: Optional[PathLike] = None) -> None:
        self.memory_bytes = int(memory_bytes)
        self.spill = SpillFolder(self.kind, folder)
        self.memory: "OrderedDict[Hashable, object]" = OrderedDict()
        self.files: Dict[Hashable, Path] = {}
        self.in_memory_bytes = 0
        self.written = 0  # values written to disk
        self.unwritable = False  # set by a subclass that stops writing after a failure

    @property
    def folder(self) -> Optional[Path]:
        """The run's folder (None until a value is written)."""
        return self.spill.folder

    def _nbytes(self, value) -> int:
        raise NotImplementedError

    def _name(self, key: Hashable) -> str:
        raise NotImplementedError

    def _save(self, value, path: Path) -> None:
        raise NotImplementedError

    def _unwritten(self, key: Hashable) -> None:
        """``key``'s value could not be written (a full disk, a failed write)."""
        raise NotImplementedError

    def _put(self, key: Hashable, value) -> None:
        """Keep ``value`` (in memory, the oldest others going to disk beyond the bound)."""
        self.discard(key)  # kept again: its older copy goes
        self.memory[key] = value
        self.in_memory_bytes += self._nbytes(value)
        while len(self.memory) > 1 and self.in_memory_bytes > self.memory_bytes and not self.unwritable:
            old = next(iter(self.memory))
            value = self.memory[old]
            path = self.spill.write(self._name(old), lambda part: self._save(value, part), self._nbytes(value))
            if path is None:
                self._unwritten(old)
                continue
            self.files[old] = path
            self.written += 1
            self._forget_memory(old)

    def _forget_memory(self, key: Hashable) -> None:
        value = self.memory.pop(key, None)
        if value is not None:
            self.in_memory_bytes -= self._nbytes(value)

    def __contains__(self, key: Hashable) -> bool:
        return key in self.memory or key in self.files

    def discard(self, key: Hashable) -> None:
        """Forget ``key``'s value (and delete its file)."""
        self._forget_memory(key)
        path = self.files.pop(key, None)
        if path is not None:
            path.unlink(missing_ok=True)

    def close(self) -> None:
        """Forget every value and remove the folder."""
        self.memory.clear()
        self.files.clear()
        self.in_memory_bytes = 0
        self.spill.close()
