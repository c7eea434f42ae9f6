"""Where perturbations may act: the region of interest (ROI) of one slice.

``RoiConfig.source``: ``embedding`` (default; MedSAM prototype similarity, no extra weights; its
similarity window already adds context, so its margin defaults to 0),
``box`` (prompt box + margin), ``mask`` (the unperturbed mask, or a given one, dilated by margin),
``clip`` (CLIP patch-text similarity; needs weights).  An empty ROI falls back to the box with
margin, and the result says so (seed 001's error table).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

import numpy as np

from ..errors import InputError
from ..models.base import Embedding, SlicePrompt
from .embedding import embedding_roi
from .geometry import box_roi, dilate, prompt_box

SOURCES = ("embedding", "box", "mask", "clip")
DEFAULT_MARGIN = {"embedding": 0, "box": 8, "mask": 8, "clip": 0}


@dataclass(frozen=True)
class RoiConfig:
    source: str = "embedding"
    margin: Optional[int] = None  # pixels; None: 0 for embedding and clip, 8 for box and mask
    threshold: float = 0.5
    sigma: float = 2.0
    clip_model: Optional[str] = None
    clip_prompts: Tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise InputError(f"ROI source {self.source!r} is unknown; expected one of {', '.join(SOURCES)}")
        if self.margin is None:
            object.__setattr__(self, "margin", DEFAULT_MARGIN[self.source])
        if int(self.margin) < 0:
            raise InputError(f"ROI margin {self.margin} must be 0 or more pixels")
        if not 0.0 < float(self.threshold) < 1.0:
            raise InputError(f"ROI threshold {self.threshold} must lie strictly between 0 and 1")

    def record(self) -> dict:
        out = {"source": self.source, "margin": self.margin, "threshold": self.threshold, "sigma": self.sigma}
        if self.source == "clip":
            out.update(clip_model=self.clip_model, clip_prompts=list(self.clip_prompts))
        return out


class RoiFinder:
    """Finds the ROI of slices for one configuration (the CLIP model is loaded once)."""

    def __init__(self, config: RoiConfig) -> None:
        self.config = config
        self.clip = None
        if config.source == "clip":
            from .clip import ClipRoi

            self.clip = ClipRoi(config.clip_model, config.clip_prompts, config.sigma, config.threshold)

    def find(self, image01: np.ndarray, prompt: SlicePrompt, mask: np.ndarray, embedding: Optional[Embedding] = None,
             given: Optional[np.ndarray] = None) -> Tuple[np.ndarray, str]:
        """ROI of one slice and the source actually used (``"box (fallback: empty <source> ROI)"``
        when it fell back).  mask: the unperturbed mask; given: a user mask for ``source="mask"``."""
        c = self.config
        shape = image01.shape
        box = prompt_box(prompt, mask)
        if c.source == "box":
            roi = box_roi(shape, box, c.margin) if box is not None else np.zeros(shape, bool)
        elif c.source == "mask":
            base = mask if given is None else np.asarray(given, bool)
            roi = dilate(base, c.margin)
        elif c.source == "clip":
            roi = self.clip.roi(image01)
        else:
            if embedding is None:
                raise InputError("the embedding ROI needs the slice's encoder embedding")
            roi = embedding_roi(embedding, box, c.threshold, c.sigma) if box is not None else np.zeros(shape, bool)
            roi = dilate(roi, c.margin)
        if roi.any():
            return roi, c.source
        if box is None:
            raise InputError("the ROI is empty and the prompt has no box or mask to fall back to")
        return box_roi(shape, box, c.margin), f"box (fallback: empty {c.source} ROI)"


__all__ = ["RoiConfig", "RoiFinder", "SOURCES", "box_roi", "dilate", "embedding_roi"]
