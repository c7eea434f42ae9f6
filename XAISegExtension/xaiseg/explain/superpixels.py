"""Superpixels of the ROI, shared by LIME and SHAP: which regions are switched on and off."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import numpy as np

from ..requirements import SKIMAGE
from ..settings import setting
from .base import CommonSettings


@dataclass(frozen=True)
class SuperpixelSettings(CommonSettings):
    """The superpixels of seed 001 (Felzenszwalb 100 / 0.5 / 50, >= 10 % inside the ROI)."""

    scale: float = setting(100.0, "superpixels: Felzenszwalb scale", cli=False)
    sigma: float = setting(0.5, "superpixels: Felzenszwalb sigma", cli=False)
    min_size: int = setting(50, "superpixels: Felzenszwalb minimum size", minimum=1, cli=False)
    min_overlap: float = setting(0.1, "superpixels: least share of a superpixel inside the ROI", cli=False)

    def segments(self, image: np.ndarray, roi: np.ndarray) -> List[np.ndarray]:
        return superpixels(image, roi, self.scale, self.sigma, self.min_size, self.min_overlap)


def superpixels(image: np.ndarray, roi: np.ndarray, scale: float = 100.0, sigma: float = 0.5,
                min_size: int = 50, min_overlap: float = 0.1) -> List[np.ndarray]:
    """Felzenszwalb superpixels of ``image`` that have at least ``min_overlap`` of their area in
    the ROI (seed 001: scale 100, sigma 0.5, min size 50; 10 % overlap), as boolean masks.

    When none reaches the overlap, every superpixel that touches the ROI is used.
    """
    import importlib

    SKIMAGE.load()
    segmentation = importlib.import_module("skimage.segmentation")
    labels = segmentation.felzenszwalb(np.asarray(image, dtype=np.float64), scale=float(scale),
                                       sigma=float(sigma), min_size=int(min_size), channel_axis=None)
    roi = np.asarray(roi, bool)
    ids, area = np.unique(labels, return_counts=True)
    inside = np.bincount(labels[roi].ravel(), minlength=int(ids.max()) + 1)[ids]
    chosen = ids[inside / area >= float(min_overlap)]
    if chosen.size == 0:
        chosen = ids[inside > 0]
    return [labels == i for i in chosen]


def keep_from_segments(segments: Sequence[np.ndarray], on: np.ndarray) -> np.ndarray:
    """Keep map that removes the superpixels whose entry of ``on`` is 0."""
    keep = np.ones(segments[0].shape, np.float32)
    for seg, flag in zip(segments, on):
        if not flag:
            keep[seg] = 0.0
    return keep


def paint(segments: Sequence[np.ndarray], values: Sequence[float]) -> np.ndarray:
    """A map that is ``values[i]`` on superpixel ``i``."""
    out = np.zeros(segments[0].shape, np.float64)
    for seg, v in zip(segments, values):
        out[seg] = v
    return out
