"""Metrics of masks and saliency maps, shared by the explainers, the layer maps and the benchmarks.

Mask overlap: :func:`dice`, :func:`iou`.  Saliency against a ground truth: :func:`pointing_game`,
:func:`energy_inside`, :func:`thresholded_iou`.  Map against map: :func:`spearman`.  Faithfulness
(deletion and insertion curves) needs the model and lives in :func:`xaiseg.explain.base.faithfulness`,
which uses :func:`curve_auc` from here.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .errors import InputError


def _pair(a: np.ndarray, b: np.ndarray, what: str):
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise InputError(f"{what}: shapes {a.shape} and {b.shape} differ; expected the same shape")
    return a, b


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks; two empty masks agree perfectly (1.0)."""
    a, b = _pair(a, b, "dice")
    a, b = a.astype(bool), b.astype(bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks; two empty masks give 1.0."""
    a, b = _pair(a, b, "iou")
    a, b = a.astype(bool), b.astype(bool)
    union = int(np.logical_or(a, b).sum())
    return 1.0 if union == 0 else int(np.logical_and(a, b).sum()) / union


def normalise01(saliency: np.ndarray, where: Optional[np.ndarray] = None) -> np.ndarray:
    """Min-max to [0, 1] (over ``where`` when given; 0 elsewhere); a flat map becomes all zeros."""
    s = np.asarray(saliency, dtype=np.float32)
    region = np.ones(s.shape, bool) if where is None else np.asarray(where, bool)
    out = np.zeros(s.shape, np.float32)
    if not region.any():
        return out
    lo, hi = float(s[region].min()), float(s[region].max())
    if hi - lo <= 1e-12:
        return out
    out[region] = (s[region] - lo) / (hi - lo)
    return out


def peak(saliency: np.ndarray) -> tuple:
    """Index of the maximum; on a plateau (patch-based maps), the maximal pixel nearest the
    plateau's centroid, so ties do not favour the top-left corner."""
    s = np.asarray(saliency)
    top = np.argwhere(s == s.max())
    if len(top) == 1:
        return tuple(int(v) for v in top[0])
    d = ((top - top.mean(axis=0)) ** 2).sum(axis=1)
    return tuple(int(v) for v in top[int(np.argmin(d))])


def pointing_game(saliency: np.ndarray, target: np.ndarray) -> bool:
    """Whether the saliency maximum lies inside ``target``."""
    saliency, target = _pair(saliency, target, "pointing game")
    return bool(np.asarray(target, bool)[peak(saliency)])


def energy_inside(saliency: np.ndarray, target: np.ndarray) -> float:
    """Share of the positive saliency mass that lies inside ``target`` (0 when there is none)."""
    saliency, target = _pair(saliency, target, "energy inside")
    pos = np.clip(np.asarray(saliency, dtype=np.float64), 0, None)
    total = pos.sum()
    return 0.0 if total <= 0 else float(pos[np.asarray(target, bool)].sum() / total)


def top_region(saliency: np.ndarray, size: int) -> np.ndarray:
    """Boolean mask of the ``size`` highest-saliency pixels (ties broken by position)."""
    flat = np.asarray(saliency, dtype=np.float64).ravel()
    out = np.zeros(flat.shape, bool)
    if size > 0:
        out[np.argsort(-flat, kind="stable")[:size]] = True
    return out.reshape(np.shape(saliency))


def thresholded_iou(saliency: np.ndarray, target: np.ndarray, threshold: Optional[float] = None) -> float:
    """IoU of the thresholded map with ``target``.

    With ``threshold`` None the map is cut at the target's size (its top-|target| pixels), which
    compares localisation independently of the map's scale; otherwise at that value of the map.
    """
    saliency, target = _pair(saliency, target, "thresholded IoU")
    target = np.asarray(target, bool)
    region = top_region(saliency, int(target.sum())) if threshold is None else saliency >= threshold
    return iou(region, target)


def _correlated(a: np.ndarray, b: np.ndarray, where: Optional[np.ndarray], what: str, ranks: bool) -> float:
    a, b = _pair(a, b, what)
    if where is not None:
        a, b = a[np.asarray(where, bool)], b[np.asarray(where, bool)]
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    if ranks:
        from scipy.stats import rankdata

        a, b = rankdata(a), rankdata(b)
    return float(np.corrcoef(a, b)[0, 1])


def spearman(a: np.ndarray, b: np.ndarray, where: Optional[np.ndarray] = None) -> float:
    """Spearman rank correlation of two maps (over ``where`` when given); 0 when either is flat."""
    return _correlated(a, b, where, "spearman", ranks=True)


def pearson(a: np.ndarray, b: np.ndarray, where: Optional[np.ndarray] = None) -> float:
    """Pearson correlation of two maps (over ``where`` when given); 0 when either is flat."""
    return _correlated(a, b, where, "pearson", ranks=False)


def mean_of(values) -> Optional[float]:
    """The mean of the values that are not None (a figure a slice or structure may lack), or None
    when none is left: what the benchmarks' summary rows report."""
    kept = [float(v) for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def curve_auc(fractions: Sequence[float], scores: Sequence[float]) -> float:
    """Area under a deletion or insertion curve (trapezoids over the fractions in [0, 1])."""
    x = np.asarray(fractions, dtype=np.float64)
    y = np.asarray(scores, dtype=np.float64)
    if x.size < 2:
        raise InputError(f"a curve needs at least two points, got {x.size}")
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))
