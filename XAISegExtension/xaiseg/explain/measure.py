"""The metrics stage: what every explanation is measured by, after attribution, for every method.

* faithfulness (:func:`faithfulness`): Dice drop of the high-saliency region and deletion /
  insertion AUC over the ROI, through the same perturbation engine (perturbation methods always;
  other methods when ``metric_steps`` asks for curves).  Pixels are ranked by the raw map, so the
  display scaling cannot change the curves; ``kept_without_roi``, the curve's end (the score with
  every ROI pixel removed, over the unperturbed score), is the share of the mask that the prompt
  and the tissue around the ROI draw without the ROI's image, which no map of the ROI can explain;
* trivial baselines (``baselines``): the same curves for a blurred copy of the mask, a Gaussian at
  the box centre and a random map (:mod:`.baselines`), and each method's gain over the best of
  them: ``deletion_gain`` = best trivial deletion AUC minus the method's (positive: the method
  is better), ``insertion_gain`` = the method's insertion AUC minus the best trivial one;
* evidence: the largest fall of the score that one of a perturbation method's passes caused
  (occlusion scoring patches by restore: the largest rise one patch's return caused; both ways, the
  default: the largest of those rises and of the falls) (``signal``)
  against the noise of the model on jittered copies of the unperturbed slice (``noise_level``; for
  restore that is the noise around the unperturbed score too: around the inpainted ROI the jitter
  shifts the score one way, a bias rather than noise, see docs/explain.md); a slice whose signal
  stays within twice the noise shows ``evidence: false`` and is not painted;
* localisation (:func:`localisation`): pointing game, energy and IoU against a ground truth, or
  against the model's own mask for methods that declare ``localise_against_mask``;
* components (layer maps): the localisation table of every component and the best one;
* sanity (``sanity``): Spearman between the map and the map of a copy of the model whose
  ``randomise`` part is re-drawn; ``cascade``: the same after re-drawing the model's parts one
  after another from the output back (:func:`xaiseg.models.base.randomisation_cascade`).

What the methods explained on one slice share (the noise level, the trivial maps' curves, the
score with the whole ROI inpainted for ``kept_without_roi``) is computed once per slice and kept
in a :class:`SliceShared`.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..metrics import curve_auc, energy_inside, pointing_game, spearman, thresholded_iou
from ..models.base import randomisation_cascade, randomized_copy
from . import baselines as trivial
from .base import METRIC_FILLS, fill_image, removed

NOISE_SIGMA = 0.02  # jitter of the unperturbed slice, in [0, 1] intensity units
MIN_SIGNAL = 0.01  # a score change below 1 % of the unperturbed score is no evidence, whatever the noise


def metric_passes(explainer) -> int:
    """Encoder passes :func:`measure` spends on one slice for ``explainer`` alone, beside what the
    methods on the slice share (:func:`shared_passes_of`), which a method explained on its own pays
    too."""
    steps = int(explainer.metric_steps)
    if steps:
        return 2 * steps
    return 1 if explainer.perturbs else 0


def shared_passes_of(measured: Sequence[Tuple[Any, bool]]) -> int:
    """Encoder passes of what the methods on one slice share, for (explainer, curves) pairs, curves
    telling whether the slice gets the curves: the noise once, and the trivial maps once per fill
    their curves remove with (with ``metric_fill`` "method" each method's own fill, which "auto"
    makes inpaint for RISE and zero for the others), and the slice with its ROI inpainted whole
    where a method without curves needs it (:func:`_emptied_pass`)."""
    trivial_by_fill: Dict[str, int] = {}
    for ex, curves in measured:
        fill = _curve_fill(ex)
        trivial_by_fill[fill] = max(trivial_by_fill.get(fill, 0), _trivial_passes(ex, curves))
    return max((_noise_passes(ex) for ex, _ in measured), default=0) + sum(trivial_by_fill.values()) \
        + _emptied_pass(measured)


def _curve_fill(explainer) -> str:
    """The removal ``explainer``'s curves use, "method" resolved to its own (resolved) fill."""
    return explainer.fill if explainer.metric_fill == "method" else explainer.metric_fill


