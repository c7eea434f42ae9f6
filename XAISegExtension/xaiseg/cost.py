"""The cost of a run before it starts: model passes and minutes.

The encoder dominates (about 1.5 s per LiteMedSAM pass on two CPU cores, 65 ms per decoder pass),
so the estimate counts encoder passes: one per segmented slice (times the TTA orientations), plus
what each method states it needs per explained slice (:meth:`xaiseg.explain.Explainer.total_cost`:
attribution, the metrics stage and the sanity checks, given the ROI's extent on that slice) and
what the methods on a slice share once (:func:`~xaiseg.explain.measure.shared_passes_of`: the noise
level, the trivial maps once per fill their curves remove with, the ROI inpainted whole for the
share of the mask the prompt draws).  Seconds come from a calibration - one model load and the median of timed
encoder and decoder passes on this machine (:func:`calibrate`, kept by :func:`save_calibration`) -
or from the reference figures above.

:func:`estimate_counts` is the part that needs no volume (the Slicer panel gives it the slices and
ROI extent from its nodes); :func:`estimate_plan` gets them from a run's preflight plan.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

DEFAULT_SECONDS = {"seconds_encoder": 1.5, "seconds_decoder": 0.065, "seconds_load": 3.0}
#: seconds per MB of (uncompressed) output written, used when there is no calibration at all
REFERENCE_WRITE = {"seconds_write_mb": 0.01}
MODEL_GRID = 256
#: the cascading randomisation's steps (:func:`~xaiseg.models.base.randomisation_cascade`) of each
#: segmenter kind, known without loading it: LiteMedSAM's decoder, prompt encoder, neck, four stages
#: and patch embedding; MedSAM ViT-B's decoder, prompt encoder, neck, twelve blocks and patch
#: embedding; other models their top-level parts, counted as 7
CASCADE_STEPS = {"litemedsam": 8, "medsam": 16}

#: segmenters whose perturbed passes reuse the unperturbed slice's activations (without TTA), and the
#: share of a full pass such a pass costs when the changed extent is unknown: 0.39-0.45 measured for
#: LiteMedSAM on ROI-sized changes (docs/benchmarks/speed.md), the upper figure
REUSING_KINDS = ("litemedsam",)
REUSE_SHARE = 0.45
#: the share of a full LiteMedSAM encoder pass that a reused pass costs, by the side of the square
#: change on the 256 grid: :func:`xaiseg.models.tinyvit_reuse.relative_cost` (the mean over four
#: positions, corner to centre; test_cost checks the table against it).  A change reaches at least
#: the stage-0 window it falls in and every later stage's window around it, so even a speck costs a third
REUSE_SHARES = ((4, 0.329), (8, 0.330), (16, 0.333), (24, 0.343), (32, 0.360), (48, 0.384), (64, 0.413),
                (96, 0.482), (128, 0.569), (192, 0.803), (256, 1.0))
REUSE_LIMIT = 0.85  # LiteMedSAM.reuse_limit: a change that would cost more gets a full pass
CALIBRATION_FILE = "calibration.json"
#: timed encoder passes of a calibration: their median holds against one or two passes slowed by
#: the rest of a shared machine (a median of two moved a bench row's estimate by 25 %)
CALIBRATION_PASSES = 5

Extent = Optional[Tuple[float, float]]


def estimate_counts(request, segmented: int, extents: Sequence[Extent],
                    calibration: Optional[Dict[str, float]] = None, device_label: Optional[str] = None,
                    output_bytes: int = 0) -> Dict[str, Any]:
    """Passes and seconds of ``request`` (a :class:`~xaiseg.request.RunRequest`) that segments
    ``segmented`` slices and explains one slice per entry of ``extents`` (each the ROI's (rows,
    columns) on the model's grid, or None when unknown).  ``output_bytes`` (the outputs' size,
    :func:`xaiseg.preflight.expected_bytes`) adds the time of writing them when the calibration
    measured it (``seconds_write_mb``), or the reference figure without a calibration."""
    cal = dict(DEFAULT_SECONDS, **REFERENCE_WRITE)
    cal.update(calibration or {})  # a calibration without a write timing keeps the reference figure
    turns = int(getattr(request, "tta", 1) or 1)  # every pass runs once per TTA orientation
    encoder = decoder = segmented * turns
    per_method: Dict[str, int] = {}
    explained = len(extents)
    reused = 0.0  # the perturbed passes in full-pass equivalents, were they to reuse activations
    if request.explain and explained:
        from .explain.measure import curve_slices, shared_passes_of

        explainers = [m.explainer() for m in request.explain.methods]
        steps = CASCADE_STEPS.get(request.segmenter.kind, 7)  # the explainers have no model to count them
        curves = [set(curve_slices(range(explained), ex.metric_slices)) for ex in explainers]  # by position
        for m, ex, sample in zip(request.explain.methods, explainers, curves):
            counts = [ex.total_cost(extent, MODEL_GRID, cascade_steps=steps, curves=i in sample)
                      for i, extent in enumerate(extents)]
            n = sum(counts) * turns
            per_method[m.name] = n
            encoder += n
            decoder += n + explained * turns
            # attribution's passes by the size of what they change; the rest (curves, checks) change the ROI
            reused += sum(ex.cost_equivalents(e, MODEL_GRID, reuse_share) + (c - ex.cost(e, MODEL_GRID)) * reuse_share(e)
                          for c, e in zip(counts, extents))
        shared = [shared_passes_of([(ex, i in sample) for ex, sample in zip(explainers, curves)])
                  for i in range(explained)]
        if sum(shared):  # once per slice
            per_method["shared"] = sum(shared) * turns
            encoder += sum(shared) * turns
            decoder += sum(shared) * turns
            reused += sum(n * reuse_share(e) for n, e in zip(shared, extents))
    reuse = request.segmenter.kind in REUSING_KINDS and turns == 1 and encoder > segmented
    perturbed = encoder - segmented * turns
    # with reuse the explained slices' activation caches come from segmentation's passes (a run keeps
    # them, Session.keep_activations) and serve every perturbed pass, the Dice drops after scaling too
    full_equivalent = encoder if not reuse else segmented * turns + reused
    seconds = cal["seconds_load"] + full_equivalent * cal["seconds_encoder"] + decoder * cal["seconds_decoder"]
    seconds += output_bytes / 1e6 * cal.get("seconds_write_mb", 0.0)
    device = request.segmenter.device
    text = (f"{segmented} slice(s) to segment; {encoder} encoder and {decoder} decoder passes; "
            f"about {seconds / 60:.1f} min on {device_label or device}")
    if per_method:
        text += " (" + ", ".join(f"{k}: {v} evaluations" for k, v in per_method.items()) + ")"
    if reuse:
        text += f"; perturbed passes reuse the slice's activations (about {reused / perturbed:.2f} of a full pass each)"
    return {"slices": segmented, "explained_slices": explained, "encoder_passes": encoder, "decoder_passes": decoder,
            "full_pass_equivalents": full_equivalent, "reuse": reuse,
            "per_method": per_method, "seconds": seconds, "minutes": seconds / 60.0,
            "calibrated": calibration is not None, "device": device, "text": text}


def reuse_share(extent: Extent) -> float:
    """The share of a full pass that a reused pass changing ``extent`` (rows, columns on the model's
    grid) costs, from :data:`REUSE_SHARES` by the side of the square of the same area; a change
    above :data:`REUSE_LIMIT` gets a full pass.  :data:`REUSE_SHARE` when the extent is unknown."""
    if extent is None:
        return REUSE_SHARE
    import numpy as np

    side = float(np.sqrt(max(1.0, extent[0]) * max(1.0, extent[1])))
    sides, shares = zip(*REUSE_SHARES)
    share = float(np.interp(side, sides, shares))
    return 1.0 if share > REUSE_LIMIT else share


def box_extent(box: Optional[Sequence[float]], plane: Sequence[int], margin: int = 0) -> Extent:
    """The (rows, columns) of a slice box ``(x0, y0, x1, y1)`` plus ``margin`` on the model's grid."""
    if box is None:
        return None
    scale = MODEL_GRID / float(max(plane))
    x0, y0, x1, y1 = box
    return ((abs(y1 - y0) + 1 + 2 * margin) * scale, (abs(x1 - x0) + 1 + 2 * margin) * scale)


