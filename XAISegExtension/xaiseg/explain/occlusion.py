"""ROI-guided occlusion sensitivity (seed 001): square patches slide over the slice; only patches
that overlap the ROI are evaluated (each removed whole), and a patch's score is the drop of the
explained score when it is removed.  Patch and stride are measured on the model's input grid (64 / 32
on LiteMedSAM's 256)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from ..settings import setting
from .base import Attribution, CommonSettings, Explainer, PerturbationEngine
from .registry import register


def positions(length: int, patch: int, stride: int) -> List[int]:
    """Patch starts along one axis, covering it to the end (a last patch is added at the border)."""
    if patch >= length:
        return [0]
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)
    return starts


@dataclass(frozen=True)
class OcclusionSettings(CommonSettings):
    patch: int = setting(64, "occlusion patch, on the model grid (or the slice, see --occlusion-grid)", minimum=1,
                         flag="--patch")
    stride: int = setting(32, "occlusion stride, on the same grid as the patch", minimum=1, flag="--stride")
    grid: str = setting("model", "what patch and stride are measured on: the model's input grid or the slice's "
                                 "pixels", choices=("model", "image"), flag="--occlusion-grid")


@register
class Occlusion(Explainer):
    """patch, stride: pixels on the model grid (``grid="model"``) or on the slice (``grid="image"``)."""

    name = "occlusion"
    title = "Occlusion"
    limits = ("occlusion shows which patches change the mask when they are blanked out; its resolution is the "
              "patch size and it misses evidence spread over several patches")
    Settings = OcclusionSettings

    def pixel_sizes(self, shape: Tuple[int, int]) -> Tuple[int, int]:
        """Patch and stride in slice pixels."""
        grid = getattr(self.segmenter, "model_grid", None)
        f = max(shape) / float(grid) if self.grid == "model" and grid else 1.0
        return max(1, int(round(self.patch * f))), max(1, int(round(self.stride * f)))

    def patches(self, shape: Tuple[int, int]) -> List[Tuple[int, int, int]]:
        p, s = self.pixel_sizes(shape)
        return [(y, x, p) for y in positions(shape[0], p, s) for x in positions(shape[1], p, s)]

    def cost(self, roi_extent: Optional[Tuple[float, float]] = None, grid: int = 256) -> int:
        per_axis = len(positions(grid, self.patch, self.stride))
        if roi_extent is None:
            return per_axis * per_axis
        counts = [min(per_axis, int(math.ceil((e + self.patch - 1) / self.stride))) for e in roi_extent]
        return max(1, counts[0] * counts[1])

    def attribute(self, engine: PerturbationEngine) -> Attribution:
        shape = engine.image.shape
        every = self.patches(shape)
        chosen = [(y, x, p) for (y, x, p) in every if engine.roi[y:y + p, x:x + p].any()]
        keeps = []
        for y, x, p in chosen:
            k = np.ones(shape, np.float32)
            k[y:y + p, x:x + p] = 0.0
            keeps.append(k)
        # the ROI chooses the patches; each chosen patch is removed whole (seed 001), so inside the
        # ROI this map equals full-image occlusion at a fraction of the cost
        drops = engine.baseline - engine.scores(keeps, restrict=False)
        total = np.zeros(shape, np.float64)
        count = np.zeros(shape, np.float64)
        for (y, x, p), d in zip(chosen, drops):
            total[y:y + p, x:x + p] += d
            count[y:y + p, x:x + p] += 1
        raw = np.divide(total, count, out=np.zeros(shape), where=count > 0)
        p, s = self.pixel_sizes(shape)
        return Attribution(raw, {"patches_evaluated": len(chosen), "patches_full": len(every), "patch_px": p,
                                 "stride_px": s, "roi_ratio": len(chosen) / len(every)})
