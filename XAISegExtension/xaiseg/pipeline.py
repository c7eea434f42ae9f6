"""The one place that composes the stages: volume -> preprocessing -> segmenter (cached
embeddings) -> masks -> files.  Explainers and narrators plug in here as they land."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np

from .errors import InputError
from .io import Volume, check_intensities, write_text_atomic, write_volume
from .models.base import PromptableSegmenter
from .preprocess import Preprocessing, normalise
from .progress import Progress
from .record import run_record
from .volume import SliceRun, VolumePrompt, VolumeSegmenter, slicing_axis


@dataclass(frozen=True)
class SegmentConfig:
    """Settings of a segmentation run (data go to :meth:`Session.segment`).

    axis: ``axial`` (default), ``coronal``, ``sagittal`` or an array axis 0/1/2.
    margin: pixels added around each propagated box.
    cache_mb: memory for cached slice embeddings.
    """

    axis: Union[str, int] = "axial"
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    margin: int = 0
    cache_mb: int = 1024

    def record(self) -> dict:
        return {"axis": self.axis, "margin": self.margin, "cache_mb": self.cache_mb}


@dataclass
class SegmentResult:
    """A 3D mask (uint8, the volume's grid) and how it was made."""

    name: str
    mask: np.ndarray
    volume: Volume
    slices: List[SliceRun]
    record: Dict

    @property
    def voxel_count(self) -> int:
        return int(self.mask.sum())

    def write(self, outdir, fmt: str = "nrrd") -> Dict[str, Path]:
        """Write ``<name>_mask.<fmt>`` and ``<name>_run.json`` into ``outdir`` (atomically)."""
        suffix = {"nrrd": ".nrrd", "nifti": ".nii.gz", "nii": ".nii.gz", "mha": ".mha"}.get(fmt)
        if suffix is None:
            raise InputError(f"output format {fmt!r} is unknown; expected nrrd, nifti or mha")
        outdir = Path(outdir)
        mask_path = write_volume(self.volume, self.mask.astype(np.uint8), outdir / f"{self.name}_mask{suffix}")
        rec = dict(self.record, outputs={"mask": mask_path.name})
        rec_path = write_text_atomic(outdir / f"{self.name}_run.json", json.dumps(rec, indent=2, default=_json))
        return {"mask": mask_path, "record": rec_path}


def _json(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")


class Session:
    """One volume, preprocessed once, with one segmenter and an embedding cache shared by prompts."""

    def __init__(self, volume: Volume, segmenter: PromptableSegmenter, config: Optional[SegmentConfig] = None):
        self.config = config or SegmentConfig()
        check_intensities(volume.array, volume.source or "volume")
        self.volume = volume
        self.segmenter = segmenter
        t0 = time.perf_counter()
        self.image01, self.bounds = normalise(volume.array, self.config.preprocessing)
        self.preprocess_seconds = time.perf_counter() - t0
        self.axis = slicing_axis(volume.geometry, self.config.axis)
        self.slicer = VolumeSegmenter(segmenter, self.image01, self.axis, self.config.cache_mb << 20)

    def preprocessing_record(self) -> dict:
        rec = self.config.preprocessing.record()
        rec["intensity_bounds"] = [float(b) for b in self.bounds]
        return rec

    def segment(self, prompt: VolumePrompt, name: str = "segment",
                progress: Optional[Progress] = None) -> SegmentResult:
        enc0, dec0 = self.slicer.encoder_passes, self.slicer.decoder_passes
        t0 = time.perf_counter()
        mask, runs = self.slicer.run(prompt, self.config.margin, progress, stage=f"segment {name}")
        seconds = time.perf_counter() - t0
        record = run_record(
            model=self.segmenter.describe(), preprocessing=self.preprocessing_record(),
            prompt=prompt.record(), settings=dict(self.config.record(), slicing_axis_index=self.axis),
            seconds=seconds, source=self.volume.source,
            evaluations={"encoder_passes": self.slicer.encoder_passes - enc0,
                         "decoder_passes": self.slicer.decoder_passes - dec0},
        )
        record["slices"] = [asdict(r) for r in runs]
        return SegmentResult(name, mask, self.volume, runs, record)