def _emptied_pass(measured: Sequence[Tuple[Any, bool]]) -> int:
    """The pass that scores the slice with its whole ROI inpainted, for the share the prompt draws
    (``kept_without_roi``): 1 where, in the methods' order, a method that needs it (it perturbs and
    its curves inpaint) comes before any that has scored that image already (an inpainting curve's
    end, the layer maps' too, or occlusion putting patches back).  An upper bound: no pass is made
    where no mask was drawn (the share would say nothing)."""
    for ex, curves in measured:
        if _curve_fill(ex) != "inpaint":
            continue
        if (curves and ex.metric_steps) or ex.scores_emptied:
            return 0
        if ex.perturbs:
            return 1
    return 0


def _noise_passes(explainer) -> int:
    return int(explainer.noise_passes) if explainer.perturbs else 0


def _trivial_passes(explainer, curves: bool) -> int:
    steps = int(explainer.metric_steps)
    # each trivial map's two curves share the fully removed ROI: 2 x steps - 1 passes
    return len(trivial.NAMES) * (2 * steps - 1) if explainer.baselines and curves and steps else 0


def curve_slices(slices: Sequence[int], count: int) -> List[int]:
    """The slices among ``slices`` that get the curves, the trivial maps and the randomisation
    checks when ``metric_slices`` is ``count``: ``count`` of them spread evenly, the first and last
    included (every one for 0 or ``count`` >= their number)."""
    ks = sorted(slices)
    if not count or count >= len(ks):
        return ks
    if count == 1:
        return [ks[len(ks) // 2]]
    return sorted({ks[int(round(i * (len(ks) - 1) / (count - 1)))] for i in range(count)})


@dataclasses.dataclass
class SliceShared:
    """Figures of one slice that every method measured there shares, keyed by what they depend on."""

    noise: Dict[Tuple, float] = dataclasses.field(default_factory=dict)
    trivial: Dict[Tuple, Dict[str, Dict[str, float]]] = dataclasses.field(default_factory=dict)
    #: the score with the whole ROI inpainted, by score name
    emptied: Dict[str, float] = dataclasses.field(default_factory=dict)


def measure_passes(explainer, explanation, engine, progress=None, stage: Optional[str] = None,
                   shared: Optional[SliceShared] = None, curves: bool = True) -> Dict[str, Any]:
    """The figures that need model passes but not the display scale: the curves (ranked by the raw
    map), the trivial maps, the noise level and evidence, the randomisation checks.  The volume
    pipeline runs this right after attribution, while the slice's activations are still in memory;
    :func:`measure` then adds what depends on the scale (the Dice drop of the high-saliency region).
    ``curves`` False (a slice outside the ``metric_slices`` sample): the evidence only."""
    stage = stage or explainer.name
    shared = shared if shared is not None else SliceShared()
    metrics: Dict[str, Any] = {}
    before = engine.evaluations
    if explainer.metric_steps and curves:
        metrics.update(faithfulness(engine, explanation.raw, explainer.metric_steps, None, stage=f"{stage} metrics",
                                    fill=explainer.metric_fill))
    if metric_fill(explainer.metric_fill, engine) == "inpaint":
        metrics.update(_prompt_share(explainer, explanation, engine, metrics, shared, stage))
    if explainer.baselines and explainer.metric_steps and curves:
        metrics.update(_against_trivial(explainer, engine, explanation, metrics, shared, stage))
    if explainer.perturbs and explainer.noise_passes:
        metrics.update(_evidence(explainer, engine, explanation, shared, stage))
    if explainer.sanity and curves:
        metrics["sanity_similarity"] = sanity_similarity(explainer, engine, explanation, progress, stage)
        metrics["sanity_redrawn"] = sanity_part(explainer) or "all"  # what the trust line names
    if explainer.cascade and curves:
        steps = cascading_randomisation(explainer, engine, explanation, progress, stage)
        metrics["cascade"] = steps
        if steps:
            metrics["cascade_final_similarity"] = steps[-1]["similarity"]
            if "draws" in steps[-1]:  # the last step drawn several times (each in it): the figure is their mean
                metrics["cascade_draws"] = len(steps[-1]["draws"])
    metrics["metric_evaluations"] = engine.evaluations - before
    return metrics


def _prompt_share(explainer, explanation, engine, metrics: Dict[str, Any], shared: SliceShared,
                  stage: str) -> Dict[str, float]:
    """``kept_without_roi`` on every slice a perturbing method explains, not only where it has curves:
    the score with the whole ROI inpainted is a curve's end, or occlusion's when it puts patches back
    (the same image), or else one pass that the methods on the slice share."""
    if "deletion_curve" in metrics:  # the curve ends on that image, and its share is in metrics
        end = metrics["kept_without_roi"] * engine.baseline if "kept_without_roi" in metrics else \
            float(metrics["deletion_curve"][-1])  # unrounded where the share is written
        shared.emptied.setdefault(engine.score_name, end)
        return {}
    emptied = explanation.details.get("emptied_score")
    if emptied is not None:
        shared.emptied.setdefault(engine.score_name, float(emptied))
    elif explainer.perturbs and _has_share(engine):
        if engine.score_name not in shared.emptied:
            engine.stage = f"{stage} ROI inpainted whole"
            shared.emptied[engine.score_name] = float(engine.score_images([removed(engine.image, engine.roi,
                                                                                   "inpaint")])[0])
        emptied = shared.emptied[engine.score_name]
    return kept_without_roi(engine, emptied)


def makes_passes(explainer) -> bool:
    """Whether ``explainer`` evaluates perturbed copies of a slice (attribution or curves), and so
    gains from the slice's activation cache."""
    return bool(explainer.perturbs or explainer.metric_steps)


def scaled_passes(explainer) -> int:
    """Encoder passes :func:`measure` still makes after :func:`measure_passes` (the Dice drop; at
    most: none where the high-saliency region is empty or the slice shows no evidence)."""
    return int(makes_passes(explainer))


def measure(explainer, explanation, engine, progress=None, stage: Optional[str] = None,
            shared: Optional[SliceShared] = None, early: Optional[Dict[str, Any]] = None):
    """``explanation`` with its metrics filled in (see the module docs); ``early``: what
    :func:`measure_passes` already gave for it (computed here when None)."""
    stage = stage or explainer.name
    if early is None:
        early = measure_passes(explainer, explanation, engine, progress, stage, shared)
    metrics: Dict[str, Any] = {"seconds": round(explanation.seconds, 3), "evaluations": explanation.n_evaluations}
    roi = explanation.roi
    before = engine.evaluations
    # the label map's region: nothing on a slice that shows no evidence (it is not painted)
    high = (explanation.saliency >= explainer.threshold) & roi
    if early.get("evidence") is False:
        high = np.zeros_like(high)
    if scaled_passes(explainer):
        metrics.update(faithfulness(engine, explanation.raw, 0, high, stage=f"{stage} metrics",
                                    fill=explainer.metric_fill))
    metrics.update(early)
    metrics["metric_evaluations"] = early["metric_evaluations"] + engine.evaluations - before
    details = dict(explanation.details)
    metrics["roi_ratio"] = details.pop("roi_ratio", float(roi.mean()))
    metrics["roi_fraction"] = float(roi.mean())
    metrics.update(_localise(explainer, explanation))
    table, best = _components(explainer, explanation)
    if table:
        metrics[f"{explainer.component_kind}s"] = len(table)
    saliency = explanation.saliency
    if metrics.get("evidence") is False:
        saliency = np.zeros_like(saliency)  # no evidence: not painted
    return dataclasses.replace(explanation, saliency=saliency, metrics=metrics, details=details,
                               component_table=table, best_component=best)


def _localise(explainer, explanation) -> Dict[str, Any]:
    roi = explanation.roi
    against = explanation.target if explanation.target is not None and explanation.target.any() else None
    out: Dict[str, Any] = {}
    if against is None and explainer.localise_against_mask:
        against = explanation.reference
        out["localised_against"] = "model mask"
    elif against is not None:
        out["localised_against"] = "target"
    if explanation.target is not None or explainer.localise_against_mask:
        out.update(localisation(explanation.saliency, against if against is not None else np.zeros(roi.shape, bool)))
    return out


def _components(explainer, explanation) -> Tuple[List[Dict[str, Any]], Optional[str]]:
    if not explanation.components:
        return [], None
    against = explanation.target if explanation.target is not None and explanation.target.any() else None
    truth = against if against is not None else explanation.reference
    kind = explainer.component_kind
    table = [dict({kind: name}, **localisation(m, truth)) for name, m in explanation.components.items()]
    best = max(table, key=lambda r: (r["iou_target"], r["energy_in_target"]))[kind]
    return table, best


def _against_trivial(explainer, engine, explanation, metrics, shared: SliceShared, stage: str) -> Dict[str, Any]:
    """The trivial maps' curves (once per slice and score) and the method's gain over the best."""
    fill = metric_fill(explainer.metric_fill, engine)
    key = (engine.score_name, fill, int(explainer.metric_steps), explainer.seed)
    if key not in shared.trivial:
        _, curves = trivial_curves(engine, explainer.metric_steps, explainer.seed, fill, f"{stage} baseline")
        # with its deletion curve, so a reader (or a later analysis of the run) can set a method's
        # curve beside the trivial map's, not only its area
        shared.trivial[key] = {name: curve_figures(f) for name, f in curves.items()}
    figures = shared.trivial[key]
    best_del = min(v["deletion_auc"] for v in figures.values())
    best_ins = max(v["insertion_auc"] for v in figures.values())
    return {"trivial": {k: dict(v) for k, v in figures.items()},
            "best_trivial_deletion_auc": best_del, "best_trivial_insertion_auc": best_ins,
            "deletion_gain": best_del - metrics["deletion_auc"], "insertion_gain": metrics["insertion_auc"] - best_ins,
            "beats_trivial_deletion": bool(metrics["deletion_auc"] < min(v["deletion_auc"] for v in figures.values())),
            "beats_trivial_insertion": bool(metrics["insertion_auc"] > max(v["insertion_auc"] for v in figures.values()))}


def trivial_curves(engine, steps: int, seed: int, fill: str,
                   stage: str) -> Tuple[Dict[str, np.ndarray], Dict[str, Dict]]:
    """The trivial maps of ``engine``'s slice (:func:`.baselines.trivial_maps` on its mask, prompt
    box and ROI) and each one's :func:`faithfulness` curves."""
    from ..roi.geometry import prompt_box

    maps = trivial.trivial_maps(engine.reference, prompt_box(engine.prompt, engine.reference), seed, engine.roi)
    return maps, {name: faithfulness(engine, m, steps, None, stage=f"{stage} {name}", fill=fill)
                  for name, m in maps.items()}


def noise_level(engine, passes: int, seed: int = 0, stage: str = "noise") -> float:
    """The largest change of the explained score when the unperturbed slice is re-evaluated with
    a small jitter (Gaussian, sigma ``NOISE_SIGMA``) inside the ROI: what a perturbation must beat."""
    rng = np.random.default_rng(seed)
    roi = engine.roi.astype(np.float32)
    images = [np.clip(engine.image + rng.normal(0.0, NOISE_SIGMA, engine.image.shape).astype(np.float32) * roi, 0, 1)
              for _ in range(int(passes))]
    engine.stage = stage
    scores = engine.score_images(images)
    return float(np.max(np.abs(scores - engine.baseline))) if len(scores) else 0.0


def _evidence(explainer, engine, explanation, shared: SliceShared, stage: str) -> Dict[str, Any]:
    key = (engine.score_name, int(explainer.noise_passes), explainer.seed)
    if key not in shared.noise:
        shared.noise[key] = noise_level(engine, explainer.noise_passes, explainer.seed, f"{stage} noise")
    noise = shared.noise[key]
    # the largest fall one perturbation caused (or the method's own largest change, occlusion's rise
    # when restoring): RISE's and LIME's maps are contrasts of means over many masks, far below any
    # single pass's change, so their maps' peaks would read as noise
    if explanation.largest_drop is not None:
        signal = float(explanation.largest_drop)
    else:
        signal = float(np.max(explanation.raw[explanation.roi])) if explanation.roi.any() else 0.0
    floor = max(2.0 * noise, MIN_SIGNAL * max(abs(engine.baseline), 1e-12))
    return {"noise_level": noise, "signal": signal, "evidence": bool(signal > floor)}


def localisation(saliency: np.ndarray, target: np.ndarray) -> Dict[str, Any]:
    """Pointing game, energy inside the target and IoU at the target's size."""
    target = np.asarray(target, bool)
    if target.shape != saliency.shape:
        raise InputError(f"target mask of shape {target.shape} does not match the slice's shape {saliency.shape}")
    return {"pointing_game": pointing_game(saliency, target), "energy_in_target": energy_inside(saliency, target),
            "iou_target": thresholded_iou(saliency, target)}


def _redrawn_map(explainer, engine, explanation, parts, progress, stage: str, draw: int = 0) -> np.ndarray:
    """The map of a copy of the model with ``parts`` re-drawn, the ``draw``-th time (seed + 1 + draw)."""
    other = copy.copy(explainer)
    other.segmenter = randomized_copy(explainer.segmenter, seed=explainer.seed + 1 + draw, part=parts)
    again = other.explain(engine.image, engine.prompt, roi=explanation.roi, progress=progress, stage=stage,
                          measure=False)
    return again.raw


def sanity_part(explainer) -> Optional[str]:
    """The part of the model the sanity check re-draws: ``explainer.randomise`` where the model has
    it, else None (the whole model)."""
    module = getattr(explainer.segmenter, "module", None)
    return explainer.randomise if module is not None and explainer.randomise and hasattr(module, explainer.randomise) \
        else None


def sanity_similarity(explainer, engine, explanation, progress, stage: str) -> float:
    """Spearman rank correlation over the ROI between the map and the map of a copy whose
    :func:`sanity_part` is re-drawn.  A map that explains the model must change, so low (or
    negative) is good; near 1 means the map shows the image, not the model."""
    redrawn = _redrawn_map(explainer, engine, explanation, sanity_part(explainer), progress, f"{stage} sanity")
    return spearman(explanation.raw, redrawn, explanation.roi)


def cascading_randomisation(explainer, engine, explanation, progress, stage: str) -> List[Dict[str, Any]]:
    """Re-draw the model's parts one after another, from the output back to the input, keeping
    the earlier ones re-drawn; the map's Spearman similarity to the trained model's after each step
    (Adebayo et al.).  A faithful method's similarity falls as more of the model is re-drawn.

    One draw of random weights is one sample: on LiteMedSAM the layer maps' similarity with the
    whole model re-drawn ranged from -0.08 to 0.40 over five draws on one slice (all 18 layers fused;
    -0.19 to 0.26 past the encoder's stem, the default; docs/layers.md).
    With ``cascade_draws`` > 1 the last step is drawn that many times, each with its own seed (the
    first is the single draw's); its ``similarity`` is their mean and ``draws`` holds each."""
    parts = randomisation_cascade(explainer.segmenter)
    out = []
    for i in range(len(parts)):
        draws = int(explainer.cascade_draws) if i == len(parts) - 1 else 1
        sims = []
        for d in range(draws):
            label = f"{stage} cascade {i + 1}/{len(parts)}" + (f" draw {d + 1}/{draws}" if draws > 1 else "")
            redrawn = _redrawn_map(explainer, engine, explanation, parts[:i + 1], progress, label, draw=d)
            sims.append(round(spearman(explanation.raw, redrawn, explanation.roi), 4))
        step = {"redrawn": parts[i], "similarity": round(float(np.mean(sims)), 4)}
        if draws > 1:
            step["draws"] = sims
        out.append(step)
    return out


def metric_fill(fill: str, engine) -> str:
    """The removal the curves use: ``fill`` (see :data:`~.base.METRIC_FILLS`), "method" resolved to
    the engine's own fill."""
    if fill == "method":
        return engine.fill_name
    if fill not in METRIC_FILLS:
        raise InputError(f"metric fill {fill!r} is unknown; expected one of {', '.join(METRIC_FILLS)}")
    return fill


def curve_counts(n: int, steps: int) -> List[int]:
    """How many of ``n`` ROI pixels a curve of ``steps`` steps has removed (deletion) or put back
    (insertion) at each of its ``steps`` + 1 evenly spaced fractions, 0 and ``n`` included."""
    return [int(round(f * n)) for f in np.linspace(0.0, 1.0, steps + 1)]


def removal_order(ranking: np.ndarray, roi: np.ndarray) -> np.ndarray:
    """The ROI's (row, column) pixels in the order the curves remove them: decreasing ``ranking``,
    ties in row order."""
    order = np.argsort(-np.asarray(ranking)[roi], kind="stable")
    return np.argwhere(roi)[order]


def kept_without_roi(engine, emptied: Optional[float]) -> Dict[str, float]:
    """``{"kept_without_roi": share}``: the score with every ROI pixel removed (``emptied``) over the
    unperturbed score.  The prompt and the tissue around the ROI draw that much of the mask, and
    no ranking of the ROI's pixels can explain it.  Empty where nothing was measured, no mask was
    drawn or the score is not positive: a share of an empty mask's Dice of 1, or of a negative
    logit, would say nothing of the kind."""
    if emptied is None or not _has_share(engine):
        return {}
    return {"kept_without_roi": float(emptied / engine.baseline)}


def _has_share(engine) -> bool:
    """Whether a share of the unperturbed score means anything: a mask was drawn and its score is
    positive (see :func:`kept_without_roi`)."""
    return bool(engine.reference.any()) and engine.baseline > 1e-12


def curve_figures(figures: Dict[str, Any]) -> Dict[str, Any]:
    """Of :func:`faithfulness`'s figures, the curves' own: deletion and insertion AUC and the deletion
    curve (what a trivial map keeps beside a method's, and what a kept map is scored again with)."""
    return {k: figures[k] for k in ("deletion_auc", "insertion_auc", "deletion_curve")}


def faithfulness(engine, ranking: np.ndarray, steps: int, high: Optional[np.ndarray] = None,
                 stage: str = "metrics", fill: str = "inpaint") -> Dict[str, Any]:
    """Dice drop of the high-saliency region and deletion / insertion AUC over the ROI.

    ranking: the map whose order decides which ROI pixels go first (the raw map); high: the
    high-saliency region removed for the Dice drop (skipped when None).  Deletion: ROI pixels are
    removed in order of decreasing ``ranking``, the score read at ``steps`` + 1 evenly spaced
    fractions; a faithful map drops fast (low AUC).  Insertion: starting from the fully removed
    ROI, pixels come back in the same order (high AUC is good).  Scores are divided by the
    baseline score, so both curves start or end at 1.  ``fill``: what removed pixels become
    (:func:`~.base.removed`; default inpainted from their kept neighbours, so that a ranking is not
    rewarded for scattering removals that break the image rather than remove evidence).
    """
    fill = metric_fill(fill, engine)
    roi = engine.roi
    high = None if high is None else np.asarray(high, bool) & roi
    # removing nothing leaves the score as it was: an empty high-saliency region costs no pass
    keeps = [np.where(high, 0.0, 1.0)] if high is not None and high.any() else []
    fractions: List[float] = []
    if steps:
        coords = removal_order(ranking, roi)
        fractions = list(np.linspace(0.0, 1.0, steps + 1))
        counts = curve_counts(len(coords), steps)
        for count in counts[1:]:
            k = np.ones(roi.shape, np.float32)
            c = coords[:count]
            k[c[:, 0], c[:, 1]] = 0.0
            keeps.append(k)  # deletion at this fraction
        for count in counts[1:-1]:
            k = np.zeros(roi.shape, np.float32)
            c = coords[:count]
            k[c[:, 0], c[:, 1]] = 1.0
            keeps.append(k)  # insertion at this fraction
    engine.stage = stage
    roi_f = roi.astype(np.float32)
    filled = None if fill == "inpaint" else fill_image(engine.image, fill)  # one fill image for every curve point
    images = [removed(engine.image, (1.0 - k) * roi_f > 0.5, fill, filled) for k in keeps]
    scores = engine.score_images(images)
    base = engine.baseline if abs(engine.baseline) > 1e-12 else 1.0
    out: Dict[str, Any] = {"baseline_score": float(engine.baseline)}
    first = 0
    if high is not None:
        first = 1 if high.any() else 0
        out["dice_drop"] = float(engine.baseline - scores[0]) if first else 0.0
        out["high_saliency_fraction"] = float(high.sum() / max(1, roi.sum()))
    if steps:
        deletion = [engine.baseline] + list(scores[first:first + steps])
        removed_all = scores[first + steps - 1]
        insertion = [removed_all] + list(scores[first + steps:]) + [engine.baseline]
        out["deletion_auc"] = curve_auc(fractions, np.asarray(deletion) / base)
        out["insertion_auc"] = curve_auc(fractions, np.asarray(insertion) / base)
        out.update(kept_without_roi(engine, removed_all))
        out["deletion_curve"] = [round(float(v), 4) for v in deletion]
        out["insertion_curve"] = [round(float(v), 4) for v in insertion]
    return out
