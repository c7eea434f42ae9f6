"""Reading a DICOM series folder, refusing series that SimpleITK would stack into a wrong volume.

SimpleITK (GDCM) sorts the files along the slice normal and stacks them; a missing slice only
changes the spacing it reports (the average), and slices with another orientation or pixel spacing
are stacked as if they matched.  Here the tags of every slice, which the series reader reads
anyway, are checked: one orientation, one pixel spacing, one size, and evenly spaced positions.
With ``allow_gaps`` a missing slice is filled (with the series' minimum) so that every real slice
keeps its true position, and the gap is described for the run record.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from .errors import FileFormatError, SeriesError, SliceGapError

TAGS = {"position": "0020|0032", "orientation": "0020|0037", "spacing": "0028|0030",
        "instance": "0020|0013", "rows": "0028|0010", "columns": "0028|0011"}
MAX_LISTED = 3  # gaps named in an error message


@dataclass(frozen=True)
class SliceInfo:
    """The tags of one file of a series that decide where its slice goes."""

    file: str
    instance: Optional[int]
    position: Optional[Tuple[float, ...]]
    orientation: Optional[Tuple[float, ...]]
    spacing: Optional[Tuple[float, ...]]
    rows: Optional[int]
    columns: Optional[int]

    @property
    def label(self) -> str:
        name = os.path.basename(self.file)
        return f"instance {self.instance} ({name})" if self.instance is not None else name


def _numbers(text: Optional[str]) -> Optional[Tuple[float, ...]]:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.strip().split("\\") if v.strip())
    except ValueError:
        return None


def slice_info(file: str, tag: Callable[[str], Optional[str]]) -> SliceInfo:
    """A :class:`SliceInfo` from a tag getter (``tag("0020|0032")`` -> text or None)."""
    def integer(key: str) -> Optional[int]:
        vals = _numbers(tag(TAGS[key]))
        return int(vals[0]) if vals else None

    return SliceInfo(file, integer("instance"), _numbers(tag(TAGS["position"])),
                     _numbers(tag(TAGS["orientation"])), _numbers(tag(TAGS["spacing"])),
                     integer("rows"), integer("columns"))


def header_info(file: str) -> SliceInfo:
    """Read one file's tags without its pixels."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(file)
    reader.LoadPrivateTagsOff()
    reader.ReadImageInformation()
    return slice_info(file, lambda k: reader.GetMetaData(k) if reader.HasMetaDataKey(k) else None)


def _fmt(values: Optional[Sequence[float]]) -> str:
    return "missing" if values is None else "(" + ", ".join(f"{v:g}" for v in values) + ")"


def check_consistent(slices: Sequence[SliceInfo], folder: Path) -> None:
    """Raise :class:`SeriesError` if the slices differ in orientation, pixel spacing or size."""
    ref = slices[0]
    for s in slices[1:]:
        for what, key, tag in (("orientations", "orientation", "ImageOrientationPatient"),
                               ("pixel spacings", "spacing", "PixelSpacing")):
            a, b = getattr(ref, key), getattr(s, key)
            if a is None and b is None:
                continue
            if a is None or b is None or len(a) != len(b) or not np.allclose(a, b, rtol=1e-4, atol=1e-4):
                raise SeriesError(f"DICOM series in {folder} mixes {what}: {s.label} has {tag} {_fmt(b)} where "
                                  f"{ref.label} has {_fmt(a)}; expected one {tag} for the whole series")
        if (s.rows, s.columns) != (ref.rows, ref.columns):
            raise SeriesError(f"DICOM series in {folder} mixes slice sizes: {s.label} is {s.rows}x{s.columns} "
                              f"where {ref.label} is {ref.rows}x{ref.columns} (rows x columns); expected one size")


def _common_step(steps: np.ndarray) -> float:
    """The step most slices share (ties: the smallest); a gap is a whole multiple of it."""
    tol = np.maximum(0.05 * steps, 0.01)
    support = (np.abs(steps[None, :] - steps[:, None]) <= tol[:, None]).sum(axis=1)
    best = steps[support == support.max()].min()
    return float(np.median(steps[np.abs(steps - best) <= max(0.05 * best, 0.01)]))


