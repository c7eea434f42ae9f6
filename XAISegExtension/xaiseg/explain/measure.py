"""The metrics stage: what every explanation is measured by, after attribution, for every method.

* faithfulness (:func:`faithfulness`): Dice drop of the high-saliency region and deletion /
  insertion AUC over the ROI, through the same perturbation engine (perturbation methods always;
  other methods when ``metric_steps`` asks for curves);
* localisation (:func:`localisation`): pointing game, energy and IoU against a ground truth, or
  against the model's own mask for methods that declare ``localise_against_mask``;
* components (layer maps): the localisation table of every component and the best one;
* sanity (``sanity=True``): Spearman between the map and the map of a copy of the model whose
  ``randomise`` part is re-drawn (Adebayo et al.).
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any, Dict, List, Optional

import numpy as np

from ..errors import InputError
from ..metrics import curve_auc, energy_inside, pointing_game, spearman, thresholded_iou
from ..models.base import randomized_copy


def metric_passes(explainer) -> int:
    """Encoder passes :func:`measure` spends on one slice for ``explainer``'s settings."""
    steps = int(explainer.metric_steps)
    if steps:
        return 2 * steps
    return 1 if explainer.perturbs else 0


def measure(explainer, explanation, engine, progress=None, stage: Optional[str] = None):
    """``explanation`` with its metrics filled in (see the module docs)."""
    stage = stage or explainer.name
    metrics: Dict[str, Any] = {"seconds": round(explanation.seconds, 3), "evaluations": explanation.n_evaluations}
    roi = explanation.roi
    if explainer.metric_steps or explainer.perturbs:
        before = engine.evaluations
        metrics.update(faithfulness(engine, explanation.saliency, explainer.metric_steps, explainer.threshold,
                                    stage=f"{stage} metrics"))
        metrics["metric_evaluations"] = engine.evaluations - before
    details = dict(explanation.details)
    metrics["roi_ratio"] = details.pop("roi_ratio", float(roi.mean()))
    metrics["roi_fraction"] = float(roi.mean())
    against = explanation.target if explanation.target is not None and explanation.target.any() else None
    if against is None and explainer.localise_against_mask:
        against = explanation.reference
        metrics["localised_against"] = "model mask"
    elif against is not None:
        metrics["localised_against"] = "target"
    if explanation.target is not None or explainer.localise_against_mask:
        metrics.update(localisation(explanation.saliency,
                                    against if against is not None else np.zeros(roi.shape, bool)))
    table: List[Dict[str, Any]] = []
    best = None
    if explanation.components:
        metrics[f"{explainer.component_kind}s"] = len(explanation.components)
        truth = against if against is not None else explanation.reference
        table = [dict({explainer.component_kind: name}, **localisation(m, truth))
                 for name, m in explanation.components.items()]
        best = max(table, key=lambda r: (r["iou_target"], r["energy_in_target"]))[explainer.component_kind]
    if explainer.sanity:
        metrics["sanity_similarity"] = sanity_similarity(explainer, engine, explanation, progress, stage)
    return dataclasses.replace(explanation, metrics=metrics, details=details, component_table=table,
                               best_component=best)


def localisation(saliency: np.ndarray, target: np.ndarray) -> Dict[str, Any]:
    """Pointing game, energy inside the target and IoU at the target's size."""
    target = np.asarray(target, bool)
    if target.shape != saliency.shape:
        raise InputError(f"target mask of shape {target.shape} does not match the slice's shape {saliency.shape}")
    return {"pointing_game": pointing_game(saliency, target), "energy_in_target": energy_inside(saliency, target),
            "iou_target": thresholded_iou(saliency, target)}


def sanity_similarity(explainer, engine, explanation, progress, stage: str) -> float:
    """Spearman rank correlation over the ROI between the map and the map of a copy whose
    ``explainer.randomise`` part is re-drawn.  A map that explains the model must change, so low
    (or negative) is good; near 1 means the map shows the image, not the model."""
    segmenter = explainer.segmenter
    module = getattr(segmenter, "module", None)
    part = explainer.randomise if module is not None and explainer.randomise and hasattr(module, explainer.randomise) \
        else None
    other = copy.copy(explainer)
    other.segmenter = randomized_copy(segmenter, seed=explainer.seed + 1, part=part)
    again = other.explain(engine.image, engine.prompt, roi=explanation.roi, progress=progress,
                          stage=f"{stage} sanity", measure=False)
    return spearman(explanation.saliency, again.saliency, explanation.roi)


def faithfulness(engine, saliency: np.ndarray, steps: int, threshold: float, stage: str = "metrics") -> Dict[str, Any]:
    """Dice drop of the high-saliency region and deletion / insertion AUC over the ROI.

    Dice drop: baseline score minus the score with every ROI pixel of saliency >= ``threshold``
    removed.  Deletion: ROI pixels are removed in order of decreasing saliency, the score read
    at ``steps`` + 1 evenly spaced fractions; a faithful map drops fast (low AUC).  Insertion:
    starting from the fully removed ROI, pixels come back in the same order (high AUC is good).
    Scores are divided by the baseline score, so both curves start or end at 1.
    """
    roi = engine.roi
    top = (saliency >= threshold) & roi
    keeps = [np.where(top, 0.0, 1.0)]
    fractions: List[float] = []
    if steps:
        order = np.argsort(-saliency[roi], kind="stable")
        coords = np.argwhere(roi)[order]
        n = len(coords)
        fractions = list(np.linspace(0.0, 1.0, steps + 1))
        for f in fractions[1:]:
            k = np.ones(saliency.shape, np.float32)
            c = coords[: int(round(f * n))]
            k[c[:, 0], c[:, 1]] = 0.0
            keeps.append(k)  # deletion at fraction f
        for f in fractions[1:-1]:
            k = np.zeros(saliency.shape, np.float32)
            c = coords[: int(round(f * n))]
            k[c[:, 0], c[:, 1]] = 1.0
            keeps.append(k)  # insertion at fraction f
    engine.stage = stage
    scores = engine.scores(keeps)
    base = engine.baseline if abs(engine.baseline) > 1e-12 else 1.0
    out: Dict[str, Any] = {"baseline_score": float(engine.baseline), "dice_drop": float(engine.baseline - scores[0]),
                           "high_saliency_fraction": float(top.sum() / max(1, roi.sum()))}
    if steps:
        deletion = [engine.baseline] + list(scores[1:steps + 1])
        removed_all = scores[steps]
        insertion = [removed_all] + list(scores[steps + 1:]) + [engine.baseline]
        out["deletion_auc"] = curve_auc(fractions, np.asarray(deletion) / base)
        out["insertion_auc"] = curve_auc(fractions, np.asarray(insertion) / base)
        out["deletion_curve"] = [round(float(v), 4) for v in deletion]
        out["insertion_curve"] = [round(float(v), 4) for v in insertion]
    return out
