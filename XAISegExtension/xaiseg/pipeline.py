"""The one place that composes the stages: volume -> preprocessing -> segmenter (cached
embeddings) -> masks -> explanations -> files -> report.

:class:`Session` holds one preprocessed volume and a segmenter; :func:`run` carries out a
:class:`~xaiseg.request.RunRequest` for the command line, the worker and the Slicer logic alike.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from .io import Volume, check_intensities, move_into, staged, volume_suffix, write_text_atomic, write_volume
from .models.base import PromptableSegmenter
from .preprocess import Preprocessing, normalise
from .progress import Progress, ensure
from .record import dumps, run_record
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
        suffix = volume_suffix(fmt)
        outdir = Path(outdir)
        mask_path = write_volume(self.volume, self.mask.astype(np.uint8), outdir / f"{self.name}_mask{suffix}")
        rec = dict(self.record, outputs={"mask": mask_path.name})
        rec_path = write_text_atomic(outdir / f"{self.name}_run.json", dumps(rec))
        return {"mask": mask_path, "record": rec_path}


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
        self.volume_segmenter = VolumeSegmenter(segmenter, self.image01, self.axis, self.config.cache_mb << 20)

    def preprocessing_record(self) -> dict:
        rec = self.config.preprocessing.record()
        rec["intensity_bounds"] = [float(b) for b in self.bounds]
        return rec

    def segment(self, prompt: VolumePrompt, name: str = "segment",
                progress: Optional[Progress] = None) -> SegmentResult:
        enc0, dec0 = self.volume_segmenter.encoder_passes, self.volume_segmenter.decoder_passes
        t0 = time.perf_counter()
        mask, runs = self.volume_segmenter.run(prompt, self.config.margin, progress, stage=f"segment {name}")
        seconds = time.perf_counter() - t0
        record = run_record(
            model=self.segmenter.describe(), preprocessing=self.preprocessing_record(),
            prompt=prompt.record(), settings=dict(self.config.record(), slicing_axis_index=self.axis),
            seconds=seconds, source=self.volume.source,
            evaluations={"encoder_passes": self.volume_segmenter.encoder_passes - enc0,
                         "decoder_passes": self.volume_segmenter.decoder_passes - dec0},
        )
        record["slices"] = [asdict(r) for r in runs]
        return SegmentResult(name, mask, self.volume, runs, record)

    def explain(self, segmentation: SegmentResult, explainers: Sequence, roi=None,
                slices: Optional[Sequence[int]] = None, target: Optional[np.ndarray] = None,
                progress: Optional[Progress] = None, roi_mask: Optional[np.ndarray] = None):
        """Explain ``segmentation`` with each explainer on each slice that has a mask (or ``slices``).

        roi: a :class:`~xaiseg.roi.RoiConfig` (default: the embedding ROI); target: a ground-truth
        3D mask for the localisation metrics; roi_mask: a 3D mask for ``RoiConfig("mask")``.
        Nothing is written; call :meth:`~xaiseg.explain_volume.ExplainRun.write`.
        """
        from .explain_volume import explain_volume

        return explain_volume(self, segmentation, explainers, roi, slices, target, progress, roi_mask)


# ----------------------------------------------------------------------------------------- run

@dataclass
class RunOutcome:
    """What :func:`run` produced: the segmentation, the explanation (if asked for) and the files
    written (key -> path, inside the request's output folder)."""

    segmentation: SegmentResult
    explanation: Any
    files: Dict[str, Any]
    session: Session


def run(request, progress: Optional[Progress] = None, log: Optional[Callable[[str], None]] = None) -> RunOutcome:
    """Carry out ``request`` (a :class:`~xaiseg.request.RunRequest`): read, segment, explain and
    report, and write every file into ``request.output_dir`` only when all of them exist.

    Everything that can be checked without the model is checked before it loads: the volume, the
    prompt, the ground truth and ROI mask files, the methods and their settings.
    """
    from .io import read_labelmap, read_volume

    progress = ensure(progress)
    log = log or (lambda text: None)
    if request.threads:
        import torch

        torch.set_num_threads(int(request.threads))
    volume = read_volume(request.input, request.series)
    log(f"read {Path(request.input).name}: {volume.shape[::-1]} voxels (i, j, k), spacing "
        f"{tuple(round(s, 3) for s in volume.geometry.spacing)} mm")
    axis = slicing_axis(volume.geometry, request.axis)
    prompt = request.prompt.resolve(volume, axis, request.slice_range)
    spec = request.explain
    explainers = spec.explainers() if spec else []
    target = roi_mask = None
    if spec and spec.target:
        labels = read_labelmap(spec.target, reference=volume).array
        target = labels == spec.target_label if spec.target_label is not None else labels > 0
    if spec and spec.roi_mask:
        roi_mask = read_labelmap(spec.roi_mask, reference=volume).array > 0
    segmenter = request.segmenter.load(progress)
    log(f"segmenter: {segmenter.describe().get('name', request.segmenter.kind)}")
    session = Session(volume, segmenter, SegmentConfig(axis=request.axis, preprocessing=request.preprocessing,
                                                       margin=request.margin))
    seg = session.segment(prompt, name=request.name, progress=progress)
    if not seg.mask.any():
        log("the segmentation is empty: the model found nothing inside the prompt")
    explained = None
    with staged(request.output_dir) as stage:
        if spec is None:
            files = seg.write(stage, request.format)
        else:
            explained = session.explain(seg, explainers, roi=spec.roi, slices=spec.slices, target=target,
                                        progress=progress, roi_mask=roi_mask)
            files = dict(explained.write(stage, request.format, pngs=spec.pngs))
            if spec.report is not None:
                files.update(write_report(stage, request.name, spec.report, log))
        progress.check()
        files = _move_all(files, request.output_dir)
    return RunOutcome(seg, explained, files, session)


def write_report(stage: Path, name: str, options: Dict[str, Any], log: Callable[[str], None]) -> Dict[str, Any]:
    """Findings, narrative and report of the run; a failing narrator is logged, not fatal, so the
    explanation the user waited for is kept."""
    from .errors import XAISegError
    from .narrate import ReportOptions, build_report

    try:
        paths = build_report(stage, ReportOptions(name=name, **options))
    except XAISegError as exc:
        log(f"the narrative could not be written: {exc}")
        return {}
    return {k if k.startswith("report") else f"report_{k}": v for k, v in paths.items()}


def _move_all(files: Dict[str, Any], outdir) -> Dict[str, Any]:
    """Move every staged file (values may be paths or lists of paths) into ``outdir``."""
    flat = {}
    for key, value in files.items():
        for i, path in enumerate(value if isinstance(value, (list, tuple)) else [value]):
            flat[(key, i)] = path
    moved = move_into({f"{k}#{i}": p for (k, i), p in flat.items()}, outdir)
    out: Dict[str, Any] = {}
    for key, value in files.items():
        if isinstance(value, (list, tuple)):
            out[key] = [moved[f"{key}#{i}"] for i in range(len(value))]
        else:
            out[key] = moved[f"{key}#0"]
    return out


