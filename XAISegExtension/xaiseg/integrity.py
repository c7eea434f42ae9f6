"""Checks that an image file is whole before SimpleITK reads it.

SimpleITK fills what is missing from a truncated NIfTI (plain or gzip) with zeros, and a gzip
stream cut before its trailer reads as if it were whole, so a damaged file would be segmented
without a word.  :func:`check_file` reads the header, streams any compressed data once in chunks
(gzip CRC-32 and length, bzip2 and zlib checksums) and compares the length of the data with what
the header promises.  It holds a few MB at most, never the whole volume.
"""
from __future__ import annotations

import math
import os
import struct
from pathlib import Path
from typing import BinaryIO, Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from .errors import CorruptFileError
from .streams import CHUNK, _MAGIC, inflate, short_data_error

PathLike = Union[str, "os.PathLike[str]"]


def check_file(path: PathLike) -> dict:
    """Raise :class:`CorruptFileError` if ``path`` is truncated or damaged; else a record of what was checked."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith((".nii", ".nii.gz", ".hdr", ".hdr.gz", ".img", ".img.gz")):
        try:
            return check_nifti(p)
        except NotNifti:
            return {"format": "unknown", "checked": []}  # not NIfTI: SimpleITK says what it is not
    if name.endswith((".nrrd", ".nhdr")):
        from .nrrd_check import check_nrrd

        return check_nrrd(p)
    if name.endswith((".mha", ".mhd")):
        return check_metaimage(p)
    if name.endswith(".gz"):
        with open(p, "rb") as fh:
            length = inflate(fh, "gzip", str(p))
        return {"format": "gzip", "checked": ["gzip CRC-32 and length"], "decompressed_bytes": length}
    return {"format": p.suffix.lstrip(".").lower() or "unknown", "checked": []}


# -- compressed streams -----------------------------------------------------------------------

# -- NIfTI ------------------------------------------------------------------------------------

#: bytes per voxel of each NIfTI datatype code (1, binary, is one bit)
_NIFTI_BYTES = {2: 1, 4: 2, 8: 4, 16: 4, 32: 8, 64: 8, 128: 3, 256: 1, 512: 2, 768: 4, 1024: 8, 1280: 8,
                1536: 16, 1792: 16, 2048: 32, 2304: 4}


class NotNifti(CorruptFileError):
    """The file does not start with a NIfTI header (it may be another format altogether)."""


def parse_nifti_header(head: bytes, where: str) -> Dict[str, object]:
    """Sizes, data length and data offset from a NIfTI-1/2 (or Analyze) header."""
    if len(head) < 348:
        raise CorruptFileError(f"{where} is too short for a NIfTI header ({len(head)} bytes; a header has "
                               "348 or 540)")
    for endian in "<>":
        size = struct.unpack(endian + "i", head[:4])[0]
        if size in (348, 540):
            break
    else:
        raise NotNifti(f"{where} does not start with a NIfTI header (size field "
                       f"{struct.unpack('<i', head[:4])[0]}; expected 348 or 540)")
    if size == 348:
        dim = struct.unpack(endian + "8h", head[40:56])
        datatype, bitpix = struct.unpack(endian + "hh", head[70:74])
        vox_offset = struct.unpack(endian + "f", head[108:112])[0]
        magic, version, min_offset = head[344:347], 1, 352
    else:
        if len(head) < 540:
            raise CorruptFileError(f"{where} is too short for a NIfTI-2 header ({len(head)} of 540 bytes)")
        datatype, bitpix = struct.unpack(endian + "hh", head[12:16])
        dim = struct.unpack(endian + "8q", head[16:80])
        vox_offset = struct.unpack(endian + "q", head[168:176])[0]
        magic, version, min_offset = head[4:7], 2, 544
    ndim = dim[0]
    if not 1 <= ndim <= 7 or any(d < 0 for d in dim[1:ndim + 1]):
        raise CorruptFileError(f"{where} has a damaged NIfTI header: dim = {list(dim)}; expected dim[0] in "
                               "1..7 and non-negative sizes")
    if not math.isfinite(vox_offset) or vox_offset < 0:
        raise CorruptFileError(f"{where} has a damaged NIfTI header: vox_offset = {vox_offset}")
    sizes = [int(d) for d in dim[1:ndim + 1]]
    bits = 1 if datatype == 1 else 8 * _NIFTI_BYTES.get(datatype, 0) or bitpix
    if bits <= 0:
        raise CorruptFileError(f"{where} has a damaged NIfTI header: datatype {datatype}, bitpix {bitpix}")
    single = magic in (b"n+1", b"n+2")
    nvox = math.prod(sizes)
    return {"version": version, "endian": endian, "single_file": single, "sizes": sizes, "datatype": int(datatype),
            "vox_offset": max(int(vox_offset), min_offset) if single else int(vox_offset),
            "data_bytes": (nvox * bits + 7) // 8}


def _sibling(path: Path, suffixes: Tuple[str, ...]) -> Optional[Path]:
    stem = path.name[: -len(".gz")] if path.name.lower().endswith(".gz") else path.name
    stem = stem[: stem.rfind(".")]
    for suffix in suffixes:
        for cand in (suffix, suffix.upper()):
            if (path.parent / (stem + cand)).exists():
                return path.parent / (stem + cand)
    return None


class NonFiniteScan:
    """Counts NaN, +inf and -inf in a stream of float voxels and keeps bit masks of where they are.

    SimpleITK's NIfTI reader turns every non-finite voxel into 0, so they are found in the file."""

    def __init__(self, dtype: np.dtype, skip: int, count: int):
        self.dtype, self.skip, self.left = np.dtype(dtype), skip, count
        self.index, self.rest = 0, b""
        self.counts = {"nan": 0, "posinf": 0, "neginf": 0}
        self.masks: List[Tuple[int, int, bytes, bytes, bytes]] = []

    def __call__(self, piece) -> None:
        view = memoryview(piece)
        if self.skip:
            cut = min(self.skip, len(view))
            view, self.skip = view[cut:], self.skip - cut
        if self.rest and len(view) and self.left > 0:  # complete the voxel split across pieces
            take = self.dtype.itemsize - len(self.rest)
            self.rest += bytes(view[:take])
            view = view[take:]
            if len(self.rest) == self.dtype.itemsize:
                self._scan(self.rest)
                self.rest = b""
        if not len(view) or self.left <= 0:
            return
        n = min(len(view) // self.dtype.itemsize, self.left)
        self._scan(view[: n * self.dtype.itemsize])
        self.rest = bytes(view[n * self.dtype.itemsize:]) if self.left > 0 else b""

    def _scan(self, data) -> None:
        arr = np.frombuffer(data, self.dtype)
        n = arr.size
        if not np.isfinite(arr).all():
            nan, pos, neg = np.isnan(arr), arr == np.inf, arr == -np.inf
            for key, m in (("nan", nan), ("posinf", pos), ("neginf", neg)):
                self.counts[key] += int(np.count_nonzero(m))
            self.masks.append((self.index, n, np.packbits(nan).tobytes(), np.packbits(pos).tobytes(),
                               np.packbits(neg).tobytes()))
        self.index, self.left = self.index + n, self.left - n

    def record(self) -> dict:
        return dict(self.counts) if self.masks else {}


def restore_nonfinite(array: np.ndarray, masks: List[Tuple[int, int, bytes, bytes, bytes]]) -> None:
    """Put back (in place) the NaN/inf voxels a :class:`NonFiniteScan` found where a reader put 0."""
    flat = array.reshape(-1)
    for start, n, *bits in masks:
        for value, packed in zip((np.nan, np.inf, -np.inf), bits):
            idx = np.flatnonzero(np.unpackbits(np.frombuffer(packed, np.uint8), count=n))
            if idx.size:
                flat[start + idx] = value


_FLOAT_TYPES = {16: "f4", 64: "f8"}


class _NiftiSink:
    """Takes a NIfTI file's bytes in order: parses the header, then scans float data for NaN/inf."""

    def __init__(self, where: str, scan: bool = True):
        self.where, self.scan_data, self.head = where, scan, bytearray()
        self.header: Optional[Dict[str, object]] = None
        self.scan: Optional[NonFiniteScan] = None

    def __call__(self, piece: bytes) -> None:
        if self.header is None:
            take = 544 - len(self.head)
            self.head += piece[:take]
            if len(self.head) < 544:
                return
            self.finish()
            piece = memoryview(piece)[take:]
        if self.scan is not None and len(piece):
            self.scan(piece)

    def finish(self) -> Dict[str, object]:
        if self.header is None:
            head, self.head = bytes(self.head), bytearray()
            self.header = parse_nifti_header(head, self.where)
            if self.scan_data and self.header["single_file"]:
                self.scan = scan_for(self.header, self.header["vox_offset"])
                if self.scan is not None:
                    self.scan(head)
        return self.header


def scan_for(header: Dict[str, object], skip: int) -> Optional[NonFiniteScan]:
    code = _FLOAT_TYPES.get(int(header["datatype"]))
    if code is None:
        return None
    return NonFiniteScan(np.dtype(str(header["endian"]) + code), skip, math.prod(header["sizes"]))


def _stream(path: Path, sink: Callable[[bytes], None], whole: Callable[[], bool]) -> Tuple[int, bool]:
    """Feed a (possibly gzip) file to ``sink``: all of it if gzip or if ``whole()`` says so after
    its first 544 bytes; its (decompressed) length and whether it was gzip."""
    with open(path, "rb") as fh:
        if fh.read(2) == _MAGIC["gzip"]:
            fh.seek(0)
            return inflate(fh, "gzip", str(path), sink), True
        fh.seek(0)
        sink(fh.read(544))
        if whole():
            for piece in iter(lambda: fh.read(CHUNK), b""):
                sink(piece)
        return os.fstat(fh.fileno()).st_size, False


def check_nifti(path: Path) -> dict:
    """Raise if a NIfTI file (or .hdr/.img pair) holds less voxel data than its header says or
    is damaged; the record counts NaN/inf voxels, which SimpleITK would read as 0."""
    header_path = path
    if path.name.lower().endswith((".img", ".img.gz")):
        header_path = _sibling(path, (".hdr", ".hdr.gz"))
        if header_path is None:
            raise CorruptFileError(f"{path} has no header file beside it (.hdr); expected an Analyze/NIfTI pair")
    sink = _NiftiSink(str(header_path))
    length, gz = _stream(header_path, sink, lambda: sink.finish() is not None and sink.scan is not None)
    hdr = sink.finish()
    scan = sink.scan
    checked = ["gzip CRC-32 and length"] if gz else []
    data_path = header_path
    if not hdr["single_file"]:
        data_path = path if header_path is not path else _sibling(header_path, (".img", ".img.gz"))
        if data_path is None:
            raise CorruptFileError(f"{header_path}: its data file (.img) is missing; expected it beside the header")
        scan = scan_for(hdr, int(hdr["vox_offset"]))
        length, gz = _stream(data_path, scan or (lambda piece: None), lambda: scan is not None)
        checked += ["gzip CRC-32 and length of the data file"] if gz else []
    if length < int(hdr["vox_offset"]) + int(hdr["data_bytes"]):
        what = f"its header ({'x'.join(map(str, hdr['sizes']))} voxels of NIfTI datatype {hdr['datatype']})"
        raise short_data_error(data_path, what, int(hdr["data_bytes"]), length - int(hdr["vox_offset"]), gz)
    record = {"format": f"NIfTI-{hdr['version']}", "checked": checked + ["data length"],
              "data_bytes": hdr["data_bytes"]}
    if scan is not None:
        record["checked"].append("NaN/inf voxels")
        if scan.masks:
            record["nonfinite"] = scan.record()
            record["_nonfinite_masks"] = scan.masks
    return record


# -- MetaImage --------------------------------------------------------------------------------

_MET_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}


