"""Trivial maps that every explanation is measured against, on the same engine and ROI.

A map means something only beside the trivial answer: if deleting the pixels of a blurred copy of
the mask, or of a blob at the box centre, destroys the mask faster than deleting the pixels a
method ranks first, the method has not shown more than where the structure is.

* ``blurred_mask``: the unperturbed mask, Gaussian-blurred (sigma a sixth of the box's shorter side);
* ``box_centre``: a Gaussian at the prompt box's centre (sigma a quarter of the shorter side);
* ``random``: uniform noise (seeded), the floor every map must clear.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

NAMES = ("blurred_mask", "box_centre", "random")


def _short_side(box: Tuple[float, float, float, float]) -> float:
    return float(max(1.0, min(box[2] - box[0] + 1, box[3] - box[1] + 1)))


def blurred_mask(mask: np.ndarray, box) -> np.ndarray:
    import cv2

    sigma = max(1.0, _short_side(box) / 6.0)
    return cv2.GaussianBlur(np.asarray(mask, np.float32), (0, 0), sigmaX=sigma, borderType=cv2.BORDER_CONSTANT)


def box_centre(shape: Tuple[int, int], box) -> np.ndarray:
    sigma = max(1.0, _short_side(box) / 4.0)
    cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2)).astype(np.float32)


def random_map(shape: Tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def trivial_maps(mask: np.ndarray, box, seed: int = 0, roi: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
    """The three trivial maps of one slice (0 outside ``roi`` when given)."""
    shape = tuple(np.asarray(mask).shape)
    maps = {"blurred_mask": blurred_mask(mask, box), "box_centre": box_centre(shape, box),
            "random": random_map(shape, seed)}
    if roi is not None:
        maps = {k: np.where(roi, v, 0.0).astype(np.float32) for k, v in maps.items()}
    return maps