def plan_extents(request, plan, shape: Sequence[int]) -> Tuple[int, List[Extent]]:
    """The slices a run segments and the ROI extent of each slice it explains, from its preflight plan
    (:func:`xaiseg.preflight.preflight`): the prompt's box on each slice, or its 3D box."""
    from .volume import BoxPrompt, LabelBoxPrompt, in_plane_axes

    rows, cols = in_plane_axes(plan.axis)
    plane = (shape[rows], shape[cols])
    margin = int(request.explain.roi.margin or 0) if request.explain else 0
    prompt = plan.prompt
    boxes: Dict[int, Any] = {}
    if isinstance(prompt, BoxPrompt):
        boxes = {k: prompt.slice_box(plan.axis) for k in plan.slices}
    elif isinstance(prompt, LabelBoxPrompt):
        boxes = {k: p.box for k, p in prompt.per_slice(plan.axis).items()}
    explained = request.explain.slices if request.explain and request.explain.slices else plan.slices
    extents = [box_extent(boxes.get(k), plane, margin) for k in explained] if request.explain else []
    return len(plan.slices), extents


def estimate_plan(request, plan, shape: Sequence[int], calibration: Optional[Dict[str, float]] = None,
                  device_label: Optional[str] = None) -> Dict[str, Any]:
    """:func:`estimate_counts` for a run whose preflight plan is known (the command line, the worker)."""
    segmented, extents = plan_extents(request, plan, shape)
    return estimate_counts(request, segmented, extents, calibration, device_label, plan.bytes_needed)