def _metaimage_header(fh: BinaryIO, path: Path) -> Dict[str, str]:
    fields: Dict[str, str] = {}
    while "ELEMENTDATAFILE" not in fields:
        line = fh.readline(1 << 16)
        if not line or fh.tell() > (1 << 20):
            raise CorruptFileError(f"{path} has a damaged MetaImage header: no ElementDataFile line")
        key, sep, value = line.decode("latin-1").partition("=")
        if sep:
            fields[key.strip().upper()] = value.strip()
    return fields


def check_metaimage(path: Path) -> dict:
    """Raise if a MetaImage (.mha/.mhd) holds less voxel data than its header says or is damaged."""
    with open(path, "rb") as fh:
        fields = _metaimage_header(fh, path)
        start = fh.tell()
    try:
        dims = [int(v) for v in fields["DIMSIZE"].split()]
        size = _MET_BYTES[fields.get("ELEMENTTYPE", "")] * int(fields.get("ELEMENTNUMBEROFCHANNELS", "1"))
    except (KeyError, ValueError):
        return {"format": "MetaImage", "checked": []}  # SimpleITK judges what is not checked here
    data_file = fields["ELEMENTDATAFILE"]
    if data_file.upper().startswith("LIST") or "%" in data_file:
        return {"format": "MetaImage", "checked": []}
    if data_file.upper() != "LOCAL":
        path, start = path.parent / data_file, 0
        if not path.exists():
            raise CorruptFileError(f"{path} (the data file its header names) is missing; expected it beside the header")
    need = math.prod(dims) * size
    compressed = fields.get("COMPRESSEDDATA", "False").lower() == "true"
    header_size = int(fields.get("HEADERSIZE", "0") or 0)
    with open(path, "rb") as fh:
        fh.seek(start + max(header_size, 0))
        if compressed:
            have = inflate(fh, "zlib", str(path))
        else:
            have = os.fstat(fh.fileno()).st_size - fh.tell()
    if have < need:
        raise short_data_error(path, f"its header ({'x'.join(map(str, dims))} voxels of {fields['ELEMENTTYPE']})",
                     need, have, compressed)
    return {"format": "MetaImage", "checked": (["zlib checksum"] if compressed else []) + ["data length"],
            "data_bytes": need}