def check_positions(slices: Sequence[SliceInfo], normal: Sequence[float], folder: Path,
                    allow_gaps: bool = False) -> dict:
    """Check that the slices (in stacking order) are evenly spaced along ``normal``.

    Returns a record: slice count, spacing and any gaps (raises :class:`SliceGapError` for a gap
    unless ``allow_gaps``; :class:`SeriesError` for duplicate or unevenly spaced slices)."""
    record: Dict[str, object] = {"format": "DICOM series", "slices": len(slices)}
    if len(slices) < 2 or any(s.position is None or len(s.position) != 3 for s in slices):
        record["checked"] = []
        return record
    n = np.asarray(normal, float) / np.linalg.norm(normal)
    pos = np.array([s.position for s in slices], float)
    along = (pos - pos[0]) @ n
    steps = np.diff(along)
    for i, step in enumerate(steps):
        if step <= 1e-3:
            a, b = slices[i], slices[i + 1]
            where = (f"at the same position {_fmt(a.position)}" if step > -1e-3 else
                     f"out of order ({a.label} is {-step:.3f} mm past {b.label} along the slice normal)")
            raise SeriesError(f"DICOM series in {folder} has {a.label} and {b.label} {where}; expected one "
                              "slice per position")
    spacing = _common_step(steps)
    tol = max(0.05 * spacing, 0.01)
    gaps = []
    for i, step in enumerate(steps):
        whole = int(round(step / spacing))
        if abs(step - spacing) <= tol:
            continue
        a, b = slices[i], slices[i + 1]
        if whole >= 2 and abs(step - whole * spacing) <= tol * whole:
            gaps.append({"after": a.label, "before": b.label, "after_instance": a.instance,
                         "before_instance": b.instance, "after_mm": round(float(along[i]), 4),
                         "before_mm": round(float(along[i + 1]), 4), "after_position_lps": list(a.position),
                         "before_position_lps": list(b.position), "distance_mm": round(float(step), 4),
                         "missing_slices": whole - 1})
            continue
        raise SeriesError(f"DICOM series in {folder} is unevenly spaced: {a.label} and {b.label} are "
                          f"{step:.3f} mm apart along the slice normal where the other slices are "
                          f"{spacing:.3f} mm apart; expected evenly spaced slices")
    record.update(checked=["orientation", "pixel spacing", "size", "slice positions"],
                  slice_spacing_mm=round(spacing, 6), gaps=gaps)
    if gaps and not allow_gaps:
        missing = sum(g["missing_slices"] for g in gaps)
        named = "; ".join(f"no slice between {g['after']} at {g['after_mm']:g} mm and {g['before']} at "
                          f"{g['before_mm']:g} mm ({g['distance_mm']:g} mm apart)" for g in gaps[:MAX_LISTED])
        more = f"; and {len(gaps) - MAX_LISTED} more" if len(gaps) > MAX_LISTED else ""
        raise SliceGapError(
            f"DICOM series in {folder} has {len(gaps)} gap(s), {missing} missing slice(s): {named}{more} "
            f"(positions along the slice normal from the first slice; the other slices are {spacing:g} mm "
            "apart); expected a complete series, or allow gaps (--allow-gaps) to go on with the missing "
            "slices filled and stated in the run record")
    return record


def fill_gaps(image: sitk.Image, slices: Sequence[SliceInfo], normal: Sequence[float], record: dict) -> sitk.Image:
    """Put each slice of ``image`` at its true position on an even grid; missing slices get the minimum."""
    n = np.asarray(normal, float) / np.linalg.norm(normal)
    pos = np.array([s.position for s in slices], float)
    spacing = float(record["slice_spacing_mm"])
    index = np.rint(((pos - pos[0]) @ n) / spacing).astype(int)
    arr = sitk.GetArrayFromImage(image)
    fill = arr.min()
    out = np.full((int(index[-1]) + 1,) + arr.shape[1:], fill, arr.dtype)
    out[index] = arr
    del arr
    filled = sorted(set(range(out.shape[0])) - set(index.tolist()))
    result = sitk.GetImageFromArray(out)
    result.SetOrigin(image.GetOrigin())
    result.SetDirection(image.GetDirection())
    result.SetSpacing(tuple(image.GetSpacing()[:2]) + (spacing,))
    record.update(filled_slices=filled, fill_value=float(fill), volume_slices=int(out.shape[0]))
    return result


@contextmanager
def _itk_quiet() -> Iterator[None]:
    """ITK's own warnings off (they print to stderr; what they say is checked and said here)."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _series_files(folder: Path, series_uid: Optional[str]) -> List[str]:
    reader = sitk.ImageSeriesReader()
    with _itk_quiet():  # e.g. "no DICOM files" for a folder without any: said below
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
    with _itk_quiet():
        return list(reader.GetGDCMSeriesFileNames(str(folder), series_uid))


def read_series(folder: Path, series_uid: Optional[str] = None, allow_gaps: bool = False) -> Tuple[sitk.Image, dict]:
    """Read one DICOM series from ``folder`` after checking its slices; the image and a check record."""
    files = _series_files(folder, series_uid)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        with _itk_quiet():  # ITK's "non uniform sampling": checked below
            image = reader.Execute()
    except RuntimeError as exc:
        check_consistent([header_info(f) for f in files], folder)
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
        raise FileFormatError(f"DICOM series in {folder} could not be read ({first}); expected readable "
                              "DICOM image files") from exc

    def tag_of(i: int) -> Callable[[str], Optional[str]]:
        return lambda k: reader.GetMetaData(i, k) if reader.HasMetaDataKey(i, k) else None

    slices = [slice_info(f, tag_of(i)) for i, f in enumerate(files)]
    check_consistent(slices, folder)
    normal = np.asarray(image.GetDirection(), float).reshape(3, 3)[:, 2]
    record = check_positions(slices, normal, folder, allow_gaps)
    if record.get("gaps"):
        image = fill_gaps(image, slices, normal, record)
    return image, record
