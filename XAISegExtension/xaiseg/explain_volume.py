"""Explaining a segmented volume slice by slice, and the files that result.

:func:`explain_volume` runs each explainer on each explained slice (one ROI per slice, the
slice's logits decoded once and shared), stacks the maps back into volumes on the input's grid
and returns an :class:`ExplainRun`; :meth:`ExplainRun.write` writes the files of
docs/explain_contract.md.  Nothing here knows a method by name: what a method needs (its settings,
its components such as layer maps) comes from its explainer class.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .errors import InputError
from .explain.trust import PROMPT_DRIVEN, RANDOMISED_SIMILAR, short_marks, slices_by_mark
from .io import move_into, staged, volume_suffix, write_planes, write_text_atomic, write_volume
from .kept_caches import KeptCaches
from .models.base import SlicePrompt
from .names import safe_name
from .plane_store import ExplanationSlices, PlaneStore, PlaneVolumes, StoredSlices
from .progress import Progress, ensure
from .record import dumps, run_record
from .volume import put_plane


def _write_map(volume, maps: Mapping[str, np.ndarray], key: str, axis: int, path: Path, dtype=np.float32,
               transform=None) -> Path:
    """Write ``maps[key]`` (``transform``-ed) with ``volume``'s geometry.  From a :class:`PlaneVolumes`
    the planes are pasted into the written image directly, so no full-size numpy volume (nor a cast
    copy of it) is made; ``transform`` must then keep 0 at 0, as the planes' volume is 0 elsewhere."""
    keeps_zero = transform is None or not np.any(transform(np.zeros(1, np.float32)))
    if isinstance(maps, PlaneVolumes) and keeps_zero:
        planes = maps.planes(key)  # read one at a time
        return write_planes(volume, ((k, transform(p) if transform else p) for k, p in planes), axis, path, dtype)
    array = maps[key]
    return write_volume(volume, np.asarray(transform(array) if transform else array, dtype), path)


