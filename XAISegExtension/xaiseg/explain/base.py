"""The explainer interface and the one perturbation engine every perturbation method runs on.

An explainer explains the mask a segmenter draws for one prompt on one 2D slice.  The explained
score is explicit (``score``):

* ``"dice"`` (default, seed 001): Dice of the perturbed image's mask against the unperturbed mask,
  counted inside the ROI together with the unperturbed mask (so a perturbation that shrinks the
  mask or grows it inside the region of interest lowers the score);
* ``"logit"``: mean decoder logit over the unperturbed mask (over the ROI if the mask is empty).

A perturbation is a *keep map* ``k`` in [0, 1] (1 = original pixel): the engine shows the model
``image * k' + fill * (1 - k')`` with ``k' = 1 - (1 - k) * roi``, so pixels outside the ROI are
never changed (seed 001: multiplier 1.0 outside the ROI) - except for occlusion, where the ROI
picks the patches and each chosen patch is removed whole, as in seed 001's occlusion.  ``fill`` is ``zero``, ``mean`` (of the
slice) or ``blur`` (Gaussian, sigma 5 pixels).

The engine encodes the unperturbed slice once, keeps that embedding and the prompt, evaluates
keep maps in batches of ``batch_size`` through ``embed_batch`` + ``decode``, reports progress per
batch and checks for cancellation between batches; it counts every perturbed encoder pass.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np

from ..errors import InputError, ModelError
from ..metrics import (curve_auc, energy_inside, normalise01, pointing_game, spearman, thresholded_iou)
from ..models.base import PromptableSegmenter, SlicePrompt, check_slice, randomized_copy
from ..progress import Progress, ensure

SCORES = ("dice", "logit")
FILLS = ("zero", "mean", "blur")


@dataclass(frozen=True)
class Explanation:
    """A saliency map of one slice and how it was made.

    saliency: float32, the slice's shape, min-max to [0, 1] over the ROI (0 outside it) unless the
    explainer was asked for raw scores.  raw: the unnormalised scores (method units).
    metrics: faithfulness and, with a target, localisation figures (see :func:`faithfulness`).
    """

    saliency: np.ndarray
    raw: np.ndarray
    method: str
    settings: Dict[str, Any]
    n_evaluations: int
    seconds: float
    roi: np.ndarray
    roi_source: str
    reference: np.ndarray
    metrics: Dict[str, Any] = field(default_factory=dict)
    extras: Dict[str, Any] = field(default_factory=dict)
    record: Dict[str, Any] = field(default_factory=dict)


def fill_image(image: np.ndarray, fill: str) -> np.ndarray:
    """What a removed pixel becomes."""
    if fill == "zero":
        return np.zeros_like(image, dtype=np.float32)
    if fill == "mean":
        return np.full(image.shape, float(image.mean()), dtype=np.float32)
    if fill == "blur":
        import cv2

        return cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigmaX=5.0, borderType=cv2.BORDER_REFLECT)
    raise InputError(f"fill {fill!r} is unknown; expected one of {', '.join(FILLS)}")


class PerturbationEngine:
    """Evaluates keep maps of one slice, prompt and ROI through a segmenter (see module docs)."""

    def __init__(self, segmenter: PromptableSegmenter, image: np.ndarray, prompt: SlicePrompt, roi: np.ndarray,
                 *, score: str = "dice", fill: str = "zero", batch_size: int = 8,
                 progress: Optional[Progress] = None, stage: str = "explain", embedding=None,
                 logits: Optional[np.ndarray] = None) -> None:
        check_slice(image)
        if score not in SCORES:
            raise InputError(f"score {score!r} is unknown; expected one of {', '.join(SCORES)}")
        if int(batch_size) < 1:
            raise InputError(f"batch size {batch_size} must be at least 1")
        roi = np.asarray(roi, bool)
        if roi.shape != image.shape:
            raise InputError(f"ROI of shape {roi.shape} does not match the slice's shape {image.shape}")
        prompt.check_inside(image.shape)
        self.segmenter = segmenter
        self.image = np.asarray(image, dtype=np.float32)
        self.prompt = prompt.clipped(image.shape)
        self.roi = roi
        self.score_name = score
        self.fill_name = fill
        self.fill = fill_image(self.image, fill)
        self.batch_size = int(batch_size)
        self.progress = ensure(progress)
        self.stage = stage
        self.evaluations = 0
        # the unperturbed slice's embedding: reused when the caller has it cached
        self.embedding = embedding if embedding is not None else segmenter.embed(self.image)
        # and its logits for the prompt, when the caller has decoded them already
        self.logits = logits if logits is not None else segmenter.decode(self.embedding, self.prompt)
        self.reference = self.logits > 0
        self.region = self.roi | self.reference
        self.baseline = self.score_logits(self.logits)

    # the explained score -------------------------------------------------------------------
    def score_logits(self, logits: np.ndarray) -> float:
        if self.score_name == "dice":
            a, b = (logits > 0) & self.region, self.reference & self.region
            total = int(a.sum()) + int(b.sum())
            return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total
        where = self.reference if self.reference.any() else self.roi
        return float(logits[where].mean())

    # perturbation and evaluation ------------------------------------------------------------
    def perturb(self, keep: np.ndarray, restrict: bool = True) -> np.ndarray:
        """The image with ``keep`` applied; with ``restrict`` only inside the ROI."""
        k = np.asarray(keep, dtype=np.float32)
        if restrict:
            k = 1.0 - (1.0 - k) * self.roi
        return self.image * k + self.fill * (1.0 - k)

    def scores(self, keeps: Iterable[np.ndarray], total: Optional[int] = None, restrict: bool = True) -> np.ndarray:
        """Scores of the perturbed images, one per keep map, in order.

        Opens a progress stage of ``total`` steps (the number of keep maps when it is a sequence)
        unless ``total`` is 0, which continues the current stage (for methods that evaluate in
        several rounds).  ``restrict=False`` applies keep maps outside the ROI too (occlusion: the
        ROI chooses which patches are evaluated, each patch is removed whole, as in seed 001).
        """
        keeps = list(keeps)
        return self.score_images(keeps, total, perturb="roi" if restrict else "all")

    def score_images(self, images: Sequence[np.ndarray], total: Optional[int] = None,
                     perturb: Optional[str] = None) -> np.ndarray:
        """Scores of whole images (or of keep maps with ``perturb`` "roi" or "all"), batched, with
        progress and cancel.

        Also the entry point for other libraries' perturbation loops (MONAI, Captum in the bench),
        so that every encoder pass is counted the same way.
        """
        if total is None:
            total = len(images)
        if total:
            self.progress.stage(self.stage, total)
        out: List[float] = []
        for start in range(0, len(images), self.batch_size):
            self.progress.check()
            chunk = images[start:start + self.batch_size]
            images_ = ([self.perturb(k, perturb == "roi") for k in chunk] if perturb
                       else [np.asarray(k, np.float32) for k in chunk])
            embeddings = self.segmenter.embed_batch(images_)
            out.extend(self.score_logits(self.segmenter.decode(e, self.prompt)) for e in embeddings)
            self.evaluations += len(images_)
            self.progress.step(len(images_), evaluations=self.evaluations)
        return np.asarray(out, dtype=np.float64)


class Explainer:
    """Base of every explainer: settings in the constructor, data in :meth:`explain`.

    segmenter: the model explained (a :class:`Session` binds its own when this is None).
    score, fill, batch_size, seed: see the module docs; ``seed`` fixes every random draw.
    metric_steps: points on the deletion/insertion curves (0 skips them; each point is one
    encoder pass).  threshold: saliency level of the high-saliency region (label map, Dice drop).
    sanity: also explain with the decoder's weights re-drawn and report the maps' similarity.
    """

    name = "explainer"

    def __init__(self, segmenter: Optional[PromptableSegmenter] = None, *, score: str = "dice",
                 fill: str = "zero", batch_size: int = 8, seed: int = 0, metric_steps: int = 8,
                 threshold: float = 0.5, sanity: bool = False) -> None:
        if score not in SCORES:
            raise InputError(f"score {score!r} is unknown; expected one of {', '.join(SCORES)}")
        if fill not in FILLS:
            raise InputError(f"fill {fill!r} is unknown; expected one of {', '.join(FILLS)}")
        if not 0.0 < float(threshold) < 1.0:
            raise InputError(f"saliency threshold {threshold} must lie strictly between 0 and 1")
        if int(metric_steps) < 0 or int(metric_steps) == 1:
            raise InputError(f"metric steps {metric_steps} must be 0 (off) or at least 2")
        self.segmenter = segmenter
        self.score = score
        self.fill = fill
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.metric_steps = int(metric_steps)
        self.threshold = float(threshold)
        self.sanity = bool(sanity)

    def bind(self, segmenter: PromptableSegmenter) -> "Explainer":
        """A copy of this explainer that explains ``segmenter``."""
        other = copy.copy(self)
        other.segmenter = segmenter
        return other

    def settings(self) -> Dict[str, Any]:
        """The settings, for the run record (subclasses add their own)."""
        return {"method": self.name, "score": self.score, "fill": self.fill, "batch_size": self.batch_size,
                "seed": self.seed, "metric_steps": self.metric_steps, "threshold": self.threshold,
                "sanity": self.sanity}

    def attribute(self, engine: PerturbationEngine) -> tuple:
        """Raw saliency (H, W) and a dict of method extras; the one thing a method implements."""
        raise NotImplementedError

    def explain(self, image: np.ndarray, prompt: SlicePrompt, *, roi: Optional[np.ndarray] = None,
                roi_source: str = "image", target: Optional[np.ndarray] = None,
                progress: Optional[Progress] = None, stage: Optional[str] = None, embedding=None,
                logits: Optional[np.ndarray] = None) -> Explanation:
        """Explain the mask that ``prompt`` gives on ``image`` (2D, in [0, 1]).

        roi: where perturbations may act (default: the whole slice); target: a ground-truth mask
        for the localisation metrics; embedding: the unperturbed slice's cached embedding, if any,
        and logits: its decoded logits for ``prompt`` (clipped to the slice), if already computed.
        """
        if self.segmenter is None:
            raise ModelError(f"{self.name}: no segmenter to explain; pass one to the constructor or use bind()")
        image = np.asarray(image, dtype=np.float32)
        check_slice(image)
        roi = np.ones(image.shape, bool) if roi is None else np.asarray(roi, bool)
        if not roi.any():
            raise InputError("the ROI is empty; expected at least one pixel where perturbations may act")
        progress = ensure(progress)
        stage = stage or self.name
        t0 = time.perf_counter()
        engine = PerturbationEngine(self.segmenter, image, prompt, roi, score=self.score, fill=self.fill,
                                    batch_size=self.batch_size, progress=progress, stage=stage, embedding=embedding,
                                    logits=logits)
        raw, extras = self.attribute(engine)
        seconds = time.perf_counter() - t0
        evaluations = engine.evaluations
        raw = np.where(roi, raw, 0.0).astype(np.float32)
        saliency = normalise01(raw, roi)
        metrics = faithfulness(engine, saliency, self.metric_steps, self.threshold, stage=f"{stage} metrics")
        metrics.update(seconds=round(seconds, 3), evaluations=evaluations)
        metrics["roi_ratio"] = extras.pop("roi_ratio", float(roi.mean()))
        metrics["roi_fraction"] = float(roi.mean())
        if target is not None:
            metrics.update(localisation(saliency, target))
        if self.sanity:
            metrics["sanity_similarity"] = self.sanity_similarity(image, prompt, roi, saliency, progress, stage)
        settings = self.settings()
        return Explanation(saliency, raw, self.name, settings, evaluations, seconds, roi, roi_source,
                           engine.reference, metrics, extras,
                           {"model": self.segmenter.describe(), "settings": settings, "seed": self.seed,
                            "prompt": prompt.record(), "seconds": round(seconds, 3),
                            "evaluations": {"perturbed_encoder_passes": evaluations}})

    def sanity_similarity(self, image, prompt, roi, saliency, progress, stage) -> float:
        """Spearman rank correlation over the ROI between this map and the map of a copy whose decoder
        weights are re-drawn (Adebayo et al.'s model-randomisation check).  A map that explains the
        model must change, so low (or negative: the evidence moved or flipped) is good; near 1 means
        the map shows the image, not the model."""
        part = "mask_decoder" if self.segmenter.module is not None and hasattr(self.segmenter.module, "mask_decoder") else None
        other = copy.copy(self)
        other.segmenter = randomized_copy(self.segmenter, seed=self.seed + 1, part=part)
        other.sanity, other.metric_steps = False, 0
        again = other.explain(image, prompt, roi=roi, progress=progress, stage=f"{stage} sanity")
        return spearman(saliency, again.saliency, roi)


def localisation(saliency: np.ndarray, target: np.ndarray) -> Dict[str, Any]:
    """Pointing game, energy inside the target and IoU at the target's size."""
    target = np.asarray(target, bool)
    if target.shape != saliency.shape:
        raise InputError(f"target mask of shape {target.shape} does not match the slice's shape {saliency.shape}")
    return {"pointing_game": pointing_game(saliency, target), "energy_in_target": energy_inside(saliency, target),
            "iou_target": thresholded_iou(saliency, target)}


def faithfulness(engine: PerturbationEngine, saliency: np.ndarray, steps: int, threshold: float,
                 stage: str = "metrics") -> Dict[str, Any]:
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


def superpixels(image: np.ndarray, roi: np.ndarray, scale: float = 100.0, sigma: float = 0.5,
                min_size: int = 50, min_overlap: float = 0.1) -> List[np.ndarray]:
    """Felzenszwalb superpixels of ``image`` that have at least ``min_overlap`` of their area in
    the ROI (seed 001: scale 100, sigma 0.5, min size 50; 10 % overlap), as boolean masks.

    When none reaches the overlap, every superpixel that touches the ROI is used.
    """
    from ..errors import require

    segmentation = require("skimage.segmentation", "explain", "LIME and SHAP superpixels")
    labels = segmentation.felzenszwalb(np.asarray(image, dtype=np.float64), scale=float(scale),
                                       sigma=float(sigma), min_size=int(min_size), channel_axis=None)
    roi = np.asarray(roi, bool)
    ids, area = np.unique(labels, return_counts=True)
    inside = np.bincount(labels[roi].ravel(), minlength=int(ids.max()) + 1)[ids]
    chosen = ids[inside / area >= float(min_overlap)]
    if chosen.size == 0:
        chosen = ids[inside > 0]
    return [labels == i for i in chosen]


def keep_from_segments(segments: Sequence[np.ndarray], on: np.ndarray) -> np.ndarray:
    """Keep map that removes the superpixels whose entry of ``on`` is 0."""
    keep = np.ones(segments[0].shape, np.float32)
    for seg, flag in zip(segments, on):
        if not flag:
            keep[seg] = 0.0
    return keep


def paint(segments: Sequence[np.ndarray], values: Sequence[float]) -> np.ndarray:
    """A map that is ``values[i]`` on superpixel ``i``."""
    out = np.zeros(segments[0].shape, np.float64)
    for seg, v in zip(segments, values):
        out[seg] = v
    return out
