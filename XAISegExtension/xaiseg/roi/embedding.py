"""The default ROI: the prompt box joined with the tissue near it that MedSAM's encoder sees as
the structure (seed 002, stage 1: similarity of every feature to the structure's prototype, the
mean feature inside the prompt box).  It needs no weights beyond the segmenter's."""
from __future__ import annotations

from typing import Tuple

import numpy as np

from ..metrics import normalise01
from ..models.base import Embedding
from .geometry import box_roi, components_touching
from .similarity import prototype_similarity


def embedding_roi(embedding: Embedding, box: Tuple[float, float, float, float], threshold: float = 0.5,
                  sigma: float = 2.0, reach: float = 0.5) -> np.ndarray:
    """The box joined with the pixels near it that look like the structure to the encoder.

    Near: within ``reach`` times the box's longer side around the box.  Look like: the smoothed
    prototype similarity, min-max normalised over that window, reaches ``threshold``, in regions
    connected to the box.  (Over a whole slice most tissue resembles the prototype somewhat; the
    window keeps the ROI to the structure's neighbourhood, which is what perturbations should probe.)
    """
    import cv2

    shape = tuple(embedding.image_shape)
    sim = prototype_similarity(embedding, box).astype(np.float32)
    if sigma > 0:
        sim = cv2.GaussianBlur(sim, (0, 0), sigmaX=float(sigma))
    boxed = box_roi(shape, box)
    side = max(box[2] - box[0], box[3] - box[1]) + 1
    window = box_roi(shape, box, int(round(reach * side)))
    similar = (normalise01(sim, window) >= threshold) & window
    return components_touching(similar, boxed) | boxed
