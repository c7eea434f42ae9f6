"""Reading and writing images with SimpleITK, keeping spacing, origin and direction.

Arrays are in SimpleITK/numpy order ``(k, j, i)`` (slice, row, column).  Physical coordinates in
SimpleITK are LPS; the CLI and Slicer speak RAS, so :class:`Volume` converts both ways.
Readers check first that a file is whole (:mod:`xaiseg.integrity`; DICOM series in
:mod:`xaiseg.dicom_series`) and say what they checked in ``volume.integrity``.  Writers never leave
a half-written file: they write to a temporary name beside the target, check it, and rename it
into place; a full disk is one :class:`~xaiseg.errors.DiskFullError`.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from .dicom_series import read_series
from .diskspace import HEADER_BYTES, disk_full_error, free_bytes, is_disk_full, missing_folders, remove_empty
from .errors import (CorruptFileError, DimensionError, EmptyImageError, FileFormatError, GeometryError, InputError,
                     NonFiniteImageError, OutputError)
from .integrity import check_file, restore_nonfinite
from .signals import deferred_signals

PathLike = Union[str, "os.PathLike[str]"]
_LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])
WRITE_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")


@dataclass(frozen=True)
class Geometry:
    """Voxel grid of an image: spacing (i, j, k), origin (LPS mm) and 3x3 direction (columns = axes)."""

    spacing: Tuple[float, float, float]
    origin: Tuple[float, float, float]
    direction: Tuple[float, ...]  # row-major 3x3, SimpleITK convention
    size: Tuple[int, int, int]  # (i, j, k)

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    @property
    def ijk_to_lps(self) -> np.ndarray:
        """4x4 matrix mapping (i, j, k, 1) to LPS millimetres."""
        m = np.eye(4)
        m[:3, :3] = self.direction_matrix * np.asarray(self.spacing)[None, :]
        m[:3, 3] = self.origin
        return m

    @property
    def ijk_to_ras(self) -> np.ndarray:
        """4x4 matrix mapping (i, j, k, 1) to RAS millimetres (Slicer's IJKToRAS)."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.ijk_to_lps

    def ras_to_ijk(self, ras: np.ndarray) -> np.ndarray:
        """Continuous (i, j, k) index of RAS points, shape (N, 3)."""
        ras = np.atleast_2d(np.asarray(ras, dtype=float))
        hom = np.c_[ras, np.ones(len(ras))]
        return (np.linalg.inv(self.ijk_to_ras) @ hom.T).T[:, :3]

    def ijk_to_ras_points(self, ijk: np.ndarray) -> np.ndarray:
        ijk = np.atleast_2d(np.asarray(ijk, dtype=float))
        hom = np.c_[ijk, np.ones(len(ijk))]
        return (self.ijk_to_ras @ hom.T).T[:, :3]

    def same_grid(self, other: "Geometry", tol: float = 1e-4) -> bool:
        return (self.size == other.size
                and np.allclose(self.spacing, other.spacing, atol=tol)
                and np.allclose(self.origin, other.origin, atol=tol * 10)
                and np.allclose(self.direction, other.direction, atol=tol))

    @classmethod
    def of(cls, image: sitk.Image) -> "Geometry":
        return cls(tuple(image.GetSpacing()), tuple(image.GetOrigin()), tuple(image.GetDirection()),
                   tuple(int(s) for s in image.GetSize()))

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


@dataclass
class Volume:
    """A 3D image as a numpy array ``(k, j, i)`` plus its geometry and where it came from."""

    array: np.ndarray
    geometry: Geometry
    source: Optional[str] = None
    meta: dict = field(default_factory=dict)

    @property
    def integrity(self) -> dict:
        """What was checked when the file was read (format, checks, DICOM gaps), for the run record."""
        return self.meta.get("integrity", {})

    @property
    def shape(self) -> Tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    def to_sitk(self, array: Optional[np.ndarray] = None) -> sitk.Image:
        arr = self.array if array is None else array
        if arr.shape != self.array.shape:
            raise GeometryError(f"array of shape {arr.shape} cannot take the geometry of a volume of "
                                f"shape {self.array.shape}")
        return self.geometry.apply_to(sitk.GetImageFromArray(arr))

    @classmethod
    def from_sitk(cls, image: sitk.Image, source: Optional[str] = None) -> "Volume":
        if image.GetDimension() != 3:
            raise DimensionError(f"{source or 'image'} has {image.GetDimension()} dimensions "
                                 f"(size {image.GetSize()}); a 3D volume is needed")
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise DimensionError(f"{source or 'image'} has {image.GetNumberOfComponentsPerPixel()} "
                                 "components per voxel; a scalar volume is needed")
        return cls(sitk.GetArrayFromImage(image), Geometry.of(image), source)


def read_image_checked(path: PathLike, series_uid: Optional[str] = None,
                       allow_gaps: bool = False) -> Tuple[sitk.Image, dict]:
    """Read a NIfTI, NRRD, MHA/MHD, single DICOM file or DICOM series folder after checking that
    it is whole (:mod:`xaiseg.integrity`, :mod:`xaiseg.dicom_series`); the image and what was checked."""
    p = Path(path)
    if not p.exists():
        raise FileFormatError(f"{p} does not exist; expected an image file or a DICOM folder")
    if p.is_dir():
        return read_series(p, series_uid, allow_gaps)
    record = check_file(p)
    try:
        return sitk.ReadImage(str(p)), record
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unknown error"
        raise FileFormatError(f"{p} could not be read as an image ({first}); expected NIfTI, NRRD, "
                              "MHA or DICOM") from exc


def read_image(path: PathLike, series_uid: Optional[str] = None, allow_gaps: bool = False) -> sitk.Image:
    """Read a NIfTI, NRRD, MHA/MHD, single DICOM file or DICOM series folder (checked first)."""
    return read_image_checked(path, series_uid, allow_gaps)[0]


def _voxels(flat_indices: np.ndarray, shape: Tuple[int, ...]) -> str:
    """Array positions as voxel indices: (i, j, k) for a (k, j, i) volume."""
    rows = np.stack(np.unravel_index(flat_indices, shape), axis=1)[:, ::-1]
    return ", ".join("(" + ", ".join(str(int(v)) for v in r) + ")" for r in rows)


def _first_nonfinite(finite: np.ndarray, count: int = 5) -> np.ndarray:
    flat, found, step = finite.reshape(-1), [], 1 << 20
    for start in range(0, flat.size, step):
        hits = np.flatnonzero(~flat[start:start + step])[: count - len(found)]
        found.extend(int(h) + start for h in hits)
        if len(found) >= count:
            break
    return np.asarray(found, dtype=np.int64)


def nonfinite_counts(array: np.ndarray) -> Dict[str, int]:
    """How many voxels are NaN, +inf and -inf (all 0 for integer arrays)."""
    if array.dtype.kind not in "fc":
        return {"nan": 0, "posinf": 0, "neginf": 0}
    return {"nan": int(np.count_nonzero(np.isnan(array))), "posinf": int(np.count_nonzero(array == np.inf)),
            "neginf": int(np.count_nonzero(array == -np.inf))}


def check_intensities(array: np.ndarray, name: str = "image") -> None:
    """Raise if the image is empty, all or partly NaN/inf, or constant."""
    if array.size == 0:
        raise EmptyImageError(f"{name} has no voxels (shape {array.shape})")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise FileFormatError(f"{name} has voxel type {array.dtype}; a real-valued scalar image is expected")
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        n_finite = int(np.count_nonzero(finite))
        if n_finite < array.size:
            c = nonfinite_counts(array)
            kinds = f"{c['nan']} NaN, {c['posinf']} +inf, {c['neginf']} -inf"
            if c["nan"] == array.size:
                raise NonFiniteImageError(f"{name}: every voxel is NaN ({array.size} voxels); expected an image "
                                          "with finite intensities")
            if n_finite == 0:
                raise NonFiniteImageError(f"{name}: every voxel is NaN or infinite ({kinds}); expected an "
                                          "image with finite intensities")
            where = _voxels(_first_nonfinite(finite), array.shape)
            label = "voxel (i, j, k)" if array.ndim == 3 else "index"
            raise NonFiniteImageError(
                f"{name} contains {array.size - n_finite} NaN or infinite voxel(s) of {array.size} ({kinds}), "
                f"first at {label} {where}; expected finite intensities, or replace them with a value "
                "(--replace-nonfinite VALUE)")
        del finite
    lo, hi = array.min(), array.max()
    if lo == hi:
        raise EmptyImageError(f"{name} is constant (every voxel is {lo}); expected an image with contrast")


def replace_nonfinite(volume_or_array: Union["Volume", np.ndarray], value: float,
                      inplace: bool = False) -> Tuple[np.ndarray, dict]:
    """The array with every NaN/inf voxel set to ``value``, and a record for the run record
    ``{"replaced": n, "value": v, "nan": .., "posinf": .., "neginf": ..}``.  Integer arrays come back as they are."""
    array = volume_or_array.array if isinstance(volume_or_array, Volume) else np.asarray(volume_or_array)
    try:
        fill = float(value)
    except (TypeError, ValueError):
        raise InputError(f"replacement value {value!r} is not a number; expected a finite number") from None
    if not np.isfinite(fill):
        raise InputError(f"replacement value {value!r} is not finite; expected a finite number")
    counts = nonfinite_counts(array)
    record = {"replaced": sum(counts.values()), "value": fill, **counts}
    if record["replaced"] == 0:
        return array, record
    if not np.isfinite(np.asarray(fill, dtype=array.dtype)):
        raise InputError(f"replacement value {value!r} does not fit voxel type {array.dtype}")
    out = array if inplace else array.copy()
    out[~np.isfinite(out)] = fill
    return out, record


def read_volume(path: PathLike, series_uid: Optional[str] = None, allow_gaps: bool = False,
                check: bool = True) -> Volume:
    """Read a 3D scalar volume after checking the file is whole; then check it is usable (not empty,
    constant or non-finite) unless ``check`` is False.  What was checked is in ``volume.integrity``;
    with ``allow_gaps`` a DICOM series with missing slices is read with the gaps filled and listed there."""
    image, record = read_image_checked(path, series_uid, allow_gaps)
    masks = record.pop("_nonfinite_masks", None)
    vol = Volume.from_sitk(image, str(path))
    del image
    if masks:
        if vol.array.dtype.kind != "f":
            vol.array = vol.array.astype(np.float32)
        restore_nonfinite(vol.array, masks)
    vol.meta["integrity"] = record
    if check:
        check_intensities(vol.array, str(path))
    return vol


def read_labelmap(path: PathLike, reference: Optional[Volume] = None) -> Volume:
    """Read a label map; if ``reference`` is given and the grids differ, resample it (nearest neighbour)."""
    image, record = read_image_checked(path)
    record.pop("_nonfinite_masks", None)
    if image.GetDimension() != 3:
        raise DimensionError(f"label map {path} has {image.GetDimension()} dimensions; expected 3")
    if reference is not None and not Geometry.of(image).same_grid(reference.geometry):
        ref = reference.to_sitk()
        image = sitk.Resample(image, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, image.GetPixelID())
    return Volume(sitk.GetArrayFromImage(image), Geometry.of(image), str(path), {"integrity": record})


def output_suffix(path: PathLike) -> str:
    name = str(path).lower()
    for suffix in WRITE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise FileFormatError(f"cannot write {path}: the name must end in one of {', '.join(WRITE_SUFFIXES)}")


def _remove_written(tmp: str, suffix: str) -> None:
    """Remove a temporary image and any data file its writer put beside it (.raw, .raw.gz, .zraw)."""
    folder, stem = os.path.split(tmp[: -len(suffix)])
    for name in os.listdir(folder or "."):
        if name == os.path.basename(tmp) or name.startswith(stem + "."):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass


def _write_error(exc: BaseException, path: Path, needed: int) -> OutputError:
    """One clear error for a failed write: the disk is full, or why else it failed."""
    if is_disk_full(exc) or (needed and free_bytes(path.parent) < needed):
        return disk_full_error(path.parent, path.name, needed)
    text = getattr(exc, "strerror", None) or str(exc).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return OutputError(f"cannot write {path}: {lines[-1] if lines else type(exc).__name__}")


def write_image(image: sitk.Image, path: PathLike, compress: bool = True) -> Path:
    """Write ``image`` to ``path`` atomically (temporary file in the same folder, checked, then
    renamed); a full disk gives :class:`DiskFullError` and leaves nothing behind."""
    path = Path(path)
    suffix = output_suffix(path)
    needed = sitk.GetArrayViewFromImage(image).nbytes + HEADER_BYTES
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{suffix}", dir=str(path.parent))
        os.close(fd)
    except OSError as exc:
        raise _write_error(exc, path, needed) from exc
    try:
        try:
            sitk.WriteImage(image, tmp, compress)
            check_file(tmp)  # ITK's NIfTI writer reports no error when the disk fills
        except (RuntimeError, OSError, CorruptFileError) as exc:
            _remove_written(tmp, suffix)
            raise _write_error(exc, path, needed) from exc
        _publish(tmp, path)
    except BaseException:
        _remove_written(tmp, suffix)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: permissions of written files: what ``open()`` would give (temporary files are created 0600)
FILE_MODE = 0o666 & ~_umask()


def _publish(tmp: str, path: Path) -> None:
    """Give a finished temporary file the usual permissions and rename it to ``path``."""
    os.chmod(tmp, FILE_MODE)
    os.replace(tmp, path)


#: volume formats of the writers: format name -> file suffix
VOLUME_SUFFIXES = {"nrrd": ".nrrd", "nifti": ".nii.gz", "nii": ".nii.gz", "mha": ".mha"}


def volume_suffix(fmt: str) -> str:
    """The file suffix of output format ``fmt``."""
    suffix = VOLUME_SUFFIXES.get(fmt)
    if suffix is None:
        raise InputError(f"output format {fmt!r} is unknown; expected nrrd, nifti or mha")
    return suffix


@contextmanager
def staged(outdir: PathLike) -> Iterator[Path]:
    """A hidden folder inside ``outdir`` (created if needed) to write a set of files into; it is
    removed on the way out, with whatever :func:`move_into` did not take.  If the block fails,
    the folders this created are removed too (when they are empty)."""
    outdir = Path(outdir)
    created = missing_folders(outdir)
    stage: Optional[Path] = None
    done = False
    try:
        with deferred_signals():  # an interrupt waits until the folder is ours to remove
            try:
                outdir.mkdir(parents=True, exist_ok=True)
                stage = Path(tempfile.mkdtemp(prefix=".xaiseg-", dir=outdir))
            except OSError as exc:
                remove_empty(created)
                raise _write_error(exc, outdir / ".xaiseg-stage", 0) from exc
        yield stage
        done = True
    finally:
        if stage is not None:
            with deferred_signals():  # and cannot cut the clean-up short
                shutil.rmtree(stage, ignore_errors=True)
                if not done:
                    remove_empty(created)


def move_into(files: Dict[str, PathLike], outdir: PathLike) -> Dict[str, Path]:
    """Move finished files (a staged set) into ``outdir``; their new paths, by the same keys.
    SIGINT/SIGTERM wait until the whole set is in place, so an interrupt never leaves half a set."""
    final = {}
    with deferred_signals():
        for key, path in files.items():
            final[key] = Path(path).replace(Path(outdir) / Path(path).name)
    return final


def write_volume(volume: Volume, array: np.ndarray, path: PathLike) -> Path:
    """Write ``array`` with ``volume``'s geometry."""
    return write_image(volume.to_sitk(array), path)


_PIXEL_TYPES = {np.dtype(np.float32): sitk.sitkFloat32, np.dtype(np.uint8): sitk.sitkUInt8}


#: planes of a volume: a mapping k -> plane, or (k, plane) pairs
PlanesLike = Union[Mapping[int, np.ndarray], Iterable[Tuple[int, np.ndarray]]]


def planes_image(volume: Volume, planes: PlanesLike, axis: int, dtype=np.float32) -> sitk.Image:
    """An image on ``volume``'s grid that holds ``planes[k]`` at index ``k`` along array ``axis`` and
    0 elsewhere, pasted into one zero image in place: a volume that is mostly empty costs one image
    of ``dtype``, not the numpy volume, its cast and SimpleITK's copy of it.  ``planes``: a mapping
    k -> plane, or ``(k, plane)`` pairs (read one at a time when they come from a generator)."""
    dtype = np.dtype(dtype)
    if dtype not in _PIXEL_TYPES:
        raise InputError(f"volumes of planes are written as float32 or uint8, not {dtype}")
    image = sitk.Image([int(n) for n in volume.shape[::-1]], _PIXEL_TYPES[dtype])
    where = 2 - int(axis)  # SimpleITK indexes (i, j, k): array axis a is index 2 - a
    for k, plane in (planes.items() if isinstance(planes, Mapping) else planes):
        index = [slice(None)] * 3
        index[where] = int(k)
        image[tuple(index)] = sitk.GetImageFromArray(np.ascontiguousarray(plane, dtype=dtype))
    return volume.geometry.apply_to(image)


def write_planes(volume: Volume, planes: PlanesLike, axis: int, path: PathLike, dtype=np.float32) -> Path:
    """Write the volume of :func:`planes_image` (atomically, like :func:`write_volume`)."""
    return write_image(planes_image(volume, planes, axis, dtype), path)


def write_text_atomic(path: PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_tables(outdir: PathLike, stem: str, markdown: str, doc, indent: int = 2) -> None:
    """A benchmark's results: ``stem.md`` (the tables) and ``stem.json`` (every figure), each atomically."""
    import json

    outdir = Path(outdir)
    write_text_atomic(outdir / f"{stem}.json", json.dumps(doc, indent=indent, default=float))
    write_text_atomic(outdir / f"{stem}.md", markdown)


def write_bytes_atomic(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place; a full disk
    gives :class:`DiskFullError` and leaves nothing behind."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=str(path.parent))
    except OSError as exc:
        raise _write_error(exc, path, len(data)) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        _publish(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _write_error(exc, path, len(data)) from exc
        raise
    return path


def axis_codes(geometry: Geometry) -> Sequence[str]:
    """Anatomical axis each array axis (k, j, i) runs along most: 'S'/'I' axial, 'A'/'P' coronal, 'L'/'R' sagittal."""
    ras_dirs = geometry.direction_matrix * _LPS_TO_RAS[:, None]  # columns: i, j, k in RAS
    names = (("R", "L"), ("A", "P"), ("S", "I"))
    codes = []
    for col in (2, 1, 0):  # array axes k, j, i
        v = ras_dirs[:, col]
        dominant = int(np.argmax(np.abs(v)))
        codes.append(names[dominant][0] if v[dominant] > 0 else names[dominant][1])
    return codes
