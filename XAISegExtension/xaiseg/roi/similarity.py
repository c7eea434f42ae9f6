"""Similarity of encoder features to reference features (seed 002): the one implementation used
by the embedding ROI and by the layer maps.

A reference is a weighted mean of a feature grid's positions (the prototype: uniform inside the
prompt box); every position's cosine similarity to every reference comes from two matrix products.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from ..models.base import Embedding
from .geometry import grid_box


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


def feature_grid(embedding: Embedding):
    """The encoder's output as an (h, w, C) float tensor over the slice (padding cut off)."""
    import torch

    from ..errors import InputError

    f = embedding.features
    f = f.detach().float() if hasattr(f, "detach") else torch.as_tensor(np.asarray(f, np.float32))
    if f.dim() == 4:
        f = f[0]
    if f.dim() == 2:
        f = f[None]
    if f.dim() != 3:
        raise InputError(f"encoder features of shape {tuple(f.shape)} are not a (C, h, w) grid")
    f = f.permute(1, 2, 0)
    fh, fw = slice_extent(tuple(f.shape[:2]), embedding)
    return f[:fh, :fw]


def resize(t, shape: Tuple[int, int]):
    """Bilinear resize of an (h, w) tensor to ``shape``."""
    import torch.nn.functional as F

    return F.interpolate(t[None, None], size=tuple(int(v) for v in shape), mode="bilinear", align_corners=False)[0, 0]


def similarities(f, rows: Sequence[np.ndarray]):
    """Cosine similarity of every position of the (h, w, C) grid ``f`` to each reference, a
    weighted mean of positions with the (h, w) weights in ``rows``: a (k, h, w) tensor."""
    import torch

    fh, fw = int(f.shape[0]), int(f.shape[1])
    flat = f.reshape(fh * fw, f.shape[2])
    w = torch.as_tensor(np.stack([np.asarray(r, np.float32).reshape(-1) for r in rows]), dtype=flat.dtype,
                        device=flat.device)
    w = w / (w.sum(dim=1, keepdim=True) + 1e-12)
    refs = w @ flat  # (k, C)
    sims = (flat @ refs.T) / (flat.norm(dim=1, keepdim=True) * refs.norm(dim=1) + 1e-8)  # (positions, k)
    return sims.T.reshape(len(rows), fh, fw)


def prototype_similarity(embedding: Embedding, box: Tuple[float, float, float, float]) -> np.ndarray:
    """Cosine similarity of each feature to the mean feature inside ``box`` (slice pixels), on the
    slice grid."""
    f = feature_grid(embedding)
    inside = grid_box(tuple(f.shape[:2]), box, embedding.image_shape)
    sim = similarities(f, [inside])[0]
    return resize(sim, embedding.image_shape).cpu().numpy()


def to_image(grid_map: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a (h, w) NumPy map to the slice's (H, W)."""
    import cv2

    return cv2.resize(np.asarray(grid_map, np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
