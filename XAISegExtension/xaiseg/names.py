"""One sanitiser for the names of output files, for the CLI, the worker and Slicer alike.

A name can come from a user (``--name``), a file name or a Slicer node name (which may come from
DICOM tags), so it may hold path separators, ``..``, control characters or a Windows device name.
:func:`safe_name` turns any text into one plain file-name component; :func:`inside` checks that a
path really lies in the output folder.
"""
from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from pathlib import Path
from typing import Optional, Union

from .errors import UnsafePathError

PathLike = Union[str, "os.PathLike[str]"]
MAX_CHARS = 100  # characters in a sanitised name, before the suffixes the writers add
MAX_BYTES = 150  # UTF-8 bytes in one, so that name + suffix stays under the usual 255-byte limit
_KEEP = "-_."
_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9\u00b9\u00b2\u00b3]|lpt[0-9\u00b9\u00b2\u00b3]|conin\$|conout\$)$",
                       re.IGNORECASE)
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".img", ".hdr")


def _plain(text: str) -> str:
    """Letters and digits (any script, with their combining marks), '-', '_' and '.' kept; every
    run of anything else -> '_'."""
    out, bad = [], True
    for ch in text:
        if ch.isalnum() or ch in _KEEP or (not bad and unicodedata.category(ch) in ("Mn", "Mc")):
            out.append(ch)
            bad = False
        elif not bad:
            out.append("_")
            bad = True
    return "".join(out)


def _cap(name: str, original: str) -> str:
    if len(name) <= MAX_CHARS and len(name.encode("utf-8")) <= MAX_BYTES:
        return name
    tag = "-" + hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    keep = name[: MAX_CHARS - len(tag)]
    while len((keep + tag).encode("utf-8")) > MAX_BYTES:
        keep = keep[:-1]
    return keep.rstrip("._- ") + tag


def safe_name(text: Optional[object], fallback: str = "volume") -> str:
    """``text`` as one safe file-name component: no separators, no '..', no control characters,
    no leading or trailing dot, dash or underscore, not a Windows device name (``CON`` ->
    ``_CON``), at most :data:`MAX_CHARS` characters (longer names are cut and given a short hash
    of the whole text, so different long names stay different).  Empty -> ``fallback``."""
    raw = "" if text is None else str(text)
    name = _plain(unicodedata.normalize("NFC", raw))
    name = re.sub(r"\.{2,}", ".", name).strip("._-")
    if not name:
        if fallback == "volume" or not fallback:
            return "volume"
        return safe_name(fallback, "volume")
    if _RESERVED.match(name.split(".")[0]):
        name = "_" + name
    return _cap(name, raw)


def stem_name(path: PathLike, fallback: str = "volume") -> str:
    """A safe output name from an input path: its last component without the volume suffix."""
    name = Path(str(path).rstrip("/\\")).name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return safe_name(name, fallback)


def inside(outdir: PathLike, path: PathLike) -> Path:
    """``path`` resolved, if it lies inside ``outdir`` (symbolic links followed); else raise
    :class:`UnsafePathError`."""
    root = Path(outdir).resolve()
    target = (root / path).resolve() if not Path(path).is_absolute() else Path(path).resolve()
    if target == root or root not in target.parents:
        raise UnsafePathError(f"output {path} would be written to {target}, outside the output folder {root}; "
                              "expected a plain file name inside it")
    return target
