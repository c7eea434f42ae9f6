"""Free space in the output folder: an early check, and one clear error when a write runs out."""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

from .errors import DiskFullError

PathLike = Union[str, "os.PathLike[str]"]
_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
HEADER_BYTES = 64 << 10  # allowance per written image for its header


def existing_parent(path: PathLike) -> Path:
    """``path`` or its nearest ancestor that exists (an output folder may not exist yet)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def free_bytes(folder: PathLike) -> int:
    """Bytes free to this user on the file system that holds (or will hold) ``folder``."""
    return int(shutil.disk_usage(str(existing_parent(folder))).free)


def free_inodes(folder: PathLike) -> Optional[int]:
    """Files that can still be created on the file system of ``folder`` (None where unknown)."""
    try:
        stats = os.statvfs(str(existing_parent(folder)))
    except (AttributeError, OSError):  # pragma: no cover - Windows
        return None
    return int(stats.f_favail) if stats.f_files else None


def human(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"  # pragma: no cover


def image_bytes(shape: Sequence[int], dtype="float32", count: int = 1) -> int:
    """Upper bound of the bytes ``count`` uncompressed images of ``shape``/``dtype`` take on disk."""
    return count * (int(np.prod(shape)) * np.dtype(dtype).itemsize + HEADER_BYTES)


def check_free_space(outdir: PathLike, bytes_needed: int) -> int:
    """Raise :class:`DiskFullError` early if ``outdir`` has less than ``bytes_needed`` free; the free bytes."""
    free = free_bytes(outdir)
    if free < bytes_needed:
        raise DiskFullError(f"output folder {outdir} has {human(free)} free ({free} bytes); this run needs about "
                            f"{human(bytes_needed)} ({bytes_needed} bytes); expected enough free space - free "
                            "some space or choose another output folder")
    return free


def is_disk_full(exc: BaseException) -> bool:
    """Whether an error from a write means the disk (or quota) is full."""
    return isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS or "No space left on device" in str(exc)


def disk_full_error(folder: PathLike, name: str, bytes_needed: int) -> DiskFullError:
    """The error for a write of ``name`` into ``folder`` that ran out of space (after cleaning up)."""
    folder = Path(folder)
    if folder.name.startswith(".xaiseg-"):  # a staging folder: name the output folder
        folder = folder.parent
    if free_inodes(folder) == 0:
        return DiskFullError(f"output folder {folder} is full: no file can be created there to write {name} (0 free "
                             "inodes); nothing was written. Free some space or choose another output folder")
    free = free_bytes(folder)
    return DiskFullError(f"output folder {folder} is full: writing {name} needs up to {human(bytes_needed)} "
                         f"({bytes_needed} bytes) and {human(free)} ({free} bytes) are free; nothing was written. "
                         "Free some space or choose another output folder")


def missing_folders(folder: PathLike) -> List[Path]:
    """``folder`` and its ancestors that do not exist yet, innermost first (what a mkdir would create)."""
    missing = []
    for p in [Path(folder), *Path(folder).parents]:
        if p.exists():
            break
        missing.append(p)
    return missing


def remove_empty(folders: Sequence[Path]) -> None:
    """Remove ``folders`` (innermost first) while they are empty, so a failed run leaves no folder."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return
