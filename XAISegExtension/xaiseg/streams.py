"""Compressed streams read once, in chunks, with their checksums checked (gzip CRC-32 and length,
bzip2 and zlib): shared by the NIfTI, MetaImage and NRRD integrity checks."""
from __future__ import annotations

import bz2
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Optional

from .errors import CorruptFileError

CHUNK = 1 << 20  # bytes read from the file at a time
_OUT_CAP = 1 << 20  # most decompressed bytes produced by one call
_MAGIC = {"gzip": b"\x1f\x8b", "bzip2": b"BZh"}


def _decompressor(kind: str):
    if kind == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if kind == "zlib":
        return zlib.decompressobj(32 + zlib.MAX_WBITS)  # zlib or gzip header, detected
    if kind == "bzip2":
        return bz2.BZ2Decompressor()
    raise ValueError(f"unknown compression {kind!r}")


def _feed(d, data: bytes):
    """Decompressed pieces of ``data``, each at most ``_OUT_CAP`` bytes."""
    if isinstance(d, bz2.BZ2Decompressor):
        yield d.decompress(data, _OUT_CAP)
        while not d.eof and not d.needs_input:
            yield d.decompress(b"", _OUT_CAP)
    else:
        yield d.decompress(data, _OUT_CAP)
        while d.unconsumed_tail:
            yield d.decompress(d.unconsumed_tail, _OUT_CAP)


def _stream_error(exc: Exception, kind: str, what: str, done: int) -> CorruptFileError:
    text = str(exc)
    if "incorrect data check" in text:
        why = "fail their CRC-32 check" if kind == "gzip" else "fail their checksum"
    elif "incorrect length check" in text:
        why = "differ in length from the length stored with them"
    else:
        why = f"cannot be decompressed after {done} bytes ({text})"
    return CorruptFileError(f"{what} is damaged: its {kind} data {why}; expected an intact copy")


def _zeros_to_end(fh: BinaryIO) -> bool:
    while True:
        data = fh.read(CHUNK)
        if not data:
            return True
        if data.strip(b"\0"):
            return False


def inflate(fh: BinaryIO, kind: str, what: str, sink: Optional[Callable[[bytes], None]] = None) -> int:
    """Decompress ``fh`` from its position to its end, checking every checksum, and return the
    decompressed length; ``sink`` gets the data piece by piece.  gzip and bzip2 may hold several members."""
    d = _decompressor(kind)
    total, pending = 0, b""
    while True:
        data = pending or fh.read(CHUNK)
        pending = b""
        if not data:
            raise CorruptFileError(
                f"{what} is truncated: its {kind} data end after {total} decompressed bytes without the "
                "end of the stream (cut short while copying or downloading?); expected a complete file")
        try:
            for out in _feed(d, data):
                total += len(out)
                if sink is not None and out:
                    sink(out)
        except (zlib.error, OSError, EOFError) as exc:
            raise _stream_error(exc, kind, what, total) from exc
        if not d.eof:
            continue
        rest = d.unused_data
        while len(rest) < 3:
            more = fh.read(CHUNK)
            if not more:
                break
            rest += more
        if not rest:
            return total
        magic = _MAGIC.get(kind)
        if magic and rest.startswith(magic):
            d, pending = _decompressor(kind), rest
            continue
        if not rest.strip(b"\0") and _zeros_to_end(fh):
            return total
        raise CorruptFileError(f"{what} is damaged: unexpected bytes follow the end of its {kind} data; "
                               "expected an intact copy")


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == _MAGIC["gzip"]


def short_data_error(path: Path, what: str, need: int, have: int, gz: bool) -> CorruptFileError:
    have = max(have, 0)
    return CorruptFileError(
        f"{path} is incomplete: {what} needs {need} bytes of voxel data, but the "
        f"{'decompressed ' if gz else ''}file holds {have} ({100.0 * have / max(need, 1):.1f}%); the file "
        "was cut short, expected a complete copy")
