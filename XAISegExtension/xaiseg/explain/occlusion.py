"""ROI-guided occlusion sensitivity (seed 001): square patches slide over the slice; only patches
that overlap the ROI are evaluated (each removed whole), and a patch's score is the drop of the
explained score when it is removed.

Patch size: by default sized from the structure - a third of the prompt box's shorter side, stride
half the patch, within ``[MIN_PATCH, 64]`` model-grid pixels - so the map can be finer than the
structure.  ``--patch 64 --stride 32`` gives seed 001's fixed size, measured on the model's input
grid (``grid="model"``, LiteMedSAM's 256) or on the slice's pixels (``grid="image"``)."""
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


MIN_PATCH = 4  # model-grid pixels: the smallest structure-sized patch
STRUCTURE_FRACTION = 1.0 / 3.0  # structure-sized patch: this share of the box's shorter side


@dataclass(frozen=True)
class OcclusionSettings(CommonSettings):
    patch: int = setting(0, "occlusion patch, on the model grid (or the slice, see --occlusion-grid); 0: a third of "
                            "the prompt box's shorter side (64 with --stride 32 is seed 001's fixed size)", minimum=0,
                         flag="--patch")
    stride: int = setting(0, "occlusion stride, on the same grid as the patch; 0: half the patch", minimum=0,
                          flag="--stride")
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

    def grid_sizes(self, short_side: Optional[float], grid: int = 256) -> Tuple[float, float]:
        """Patch and stride on the grid they are measured on; ``short_side``: the prompt box's shorter
        side on that grid (for the structure-sized patch)."""
        patch = float(self.patch)
        if not patch:
            side = short_side if short_side else grid / 4.0
            patch = float(min(64.0, max(MIN_PATCH, round(side * STRUCTURE_FRACTION))))
        stride = float(self.stride) if self.stride else max(1.0, round(patch / 2.0))
        return patch, stride

    def pixel_sizes(self, shape: Tuple[int, int], box=None) -> Tuple[int, int]:
        """Patch and stride in slice pixels (``box``: the prompt box, for the structure-sized patch)."""
        grid = getattr(self.segmenter, "model_grid", None)
        f = max(shape) / float(grid) if self.grid == "model" and grid else 1.0
        short = None if box is None else min(box[2] - box[0] + 1, box[3] - box[1] + 1) / f
        p, s = self.grid_sizes(short, int(grid or max(shape)))
        return max(1, int(round(p * f))), max(1, int(round(s * f)))

    def patches(self, shape: Tuple[int, int], box=None) -> List[Tuple[int, int, int]]:
        p, s = self.pixel_sizes(shape, box)
        return [(y, x, p) for y in positions(shape[0], p, s) for x in positions(shape[1], p, s)]

    def cost(self, roi_extent: Optional[Tuple[float, float]] = None, grid: int = 256) -> int:
        short = min(roi_extent) / 1.5 if roi_extent is not None else None  # the ROI is about the box plus context
        patch, stride = self.grid_sizes(short, grid)
        per_axis = len(positions(grid, int(round(patch)), int(round(stride))))
        if roi_extent is None:
            return per_axis * per_axis
        counts = [min(per_axis, int(math.ceil((e + patch - 1) / stride))) for e in roi_extent]
        return max(1, counts[0] * counts[1])

    def attribute(self, engine: PerturbationEngine) -> Attribution:
        from ..roi.geometry import prompt_box

        shape = engine.image.shape
        box = prompt_box(engine.prompt, engine.reference) if not self.patch else None
        every = self.patches(shape, box)
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
        p, s = self.pixel_sizes(shape, box)
        return Attribution(raw, {"patches_evaluated": len(chosen), "patches_full": len(every), "patch_px": p,
                                 "stride_px": s, "roi_ratio": len(chosen) / len(every)})
