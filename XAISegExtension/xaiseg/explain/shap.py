"""SHAP values of ROI superpixels (the same superpixels as LIME) through the shap package.

``algorithm="kernel"`` (default) runs shap's KernelExplainer with the all-removed pattern as the
background and ``budget`` model evaluations; with ``budget >= 2**M - 2`` for M superpixels it
enumerates every coalition and its values are the exact Shapley values (:func:`exact_shapley`
computes them by the formula, for checking).  ``algorithm="permutation"`` runs shap's
PermutationExplainer with ``budget`` evaluations.  The values sum to score(all) - score(none).
"""
from __future__ import annotations

import itertools
from math import factorial
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import numpy as np

from ..errors import InputError
from ..requirements import SHAP as SHAP_PACKAGE
from ..requirements import SKIMAGE
from ..settings import setting
from .base import Attribution, Explainer, PerturbationEngine
from .registry import register
from .shap_import import import_shap
from .superpixels import SuperpixelSettings, keep_from_segments, paint


def exact_shapley(value: Callable[[np.ndarray], np.ndarray], m: int) -> np.ndarray:
    """Shapley values of an ``m``-player game by enumerating all 2**m coalitions.

    ``value`` maps a (n, m) 0/1 array of coalitions to their n values.
    """
    if m > 16:
        raise InputError(f"exact Shapley values of {m} players need 2**{m} evaluations; expected at most 16")
    coalitions = np.array(list(itertools.product((0, 1), repeat=m)), dtype=np.float64)
    v = dict(zip((tuple(c.astype(int)) for c in coalitions), value(coalitions)))
    phi = np.zeros(m)
    for c, vc in v.items():
        size = sum(c)
        for i in range(m):
            if c[i]:
                continue
            with_i = c[:i] + (1,) + c[i + 1:]
            phi[i] += factorial(size) * factorial(m - size - 1) / factorial(m) * (v[with_i] - vc)
    return phi


@dataclass(frozen=True)
class ShapSettings(SuperpixelSettings):
    budget: int = setting(256, "SHAP: model evaluations", minimum=4, flag="--shap-budget")
    algorithm: str = setting("kernel", "SHAP: shap's kernel or permutation explainer",
                             choices=("kernel", "permutation"), flag="--shap-algorithm")


@register
class SHAP(Explainer):
    name = "shap"
    title = "SHAP"
    limits = ("SHAP (Kernel SHAP over superpixels) estimates each region's share of the score from a sample of "
              "coalitions; the estimate has sampling error and assumes regions act additively")
    requirements = (SHAP_PACKAGE, SKIMAGE)
    Settings = ShapSettings

    def cost(self, roi_extent: Optional[Tuple[float, float]] = None, grid: int = 256) -> int:
        return self.budget

    def attribute(self, engine: PerturbationEngine) -> Attribution:
        shap = import_shap()
        segments = self.config.segments(engine.image, engine.roi)
        m = len(segments)

        def value(z: np.ndarray) -> np.ndarray:
            return engine.scores((keep_from_segments(segments, row) for row in np.asarray(z)), total=0)

        engine.progress.stage(engine.stage, min(self.budget, 2 ** m) + 2)
        state = np.random.get_state()
        np.random.seed(self.seed)
        try:
            background = np.zeros((1, m))
            if self.algorithm == "kernel":
                explainer = shap.KernelExplainer(value, background)
                values = explainer.shap_values(np.ones((1, m)), nsamples=self.budget, silent=True, l1_reg=False)
                values = np.asarray(values, dtype=np.float64).reshape(-1)[:m]
            else:
                explainer = shap.PermutationExplainer(value, background, seed=self.seed)
                values = np.asarray(explainer(np.ones((1, m)), max_evals=max(self.budget, 2 * m + 1),
                                              silent=True).values, dtype=np.float64).reshape(-1)[:m]
        finally:
            np.random.set_state(state)
        engine.progress.done()
        return Attribution(paint(segments, values), {"superpixels": m,
                                                     "shap_version": getattr(shap, "__version__", "?")})
