"""The one place that composes the stages: volume -> preprocessing -> segmenter (cached
embeddings) -> masks -> explanations -> files -> report.

:class:`Session` holds one preprocessed volume and a segmenter; :func:`run` carries out a
:class:`~xaiseg.request.RunRequest` for the command line, the worker and the Slicer logic alike.
"""
from __future__ import annotations

import time
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from .errors import InputError
from .io import Volume, check_intensities, move_into, staged, volume_suffix, write_text_atomic, write_volume
from .models.base import PromptableSegmenter
from .orientation import InPlane, TTASegmenter, resolve, tta_turns
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
    orientation: how slices are turned before the model: ``auto`` (the canonical layout of the
    slice's plane, derived from the direction matrix; :mod:`xaiseg.orientation`), ``array``
    (as the array holds them) or the name of an :class:`~xaiseg.orientation.InPlane`.
    tta: number of orientations whose logits are averaged (1: none; N costs N encoder passes
    per slice).
    """

    axis: Union[str, int] = "axial"
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    margin: int = 0
    cache_mb: int = 1024
    orientation: Union[str, InPlane] = "auto"
    tta: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.tta, bool) or not isinstance(self.tta, (int, np.integer)) or not 1 <= int(self.tta) <= 8:
            raise InputError(f"tta {self.tta!r} is invalid; expected a whole number of orientations from 1 to 8")

    def record(self) -> dict:
        return {"axis": self.axis, "margin": self.margin, "cache_mb": self.cache_mb,
                "orientation": str(self.orientation), "tta": int(self.tta)}


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
        mask_path = write_volume(self.volume, np.asarray(self.mask, np.uint8), outdir / f"{self.name}_mask{suffix}")
        rec = dict(self.record, outputs={"mask": mask_path.name})
        rec_path = write_text_atomic(outdir / f"{self.name}_run.json", dumps(rec))
        return {"mask": mask_path, "record": rec_path}


class Session:
    """One volume, preprocessed once, with one segmenter and an embedding cache shared by prompts.

    ``segmenter`` is the model as the run uses it: with ``tta`` > 1 a
    :class:`~xaiseg.orientation.TTASegmenter` around ``base_segmenter``.  ``orientation`` says how
    slices are turned before the model (``volume_segmenter`` speaks array order and turns for the model).
    """

    def __init__(self, volume: Volume, segmenter: PromptableSegmenter, config: Optional[SegmentConfig] = None):
        self.config = config or SegmentConfig()
        check_intensities(volume.array, volume.source or "volume")
        self.volume = volume
        t0 = time.perf_counter()
        self.image01, self.bounds = normalise(volume.array, self.config.preprocessing)
        self.preprocess_seconds = time.perf_counter() - t0
        self.axis = slicing_axis(volume.geometry, self.config.axis)
        requested = self.config.orientation
        if requested == "auto" and not getattr(segmenter, "uses_prompt", True):
            requested = "array"  # the canonical layouts were measured for promptable SAM models only
        self.orientation = resolve(requested, volume.geometry, self.axis)
        self.base_segmenter = segmenter
        self.tta = tta_turns(self.orientation, self.config.tta)
        self.segmenter = TTASegmenter(segmenter, self.tta) if len(self.tta) > 1 else segmenter
        self.volume_segmenter = VolumeSegmenter(self.segmenter, self.image01, self.axis, self.config.cache_mb << 20,
                                      self.orientation.turn)
        self._kept = None

    def keep_activations(self, slices: Optional[Sequence[int]] = None) -> bool:
        """Keep each slice's activation cache as segmentation encodes it (``slices`` only, None:
        every one), so that explaining the slices later needs no full encoder pass of its own: the
        segmentation's pass is that pass (:meth:`VolumeSegmenter.keep_activations`).  The caches stay
        in memory up to a bound and in xaiseg's cache folder beyond it, until the explanation takes
        them; what is left goes when the explanation ends, with :meth:`release_activations` or
        with the session.  False where the segmenter does not reuse activations."""
        from .kept_caches import KeptCaches

        if not getattr(self.segmenter, "supports_reuse", False):
            return False
        if self._kept is None:
            self._kept = KeptCaches(self.segmenter)
            weakref.finalize(self, self._kept.close)
        return self.volume_segmenter.keep_activations(self._kept, slices)

    @property
    def kept_activations(self):
        """The store of the caches :meth:`keep_activations` keeps (None when nothing is kept)."""
        return self._kept

    def release_activations(self) -> None:
        """Stop keeping activation caches and remove those kept."""
        if self._kept is not None:
            self.volume_segmenter.kept = None
            self._kept.close()
            self._kept = None

    def orientation_record(self) -> dict:
        """The orientation the model sees (turn and physical layout) and the TTA turns with their cost."""
        layout = self.orientation.layout
        tta = [{"orientation": g.name, **layout.after(g).record()} for g in self.tta]
        return dict(self.orientation.record(), tta=tta, encoder_passes_per_slice=len(self.tta))

    def _evaluations(self, slices_encoded: int, prompts_decoded: int) -> dict:
        """Model passes: each slice encoded and each prompt decoded costs one pass per TTA turn."""
        n = len(self.tta)
        out = {"encoder_passes": slices_encoded * n, "decoder_passes": prompts_decoded * n}
        if n > 1:
            out.update(slices_encoded=slices_encoded, prompts_decoded=prompts_decoded)
        return out

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
            prompt=prompt.record(), settings=dict(self.config.record(), slicing_axis_index=self.axis,
                                                  orientation=self.orientation_record()),
            seconds=seconds, source=self.volume.source,
            evaluations=self._evaluations(self.volume_segmenter.encoder_passes - enc0, self.volume_segmenter.decoder_passes - dec0),
        )
        record["slices"] = [asdict(r) for r in runs]
        record.update(input_record(self.volume))
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

        try:
            return explain_volume(self, segmentation, explainers, roi, slices, target, progress, roi_mask)
        finally:
            self.release_activations()  # the explanation took what it needed; the rest goes


# ----------------------------------------------------------------------------------------- run

@dataclass
class RunOutcome:
    """What :func:`run` produced: the segmentation, the explanation (if asked for) and the files
    written (key -> path, inside the request's output folder)."""

    segmentation: SegmentResult
    explanation: Any
    files: Dict[str, Any]
    session: Session


def run(request, progress: Optional[Progress] = None, log: Optional[Callable[[str], None]] = None,
        on_estimate: Optional[Callable[[dict], None]] = None) -> RunOutcome:
    """Carry out ``request`` (a :class:`~xaiseg.request.RunRequest`): read, check, segment, explain
    and report, and write every file into ``request.output_dir`` only when all of them exist.

    The output folder is locked for the whole run (a second run into it is refused at once).
    Everything that can be checked without the model is checked before it loads
    (:func:`xaiseg.preflight.preflight`): the volume, the prompt on each slice, the explained
    slices, the methods and their packages, the device, the ROI weights, the narrator, the ground
    truth and ROI mask files, and the free space for the outputs.  ``on_estimate`` is then given
    the run's cost estimate (:func:`xaiseg.cost.estimate_plan`, with this machine's saved
    calibration if there is one), before the model loads.
    """
    from .lock import output_lock
    from .preflight import preflight

    progress = ensure(progress)
    log = log or (lambda text: None)
    with output_lock(request.output_dir):
        volume = read_input(request, log)
        plan = preflight(request, volume)
        if on_estimate is not None:
            from .cost import estimate_plan, load_calibration

            try:
                estimate = estimate_plan(request, plan, volume.shape, load_calibration(request))
            except (NotImplementedError, ArithmeticError, TypeError, ValueError) as exc:  # never stops the run
                log(f"cost estimate unavailable ({type(exc).__name__}: {exc})")
            else:
                on_estimate(estimate)
        if request.threads:
            import torch

            torch.set_num_threads(int(request.threads))
        segmenter = request.segmenter.load(progress)
        log(f"segmenter: {segmenter.describe().get('name', request.segmenter.kind)}")
        session = Session(volume, segmenter, SegmentConfig(
            axis=request.axis, preprocessing=request.preprocessing, margin=request.margin,
            orientation=request.orientation, tta=request.tta))
        from .explain.measure import makes_passes

        if request.explain is not None and any(makes_passes(ex) for ex in plan.explainers):
            session.keep_activations(request.explain.slices)  # the explanation starts from segmentation's passes
        try:
            seg = session.segment(plan.prompt, name=request.name, progress=progress)
            if not seg.mask.any():
                log("the segmentation is empty: the model found nothing inside the prompt")
            files, explained = _segment_outputs(request, session, seg, plan, log, progress)
        finally:
            session.release_activations()
    return RunOutcome(seg, explained, files, session)


def _segment_outputs(request, session, seg, plan, log, progress):
    """Explain ``seg`` where the request asks for it and write the outputs (staged, then moved)."""
    spec, explained = request.explain, None
    with staged(request.output_dir) as stage:
        if spec is None:
            files = seg.write(stage, request.format)
        else:
            explained = session.explain(seg, plan.explainers, roi=spec.roi, slices=spec.slices,
                                        target=plan.target, progress=progress, roi_mask=plan.roi_mask)
            explained.record.update(input_record(session.volume))
            files = dict(explained.write(stage, request.format, pngs=spec.pngs))
            if spec.report is not None:
                files.update(write_report(stage, request.name, spec.report, log, progress))
        progress.check()
        files = _move_all(files, request.output_dir)
    return files, explained


def read_input(request, log: Callable[[str], None]) -> Volume:
    """The request's volume, read with its ``allow_gaps``; with ``replace_nonfinite`` its NaN/inf
    voxels replaced (``volume.meta["nonfinite_replaced"]`` says how many)."""
    from .io import read_volume, replace_nonfinite

    replace = request.replace_nonfinite
    volume = read_volume(request.input, request.series, allow_gaps=request.allow_gaps, check=replace is None)
    source = volume.source or "volume"
    if replace is not None:
        if volume.array.dtype.kind == "f" and not np.isfinite(volume.array).any():
            check_intensities(volume.array, source)  # says every voxel is NaN (or inf): nothing to replace into
        volume.array, record = replace_nonfinite(volume, replace, inplace=True)
        volume.meta["nonfinite_replaced"] = record
        check_intensities(volume.array, source)
        if record["replaced"]:
            log(f"replaced {record['replaced']} NaN or infinite voxel(s) with {record['value']:g}")
    gaps = volume.integrity.get("gaps") or []
    if gaps:
        log(f"the DICOM series has {len(gaps)} gap(s); missing slices {volume.integrity.get('filled_slices')} were "
            "filled and are listed in the run record")
    log(f"read {Path(request.input).name}: {volume.shape[::-1]} voxels (i, j, k), spacing "
        f"{tuple(round(s, 3) for s in volume.geometry.spacing)} mm")
    return volume


def input_record(volume: Volume) -> Dict[str, Any]:
    """What the run record says about the input: what was checked when it was read (format, checks,
    DICOM gaps filled) and the non-finite voxels replaced, if any."""
    out: Dict[str, Any] = {"input_integrity": dict(volume.integrity)}
    if "nonfinite_replaced" in volume.meta:
        out["nonfinite_replaced"] = dict(volume.meta["nonfinite_replaced"])
    return out


def write_report(stage: Path, name: str, options: Dict[str, Any], log: Callable[[str], None],
                 progress: Optional[Progress] = None) -> Dict[str, Any]:
    """Findings, narrative and report of the run; a failing narrator is logged, not fatal, so the
    explanation the user waited for is kept."""
    from .errors import XAISegError
    from .narrate import ReportOptions, build_report

    try:
        paths = build_report(stage, ReportOptions(name=name, **options), progress)
    except XAISegError as exc:
        log(f"the narrative could not be written: {exc}")
        paths = getattr(exc, "paths", {})  # a failing model narrator: the report with the template text
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