@dataclass
class ExplainRun:
    """Saliency of one segmentation, per method, and everything needed to write it.

    explanations[method]: the per-slice :class:`~xaiseg.explain.Explanation` by slice index (an
    :class:`~xaiseg.plane_store.ExplanationSlices`: its maps live in ``store``, in memory or, for a
    large structure, on disk until they are written).
    saliency[method]: float32 volume on the input's grid, the display maps of the explained slices
    and 0 elsewhere, built when asked for; components[method][name] likewise (layer maps).
    roi: uint8 volume of the ROI used on each slice; roi_sources[k]: where it came from.
    images[k]: the explained slice k.  :meth:`close` (or dropping the run) removes what is on disk.
    """

    name: str
    segmentation: Any
    axis: int
    slices: List[int]
    roi: np.ndarray
    roi_sources: Dict[int, str]
    explanations: Dict[str, ExplanationSlices]
    images: Mapping[int, np.ndarray]
    record: Dict
    store: PlaneStore
    kinds: Dict[str, str] = field(default_factory=dict)  # method -> what its components are ("layer")
    consistency: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # method -> adjacent-slice Spearman
    perturbs: Dict[str, bool] = field(default_factory=dict)  # method -> whether its raw map is in score units

    def _volumes(self, names, planes) -> PlaneVolumes:
        return PlaneVolumes(self.roi.shape, self.axis, names, planes)

    @property
    def saliency(self) -> PlaneVolumes:
        """Each method's display maps as volumes (built one at a time when asked for)."""
        return self._volumes(lambda: list(self.explanations), lambda m: self.explanations[m].planes("saliency"))

    @property
    def components(self) -> Dict[str, PlaneVolumes]:
        """method -> its components' volumes (layer maps), for the methods that have components."""
        out = {}
        for method, per_slice in self.explanations.items():
            parts = per_slice.components()
            if parts:
                out[method] = self._volumes(lambda parts=parts: parts, per_slice.planes)
        return out

    def _raws(self, method: str) -> PlaneVolumes:
        return self._volumes(lambda: [method], lambda m: self.explanations[m].planes("raw"))

    def raw(self, method: str) -> np.ndarray:
        """The method's raw maps (score units: the explained score lost when a region is removed) as a
        volume on the input's grid, 0 off the explained slices."""
        return self._raws(method)[method]

    def close(self) -> None:
        """Forget the maps and remove their files (the run can no longer be written)."""
        self.store.close()

    def metrics(self) -> Dict:
        """The metrics document (``NAME_metrics.json``) without its file names."""
        methods = {}
        for method, per_slice in self.explanations.items():
            light = {k: per_slice.light(k) for k in per_slice}  # without their maps
            slices = {str(k): dict(ex.metrics, **_scalars(ex.details)) for k, ex in light.items()}
            entry = {"settings": next(iter(light.values())).settings if light else {},
                     "slices": slices, "summary": summarise(list(slices.values()))}
            entry["summary"].update(self.consistency.get(method, {}))
            # the slices of each trust mark (prompt_driven_slices, no_evidence_slices, below_trivial_slices, ...)
            for mark, ks in slices_by_mark(slices).items():
                entry["summary"][f"{mark}_slices"] = ks
            entry["summary"]["prompt_driven_at"] = PROMPT_DRIVEN  # the bar those slices reached, for the text
            entry["summary"]["survives_randomisation_at"] = RANDOMISED_SIMILAR
            # the curves' means are over these (all explained slices unless metric_slices sampled them)
            entry["summary"]["curve_slices"] = sum("deletion_auc" in v for v in slices.values())
            entry["display_scale"] = self.record.get("display_scale", {}).get(method)
            tables = {str(k): ex.component_table for k, ex in light.items() if ex.component_table}
            if tables:
                kind = self.kinds.get(method, "component")
                for k, table in tables.items():
                    slices[k][f"{kind}s"] = table
                entry[f"{kind}_summary"] = component_summary(list(tables.values()), kind)
            methods[method] = entry
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
        with staged(outdir) as stage:
            files = dict(self.segmentation.write(stage, fmt))
            suffix = volume_suffix(fmt)
            files["roi"] = write_volume(self.segmentation.volume, np.asarray(self.roi, np.uint8),
                                        stage / f"{self.name}_roi{suffix}")
            doc = self.metrics()
            for method in self.saliency:
                entry, written = self._write_method(method, stage, suffix, threshold, pngs)
                files.update(written)
                doc["methods"][method]["files"] = entry
            files["metrics"] = write_text_atomic(stage / f"{self.name}_metrics.json", dumps(doc))
            return move_into(files, outdir)

    def _write_method(self, method: str, stage: Path, suffix: str, threshold: Optional[float], pngs: bool):
        """One method's saliency and label volumes, PNGs and component volumes/sheets."""
        from .render import display_flips, layer_sheet, saliency_panel

        vol, n, axis = self.segmentation.volume, self.name, self.axis
        flips = display_flips(vol.geometry, self.axis)
        per_slice = self.explanations[method]  # each slice's maps read when needed, one slice at a time
        cut = threshold if threshold is not None else self.record["methods"][method].get("threshold", 0.5)
        entry: Dict[str, Any] = {"saliency": f"{n}_{method}_saliency{suffix}", "label": f"{n}_{method}_label{suffix}",
                                 "png": []}
        files: Dict[str, Path] = {  # each volume is written from its planes (_write_map), one at a time
            f"{method}_saliency": _write_map(vol, self.saliency, method, axis, stage / entry["saliency"]),
            f"{method}_label": _write_map(vol, self.saliency, method, axis, stage / entry["label"], np.uint8,
                                          lambda sal: sal >= cut)}
        if self.perturbs.get(method, True):  # score units; a similarity map (layers) is its own display map
            entry["raw"] = f"{n}_{method}_raw{suffix}"
            files[f"{method}_raw"] = _write_map(vol, self._raws(method), method, axis, stage / entry["raw"])
        if pngs:
            for k in sorted(per_slice):
                png = f"{n}_{method}_k{k:03d}.png"
                light = per_slice.light(k)
                marks = short_marks(dict(light.metrics, **_scalars(light.details)), method, k)
                title = f"{n}  {method}  slice {k}  " + ("; ".join(marks) if marks else "(green: mask, blue: ROI)")
                maps = [per_slice.plane(k, name) for name in ("saliency", "reference", "roi")]
                files[f"{method}_png_{k}"] = saliency_panel(self.images[k], *maps, stage / png, title, flips)
                entry["png"].append(png)
        components = self.components.get(method, {})
        if components:
            kind = self.kinds.get(method, "component")
            entry[f"{kind}s"] = {}
            for part in components:
                fname = f"{n}_{method}_{safe_name(part)}_saliency{suffix}"
                files[f"{method}_{part}_saliency"] = _write_map(vol, components, part, axis, stage / fname)
                entry[f"{kind}s"][part] = fname
            if pngs:
                entry[f"{kind}_png"] = []
                for k in sorted(per_slice):
                    ex = per_slice[k]
                    png = f"{n}_{method}_{kind}s_k{k:03d}.png"
                    files[f"{method}_{kind}s_png_{k}"] = layer_sheet(
                        self.images[k], ex.components, ex.reference, stage / png, flips, target=ex.target,
                        focus=ex.roi if not ex.roi.all() else None)
                    entry[f"{kind}_png"].append(png)
        return entry, files


