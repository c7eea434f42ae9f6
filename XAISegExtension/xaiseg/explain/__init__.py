"""Gradient-free explainers of a segmentation mask, all on one perturbation engine (base.py).

Each method is one module whose :class:`~.base.Explainer` subclass describes it completely and is
registered by name (:mod:`.registry`).  ``make_explainer(name, segmenter=None, **settings)`` builds
one by name; see docs/explain.md and docs/architecture.md.
"""
from __future__ import annotations

from .base import Attribution, CommonSettings, Explainer, Explanation, PerturbationEngine
from .registry import DEFAULT_METHODS, EXPLAINERS, explainer_class, expand, limits_of, make_explainer, methods, register, title_of

# the built-in methods register themselves on import, in this order
from .occlusion import Occlusion  # noqa: E402
from .rise import RISE  # noqa: E402
from .lime import LIME  # noqa: E402
from .shap import SHAP  # noqa: E402
from .layers import LayerMaps  # noqa: E402

__all__ = ["DEFAULT_METHODS", "EXPLAINERS", "Attribution", "CommonSettings", "Explainer", "Explanation", "PerturbationEngine",
           "explainer_class", "expand", "limits_of", "make_explainer", "methods", "register", "title_of",
           "Occlusion", "RISE", "LIME", "SHAP", "LayerMaps"]
