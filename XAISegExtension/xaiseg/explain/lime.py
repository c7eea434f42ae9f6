"""LIME over ROI superpixels (seed 001): Felzenszwalb superpixels (scale 100, sigma 0.5, min size 50)
with at least 10 % of their area in the ROI; ``n_samples`` random on/off patterns (the first keeps
everything); a Ridge surrogate weighted by an exponential kernel on the cosine distance to the
unperturbed pattern (width 0.25, as LIME's image explainer).  The surrogate's weighted R^2 is
reported: a low R^2 means the linear story does not describe the model here."""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

from ..errors import InputError, require
from .base import Explainer, PerturbationEngine, keep_from_segments, paint, superpixels


class LIME(Explainer):
    name = "lime"

    def __init__(self, segmenter=None, *, n_samples: int = 300, scale: float = 100.0, sigma: float = 0.5,
                 min_size: int = 50, min_overlap: float = 0.1, kernel_width: float = 0.25, alpha: float = 1.0,
                 **common) -> None:
        super().__init__(segmenter, **common)
        if int(n_samples) < 2 or float(kernel_width) <= 0 or float(alpha) < 0:
            raise InputError(f"LIME needs n_samples >= 2, kernel_width > 0, alpha >= 0; got {n_samples}, "
                             f"{kernel_width}, {alpha}")
        self.n_samples, self.scale, self.sigma, self.min_size = int(n_samples), float(scale), float(sigma), int(min_size)
        self.min_overlap, self.kernel_width, self.alpha = float(min_overlap), float(kernel_width), float(alpha)

    def settings(self) -> Dict[str, Any]:
        return dict(super().settings(), n_samples=self.n_samples, scale=self.scale, sigma=self.sigma,
                    min_size=self.min_size, min_overlap=self.min_overlap, kernel_width=self.kernel_width,
                    alpha=self.alpha)

    def attribute(self, engine: PerturbationEngine):
        linear = require("sklearn.linear_model", "explain", "LIME's Ridge surrogate")
        segments = superpixels(engine.image, engine.roi, self.scale, self.sigma, self.min_size, self.min_overlap)
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
        return paint(segments, ridge.coef_), {"superpixels": m, "r2": r2,
                                              "intercept": float(ridge.intercept_)}