def _scalars(details: Dict) -> Dict:
    """Method details that belong in the metrics table (numbers and flags, not curves)."""
    return {k: v for k, v in details.items() if isinstance(v, (bool, int, float, str))}


def component_summary(tables: List[List[Dict]], kind: str = "layer") -> Dict:
    """Per component over slices: pointing-game hit rate, mean IoU at the target's size and mean
    energy inside it; ``best_<kind>`` has the highest mean IoU (ties: the higher hit rate)."""
    rows: Dict[str, List[Dict]] = {}
    for table in tables:
        for r in table:
            rows.setdefault(r[kind], []).append(r)
    out = {name: {"slices": len(rs),
                  "pointing_game": round(float(np.mean([bool(r["pointing_game"]) for r in rs])), 4),
                  "iou_target": round(float(np.mean([r["iou_target"] for r in rs])), 4),
                  "energy_in_target": round(float(np.mean([r["energy_in_target"] for r in rs])), 4)}
           for name, rs in rows.items()}
    best = max(out, key=lambda n: (out[n]["iou_target"], out[n]["pointing_game"])) if out else None
    return {f"{kind}s": out, f"best_{kind}": best}


def summarise(rows: List[Dict]) -> Dict:
    """Mean of every numeric metric over slices (the pointing game as the hit rate)."""
    out: Dict = {"slices": len(rows)}
    keys = sorted({k for r in rows for k, v in r.items() if isinstance(v, (bool, int, float)) and not isinstance(v, str)})
    for k in keys:
        vals = [float(r[k]) for r in rows if isinstance(r.get(k), (bool, int, float))]
        if vals:
            out[k] = round(float(np.mean(vals)), 4)
    return out


def slice_prompt(record: Dict) -> SlicePrompt:
    """A slice's prompt from its record in the segmentation's run record."""
    points = tuple(tuple(p) for p in record["points"]) if record.get("points") else None
    return SlicePrompt(tuple(record["box"]) if record.get("box") else None, points,
                       tuple(record["labels"]) if record.get("labels") else None)


# ----------------------------------------------------------------------------------------- the loop

def _chosen_slices(segmentation, slices: Optional[Sequence[int]]) -> List[int]:
    runs = {r.index: r for r in segmentation.slices}
    if slices is None:
        chosen = [k for k in sorted(runs) if runs[k].voxels > 0]
    else:
        chosen = sorted({int(k) for k in slices})
        missing = [k for k in chosen if k not in runs]
        if missing:
            raise InputError(f"slice(s) {missing} were not segmented; expected slices among {sorted(runs)}")
    if not chosen:
        raise InputError("the segmentation is empty on every slice; there is no mask to explain")
    return chosen


def _check_explainers(explainers: Sequence) -> None:
    from .explain import Explainer, methods

    if not explainers:
        raise InputError(f"no explanation method given; expected at least one of {', '.join(methods())}")
    for ex in explainers:
        if not isinstance(ex, Explainer):
            raise InputError(f"{ex!r} is not an explainer; build one with xaiseg.explain.make_explainer")


def structure_scale(maps: Iterable[Tuple[np.ndarray, np.ndarray]]) -> float:
    """The largest raw value inside the ROI over ``(raw, roi)`` of every explained slice (read one
    slice at a time): the one scale of a structure."""
    peaks = [float(raw[roi].max()) for raw, roi in maps if roi.any()]
    return max(peaks) if peaks else 0.0


def display_map(raw: np.ndarray, roi: np.ndarray, scale: Optional[float]) -> np.ndarray:
    """What is painted: ``raw / scale`` clipped to [0, 1] inside the ROI (evidence against the
    mask, below 0, is not painted; the raw volume keeps it), or per-slice min-max when ``scale``
    is None."""
    from .metrics import normalise01

    if scale is None:
        return normalise01(raw, roi)
    if scale <= 0:
        return np.zeros(raw.shape, np.float32)
    return np.where(roi, np.clip(raw / scale, 0.0, 1.0), 0.0).astype(np.float32)


