"""Cost estimate shown before Apply: how many model evaluations a run needs and how long they take.

The encoder dominates (about 1.5 s per pass for LiteMedSAM on two CPU cores, 65 ms per decoder
pass), so the estimate counts encoder passes: one per segmented slice, plus what each method
states it needs per explained slice (:meth:`xaiseg.explain.Explainer.total_cost`: attribution, the
metrics stage and the sanity check).  Seconds come from a calibration on this machine
(:meth:`XAISegLogic.calibrate`) when available, else from those reference figures.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

DEFAULT_SECONDS = {"seconds_encoder": 1.5, "seconds_decoder": 0.065, "seconds_load": 3.0}
MODEL_GRID = 256


def _segmented_slices(request, shape: Sequence[int], axis: int):
    """(first, last, count) of the slices the prompt segments, and the ROI extent on the model grid."""
    prompt = request.prompt
    roi_extent = None
    if prompt.type == "box" and prompt.coords == "kji":
        lo, hi = prompt.lo, prompt.hi
        first, last = int(min(lo[axis], hi[axis])), int(max(lo[axis], hi[axis]))
        rows = [a for a in range(3) if a != axis]
        scale = MODEL_GRID / float(max(shape[a] for a in rows))
        margin = request.explain.roi.margin if request.explain else 0
        roi_extent = [(abs(hi[a] - lo[a]) + 1 + 2 * margin) * scale for a in rows]
        ks = None
    elif prompt.type == "points" and prompt.coords == "kji":
        ks = sorted({int(round(p[axis])) for p, lab in zip(prompt.points, prompt.labels) if lab == 1})
        first, last = (ks[0], ks[-1]) if ks else (0, -1)
    elif prompt.type == "slice_box":
        first = last = int(prompt.slice)
        ks = None
    else:
        first, last, ks = 0, shape[axis] - 1, None  # a label map (or RAS) prompt: at most every slice
    if request.slice_range:
        first, last = max(first, request.slice_range[0]), min(last, request.slice_range[1])
    count = len([k for k in ks if first <= k <= last]) if ks is not None else max(0, last - first + 1)
    return count, roi_extent


def estimate(request, shape: Sequence[int], geometry, calibration: Optional[Dict[str, float]] = None,
             device_label: Optional[str] = None) -> Dict[str, Any]:
    """Encoder/decoder passes and seconds of a :class:`~xaiseg.request.RunRequest` on a volume of
    ``shape`` (k, j, i).  The text names ``device_label`` (e.g. "cuda (NVIDIA H200)"), else the
    request's device; resolve ``auto`` before (:meth:`XAISegLogic.resolveDevice`)."""
    from xaiseg.volume import slicing_axis

    cal = dict(DEFAULT_SECONDS, **(calibration or {}))
    axis = slicing_axis(geometry, request.axis)
    seg_slices, roi_extent = _segmented_slices(request, shape, axis)
    encoder = decoder = seg_slices
    per_method: Dict[str, int] = {}
    if request.explain:
        n_explained = len(request.explain.slices) if request.explain.slices else seg_slices
        explainers = [m.explainer() for m in request.explain.methods]
        for m, ex in zip(request.explain.methods, explainers):
            n = ex.total_cost(roi_extent, MODEL_GRID) * n_explained
            per_method[m.name] = n
            encoder += n
            decoder += n + n_explained
        shared = max(ex.shared_cost() for ex in explainers) * n_explained  # noise, trivial maps: once per slice
        if shared:
            per_method["shared"] = shared
            encoder += shared
            decoder += shared
    seconds = cal["seconds_load"] + encoder * cal["seconds_encoder"] + decoder * cal["seconds_decoder"]
    device = request.segmenter.device
    text = (f"{seg_slices} slice(s) to segment; {encoder} encoder and {decoder} decoder passes; "
            f"about {seconds / 60:.1f} min on {device_label or device}")
    if per_method:
        text += " (" + ", ".join(f"{k}: {v} evaluations" for k, v in per_method.items()) + ")"
    return {"slices": seg_slices, "encoder_passes": encoder, "decoder_passes": decoder, "per_method": per_method,
            "seconds": seconds, "minutes": seconds / 60.0, "calibrated": calibration is not None, "device": device,
            "text": text}
