"""Gradient-free explainers of a segmentation mask, all on one perturbation engine (base.py).

``make_explainer(name, segmenter=None, **settings)`` builds one by name; see docs/explain.md.
"""
from __future__ import annotations

from typing import Any, Dict, Type

from ..errors import InputError
from .base import Explainer, Explanation, PerturbationEngine
from .layers import LayerMaps
from .lime import LIME
from .occlusion import Occlusion
from .rise import RISE
from .shap import SHAP

EXPLAINERS: Dict[str, Type[Explainer]] = {"occlusion": Occlusion, "rise": RISE, "lime": LIME, "shap": SHAP,
                                          "layers": LayerMaps}
METHODS = tuple(EXPLAINERS)
#: what ``--method all`` means: the four perturbation methods (layers is asked for by name)
PERTURBATION_METHODS = ("occlusion", "rise", "lime", "shap")


def make_explainer(name: str, segmenter=None, **settings: Any) -> Explainer:
    """The explainer called ``name`` (occlusion, rise, lime, shap, layers) with ``settings``."""
    try:
        cls = EXPLAINERS[name]
    except KeyError:
        raise InputError(f"explanation method {name!r} is unknown; expected one of {', '.join(METHODS)}") from None
    return cls(segmenter, **settings)


__all__ = ["EXPLAINERS", "METHODS", "PERTURBATION_METHODS", "Explainer", "Explanation", "PerturbationEngine", "make_explainer",
           "Occlusion", "RISE", "LIME", "SHAP", "LayerMaps"]
