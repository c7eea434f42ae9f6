"""The one place that composes the stages: volume -> preprocessing -> segmenter (cached
embeddings) -> masks -> files.  Explainers and narrators plug in here as they land."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from .errors import InputError
from .io import Volume, check_intensities, move_into, staged, volume_suffix, write_text_atomic, write_volume
from .models.base import PromptableSegmenter
from .orientation import InPlane, TTASegmenter, resolve, tta_turns
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
    """One volume, preprocessed once, with one segmenter and an embedding cache shared by prompts.

    ``segmenter`` is the model as the run uses it: with ``tta`` > 1 a
    :class:`~xaiseg.orientation.TTASegmenter` around ``base_segmenter``.  ``orientation`` says how
    slices are turned before the model (``slicer`` speaks array order and turns for the model).
    """

    def __init__(self, volume: Volume, segmenter: PromptableSegmenter, config: Optional[SegmentConfig] = None):
        self.config = config or SegmentConfig()
        check_intensities(volume.array, volume.source or "volume")
        self.volume = volume
        t0 = time.perf_counter()
        self.image01, self.bounds = normalise(volume.array, self.config.preprocessing)
        self.preprocess_seconds = time.perf_counter() - t0
        self.axis = slicing_axis(volume.geometry, self.config.axis)
        self.orientation = resolve(self.config.orientation, volume.geometry, self.axis)
        self.base_segmenter = segmenter
        self.tta = tta_turns(self.orientation, self.config.tta)
        self.segmenter = TTASegmenter(segmenter, self.tta) if len(self.tta) > 1 else segmenter
        self.slicer = VolumeSegmenter(self.segmenter, self.image01, self.axis, self.config.cache_mb << 20,
                                      self.orientation.turn)

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
        enc0, dec0 = self.slicer.encoder_passes, self.slicer.decoder_passes
        t0 = time.perf_counter()
        mask, runs = self.slicer.run(prompt, self.config.margin, progress, stage=f"segment {name}")
        seconds = time.perf_counter() - t0
        record = run_record(
            model=self.segmenter.describe(), preprocessing=self.preprocessing_record(),
            prompt=prompt.record(), settings=dict(self.config.record(), slicing_axis_index=self.axis,
                                                  orientation=self.orientation_record()),
            seconds=seconds, source=self.volume.source,
            evaluations=self._evaluations(self.slicer.encoder_passes - enc0, self.slicer.decoder_passes - dec0),
        )
        record["slices"] = [asdict(r) for r in runs]
        return SegmentResult(name, mask, self.volume, runs, record)

    def explain(self, segmentation: SegmentResult, explainers: Sequence, roi=None,
                slices: Optional[Sequence[int]] = None, target: Optional[np.ndarray] = None,
                progress: Optional[Progress] = None, roi_mask: Optional[np.ndarray] = None) -> "ExplainRun":
        """Explain ``segmentation`` with each explainer on each slice that has a mask (or ``slices``).

        roi: a :class:`~xaiseg.roi.RoiConfig` (default: the embedding ROI); target: a ground-truth
        3D mask for the localisation metrics; roi_mask: a 3D mask for ``RoiConfig("mask")``.
        Nothing is written; call :meth:`ExplainRun.write`.
        """
        return explain(self, segmentation, explainers, roi, slices, target, progress, roi_mask)


@dataclass
class ExplainRun:
    """Saliency volumes of one segmentation, per method, and everything needed to write them.

    saliency[method]: float32 on the volume's grid, [0, 1] per explained slice, 0 elsewhere.
    explanations[method][k]: the per-slice :class:`~xaiseg.explain.Explanation`.
    roi: uint8 volume of the ROI used on each slice; roi_sources[k]: where it came from.
    """

    name: str
    segmentation: SegmentResult
    axis: int
    slices: List[int]
    roi: np.ndarray
    roi_sources: Dict[int, str]
    saliency: Dict[str, np.ndarray]
    explanations: Dict[str, Dict[int, object]]
    images: Dict[int, np.ndarray]
    record: Dict
    #: layer maps (method ``layers``): layer name -> float32 volume like ``saliency``
    layer_saliency: Dict[str, Dict[str, np.ndarray]] = field(default_factory=dict)

    def metrics(self) -> Dict:
        """The metrics document (``NAME_metrics.json``) without its file names."""
        methods = {}
        for method, per_slice in self.explanations.items():
            slices = {str(k): dict(ex.metrics, **_extras(ex.extras)) for k, ex in per_slice.items()}
            methods[method] = {"settings": next(iter(per_slice.values())).settings if per_slice else {},
                               "slices": slices, "summary": summarise(list(slices.values()))}
            tables = {str(k): ex.extras["layer_table"] for k, ex in per_slice.items() if "layer_table" in ex.extras}
            if tables:
                for k, table in tables.items():
                    slices[k]["layers"] = table
                methods[method]["layer_summary"] = layer_summary(list(tables.values()))
        fallback = sorted(k for k, src in self.roi_sources.items() if "fallback" in src)
        return {"name": self.name, "input": self.segmentation.volume.source, "axis": self.axis,
                "slices": list(self.slices), "roi": dict(self.record.get("roi", {}), fallback_slices=fallback,
                                                         sources={str(k): v for k, v in self.roi_sources.items()}),
                "methods": methods, "record": self.record}

    def write(self, outdir, fmt: str = "nrrd", threshold: Optional[float] = None, pngs: bool = True) -> Dict[str, Path]:
        """Write the run's files (docs/explain_contract.md) into ``outdir``.

        Files are written into a hidden staging folder first and moved into place only when all
        of them exist, so an interrupted write leaves no partial set behind.
        """
        from .render import display_flips, layer_sheet, saliency_panel

        suffix = volume_suffix(fmt)
        vol, n = self.segmentation.volume, self.name
        with staged(outdir) as stage:
            files = dict(self.segmentation.write(stage, fmt))
            files["roi"] = write_volume(vol, self.roi.astype(np.uint8), stage / f"{n}_roi{suffix}")
            doc = self.metrics()
            flips = display_flips(vol.geometry, self.axis)
            for method, sal in self.saliency.items():
                cut = threshold if threshold is not None else self.record["methods"][method].get("threshold", 0.5)
                entry = {"saliency": f"{n}_{method}_saliency{suffix}", "label": f"{n}_{method}_label{suffix}", "png": []}
                files[f"{method}_saliency"] = write_volume(vol, sal.astype(np.float32), stage / entry["saliency"])
                files[f"{method}_label"] = write_volume(vol, (sal >= cut).astype(np.uint8), stage / entry["label"])
                if pngs:
                    for k, ex in sorted(self.explanations[method].items()):
                        png = f"{n}_{method}_k{k:03d}.png"
                        title = f"{n}  {method}  slice {k}  (green: mask, blue: ROI)"
                        files[f"{method}_png_{k}"] = saliency_panel(self.images[k], ex.saliency, ex.reference, ex.roi,
                                                                    stage / png, title, flips)
                        entry["png"].append(png)
                layers = self.layer_saliency.get(method, {})
                if layers:
                    entry["layers"] = {}
                    for layer, lsal in layers.items():
                        fname = f"{n}_{method}_{_safe(layer)}_saliency{suffix}"
                        files[f"{method}_{layer}_saliency"] = write_volume(vol, lsal.astype(np.float32), stage / fname)
                        entry["layers"][layer] = fname
                    if pngs:
                        entry["layer_png"] = []
                        for k, ex in sorted(self.explanations[method].items()):
                            png = f"{n}_{method}_layers_k{k:03d}.png"
                            files[f"{method}_layers_png_{k}"] = layer_sheet(
                                self.images[k], ex.extras["layer_maps"], ex.reference, stage / png, flips,
                                target=ex.extras.get("target"), focus=ex.roi if not ex.roi.all() else None)
                            entry["layer_png"].append(png)
                doc["methods"][method]["files"] = entry
            files["metrics"] = write_text_atomic(stage / f"{n}_metrics.json", json.dumps(doc, indent=2, default=_json))
            return move_into(files, outdir)


def _extras(extras: Dict) -> Dict:
    """Method extras that belong in the metrics table (numbers and flags, not curves)."""
    return {k: v for k, v in extras.items() if isinstance(v, (bool, int, float, str))}


def _safe(name: str) -> str:
    """A layer name as a file-name part (letters, digits, '.', '-', '_')."""
    return "".join(c if c.isalnum() or c in ".-_" else "_" for c in str(name))


def layer_summary(tables: List[List[Dict]]) -> Dict:
    """Per layer over slices: pointing-game hit rate, mean IoU at the target's size and mean energy
    inside it; ``best_layer`` has the highest mean IoU (ties: the higher hit rate)."""
    rows: Dict[str, List[Dict]] = {}
    for table in tables:
        for r in table:
            rows.setdefault(r["layer"], []).append(r)
    out = {name: {"slices": len(rs),
                  "pointing_game": round(float(np.mean([bool(r["pointing_game"]) for r in rs])), 4),
                  "iou_target": round(float(np.mean([r["iou_target"] for r in rs])), 4),
                  "energy_in_target": round(float(np.mean([r["energy_in_target"] for r in rs])), 4)}
           for name, rs in rows.items()}
    best = max(out, key=lambda n: (out[n]["iou_target"], out[n]["pointing_game"])) if out else None
    return {"layers": out, "best_layer": best}


def summarise(rows: List[Dict]) -> Dict:
    """Mean of every numeric metric over slices (the pointing game as the hit rate)."""
    out: Dict = {"slices": len(rows)}
    keys = sorted({k for r in rows for k, v in r.items() if isinstance(v, (bool, int, float)) and not isinstance(v, str)})
    for k in keys:
        vals = [float(r[k]) for r in rows if isinstance(r.get(k), (bool, int, float))]
        if vals:
            out[k] = round(float(np.mean(vals)), 4)
    return out


def _slice_prompt(record: Dict):
    from .models.base import SlicePrompt

    points = tuple(tuple(p) for p in record["points"]) if record.get("points") else None
    return SlicePrompt(tuple(record["box"]) if record.get("box") else None, points,
                       tuple(record["labels"]) if record.get("labels") else None)


def explain(session: "Session", segmentation: SegmentResult, explainers: Sequence, roi=None,
            slices: Optional[Sequence[int]] = None, target: Optional[np.ndarray] = None,
            progress: Optional[Progress] = None, roi_mask: Optional[np.ndarray] = None) -> ExplainRun:
    """Explain ``segmentation`` slice by slice with each explainer (see :meth:`Session.explain`)."""
    from .explain import Explainer
    from .progress import ensure
    from .roi import RoiConfig, RoiFinder

    progress = ensure(progress)
    roi = roi or RoiConfig()
    if not explainers:
        raise InputError("no explanation method given; expected at least one of occlusion, rise, lime, shap, layers")
    for ex in explainers:
        if not isinstance(ex, Explainer):
            raise InputError(f"{ex!r} is not an explainer; build one with xaiseg.explain.make_explainer")
    vs = session.slicer
    runs = {r.index: r for r in segmentation.slices}
    with_mask = [k for k in sorted(runs) if runs[k].voxels > 0]
    if slices is None:
        chosen = with_mask
    else:
        chosen = sorted({int(k) for k in slices})
        missing = [k for k in chosen if k not in runs]
        if missing:
            raise InputError(f"slice(s) {missing} were not segmented; expected slices among {sorted(runs)}")
    if not chosen:
        raise InputError("the segmentation is empty on every slice; there is no mask to explain")
    for array, what in ((target, "target mask"), (roi_mask, "ROI mask")):
        if array is not None and array.shape != session.volume.shape:
            raise InputError(f"{what} of shape {array.shape} does not match the volume's shape {session.volume.shape}")
    finder = RoiFinder(roi)
    bound = [ex if ex.segmenter is not None else ex.bind(session.segmenter) for ex in explainers]
    roi_vol = np.zeros(session.volume.shape, np.uint8)
    saliency = {ex.name: np.zeros(session.volume.shape, np.float32) for ex in bound}
    results: Dict[str, Dict[int, object]] = {ex.name: {} for ex in bound}
    sources: Dict[int, str] = {}
    images: Dict[int, np.ndarray] = {}
    layer_saliency: Dict[str, Dict[str, np.ndarray]] = {}
    t0 = time.perf_counter()
    enc0 = vs.encoder_passes

    def put(out, k, plane):
        index = [slice(None)] * 3
        index[session.axis] = k
        out[tuple(index)] = plane

    def take(volume, k):
        return None if volume is None else np.take(volume, k, axis=session.axis).astype(bool)

    for n, k in enumerate(chosen, 1):
        progress.check()
        image = vs.slice(k)
        prompt = _slice_prompt(runs[k].prompt)
        embedding, _ = vs.embedding(k)
        logits = session.segmenter.decode(embedding, prompt.clipped(image.shape))  # decoded once, shared
        mask = logits > 0
        region, source = finder.find(image, prompt, mask, embedding, take(roi_mask, k))
        put(roi_vol, k, region.astype(np.uint8))
        sources[k], images[k] = source, image
        for ex in bound:
            e = ex.explain(image, prompt, roi=region, roi_source=source, target=take(target, k), progress=progress,
                           stage=f"{ex.name} slice {k} ({n}/{len(chosen)})", embedding=embedding, logits=logits)
            results[ex.name][k] = e
            put(saliency[ex.name], k, e.saliency)
            for layer, plane in e.extras.get("layer_maps", {}).items():
                vols = layer_saliency.setdefault(ex.name, {})
                if layer not in vols:
                    vols[layer] = np.zeros(session.volume.shape, np.float32)
                put(vols[layer], k, plane)
    seconds = time.perf_counter() - t0
    evaluations = {ex.name: int(sum(e.n_evaluations for e in results[ex.name].values())) for ex in bound}
    record = run_record(model=session.segmenter.describe(), preprocessing=session.preprocessing_record(),
                        prompt=segmentation.record.get("prompt", {}),
                        settings={"slicing_axis_index": session.axis, "slices": chosen},
                        seconds=seconds, source=session.volume.source,
                        evaluations={"perturbed_encoder_passes": evaluations,
                                     "slice_encoder_passes": vs.encoder_passes - enc0},
                        seed=bound[0].seed)
    record["roi"] = roi.record()
    record["methods"] = {ex.name: ex.settings() for ex in bound}
    return ExplainRun(segmentation.name, segmentation, session.axis, chosen, roi_vol, sources, saliency, results,
                      images, record, layer_saliency)
