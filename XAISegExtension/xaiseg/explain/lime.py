"""LIME over ROI superpixels (seed 001): Felzenszwalb superpixels (scale 100, sigma 0.5, min size 50)
with at least 10 % of their area in the ROI; ``n_samples`` random on/off patterns (the first keeps
everything); a Ridge surrogate weighted by an exponential kernel on the cosine distance to the
unperturbed pattern (width 0.25, as LIME's image explainer).  The surrogate's weighted R^2 is
reported: a low R^2 means the linear story does not describe the model here."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from ..errors import InputError
from ..requirements import SKIMAGE, SKLEARN
from ..settings import setting
from .base import Attribution, Explainer, PerturbationEngine
from .registry import register
from .superpixels import SuperpixelSettings, keep_from_segments, paint


@dataclass(frozen=True)
class LimeSettings(SuperpixelSettings):
    n_samples: int = setting(300, "LIME: perturbation samples", minimum=2, flag="--samples")
    kernel_width: float = setting(0.25, "LIME: width of the exponential kernel on the cosine distance", cli=False)
    alpha: float = setting(1.0, "LIME: Ridge regularisation", minimum=0.0, cli=False)

    def check(self) -> None:
        if self.kernel_width <= 0:
            raise InputError(f"LIME kernel width {self.kernel_width} must be positive")


@register
class LIME(Explainer):
    name = "lime"
    title = "LIME"
    limits = ("LIME fits a linear model over superpixels; the map follows the superpixel borders, not the anatomy, "
              "and can change with the segmentation of superpixels")
    requirements = (SKIMAGE, SKLEARN)
    Settings = LimeSettings

    def cost(self, roi_extent: Optional[Tuple[float, float]] = None, grid: int = 256) -> int:
        return self.n_samples

    def attribute(self, engine: PerturbationEngine) -> Attribution:
        SKLEARN.load()
        linear = importlib.import_module("sklearn.linear_model")
        segments = self.config.segments(engine.image, engine.roi)
        m = len(segments)
        rng = np.random.default_rng(self.seed)
        z = (rng.random((self.n_samples, m)) < 0.5).astype(np.float64)
        z[0] = 1.0
        scores = engine.scores(keep_from_segments(segments, row) for row in z)
        on = z.sum(axis=1)
        cosine = np.divide(on, np.sqrt(np.maximum(on, 1e-12) * m), out=np.zeros_like(on), where=on > 0)
        weights = np.sqrt(np.exp(-((1.0 - cosine) ** 2) / self.kernel_width ** 2))
        ridge = linear.Ridge(alpha=self.alpha, random_state=self.seed)
        ridge.fit(z, scores, sample_weight=weights)
        r2 = float(ridge.score(z, scores, sample_weight=weights)) if np.ptp(scores) > 0 else 0.0
        return Attribution(paint(segments, ridge.coef_), {"superpixels": m, "r2": r2,
                                                          "intercept": float(ridge.intercept_)})