def summary(estimate: Dict[str, Any]) -> str:
    """The one line printed before a run: passes, minutes and where the seconds come from."""
    source = "calibrated on this machine" if estimate["calibrated"] else \
        "reference timing; --estimate --calibrate measures this machine"
    return (f"estimated {estimate['encoder_passes']} encoder passes, about {estimate['minutes']:.1f} min on "
            f"{estimate['device']} ({source})")


# ----------------------------------------------------------------------------------------- calibration

def calibrate(segmenter, repeats: int = CALIBRATION_PASSES, load_seconds: Optional[float] = None, progress=None) -> Dict[str, float]:
    """Seconds of one encoder and one decoder pass of ``segmenter`` (the median of ``repeats`` timed
    passes after one untimed warm-up pass) on a synthetic slice; ``seconds_load`` as given."""
    import numpy as np

    from .models.base import SlicePrompt

    image = np.random.default_rng(0).random((MODEL_GRID, MODEL_GRID), dtype=np.float32)
    prompt = SlicePrompt(box=(64, 64, 192, 192))
    segmenter.decode(segmenter.embed(image), prompt)  # warm-up: the first pass sets up the kernels
    enc, dec = [], []
    for _ in range(max(1, int(repeats))):
        if progress is not None:
            progress.check()
        t = time.perf_counter()
        emb = segmenter.embed(image)
        enc.append(time.perf_counter() - t)
        t = time.perf_counter()
        segmenter.decode(emb, prompt)
        dec.append(time.perf_counter() - t)
        if progress is not None:
            progress.step()
    out = {"seconds_encoder": float(np.median(enc)), "seconds_decoder": float(np.median(dec))}
    if load_seconds is not None:
        out["seconds_load"] = float(load_seconds)
    return out


def calibrate_write(folder: Optional[Path] = None, shape: Tuple[int, int, int] = (64, 256, 256)) -> float:
    """Seconds per MB of output written: a float32 volume zero off a few slices (like a saliency
    volume) and its uint8 label, written as the runs write them (compressed, atomically)."""
    import tempfile

    import numpy as np

    from .io import Geometry, Volume, write_volume

    data = np.zeros(shape, np.float32)
    data[shape[0] // 2 - 1: shape[0] // 2 + 2] = np.random.default_rng(0).random((3,) + shape[1:], dtype=np.float32)
    volume = Volume(data, Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()), shape[::-1]))
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        t = time.perf_counter()
        write_volume(volume, data, Path(tmp) / "saliency.nrrd")
        write_volume(volume, (data > 0.5).astype(np.uint8), Path(tmp) / "label.nrrd")
        seconds = time.perf_counter() - t
    return seconds / (data.size * 5 / 1e6)


def calibration_key(request) -> str:
    """A calibration holds for one segmenter, device and thread count."""
    return json.dumps({"segmenter": request.segmenter.options(), "threads": request.threads}, sort_keys=True,
                      default=str)


def calibration_path() -> Path:
    from .weights import default_cache_dir

    return default_cache_dir() / CALIBRATION_FILE


def load_calibration(request, path: Optional[Path] = None) -> Optional[Dict[str, float]]:
    """The calibration saved for this request's segmenter, device and threads, if any."""
    try:
        saved = json.loads(Path(path or calibration_path()).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    entry = saved.get(calibration_key(request)) if isinstance(saved, dict) else None
    if not isinstance(entry, dict):
        return None
    keys = list(DEFAULT_SECONDS) + list(REFERENCE_WRITE)
    return {k: float(entry[k]) for k in keys if isinstance(entry.get(k), (int, float))} or None


def save_calibration(request, timing: Dict[str, float], path: Optional[Path] = None) -> Path:
    """Keep ``timing`` for this request's segmenter, device and threads (atomically, beside others)."""
    from .io import write_text_atomic

    path = Path(path or calibration_path())
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        saved = saved if isinstance(saved, dict) else {}
    except (OSError, ValueError):
        saved = {}
    saved[calibration_key(request)] = dict(timing, host=os.uname().nodename if hasattr(os, "uname") else "")
    return write_text_atomic(path, json.dumps(saved, indent=1, sort_keys=True))


def estimate_request(request, measure: bool = False, log=None) -> Dict[str, Any]:
    """The estimate of ``request`` without running it: the volume is read and the request checked
    (:func:`xaiseg.preflight.preflight`); the model loads only with ``measure``, which times its
    passes here and keeps the calibration for later estimates."""
    from .pipeline import read_input
    from .preflight import preflight

    log = log or (lambda text: None)
    volume = read_input(request, log)
    plan = preflight(request, volume)
    calibration = load_calibration(request)
    if measure:
        if request.threads:
            import torch

            torch.set_num_threads(int(request.threads))
        t0 = time.perf_counter()
        segmenter = request.segmenter.load()
        calibration = dict(calibrate(segmenter, CALIBRATION_PASSES, time.perf_counter() - t0), seconds_write_mb=calibrate_write())
        save_calibration(request, calibration)
    return estimate_plan(request, plan, volume.shape, calibration)
