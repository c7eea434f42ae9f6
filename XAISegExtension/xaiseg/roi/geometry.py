"""Geometry of ROIs on a slice: boxes, the prompt's box, dilation, connected components."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..models.base import SlicePrompt


def box_roi(shape: Tuple[int, int], box: Tuple[float, float, float, float], margin: int = 0) -> np.ndarray:
    """Boolean (H, W) mask of the inclusive box ``(x0, y0, x1, y1)`` grown by ``margin`` pixels."""
    h, w = shape
    x0, y0, x1, y1 = box
    out = np.zeros(shape, bool)
    out[max(0, int(np.floor(y0)) - margin):min(h, int(np.ceil(y1)) + margin + 1),
        max(0, int(np.floor(x0)) - margin):min(w, int(np.ceil(x1)) + margin + 1)] = True
    return out


def grid_box(grid: Tuple[int, int], box, image_shape: Tuple[int, int]) -> np.ndarray:
    """``box`` (slice pixels) as a boolean mask on a coarser ``grid`` covering the same slice."""
    gh, gw = grid
    ih, iw = image_shape
    return box_roi((gh, gw), (box[0] * gw / iw, box[1] * gh / ih, box[2] * gw / iw, box[3] * gh / ih))


def prompt_box(prompt: SlicePrompt, mask: Optional[np.ndarray] = None) -> Optional[Tuple[float, float, float, float]]:
    """The prompt's box, else the box of ``mask``, else the box around the positive points."""
    if prompt.box is not None:
        return tuple(prompt.box)  # type: ignore[return-value]
    if mask is not None and mask.any():
        ys, xs = np.nonzero(mask)
        return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())
    pts = [p for p, lab in zip(prompt.points or (), prompt.labels or ()) if lab == 1]
    if not pts:
        return None
    xs, ys = zip(*pts)
    return min(xs), min(ys), max(xs), max(ys)


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``mask`` grown by ``pixels`` (square structuring element)."""
    if pixels <= 0:
        return np.asarray(mask, bool)
    import cv2

    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    return cv2.dilate(np.asarray(mask, np.uint8), kernel) > 0


def components_touching(mask: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Connected components (8-connected) of ``mask`` that overlap ``seed``."""
    import cv2

    n, labels = cv2.connectedComponents(np.asarray(mask, np.uint8), connectivity=8)
    keep = np.unique(labels[np.asarray(seed, bool) & np.asarray(mask, bool)])
    keep = keep[keep > 0]
    return np.isin(labels, keep)