def pair_spearman(before: np.ndarray, before_roi: np.ndarray, here: np.ndarray,
                  here_roi: np.ndarray) -> Optional[float]:
    """Spearman between two adjacent slices' maps over their common ROI (None where it holds fewer
    than two pixels)."""
    from .metrics import spearman

    common = before_roi & here_roi
    return spearman(before, here, common) if common.sum() >= 2 else None


def adjacent_consistency(explanations: ExplanationSlices) -> Dict[str, Any]:
    """Spearman between the raw maps of adjacent explained slices (k, k + 1) over their common ROI:
    how much a method's map flickers through the volume (each slice's maps read once)."""
    pairs, before = [], None  # before: (k, raw, roi) of the previous explained slice
    for k in sorted(explanations):
        here = (k, explanations.plane(k, "raw"), explanations.plane(k, "roi"))
        if before is not None and before[0] + 1 == k:
            rho = pair_spearman(before[1], before[2], here[1], here[2])
            if rho is not None:
                pairs.append(rho)
        before = here
    return {"adjacent_pairs": len(pairs), "adjacent_spearman": round(float(np.mean(pairs)), 4) if pairs else None,
            "adjacent_spearman_min": round(float(np.min(pairs)), 4) if pairs else None}


def explain_volume(session, segmentation, explainers: Sequence, roi=None, slices: Optional[Sequence[int]] = None,
                   target: Optional[np.ndarray] = None, progress: Optional[Progress] = None,
                   roi_mask: Optional[np.ndarray] = None) -> ExplainRun:
    """Explain ``segmentation`` slice by slice with each explainer (see :meth:`Session.explain`).

    Three passes (:class:`_VolumeExplanation`): attribution on every explained slice (one ROI per
    slice, the slice's logits decoded once and shared) with the metrics that need model passes but
    not the display scale (curves, trivial maps and noise level shared by the methods on a slice),
    while the slice's activations are in memory; then one display scale per method over the whole
    structure (or per slice, as the method's ``scaling`` says); then the Dice drop of each slice's
    high-saliency region and the consistency of adjacent slices.
    """
    from .roi import RoiConfig

    _check_explainers(explainers)
    shape = session.volume.shape
    for array, what in ((target, "target mask"), (roi_mask, "ROI mask")):
        if array is not None and array.shape != shape:
            raise InputError(f"{what} of shape {array.shape} does not match the volume's shape {shape}")
    t0, enc0 = time.perf_counter(), session.volume_segmenter.encoder_passes
    # the session's store where segmentation kept the caches (its owner removes it), else one of its own
    store = getattr(session, "kept_activations", None)
    with (contextlib.nullcontext(store) if store is not None else KeptCaches(session.segmenter)) as kept:
        job = _VolumeExplanation(session, segmentation, explainers, roi or RoiConfig(),
                                 _chosen_slices(segmentation, slices), target, roi_mask, ensure(progress), kept)
        try:
            job.attribute()
            scales = job.scale()
            job.measure()
            return job.finish(scales, time.perf_counter() - t0, session.volume_segmenter.encoder_passes - enc0)
        except BaseException:  # cancelled or failed: the planes kept on disk go now
            job.run.close()
            raise


#: pass 3 rebuilds a slice's activation cache that was not kept (:mod:`.kept_caches`: the disk was
#: full; one full pass) only for at least this many passes, each then about 0.45 of a full one
#: (docs/benchmarks/speed.md): two would save 0.1 of a pass, not worth the share's uncertainty
#: (0.39-0.45 measured)
REBUILD_CACHE_PASSES = 3


