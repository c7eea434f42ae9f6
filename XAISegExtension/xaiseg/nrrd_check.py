"""NRRD completeness check: attached (.nrrd) and detached (.nhdr + data files) headers.

Reads the text header, finds the data (after the blank line, or in the data file(s) it names),
applies ``line skip`` and ``byte skip`` as the NRRD format defines them (byte skip after
decompression for gzip/bzip2, -1 meaning "the data end the file" for raw), streams compressed data
once to check it, and compares the data length with ``sizes`` x the size of ``type``.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .errors import CorruptFileError
from .streams import inflate, short_data_error

_HEADER_LIMIT = 1 << 20
_TYPE_GROUPS = {
    1: ("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"),
    2: ("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort",
        "unsigned short", "unsigned short int", "uint16", "uint16_t"),
    4: ("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t", "float"),
    8: ("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64",
        "int64_t", "ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t",
        "double"),
}
_TYPE_BYTES = {name: size for size, names in _TYPE_GROUPS.items() for name in names}
_COMPRESSED = {"gzip": "gzip", "gz": "gzip", "bzip2": "bzip2", "bz2": "bzip2"}


def read_nrrd_header(path: Path) -> Optional[Tuple[Dict[str, str], Optional[int], List[str]]]:
    """Fields (lower-case names), the byte where attached data start (None if the header ends the
    file) and the file names after ``data file: LIST``; None if the file is not NRRD at all."""
    with open(path, "rb") as fh:
        if not fh.readline(64).startswith(b"NRRD000"):
            return None
        fields: Dict[str, str] = {}
        while True:
            line = fh.readline(1 << 16)
            if not line:
                return fields, None, []
            if line in (b"\n", b"\r\n"):
                return fields, fh.tell(), []
            if fh.tell() > _HEADER_LIMIT:
                raise CorruptFileError(f"{path} has a damaged NRRD header: no blank line in its first "
                                       f"{_HEADER_LIMIT} bytes")
            text = line.decode("latin-1").rstrip("\r\n")
            if text.startswith("#") or ":=" in text:
                continue
            key, sep, value = text.partition(":")
            if not sep:
                continue
            key = " ".join(key.lower().split())
            fields[key.replace("datafile", "data file").replace("lineskip", "line skip")
                   .replace("byteskip", "byte skip").replace("blocksize", "block size")] = value.strip()
            if key in ("data file", "datafile") and value.split()[:1] == ["LIST"]:
                names = [ln.decode("latin-1").strip() for ln in fh.read(_HEADER_LIMIT).splitlines()]
                return fields, None, [n for n in names if n]


def _data_files(path: Path, fields: Dict[str, str], offset: Optional[int],
                listing: List[str]) -> List[Tuple[Path, int]]:
    spec = fields.get("data file")
    if spec is None:
        if offset is None:
            raise CorruptFileError(f"{path} ends inside its NRRD header (no blank line and no data after it); "
                                   "the file was cut short, expected a complete copy")
        return [(path, offset)]
    parts = spec.split()
    if parts[:1] == ["LIST"]:
        names = listing
    elif len(parts) >= 4 and "%" in parts[0]:
        lo, hi, step = (int(v) for v in parts[1:4])
        if step == 0:
            raise CorruptFileError(f"{path}: data file step is 0 in {spec!r}")
        names = [parts[0] % i for i in range(lo, hi + (1 if step > 0 else -1), step)]
    else:
        names = [spec]
    files = []
    for name in names:
        f = Path(name) if os.path.isabs(name) else path.parent / name
        if not f.is_file():
            raise CorruptFileError(f"{path}: its data file {f} is missing; expected it where the header's "
                                   "'data file' field points (beside a detached .nhdr header)")
        files.append((f, 0))
    return files


def _data_length(f: Path, start: int, encoding: str, line_skip: int, byte_skip: int) -> Optional[int]:
    with open(f, "rb") as fh:
        fh.seek(start)
        for _ in range(line_skip):
            if not fh.readline():
                break
        if encoding == "raw":
            have = os.fstat(fh.fileno()).st_size - fh.tell()
            return have if byte_skip < 0 else max(have - byte_skip, 0)
        if encoding in _COMPRESSED:
            have = inflate(fh, _COMPRESSED[encoding], str(f))
            return max(have - max(byte_skip, 0), 0)
    return None  # text and hex encodings are left to SimpleITK


def check_nrrd(path: Path) -> dict:
    """Raise if an NRRD file (or detached header) holds less voxel data than its header says."""
    header = read_nrrd_header(path)
    if header is None:
        return {"format": "unknown", "checked": []}  # not NRRD: SimpleITK says what it is not
    fields, offset, listing = header
    files = _data_files(path, fields, offset, listing)
    encoding = fields.get("encoding", "raw").lower()
    try:
        sizes = [int(v) for v in fields["sizes"].split()]
        kind = " ".join(fields["type"].lower().split())
        item = int(fields["block size"]) if kind == "block" else _TYPE_BYTES[kind]
        line_skip = int(fields.get("line skip", "0"))
        byte_skip = int(fields.get("byte skip", "0"))
    except (KeyError, ValueError):
        return {"format": "NRRD", "checked": ["data files present"]}  # SimpleITK judges the rest
    need = math.prod(sizes) * item
    have = 0
    for f, start in files:
        length = _data_length(f, start, encoding, line_skip, byte_skip)
        if length is None:
            return {"format": "NRRD", "checked": ["data files present"]}
        have += length
    if have < need:
        where = path if len(files) == 1 and files[0][0] == path else files[0][0]
        what = (f"the header {path.name} ({'x'.join(map(str, sizes))} voxels of {kind}, {encoding})"
                + (f" over {len(files)} data files" if len(files) > 1 else ""))
        raise short_data_error(where, what, need, have, encoding in _COMPRESSED)
    checked = ["data files present"] if fields.get("data file") else []
    checked += [f"{_COMPRESSED[encoding]} checksum and length"] if encoding in _COMPRESSED else []
    return {"format": "NRRD", "checked": checked + ["data length"], "data_bytes": need}
