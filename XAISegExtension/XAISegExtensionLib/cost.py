"""Cost estimate shown before Apply: the panel's adapter to :mod:`xaiseg.cost` (the engine's estimate,
which the command line prints too).  What it adds needs only the volume node's shape, not its
voxels: the slices the prompt segments and the ROI's extent on the model grid.  Seconds come from a
calibration on this machine (:meth:`XAISegLogic.calibrate`) when available, else from the engine's
reference figures.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

from xaiseg.cost import DEFAULT_SECONDS, MODEL_GRID  # noqa: F401  (the panel's reference figures)


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
    ``shape`` (k, j, i): the slices and ROI extent from the request's prompt on that shape, the rest
    from :func:`xaiseg.cost.estimate_counts`.  The text names ``device_label`` (e.g. "cuda (NVIDIA
    H200)"), else the request's device; resolve ``auto`` before (:meth:`XAISegLogic.resolveDevice`)."""
    from xaiseg.cost import estimate_counts
    from xaiseg.preflight import expected_bytes
    from xaiseg.volume import slicing_axis

    axis = slicing_axis(geometry, request.axis)
    seg_slices, roi_extent = _segmented_slices(request, shape, axis)
    explained = 0
    if request.explain:
        explained = len(request.explain.slices) if request.explain.slices else seg_slices
    written = expected_bytes(request, shape, axis, range(seg_slices))
    return estimate_counts(request, seg_slices, [roi_extent] * explained, calibration, device_label, written)