class _VolumeExplanation:
    """One explanation of a segmented volume, pass by pass (see :func:`explain_volume`).  The
    explainers work on each slice as the model sees it (turned into the run's orientation); every
    map is turned back to the array's order before it is kept."""

    def __init__(self, session, segmentation, explainers, roi, chosen, target, roi_mask, progress,
                 kept: KeptCaches) -> None:
        from .roi import RoiFinder
        from .roi.geometry import prompt_box

        self.session, self.segmentation, self.roi, self.chosen = session, segmentation, roi, chosen
        self.kept = kept  # activation caches from segmentation or pass 1, for passes 1 and 3
        self.target, self.roi_mask, self.progress = target, roi_mask, progress
        self.finder = RoiFinder(roi)
        self.vs, self.axis = session.volume_segmenter, session.axis
        self.bound = [ex if ex.segmenter is not None else ex.bind(session.segmenter) for ex in explainers]
        self.prompts = {r.index: slice_prompt(r.prompt) for r in segmentation.slices}
        # each explained slice's prompt as the model sees it (turned into the run's orientation)
        self.model_prompts: Dict[int, Any] = {k: self.vs.to_model_prompt(self.prompts[k].clipped(self.vs.slice_shape))
                                              for k in chosen}
        # perturbations sized from the structure get one size for all its explained slices (a slice
        # prompted by points only is boxed by its mask)
        boxes = [prompt_box(p, None if p.box is not None else self._take(segmentation.volume.array, k))
                 for k, p in self.model_prompts.items()]
        self.bound = [ex.for_structure(boxes) for ex in self.bound]
        self.early: Dict[str, Dict[int, Dict[str, Any]]] = {ex.name: {} for ex in self.bound}
        # every finished plane (maps, slices, logits) goes to one store: the newest in memory, the rest on disk
        store = PlaneStore()
        self.logits = StoredSlices(store, "logits")  # each slice's, decoded once in pass 1, used again in pass 3
        self.run = ExplainRun(segmentation.name, segmentation, self.axis, chosen,
                              np.zeros(session.volume.shape, np.uint8), {},
                              {ex.name: ExplanationSlices(store, ex.name) for ex in self.bound},
                              StoredSlices(store, "image"), {}, store,
                              kinds={ex.name: ex.component_kind for ex in self.bound},
                              perturbs={ex.name: ex.perturbs for ex in self.bound})

    def _take(self, volume, k):
        return None if volume is None else self.vs.to_model(np.take(volume, k, axis=self.axis).astype(bool))

    def _stage(self, ex, n: int, k: int) -> str:
        return f"{ex.name} slice {k} ({n}/{len(self.chosen)})"

    def _reuse(self, image: np.ndarray):
        """The slice's activation cache when the model can reuse activations (built in pass 1 and
        kept for pass 3 where that needs it; rebuilt in pass 3 only when it was not kept and at least
        :data:`REBUILD_CACHE_PASSES` passes remain there), else None."""
        segmenter = self.session.segmenter
        return segmenter.embed_cache(image) if getattr(segmenter, "supports_reuse", False) else None

    def attribute(self) -> None:
        """Pass 1: the ROI of every slice, each method's attribution there and the metrics that
        need model passes but not the structure's scale (:func:`~.explain.measure.measure_passes`)."""
        from .explain.measure import SliceShared, curve_slices, makes_passes, measure_passes

        vs, run = self.vs, self.run
        curves = {ex.name: set(curve_slices(self.chosen, ex.metric_slices)) for ex in self.bound}
        for n, k in enumerate(self.chosen, 1):
            self.progress.check()
            image, prompt = vs.model_slice(k), self.model_prompts[k]
            embedding, _ = vs.embedding(k)
            cache = None
            if any(makes_passes(ex) for ex in self.bound):  # the segmentation's cache where it kept one
                cache = self.kept.get(k) or self._reuse(image)
            logits = self.logits[k] = self.session.segmenter.decode(embedding, prompt)  # decoded once, shared
            region, source = self.finder.find(image, prompt, logits > 0, embedding, self._take(self.roi_mask, k))
            put_plane(run.roi, self.axis, k, vs.from_model(region).astype(np.uint8))
            run.roi_sources[k], run.images[k] = source, vs.slice(k)
            shared = SliceShared()
            for ex in self.bound:
                stage = self._stage(ex, n, k)
                e = ex.explain(image, prompt, roi=region, roi_source=source, target=self._take(self.target, k),
                               progress=self.progress, stage=stage, embedding=embedding, logits=logits,
                               measure=False, reuse_cache=cache)
                run.explanations[ex.name][k] = e
                # what needs passes but not the structure's scale, while this slice's activations are here
                engine = _engine(ex, e, image, prompt, embedding, logits, self.progress, stage, cache)
                self.early[ex.name][k] = measure_passes(ex, e, engine, self.progress, stage, shared,
                                                        curves=k in curves[ex.name])
            if cache is not None and self._measured_later(k):
                if k not in self.kept:  # one segmentation kept stays where it is
                    self.kept.put(k, cache)
            else:
                self.kept.discard(k)

    def _measured_later(self, k: int) -> bool:
        """Whether pass 3 may make passes on slice ``k``: some method has a Dice drop to measure
        there and did not find the slice without evidence (whose label map is empty)."""
        from .explain.measure import scaled_passes

        return any(scaled_passes(ex) and self.early[ex.name][k].get("evidence") is not False for ex in self.bound)

    def scale(self) -> Dict[str, Optional[float]]:
        """Pass 2: one display scale per method over the structure (None: per slice)."""
        scales = {}
        for ex in self.bound:
            per_slice = self.run.explanations[ex.name]
            scale = (structure_scale((per_slice.plane(k, "raw"), per_slice.plane(k, "roi")) for k in per_slice)
                     if ex.scaling == "structure" else None)
            scales[ex.name] = scale
            for k in per_slice:
                e = per_slice[k]
                per_slice[k] = _with_saliency(e, display_map(e.raw, e.roi, scale))
        return scales

    def measure(self) -> None:
        """Pass 3: the rest of the metrics stage on every slice (the Dice drop of the high-saliency
        region, which depends on the scale), then every map back in the array's order.  The slice's
        activation cache kept from pass 1 serves these passes; one that was not kept is built again
        only when enough passes remain to pay for it."""
        from .explain.measure import measure, scaled_passes

        vs, run = self.vs, self.run
        remaining = sum(scaled_passes(ex) for ex in self.bound)
        for n, k in enumerate(self.chosen, 1):
            embedding, _ = vs.embedding(k)
            image, logits = vs.model_slice(k), self.logits.pop(k)
            cache = self.kept.take(k)
            if cache is None and remaining >= REBUILD_CACHE_PASSES and self._measured_later(k):
                cache = self._reuse(image)
            for ex in self.bound:
                stage = self._stage(ex, n, k)
                e = run.explanations[ex.name][k]
                # without a cache each engine here makes one pass (the Dice drop): a full one
                engine = _engine(ex, e, image, self.model_prompts[k], embedding, logits, self.progress, stage, cache)
                e = _in_array_order(measure(ex, e, engine, self.progress, stage, early=self.early[ex.name].pop(k)),
                                    vs)
                run.explanations[ex.name][k] = e  # final: in the array's order, read back when written

    def finish(self, scales, seconds: float, slice_passes: int) -> ExplainRun:
        """The run record and the adjacent-slice consistency."""
        run, session, bound = self.run, self.session, self.bound
        evaluations = {ex.name: int(sum(run.explanations[ex.name].light(k).n_evaluations
                                        for k in run.explanations[ex.name])) for ex in bound}
        run.record = run_record(model=session.segmenter.describe(), preprocessing=session.preprocessing_record(),
                                prompt=self.segmentation.record.get("prompt", {}),
                                settings={"slicing_axis_index": self.axis, "slices": self.chosen},
                                seconds=seconds, source=session.volume.source,
                                evaluations={"perturbed_encoder_passes": evaluations,
                                             "slice_encoder_passes": slice_passes},
                                seed=bound[0].seed)
        run.record["roi"] = self.roi.record()
        run.record["methods"] = {ex.name: ex.settings() for ex in bound}
        run.record["display_scale"] = dict(scales)
        if hasattr(session, "orientation_record"):
            run.record["orientation"] = session.orientation_record()
        run.consistency = {ex.name: adjacent_consistency(run.explanations[ex.name]) for ex in bound}
        return run


def _in_array_order(explanation, vs):
    """An explanation made on the model slice, with every map turned back to the array's order."""
    import dataclasses

    back = vs.from_model
    return dataclasses.replace(
        explanation, saliency=back(explanation.saliency), raw=back(explanation.raw), roi=back(explanation.roi),
        reference=back(explanation.reference), components={k: back(v) for k, v in explanation.components.items()},
        target=None if explanation.target is None else back(explanation.target))


def _with_saliency(explanation, saliency: np.ndarray):
    import dataclasses

    return dataclasses.replace(explanation, saliency=saliency)


def _engine(explainer, explanation, image, prompt, embedding, logits, progress, stage: str, reuse_cache=None):
    from .explain.base import PerturbationEngine

    return PerturbationEngine(explainer.segmenter, image, prompt, explanation.roi, score=explainer.score,
                              fill=explainer.fill, batch_size=explainer.batch_size, progress=progress, stage=stage,
                              embedding=embedding, logits=logits, reuse_cache=reuse_cache)
