"""ROIs that need no extra weights: the prompt box with a margin, an existing mask dilated, and
MedSAM's own embedding (seed 002, stage 1: similarity of every feature to the structure's
prototype, the mean feature inside the prompt box)."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..errors import InputError
from ..metrics import normalise01
from ..models.base import Embedding, SlicePrompt


def box_roi(shape: Tuple[int, int], box: Tuple[float, float, float, float], margin: int = 0) -> np.ndarray:
    """Boolean (H, W) mask of the inclusive box ``(x0, y0, x1, y1)`` grown by ``margin`` pixels."""
    h, w = shape
    x0, y0, x1, y1 = box
    out = np.zeros(shape, bool)
    out[max(0, int(np.floor(y0)) - margin):min(h, int(np.ceil(y1)) + margin + 1),
        max(0, int(np.floor(x0)) - margin):min(w, int(np.ceil(x1)) + margin + 1)] = True
    return out


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


def feature_grid(embedding: Embedding) -> np.ndarray:
    """The encoder features as a (C, h, w) float array covering the resized (unpadded) slice."""
    f = embedding.features
    if hasattr(f, "detach"):
        f = f.detach().float().cpu().numpy()
    f = np.asarray(f, dtype=np.float32)
    if f.ndim == 4:
        f = f[0]
    if f.ndim == 2:
        f = f[None]
    if f.ndim != 3:
        raise InputError(f"encoder features of shape {f.shape} are not a (C, h, w) grid")
    fh, fw = slice_extent(f.shape[1:], embedding)
    return f[:, :fh, :fw]


def slice_extent(grid: Tuple[int, int], embedding: Embedding) -> Tuple[int, int]:
    """Rows and columns of a feature grid of shape ``grid`` that hold the slice.

    A model that pads the resized slice to a square (LiteMedSAM) has features for the padding
    too; they are cut off here.  Models that stretch the slice (MedSAM) or take it as it is cover
    the whole grid.
    """
    gh, gw = int(grid[0]), int(grid[1])
    rh, rw = embedding.resized_shape
    ih, iw = embedding.image_shape
    if (rh, rw) == (ih, iw) or gh == ih or rh == rw:
        return gh, gw
    side = max(rh, rw)
    return (int(round(gh * rh / side)) or 1), (int(round(gw * rw / side)) or 1)


def to_image(grid_map: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a (h, w) map to the slice's (H, W)."""
    import cv2

    return cv2.resize(np.asarray(grid_map, np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def prototype_similarity(embedding: Embedding, box: Tuple[float, float, float, float]) -> np.ndarray:
    """Cosine similarity of each feature to the mean feature inside ``box`` (slice pixels), on the slice grid."""
    f = feature_grid(embedding)
    ih, iw = embedding.image_shape
    c, fh, fw = f.shape
    inside = box_roi((fh, fw), (box[0] * fw / iw, box[1] * fh / ih, box[2] * fw / iw, box[3] * fh / ih))
    proto = f[:, inside].mean(axis=1)
    flat = f.reshape(c, -1)
    sim = (proto @ flat) / (np.linalg.norm(proto) * np.linalg.norm(flat, axis=0) + 1e-8)
    return to_image(sim.reshape(fh, fw), (ih, iw))


def components_touching(mask: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Connected components (8-connected) of ``mask`` that overlap ``seed``."""
    import cv2

    n, labels = cv2.connectedComponents(np.asarray(mask, np.uint8), connectivity=8)
    keep = np.unique(labels[np.asarray(seed, bool) & np.asarray(mask, bool)])
    keep = keep[keep > 0]
    return np.isin(labels, keep)


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
    sim = prototype_similarity(embedding, box)
    if sigma > 0:
        sim = cv2.GaussianBlur(sim, (0, 0), sigmaX=float(sigma))
    boxed = box_roi(shape, box)
    side = max(box[2] - box[0], box[3] - box[1]) + 1
    window = box_roi(shape, box, int(round(reach * side)))
    similar = (normalise01(sim, window) >= threshold) & window
    return components_touching(similar, boxed) | boxed
