"""The explainer interface and the one perturbation engine every perturbation method runs on.

An explainer explains the mask a segmenter draws for one prompt on one 2D slice.  Its class is
the one description of its method: ``name``, ``title``, ``limits`` (what the map cannot show),
``requirements`` (optional packages), ``Settings`` (a frozen dataclass of typed fields with
defaults and help), and :meth:`Explainer.cost` (encoder passes per slice).  The registry, the
command line, the cost estimate, the narrators and the Slicer panel read these.

The explained score is explicit (``score``):

* ``"dice"`` (default, seed 001): Dice of the perturbed image's mask against the unperturbed mask,
  counted inside the ROI together with the unperturbed mask (so a perturbation that shrinks the
  mask or grows it inside the region of interest lowers the score);
* ``"logit"``: mean decoder logit over the unperturbed mask (over the ROI if the mask is empty).

A perturbation is a *keep map* ``k`` in [0, 1] (1 = original pixel): the engine shows the model
``image * k' + fill * (1 - k')`` with ``k' = 1 - (1 - k) * roi``, so pixels outside the ROI are
never changed (seed 001: multiplier 1.0 outside the ROI) - except for occlusion, where the ROI
picks the patches and each chosen patch is removed whole, as in seed 001's occlusion (scored by
removal; restoring, occlusion builds its images itself).  ``fill`` is
``zero``, ``mean`` (of the slice), ``blur`` (Gaussian, sigma 5 pixels) or ``inpaint`` (the pixels
where ``k'`` is below 0.5 filled from the kept ones around them); the setting's default, ``auto``,
is each method's :attr:`Explainer.auto_fill` (inpaint for RISE, zero for the others).

The engine encodes the unperturbed slice once (or reuses the caller's cached embedding), keeps it
and the prompt, evaluates keep maps in batches of ``batch_size`` through ``embed_batch`` +
``decode``, reports progress per batch and checks for cancellation between batches; it counts
every perturbed encoder pass.  When the segmenter supports activation reuse (LiteMedSAM), a
perturbed image is encoded from the unperturbed pass's cached activations, recomputing only what
the box of its changed pixels can reach (same embedding to float rounding); it still counts as a
pass, and :meth:`PerturbationEngine.reuse_record` says how many were reused.  Attribution is the
one step a method implements (:meth:`Explainer.attribute`); the metrics are a stage of their own
(:mod:`.measure`).
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Iterable, List, Optional, Sequence, Tuple, Type

import numpy as np

from ..errors import InputError, ModelError
from ..metrics import normalise01
from ..models.base import PromptableSegmenter, SlicePrompt, check_slice
from ..progress import Progress, ensure
from ..requirements import Requirement
from ..settings import as_dict, build, check_field, setting

SCORES = ("dice", "logit")
FILLS = ("zero", "mean", "blur", "inpaint")
#: the ``fill`` setting's choices: "auto" is each method's own (:attr:`Explainer.auto_fill`)
FILL_CHOICES = ("auto",) + FILLS
#: what the deletion / insertion curves put where they remove pixels: "inpaint" fills the removed
#: pixels from the kept ones around them (a removal scattered over single pixels then removes little,
#: as it should, instead of breaking the image), "method" uses the method's own ``fill``
METRIC_FILLS = ("method",) + FILLS
INPAINT_RADIUS = 3  # pixels of kept neighbourhood each removed pixel is filled from
SCALINGS = ("structure", "slice")
SIZINGS = ("structure", "slice")


def sizing_setting():
    """The ``sizing`` setting of the methods whose perturbations are sized from the structure
    (occlusion's patches, RISE's cells); they share its flag."""
    return setting("structure", "structure-sized perturbations (occlusion's patches, RISE's cells): in a volume one "
                                "size for the whole structure (from the median shorter side of the explained slices' "
                                "prompt boxes) on one grid shared by every slice, or each slice's own box",
                   choices=SIZINGS, flag="--sizing")


def side_setting():
    """The ``side`` the volume pipeline sets with sizing 'structure' (:func:`structure_side`)."""
    return setting(0.0, "the structure's prompt-box shorter side in slice pixels, set by the volume pipeline with "
                        "sizing 'structure'; 0: each slice's own box", minimum=0.0, cli=False)


def structure_side(boxes: Sequence[Optional[Tuple[int, int, int, int]]]) -> Optional[float]:
    """The median shorter side of the prompt boxes ``boxes`` (x0, y0, x1, y1; None entries skipped),
    or None when there is none."""
    sides = [min(b[2] - b[0] + 1, b[3] - b[1] + 1) for b in boxes if b is not None]
    return float(np.median(sides)) if sides else None


#: the longest perturbations along a structure, in widths: RISE's cells (``--cell-aspect``; longer ones
#: only cost memory, the canvas is drawn cell by cell) and occlusion's strips (``--occlusion-aspect``)
MAX_ASPECT = 10.0


#: a mask whose principal axes' lengths differ by less than this ratio has no main axis (a round one)
ROUND = 1.2


def main_axis(mask: np.ndarray) -> Optional[float]:
    """The longer principal axis of ``mask`` in degrees from the columns' axis towards the rows', in
    [-90, 90) (an axis, not a direction: the eigenvector's sign is arbitrary); None for fewer than
    three pixels or a round mask (axes' lengths within :data:`ROUND` of each other)."""
    ys, xs = np.nonzero(mask)
    if len(ys) < 3:
        return None
    values, vectors = np.linalg.eigh(np.cov(np.stack([xs, ys]).astype(np.float64)))
    if values[1] <= 0 or values[1] < ROUND ** 2 * max(values[0], 0.0):
        return None
    x, y = vectors[:, 1]  # the eigenvector of the larger eigenvalue
    return float((np.degrees(np.arctan2(y, x)) + 90.0) % 180.0 - 90.0)


def sized_for_structure(explainer, boxes: Sequence[Optional[Tuple[int, int, int, int]]], fixed: bool):
    """``explainer`` (occlusion, RISE) with ``side`` set to :func:`structure_side` of ``boxes`` when
    its perturbations are sized from the structure (not ``fixed`` by a setting) and its ``sizing``
    is 'structure'; otherwise with no side, so that a side copied from another run's record is not
    taken for this structure's."""
    side = None if fixed or explainer.sizing != "structure" else structure_side(boxes)
    if side is None:
        return explainer.replace(side=0.0) if explainer.side else explainer
    return explainer.replace(side=side)


@dataclass(frozen=True)
class CommonSettings:
    """Settings every method has; a method's ``Settings`` extends this class."""

    score: str = setting("dice", "explained score: Dice of the perturbed mask against the unperturbed one inside "
                                 "the ROI, or the mean logit in the mask", choices=SCORES)
    fill: str = setting("auto", "what removed pixels become: zero, the slice's mean, a blurred copy, or inpainted "
                                "from the kept pixels around them (keep maps then count as removed below 0.5); "
                                "auto: each method's own (inpaint for RISE, zero for the others)",
                        choices=FILL_CHOICES)
    batch_size: int = setting(0, "perturbed images per model call (0: chosen from the device - 1 on a CPU, "
                                 "where larger batches are no cheaper per image; on a CUDA GPU as many as fit in "
                                 "half its free memory, at most 32)", minimum=0)
    seed: int = setting(0, "seed of every random draw")
    metric_steps: int = setting(8, "points on the deletion/insertion curves, one encoder pass each (0: skip)",
                                minimum=0)
    metric_slices: int = setting(0, "explained slices of a volume that get the deletion/insertion curves, the "
                                    "trivial maps and the randomisation checks, spread evenly through them, the "
                                    "first and last included (0: every one); the evidence check and the Dice drop "
                                    "run on every slice", minimum=0)
    metric_fill: str = setting("inpaint", "what the faithfulness curves and the Dice drop put where they remove "
                                          "pixels: inpainted from the kept pixels around them (scattered removals "
                                          "do not break the image), the method's own fill, or zero/mean/blur",
                               choices=METRIC_FILLS)
    threshold: float = setting(0.5, "saliency level of the label map and of the Dice-drop region")
    scaling: str = setting("structure", "display scaling of the maps: once per structure over every explained "
                                        "slice (comparable across slices), or per slice", choices=SCALINGS)
    noise_passes: int = setting(2, "encoder passes on jittered copies of the unperturbed slice; a slice whose "
                                   "largest score change stays within that noise shows no evidence (0: off)",
                                minimum=0)
    baselines: bool = setting(False, "also measure the trivial maps (blurred mask, box centre, random) on the same "
                                     "engine and ROI and report each method's gain over the best of them "
                                     "(3 x (2 x metric steps - 1) encoder passes per slice, shared by the methods)")
    sanity: bool = setting(False, "also explain with re-drawn weights and report the maps' similarity (doubles "
                                  "the cost)")
    cascade: bool = setting(False, "cascading randomisation: re-draw the decoder, then the encoder stages from "
                                   "the top, one at a time, and report the similarity after each (one attribution "
                                   "per step)")
    cascade_draws: int = setting(1, "with the cascade: how many times its last step (the whole model re-drawn) "
                                    "is drawn, each with its own seed; the final similarity is their mean, each "
                                    "draw's is kept beside it (one more attribution per draw)", minimum=1)

    def __post_init__(self) -> None:
        # every field's choices and bounds, also for settings built directly rather than by build()
        for f in dataclasses.fields(self):
            check_field(f, getattr(self, f.name), f"{type(self).__name__}.{f.name}")
        if self.metric_steps == 1:
            raise InputError(f"metric steps {self.metric_steps} must be 0 (off) or at least 2")
        if not 0.0 < float(self.threshold) < 1.0:
            raise InputError(f"saliency threshold {self.threshold} must lie strictly between 0 and 1")
        if self.baselines and not self.metric_steps:
            raise InputError("baselines are compared on the deletion/insertion curves; metric steps must be at "
                             "least 2 (got 0)")
        self.check()

    def check(self) -> None:
        """Checks across fields (a method's Settings overrides this)."""


COMMON_FIELDS = tuple(f.name for f in dataclasses.fields(CommonSettings))


@dataclass(frozen=True)
class Attribution:
    """What a method's :meth:`~Explainer.attribute` returns.

    raw: the map in the method's units (slice shape); details: scalars and small lists for the
    metrics table (e.g. ``masks_used``); components: named sub-maps (layer maps: one per encoder
    layer, [0, 1] in the ROI); passes: encoder passes the engine did not count (e.g. a hooked pass).
    """

    raw: np.ndarray
    details: Dict[str, Any] = field(default_factory=dict)
    components: Dict[str, np.ndarray] = field(default_factory=dict)
    passes: Dict[str, int] = field(default_factory=dict)
    #: what the evidence check weighs against the noise when the engine's largest fall is not it
    #: (occlusion's restore and both modes: the largest rise one patch's return caused, or with both
    #: the largest fall one patch's removal caused if larger); None: that fall
    largest_change: Optional[float] = None


@dataclass(frozen=True)
class Explanation:
    """A saliency map of one slice and how it was made.

    saliency: float32, the slice's shape, min-max to [0, 1] over the ROI (0 outside it).  raw: the
    unnormalised map (method units).  reference: the unperturbed mask.  details: the method's own
    figures.  components: named sub-maps (layer maps) and component_table their localisation rows,
    best_component the best of them.  metrics: the metrics stage's figures (:mod:`.measure`).
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
    details: Dict[str, Any] = field(default_factory=dict)
    record: Dict[str, Any] = field(default_factory=dict)
    components: Dict[str, np.ndarray] = field(default_factory=dict)
    component_table: List[Dict[str, Any]] = field(default_factory=list)
    best_component: Optional[str] = None
    target: Optional[np.ndarray] = None
    #: the largest fall of the score that one of attribution's perturbed passes caused (None: it
    #: made none), or the method's own :attr:`Attribution.largest_change`; what the evidence check
    #: weighs against the noise (:mod:`.measure`)
    largest_drop: Optional[float] = None


def fill_image(image: np.ndarray, fill: str) -> np.ndarray:
    """What a removed pixel becomes."""
    if fill == "zero":
        return np.zeros_like(image, dtype=np.float32)
    if fill == "mean":
        return np.full(image.shape, float(image.mean()), dtype=np.float32)
    if fill == "blur":
        import cv2

        return cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigmaX=5.0, borderType=cv2.BORDER_REFLECT)
    if fill == "inpaint":  # depends on what is removed: see removed(); unused as a fixed image
        return image.astype(np.float32)
    raise InputError(f"fill {fill!r} is unknown; expected one of {', '.join(FILLS)}")


def removed(image: np.ndarray, gone: np.ndarray, fill: str, filled: Optional[np.ndarray] = None) -> np.ndarray:
    """``image`` with the pixels where ``gone`` is true removed by ``fill`` (one of
    :data:`METRIC_FILLS` but "method"): "inpaint" fills them from the kept pixels around them
    (OpenCV's Navier-Stokes inpainting, radius :data:`INPAINT_RADIUS`; its Telea method overshoots
    on float images), the others as :func:`fill_image` (``filled``: that image, when the caller
    removes several regions from one image)."""
    image = np.asarray(image, dtype=np.float32)
    gone = np.asarray(gone, bool)
    if not gone.any():
        return image.copy()
    if fill == "inpaint":
        import cv2

        if gone.all():  # nothing kept to fill from: the image's mean
            return np.full(image.shape, float(image.mean()), np.float32)
        return cv2.inpaint(image, gone.astype(np.uint8), INPAINT_RADIUS, cv2.INPAINT_NS).astype(np.float32)
    return np.where(gone, fill_image(image, fill) if filled is None else filled, image).astype(np.float32)


#: share of a CUDA device's free memory that one batch of perturbed passes may take
GPU_MEMORY_SHARE = 0.5
#: the largest batch chosen on a GPU (beyond it a batch only delays progress and cancelling)
MAX_GPU_BATCH = 32


def preferred_batch(segmenter, shape: Optional[Tuple[int, int]] = None) -> int:
    """Perturbed images per model call when the user did not choose: 1 on a CPU; on a CUDA device
    as many as fit in :data:`GPU_MEMORY_SHARE` of its free memory (:func:`batch_from_memory`), at
    most :data:`MAX_GPU_BATCH`; 8 on other accelerators.

    On the 2-core CPU measured (docs/benchmarks/speed.md) larger batches of full LiteMedSAM passes
    are no cheaper per image (with 1 torch thread batch 1 is the cheapest), and passes that reuse the
    slice's activations cost more in a batch, which recomputes the union of the images' changed
    boxes; single images also keep progress and cancel fine-grained.  ``shape``: the slice's shape,
    for models without a fixed input grid."""
    device = str(getattr(segmenter, "device", "cpu") or "cpu")
    if device.startswith("cpu"):
        return 1
    if device.startswith("cuda"):
        import torch

        dev = torch.device(device)
        # free on the device, and what torch holds in reserve but does not use (it serves the batch too)
        free = int(torch.cuda.mem_get_info(dev)[0]) + int(torch.cuda.memory_reserved(dev)
                                                           - torch.cuda.memory_allocated(dev))
        return batch_from_memory(free, pass_bytes(segmenter, shape))
    return 8


def batch_from_memory(free: int, per_image: int, share: float = GPU_MEMORY_SHARE, cap: int = MAX_GPU_BATCH) -> int:
    """The batch whose passes take at most ``share`` of ``free`` bytes at ``per_image`` each (1 to ``cap``)."""
    if per_image <= 0:  # nothing measured: a middling batch
        return min(cap, 8)
    return int(max(1, min(cap, int(free * share) // int(per_image))))


def pass_bytes(segmenter, shape: Optional[Tuple[int, int]] = None) -> int:
    """Peak device memory one full encoder pass and decoding take above what is held before it,
    measured once per segmenter and input grid on its CUDA device (a batch of one synthetic slice)."""
    import torch

    grid = getattr(segmenter, "model_grid", None)
    size = (grid, grid) if grid else tuple(shape or (256, 256))
    known = getattr(segmenter, "_pass_bytes", {})
    if size in known:
        return known[size]
    device = torch.device(str(segmenter.device))
    image = np.random.default_rng(0).random(size, dtype=np.float32)
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    box = (size[1] // 4, size[0] // 4, 3 * size[1] // 4, 3 * size[0] // 4)
    segmenter.decode(segmenter.embed_batch([image])[0], SlicePrompt(box=box))
    torch.cuda.synchronize(device)
    used = int(torch.cuda.max_memory_allocated(device) - before)
    segmenter._pass_bytes = dict(known)
    segmenter._pass_bytes[size] = used
    return used


class PerturbationEngine:
    """Evaluates keep maps of one slice, prompt and ROI through a segmenter (see module docs).

    The unperturbed embedding and logits are computed when first needed unless the caller passes
    them (the volume pipeline does: its cached embedding, its decoded logits).
    """

    def __init__(self, segmenter: PromptableSegmenter, image: np.ndarray, prompt: SlicePrompt, roi: np.ndarray,
                 *, score: str = "dice", fill: str = "zero", batch_size: int = 0,
                 progress: Optional[Progress] = None, stage: str = "explain", embedding=None,
                 logits: Optional[np.ndarray] = None, reuse_cache=None) -> None:
        check_slice(image)
        if score not in SCORES:
            raise InputError(f"score {score!r} is unknown; expected one of {', '.join(SCORES)}")
        if int(batch_size) < 0:
            raise InputError(f"batch size {batch_size} must be 0 (chosen from the device) or more")
        roi = np.asarray(roi, bool)
        if roi.shape != image.shape:
            raise InputError(f"ROI of shape {roi.shape} does not match the slice's shape {image.shape}")
        prompt.check_inside(image.shape)
        if reuse_cache is not None and not np.array_equal(reuse_cache.image, np.asarray(image, np.float32)):
            raise InputError("the activation cache given was made for another slice; expected one made for this "
                             f"slice of shape {image.shape}")
        self.segmenter = segmenter
        self.image = np.asarray(image, dtype=np.float32)
        self.prompt = prompt.clipped(image.shape)
        self.roi = roi
        self.score_name = score
        self.fill_name = fill
        self.fill = fill_image(self.image, fill)
        self.batch_size = int(batch_size) or preferred_batch(segmenter, image.shape)
        self.progress = ensure(progress)
        self.stage = stage
        self.evaluations = 0
        self._embedding = embedding
        self._logits = logits
        self._baseline: Optional[float] = None
        self._reuse_cache = reuse_cache
        #: activation reuse: perturbed passes served from the cache, their summed share of a full
        #: pass (estimated), the summed share of slice pixels they changed, and full passes made
        #: only to build the cache
        self.reused = 0
        self.largest_drop: Optional[float] = None  # the largest fall of the score a perturbed pass caused
        self.reused_share = 0.0
        self.changed_fraction = 0.0
        self.cache_passes = 0

    # the unperturbed slice -------------------------------------------------------------------
    @property
    def embedding(self):
        if self._embedding is None:
            if self.reuses:  # the cache's full pass gives the embedding too
                self._embedding = self.reuse_cache.embedding
            else:
                self._embedding = self.segmenter.embed(self.image)
        return self._embedding

    @property
    def reuses(self) -> bool:
        """Whether perturbed passes reuse the unperturbed pass's activations (the segmenter can)."""
        return bool(getattr(self.segmenter, "supports_reuse", False))

    @property
    def reuse_cache(self):
        """The unperturbed slice's activations (:meth:`PromptableSegmenter.embed_cache`), made on
        first use; pass it to another engine on the same slice and segmenter to share it."""
        if self._reuse_cache is None:
            if self._embedding is not None:
                self.cache_passes += 1
            self._reuse_cache = self.segmenter.embed_cache(self.image)
        return self._reuse_cache

    def reuse_record(self) -> Dict[str, Any]:
        """How the perturbed passes were made, for the run record."""
        n = self.reused
        return {"reused_passes": n, "full_passes": self.evaluations - n, "cache_passes": self.cache_passes,
                "mean_pass_share": round(self.reused_share / n, 4) if n else None,
                "mean_changed_fraction": round(self.changed_fraction / n, 4) if n else None}

    def offer_embedding(self, embedding) -> None:
        """Use ``embedding`` (e.g. from a hooked pass) for the unperturbed slice if none is known yet."""
        if self._embedding is None:
            self._embedding = embedding

    @property
    def logits(self) -> np.ndarray:
        if self._logits is None:
            self._logits = self.segmenter.decode(self.embedding, self.prompt)
        return self._logits

    @property
    def reference(self) -> np.ndarray:
        """The unperturbed mask."""
        return self.logits > 0

    @property
    def region(self) -> np.ndarray:
        """Where the Dice score counts: the ROI and the unperturbed mask."""
        return self.roi | self.reference

    @property
    def baseline(self) -> float:
        """The explained score of the unperturbed slice."""
        if self._baseline is None:
            self._baseline = self.score_logits(self.logits)
        return self._baseline

    # the explained score -------------------------------------------------------------------
    def score_logits(self, logits: np.ndarray) -> float:
        if self.score_name == "dice":
            region, reference = self.region, self.reference
            a, b = (logits > 0) & region, reference & region
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
        if self.fill_name == "inpaint":
            return removed(self.image, k < 0.5, "inpaint")
        return self.image * k + self.fill * (1.0 - k)

    def scores(self, keeps: Iterable[np.ndarray], total: Optional[int] = None, restrict: bool = True) -> np.ndarray:
        """Scores of the perturbed images, one per keep map, in order.

        Opens a progress stage of ``total`` steps (the number of keep maps when it is a sequence)
        unless ``total`` is 0, which continues the current stage (for methods that evaluate in
        several rounds).  ``restrict=False`` applies keep maps outside the ROI too (occlusion: the
        ROI chooses which patches are evaluated, each patch is removed whole, as in seed 001, when
        it scores patches by removal, unless its ``removal`` is roi).
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
        self.baseline  # the reference is decoded before the first perturbed pass  # noqa: B018
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
            if self.reuses and (self._reuse_cache is not None or self._embedding is None or len(images) > 1):
                embeddings = self._embed_changed(images_)
            else:
                embeddings = self.segmenter.embed_batch(images_)
            scores = [self.score_logits(self.segmenter.decode(e, self.prompt)) for e in embeddings]
            drop = self.baseline - min(scores)
            self.largest_drop = drop if self.largest_drop is None else max(self.largest_drop, drop)
            out.extend(scores)
            self.evaluations += len(images_)
            self.progress.step(len(images_), evaluations=self.evaluations)
        return np.asarray(out, dtype=np.float64)

    def _embed_changed(self, images: List[np.ndarray]) -> list:
        """Embeddings of perturbed images through the activation cache: each image's changed box is
        where it differs from the unperturbed slice."""
        cache = self.reuse_cache
        boxes, fractions = [], []
        for im in images:
            diff = im != cache.image
            rows, cols = np.flatnonzero(diff.any(axis=1)), np.flatnonzero(diff.any(axis=0))
            boxes.append((int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1) if len(rows)
                         else (0, 0, 0, 0))
            fractions.append(float(diff.mean()))
        embeddings = self.segmenter.embed_changed_batch(cache, images, boxes)
        for e, f in zip(embeddings, fractions):
            share = float(getattr(e, "pass_share", 1.0))
            if share < 1.0:
                self.reused += 1
                self.reused_share += share
                self.changed_fraction += f
        return embeddings


class Explainer:
    """Base of every explainer: settings in the constructor, data in :meth:`explain`.

    A subclass is the one description of its method (see the module docs) and implements
    :meth:`attribute`.  ``segmenter``: the model explained (a session binds its own when None).
    """

    #: the method's key (``--method NAME``), its display title and what its maps cannot show
    name: ClassVar[str] = "explainer"
    title: ClassVar[str] = "Explainer"
    limits: ClassVar[str] = ""
    #: optional packages the method needs (checked by the Slicer module, imported where used)
    requirements: ClassVar[Tuple[Requirement, ...]] = ()
    #: typed settings with defaults; subclasses extend :class:`CommonSettings`
    Settings: ClassVar[Type[CommonSettings]] = CommonSettings
    #: a perturbation method (part of ``--method all``; faithfulness is always measured)
    perturbs: ClassVar[bool] = True
    #: whether attribution scores the slice with its whole ROI inpainted (``emptied_score`` in its
    #: details), the image the metrics' share of the prompt needs (occlusion putting patches back)
    scores_emptied: ClassVar[bool] = False
    #: the part of the model the sanity check re-draws (None: all of it)
    randomise: ClassVar[Optional[str]] = "mask_decoder"
    #: what a component is called in the metrics (``"layer"``: per-layer table, ``best_layer``)
    component_kind: ClassVar[str] = "component"
    #: localise against the model's own mask when no ground truth is given
    localise_against_mask: ClassVar[bool] = False
    #: what ``fill`` "auto" means for this method
    auto_fill: ClassVar[str] = "zero"

    def __init__(self, segmenter: Optional[PromptableSegmenter] = None, **settings: Any) -> None:
        self.segmenter = segmenter
        self.config = build(self.Settings, settings, f"{self.name} settings")
        if self.config.fill == "auto":  # resolved here, so that the run record names the fill used
            self.config = dataclasses.replace(self.config, fill=self.auto_fill)
        for f in dataclasses.fields(self.config):
            setattr(self, f.name, getattr(self.config, f.name))

    def bind(self, segmenter: PromptableSegmenter) -> "Explainer":
        """A copy of this explainer that explains ``segmenter``."""
        other = copy.copy(self)
        other.segmenter = segmenter
        return other

    def replace(self, **changes: Any) -> "Explainer":
        """A copy with some settings changed."""
        return type(self)(self.segmenter, **dict(as_dict(self.config), **changes))

    def for_structure(self, boxes: Sequence[Optional[Tuple[int, int, int, int]]]) -> "Explainer":
        """This explainer as it explains every slice of one structure, given the prompt boxes of the
        explained slices (x0, y0, x1, y1, in the slices' pixels; None where a slice has no box):
        a method whose perturbations are sized from the structure fixes that size here (the volume
        pipeline calls it once per run); by default the explainer itself."""
        return self

    def settings(self) -> Dict[str, Any]:
        """The settings, for the run record."""
        return dict(method=self.name, **as_dict(self.config))

    @classmethod
    def method_fields(cls) -> List[dataclasses.Field]:
        """The settings fields of this method beyond the common ones."""
        return [f for f in dataclasses.fields(cls.Settings) if f.name not in COMMON_FIELDS]

    # cost ----------------------------------------------------------------------------------
    def cost(self, roi_extent: Optional[Tuple[float, float]] = None, grid: int = 256) -> int:
        """Encoder passes of attribution on one slice (an upper bound where the method may stop
        early; occlusion's strips: an estimate as measured).  roi_extent: the ROI's (rows, columns) on
        the model's ``grid`` when known."""
        raise NotImplementedError

    def cost_equivalents(self, roi_extent: Optional[Tuple[float, float]], grid: int, share) -> float:
        """Attribution's passes on one slice in full-pass equivalents when perturbed passes reuse the
        slice's activations: ``share(extent)`` is the share of a full pass that a change of that
        (rows, columns) on ``grid`` costs (None: unknown).  By default every pass changes the ROI."""
        return self.cost(roi_extent, grid) * share(roi_extent)

    def metric_cost(self) -> int:
        """Encoder passes of the metrics stage per slice for this method alone (:func:`.measure.measure`)."""
        from .measure import metric_passes

        return metric_passes(self)

    def total_cost(self, roi_extent: Optional[Tuple[float, float]] = None, grid: int = 256,
                   cascade_steps: Optional[int] = None, curves: bool = True) -> int:
        """Attribution, metrics and the randomisation checks of this method, per slice (the shared
        passes not included); ``curves``: whether the slice is one of the ``metric_slices`` (else
        only attribution and the Dice drop); ``cascade_steps``: the cascade's steps (default: the
        model's, :func:`~xaiseg.models.base.randomisation_cascade`, 7 without a model)."""
        from ..models.base import randomisation_cascade
        from .measure import scaled_passes

        n = self.cost(roi_extent, grid)
        if not curves:
            return n + scaled_passes(self)
        if cascade_steps is None:
            cascade_steps = len(randomisation_cascade(self.segmenter)) if self.segmenter is not None else 7
        # the last step is drawn cascade_draws times (none where the model has no steps)
        redraws = (1 if self.sanity else 0) + (cascade_steps + self.cascade_draws - 1
                                               if self.cascade and cascade_steps else 0)
        return n * (1 + redraws) + self.metric_cost()

    # the template ----------------------------------------------------------------------------
    def attribute(self, engine: PerturbationEngine) -> Attribution:
        """The raw map of one slice; the one thing a method implements."""
        raise NotImplementedError

    def explain(self, image: np.ndarray, prompt: SlicePrompt, *, roi: Optional[np.ndarray] = None,
                roi_source: str = "image", target: Optional[np.ndarray] = None,
                progress: Optional[Progress] = None, stage: Optional[str] = None, embedding=None,
                logits: Optional[np.ndarray] = None, measure: bool = True, reuse_cache=None) -> Explanation:
        """Explain the mask that ``prompt`` gives on ``image`` (2D, in [0, 1]): attribution, then
        the metrics stage (unless ``measure`` is False).

        roi: where perturbations may act (default: the whole slice); target: a ground-truth mask
        for the localisation metrics; embedding: the unperturbed slice's cached embedding, if any,
        and logits: its decoded logits for ``prompt`` (clipped to the slice), if already computed;
        reuse_cache: the slice's activation cache (:attr:`PerturbationEngine.reuse_cache`), if any.
        """
        if self.segmenter is None:
            raise ModelError(f"{self.name}: no segmenter to explain; pass one to the constructor or use bind()")
        image = np.asarray(image, dtype=np.float32)
        check_slice(image)
        roi = np.ones(image.shape, bool) if roi is None else np.asarray(roi, bool)
        if not roi.any():
            raise InputError("the ROI is empty; expected at least one pixel where perturbations may act")
        if target is not None and np.asarray(target).shape != image.shape:
            raise InputError(f"target mask of shape {np.asarray(target).shape} does not match the slice's shape "
                             f"{image.shape}")
        progress = ensure(progress)
        stage = stage or self.name
        engine = PerturbationEngine(self.segmenter, image, prompt, roi, score=self.score, fill=self.fill,
                                    batch_size=self.batch_size, progress=progress, stage=stage, embedding=embedding,
                                    logits=logits, reuse_cache=reuse_cache)
        t0 = time.perf_counter()
        attribution = self.attribute(engine)
        seconds = time.perf_counter() - t0
        raw = np.where(roi, attribution.raw, 0.0).astype(np.float32)
        settings = self.settings()
        passes = dict(perturbed_encoder_passes=engine.evaluations, **attribution.passes)
        explanation = Explanation(
            normalise01(raw, roi), raw, self.name, settings, engine.evaluations, seconds, roi, roi_source,
            engine.reference, details=dict(attribution.details), components=dict(attribution.components),
            target=None if target is None else np.asarray(target, bool),
            largest_drop=engine.largest_drop if attribution.largest_change is None else attribution.largest_change,
            record={"model": self.segmenter.describe(), "settings": settings, "seed": self.seed,
                    "prompt": prompt.record(), "seconds": round(seconds, 3), "evaluations": passes,
                    "reuse": engine.reuse_record()})
        if not measure:
            return explanation
        from .measure import measure as measure_stage

        return measure_stage(self, explanation, engine, progress, stage)
