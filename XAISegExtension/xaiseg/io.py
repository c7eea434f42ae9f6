"""Reading and writing images with SimpleITK, keeping spacing, origin and direction.

Arrays are in SimpleITK/numpy order ``(k, j, i)`` (slice, row, column).  Physical coordinates in
SimpleITK are LPS; the CLI and Slicer speak RAS, so :class:`Volume` converts both ways.
Writers never leave a half-written file: they write to a temporary name beside the target and
rename it into place.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from .errors import (DimensionError, EmptyImageError, FileFormatError, GeometryError, InputError,
                     NonFiniteImageError)

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


def _dicom_series(folder: Path, series_uid: Optional[str]) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    uids = reader.GetGDCMSeriesIDs(str(folder))
    if not uids:
        raise FileFormatError(f"{folder} is a folder without a DICOM series; expected a folder of "
                              "DICOM files or an image file (.nii, .nii.gz, .nrrd, .mha)")
    if series_uid is None:
        if len(uids) > 1:
            raise FileFormatError(f"{folder} holds {len(uids)} DICOM series ({', '.join(uids)}); "
                                  "choose one with --series UID")
        series_uid = uids[0]
    elif series_uid not in uids:
        raise FileFormatError(f"DICOM series {series_uid} is not in {folder}; it holds {', '.join(uids)}")
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), series_uid))
    return reader.Execute()


def read_image(path: PathLike, series_uid: Optional[str] = None) -> sitk.Image:
    """Read a NIfTI, NRRD, MHA/MHD, single DICOM file or DICOM series folder."""
    p = Path(path)
    if not p.exists():
        raise FileFormatError(f"{p} does not exist; expected an image file or a DICOM folder")
    if p.is_dir():
        return _dicom_series(p, series_uid)
    try:
        return sitk.ReadImage(str(p))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unknown error"
        raise FileFormatError(f"{p} could not be read as an image ({first}); expected NIfTI, NRRD, "
                              "MHA or DICOM") from exc


def check_intensities(array: np.ndarray, name: str = "image") -> None:
    """Raise if the image is empty, constant, or holds NaN/inf."""
    if array.size == 0:
        raise EmptyImageError(f"{name} has no voxels (shape {array.shape})")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise FileFormatError(f"{name} has voxel type {array.dtype}; a real-valued scalar image is expected")
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(array.size - finite.sum())
        raise NonFiniteImageError(f"{name} contains {bad} NaN or infinite voxel(s) of {array.size}; "
                                  "expected finite intensities")
    lo, hi = array.min(), array.max()
    if lo == hi:
        raise EmptyImageError(f"{name} is constant (every voxel is {lo}); expected an image with contrast")


def read_volume(path: PathLike, series_uid: Optional[str] = None) -> Volume:
    """Read a 3D scalar volume and check it is usable (not empty, constant or non-finite)."""
    image = read_image(path, series_uid)
    vol = Volume.from_sitk(image, str(path))
    check_intensities(vol.array, str(path))
    return vol


def read_labelmap(path: PathLike, reference: Optional[Volume] = None) -> Volume:
    """Read a label map; if ``reference`` is given and the grids differ, resample it (nearest neighbour)."""
    image = read_image(path)
    if image.GetDimension() != 3:
        raise DimensionError(f"label map {path} has {image.GetDimension()} dimensions; expected 3")
    if reference is not None and not Geometry.of(image).same_grid(reference.geometry):
        ref = reference.to_sitk()
        image = sitk.Resample(image, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, image.GetPixelID())
    return Volume(sitk.GetArrayFromImage(image), Geometry.of(image), str(path))


def output_suffix(path: PathLike) -> str:
    name = str(path).lower()
    for suffix in WRITE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise FileFormatError(f"cannot write {path}: the name must end in one of {', '.join(WRITE_SUFFIXES)}")


def write_image(image: sitk.Image, path: PathLike, compress: bool = True) -> Path:
    """Write ``image`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    suffix = output_suffix(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{suffix}", dir=str(path.parent))
    os.close(fd)
    try:
        sitk.WriteImage(image, tmp, compress)
        _publish(tmp, path)
    except BaseException:
        for leftover in (tmp, tmp[: -len(suffix)] + ".raw"):
            if os.path.exists(leftover):
                os.unlink(leftover)
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


INPUT_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")


def file_stem(path: PathLike) -> str:
    """An input's name without its image suffix (``t1.nii.gz`` -> ``t1``; a DICOM folder keeps its name)."""
    name = Path(str(path).rstrip("/\\")).name
    for suffix in INPUT_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


@contextmanager
def staged(outdir: PathLike) -> Iterator[Path]:
    """A hidden folder inside ``outdir`` (created if needed) to write a set of files into; it is
    removed on the way out, with whatever :func:`move_into` did not take (and ``outdir`` too when
    this call created it and nothing was moved in)."""
    outdir = Path(outdir)
    created = not outdir.exists()
    outdir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".xaiseg-", dir=outdir))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if created:
            try:
                outdir.rmdir()  # only succeeds when nothing was moved in (a failed or cancelled run)
            except OSError:
                pass


def move_into(files: Dict[str, PathLike], outdir: PathLike) -> Dict[str, Path]:
    """Move finished files (a staged set) into ``outdir``; their new paths, by the same keys."""
    final = {}
    for key, path in files.items():
        final[key] = Path(path).replace(Path(outdir) / Path(path).name)
    return final


def write_volume(volume: Volume, array: np.ndarray, path: PathLike) -> Path:
    """Write ``array`` with ``volume``'s geometry."""
    return write_image(volume.to_sitk(array), path)


def write_text_atomic(path: PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        _publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
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
