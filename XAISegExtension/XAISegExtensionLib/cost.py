"""Cost estimate shown before Apply: how many model evaluations a run needs and how long they take.

The encoder dominates (DESIGN.md: about 1.5 s per pass for LiteMedSAM on two CPU cores, 65 ms
per decoder pass), so the estimate counts encoder passes: one per segmented slice, plus one per
perturbed image of every explained slice.  Seconds come from a calibration on this machine
(:meth:`XAISegLogic.calibrate`) when available, else from those reference figures.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence

DEFAULT_SECONDS = {"seconds_encoder": 1.5, "seconds_decoder": 0.065, "seconds_load": 3.0}
MODEL_GRID = 256


def _positions(length: int, patch: int, stride: int) -> int:
    if patch >= length:
        return 1
    n = len(range(0, length - patch + 1, stride))
    return n + (0 if (n - 1) * stride == length - patch else 1)


def method_evaluations(name: str, settings: Dict[str, Any], roi_extent=None) -> int:
    """Perturbed images one slice needs for ``name`` with ``settings`` (each is one encoder pass),
    including the deletion/insertion curves (``metric_steps`` points each) and the Dice drop.
    roi_extent: (rows, columns) of the ROI on the model's 256 grid, when known (occlusion only
    evaluates patches that overlap it)."""
    s = settings or {}
    if name == "layers":  # one hooked encoder pass; faithfulness curves only when asked for
        steps = int(s.get("metric_steps", 0))
        return (2 if s.get("sanity") else 1) + (2 * steps if steps else 0)
    steps = int(s.get("metric_steps", 8))
    metrics = 2 * steps if steps else 1
    if name == "occlusion":
        patch, stride = int(s.get("patch", 64)), int(s.get("stride", 32))
        per_axis = _positions(MODEL_GRID, patch, stride)
        counts = [per_axis, per_axis]
        if roi_extent is not None:
            counts = [min(per_axis, int(math.ceil((e + patch - 1) / stride))) for e in roi_extent]
        n = max(1, counts[0] * counts[1])
    elif name == "rise":
        n = int(s.get("n_masks", 2000))
    elif name == "lime":
        n = int(s.get("n_samples", 300))
    elif name == "shap":
        n = int(s.get("budget", 256))
    else:
        n = int(s.get("n_evaluations", 100))
    if s.get("sanity"):
        n *= 2
    return n + metrics


def estimate(request: Dict[str, Any], shape: Sequence[int], geometry, calibration: Optional[Dict[str, float]] = None
             ) -> Dict[str, Any]:
    """Encoder/decoder passes and seconds of a worker request on a volume of ``shape`` (k, j, i)."""
    from xaiseg.volume import slicing_axis

    cal = dict(DEFAULT_SECONDS, **(calibration or {}))
    axis = slicing_axis(geometry, request.get("axis", "axial"))
    prompt = request["prompt"]
    if prompt["type"] == "box":
        first, last = prompt["lo_kji"][axis], prompt["hi_kji"][axis]
        rows = [a for a in range(3) if a != axis]
        scale = MODEL_GRID / float(max(shape[a] for a in rows))
        margin = int((request.get("explain") or {}).get("roi", {}).get("margin", 8))
        roi_extent = [(prompt["hi_kji"][a] - prompt["lo_kji"][a] + 1 + 2 * margin) * scale for a in rows]
    elif prompt["type"] == "points":
        ks = sorted({int(round(p[axis])) for p, lab in zip(prompt["points_kji"], prompt["labels"]) if lab == 1})
        first, last = (ks[0], ks[-1]) if ks else (0, -1)
        roi_extent = None
    else:
        first, last = 0, shape[axis] - 1  # a label map prompt: at most every slice
        roi_extent = None
    sr = request.get("slice_range")
    if sr:
        first, last = max(first, sr[0]), min(last, sr[1])
    if prompt["type"] == "points":
        seg_slices = len([k for k in ks if first <= k <= last])
    else:
        seg_slices = max(0, last - first + 1)
    encoder = seg_slices
    decoder = seg_slices
    per_method = {}
    explain = request.get("explain")
    if explain:
        n_explained = len(explain["slices"]) if explain.get("slices") else seg_slices
        for m in explain["methods"]:
            n = method_evaluations(m["name"], m.get("settings") or {}, roi_extent) * n_explained
            per_method[m["name"]] = n
            encoder += n
            decoder += n + n_explained
    seconds = cal["seconds_load"] + encoder * cal["seconds_encoder"] + decoder * cal["seconds_decoder"]
    text = (f"{seg_slices} slice(s) to segment; {encoder} encoder and {decoder} decoder passes; "
            f"about {seconds / 60:.1f} min")
    if per_method:
        text += " (" + ", ".join(f"{k}: {v} evaluations" for k, v in per_method.items()) + ")"
    return {"slices": seg_slices, "encoder_passes": encoder, "decoder_passes": decoder, "per_method": per_method,
            "seconds": seconds, "minutes": seconds / 60.0, "calibrated": calibration is not None, "text": text}
