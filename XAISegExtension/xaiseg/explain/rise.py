"""RISE restricted to the ROI (seed 001: N = 2000 masks of 7 x 7 cells kept with p = 0.5, upsampled
bilinearly with a random shift; by default the cells are sized from the structure instead - half
the prompt box's shorter side - so the map resolves the structure whatever its size on the slice;
in a volume one size for the whole structure on one lattice over the slice, so that neighbouring
slices are perturbed by the same masks (see :meth:`RISE.mask_maker`); ``cells=7`` gives the seed's
grid over the whole slice).  The cells a mask removes are inpainted from the kept pixels around
them (``fill`` auto; stop 28: with seed 001's zero-filled cells every mask is an image full of
black holes, and the maps were less faithful; ``fill="zero"`` gives them back).  Each pixel's saliency is the mean explained score of the masks
that kept it minus the mean score of those that removed it (the masks' correlation with the score,
which is the RISE estimate with its baseline removed).

Reliability and early stop (stop 31): the masks are dealt alternately into two halves, and every
``check_every`` masks the map of one half is compared with the other's by their correlation over
the ROI.  The halves share no mask, so their disagreement is the draw's noise; stepped up to the
whole map's size (Spearman-Brown, ``2 r / (1 + r)``) it is the map's split-half *reliability*: the
share of the map's variance over the ROI that is not noise, about the correlation of the map with a
second run of as many masks from another seed.  (Pearson, not Spearman: where the model ignores the
pixels, the map's true value is flat, and the ranks of its noise there never agree however many
masks are drawn; the values' noise shrinks.)  After ``min_masks``, when it reaches ``converge`` at
``patience`` checks in a row, the run stops.  It never uses more than ``n_masks``; the result
records how many masks it used, whether it converged and the reliability it reached.  Until stop 31
the map was compared with the map 50 masks earlier; the two share most of their masks, so they
agreed whatever the noise, and runs stopped "converged" with maps that two seeds drew differently
(two draws of 300 masks on the left amygdala agree at Spearman 0.6).  The whole map is the same sum
over all masks as before, so for the same masks it is the same map.

Keep probabilities in strata (stop 39, ``--keep-strata K``): with one keep probability p each
pixel's map is its mean score kept minus removed when every cell is kept with p, a Banzhaf value at
p (p = 0.5: the plain Banzhaf value).  The Shapley value is the same difference averaged over p
from 0 to 1 (Owen's multilinear extension of the game), so it also weighs what a pixel does when
most of the slice is removed, or most of it kept.  With K > 1 the masks are drawn in turn with the
midpoints of K equal parts of (0, 1) as their keep probability, each stratum keeps its own sums
(and its own two halves), and the map is the mean of the strata's maps: the midpoint rule for that
integral.  The players of that game are the cells, and a pixel's keep value is a blend of the cells
around it, so the map is about the Shapley value of the cells around each pixel.  (With inpainting a
pixel counts as removed where its keep value is below 0.5, so the share of pixels kept is near but
not exactly p: 0.07 at p = 0.1, 0.93 at 0.9.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from ..errors import InputError
from ..metrics import pearson
from ..models.base import mask_rect
from ..settings import setting
from .base import (MAX_ASPECT, Attribution, CommonSettings, Explainer, PerturbationEngine, main_axis, side_setting,
                   sized_for_structure, sizing_setting)
from .registry import register


def _cells(rng: np.random.Generator, rows: int, cols: int, ch: int, cw: int, h: int, w: int, p: float) -> np.ndarray:
    """One keep map of ``h`` x ``w``: a ``rows`` x ``cols`` Bernoulli(p) grid upsampled bilinearly to
    cells of ``ch`` x ``cw`` pixels (one cell more each way) and cropped at a random shift."""
    import cv2

    grid = (rng.random((rows, cols)) < p).astype(np.float32)
    big = cv2.resize(grid, ((cols + 1) * cw, (rows + 1) * ch), interpolation=cv2.INTER_LINEAR)
    dy, dx = int(rng.integers(0, ch)), int(rng.integers(0, cw))
    return big[dy:dy + h, dx:dx + w]


def rise_masks(rng: np.random.Generator, n: int, shape: Tuple[int, int], cells: int, p: float) -> np.ndarray:
    """``n`` smooth keep maps of ``shape``: ``cells`` x ``cells`` Bernoulli(p) grids, upsampled bilinearly
    to (cells + 1) cell sizes and cropped at a random shift (Petsiuk et al. 2018)."""
    h, w = shape
    ch, cw = int(np.ceil(h / cells)), int(np.ceil(w / cells))
    out = np.empty((n, h, w), np.float32)
    for i in range(n):
        out[i] = _cells(rng, cells, cells, ch, cw, h, w, p)
    return out


def oriented_masks(rng: np.random.Generator, n: int, shape: Tuple[int, int], width: float, length: float,
                   angle: float, p: float) -> np.ndarray:
    """``n`` smooth keep maps of ``shape`` whose cells are ``width`` across and ``length`` along the
    direction ``angle`` (degrees from the columns' axis towards the rows', as :func:`main_axis`
    gives it): Bernoulli(p) cells, upsampled bilinearly and shifted at random as :func:`rise_masks`
    does, on a canvas of the slice's diagonal turned about the slice's centre.  The draws depend on
    ``shape``, the cell sizes and the seed only, so two slices of one structure whose axes differ a
    little get masks that differ as little (except across the seam at +-90 degrees, where the same
    axis is drawn half a turn apart)."""
    import cv2

    h, w = shape
    side = int(np.ceil(np.hypot(h, w))) + 2  # the turned canvas covers the slice whatever the angle
    cw, cl = max(1, int(np.ceil(width))), max(1, int(np.ceil(length)))
    rows, cols = int(np.ceil(side / cw)) + 1, int(np.ceil(side / cl)) + 1
    turn = cv2.getRotationMatrix2D((side / 2.0, side / 2.0), -float(angle), 1.0)
    turn[0, 2] -= side / 2.0 - w / 2.0  # the canvas's centre onto the slice's
    turn[1, 2] -= side / 2.0 - h / 2.0
    out = np.empty((n, h, w), np.float32)
    for i in range(n):
        canvas = np.ascontiguousarray(_cells(rng, rows, cols, cw, cl, side, side, p))
        out[i] = cv2.warpAffine(canvas, turn, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out


#: the most keep-probability strata (each needs masks of its own before the map settles)
MAX_STRATA = 20


def keep_probabilities(strata: int, p: float) -> Tuple[float, ...]:
    """The keep probability of each stratum: ``p`` alone for one, else the midpoints of ``strata``
    equal parts of (0, 1)."""
    if strata <= 1:
        return (float(p),)
    return tuple((j + 0.5) / strata for j in range(strata))


CELL_FRACTION = 0.5  # structure-sized cells: this share of the prompt box's shorter side
#: a slice whose box's shorter side is below this share of the structure's (an end slice, where the
#: structure is a speck) keeps cells of its own box: the structure's cells would be too coarse
#: there (stop 22: one lattice on every slice made the end slices' maps less faithful)
SPECK = 0.5


@dataclass(frozen=True)
class RiseSettings(CommonSettings):
    n_masks: int = setting(2000, "RISE: most masks (stops early on convergence)", minimum=2, flag="--masks")
    cells: int = setting(0, "RISE: mask grid cells per side over the whole slice (7 is seed 001); 0: cells of half "
                            "the prompt box's shorter side over the ROI's bounding box (in a volume with --sizing "
                            "structure: half the structure's median box, on one lattice over the slice)", minimum=0,
                         flag="--cells")
    p: float = setting(0.5, "RISE: probability that a cell is kept", flag="--keep-probability")
    cell_aspect: float = setting(1.0, "RISE: structure-sized cells (in a volume, one lattice over the slice) this "
                                      "many times longer along the structure's main axis on the slice (its "
                                      "mask's longer principal axis) than across it; 1: square cells (a round "
                                      "mask, a speck slice and --cells keep them square)", minimum=1.0,
                                 maximum=MAX_ASPECT, flag="--cell-aspect")
    strata: int = setting(1, "RISE: keep probabilities the masks are drawn with, in turn; 1: every mask keeps "
                             "cells with --keep-probability (the map is each pixel's Banzhaf value at that "
                             "probability, as in seed 001); K: the midpoints of K equal parts of (0, 1), and the "
                             "map is the mean of their maps (about the Shapley value of the cells around each "
                             "pixel)", minimum=1,
                          maximum=MAX_STRATA, flag="--keep-strata")
    sizing: str = sizing_setting()
    side: float = side_setting()
    early_stop: bool = setting(True, "RISE: stop when the map has converged (--no-early-stop: always use --masks "
                                        "masks)", flag="--no-early-stop")
    check_every: int = setting(50, "RISE: masks between convergence checks", minimum=2, cli=False)
    min_masks: int = setting(100, "RISE: masks before the first possible stop", minimum=0, cli=False)
    converge: float = setting(0.9, "RISE: split-half reliability of the map (the correlation of the maps of two "
                                   "halves of the masks over the ROI, stepped up to the whole map by Spearman-Brown) "
                                   "that ends the run early: the share of the map's variance that is not noise",
                              flag="--rise-reliability", minimum=0.0, maximum=1.0)
    #: one check is enough: unlike the old rule's, the reliability compares maps that share no mask
    patience: int = setting(1, "RISE: converged checks in a row before stopping", minimum=1, cli=False)

    def next_streak(self, streak: int, reliability: float, used: int) -> Tuple[int, bool]:
        """After one more check (the map's ``reliability`` at ``used`` masks): the checks in a row at
        or above ``converge``, and whether the early stop ends the run there."""
        streak = streak + 1 if reliability >= self.converge else 0
        return streak, bool(self.early_stop and used >= self.min_masks and streak >= self.patience)

    def check(self) -> None:
        if not 0.0 < self.p < 1.0:
            raise InputError(f"RISE keep probability {self.p} must lie strictly between 0 and 1")
        if not 0.0 < self.converge <= 1.0:
            raise InputError(f"RISE reliability (--rise-reliability) {self.converge} must lie in (0, 1]")
        if self.strata > 1 and self.n_masks < 2 * self.strata:
            raise InputError(f"RISE masks (--masks) {self.n_masks} for {self.strata} keep-probability strata "
                             f"(--keep-strata): expected at least {2 * self.strata}, two per stratum")
        if self.strata > 1 and self.p != 0.5:
            raise InputError(f"RISE keep probability (--keep-probability) {self.p} with {self.strata} strata "
                             "(--keep-strata): the strata set each mask's keep probability; expected --keep-strata 1, "
                             "or the default --keep-probability 0.5")
        if self.cells and self.cell_aspect != 1.0:
            raise InputError(f"RISE cell aspect (--cell-aspect) {self.cell_aspect} with a fixed grid (--cells "
                             f"{self.cells}): expected --cell-aspect 1, or --cells 0 for cells sized from the "
                             "structure")


@register
class RISE(Explainer):
    name = "rise"
    title = "RISE"
    limits = ("RISE weights random coarse masks by the score they keep; the map is blurry at the mask grid's scale "
              "and varies with the seed and the number of masks")
    Settings = RiseSettings
    #: removed cells are inpainted from the kept ones around them, not zeroed (stop 28: mean
    #: deletion AUC 0.576 against 0.712 on the faithfulness bench)
    auto_fill = "inpaint"

    def cost(self, roi_extent: Optional[Tuple[float, float]] = None, grid: int = 256) -> int:
        return self.n_masks

    def for_structure(self, boxes) -> "RISE":
        """With structure-sized cells and ``sizing`` 'structure': this explainer with ``side`` set to
        the median shorter side of ``boxes`` (the explained slices' prompt boxes), so that every slice
        of the structure is perturbed by the same masks."""
        return sized_for_structure(self, boxes, fixed=bool(self.cells))

    def mask_maker(self, engine: PerturbationEngine):
        """``make(rng, n, p=self.p)``: n keep maps of the slice - seed 001's grid over the whole slice; (cells 0,
        ``side`` set) structure-sized cells on one lattice over the whole slice, the same masks on
        every slice of the structure (they act inside each slice's ROI only); or (cells 0, no
        ``side``, or a box below ``SPECK`` of ``side``) cells sized from the slice's own box over the
        ROI's bounding box, 1 outside it.  With ``cell_aspect`` above 1 the structure's cells are that
        many times longer along the mask's :func:`main_axis` (square where the mask has none)."""
        shape = engine.image.shape
        if self.cells:
            return (lambda rng, n, p=self.p: rise_masks(rng, n, shape, self.cells, p)), self.cells
        from ..roi.geometry import prompt_box

        box = prompt_box(engine.prompt, engine.reference) or (0, 0, shape[1] - 1, shape[0] - 1)
        if self.side and min(box[2] - box[0] + 1, box[3] - box[1] + 1) >= SPECK * self.side:
            # neighbouring slices share the masks, so their maps differ where the slices do, not by
            # which masks were drawn (adjacent-slice Spearman 0.56 on the middle pairs at stop 23);
            # drawn over a square of the slice's longer side and cropped, so the cells stay square on
            # a slice that is not
            square = max(shape)
            width = max(2.0, CELL_FRACTION * self.side)
            lattice = max(2, int(np.ceil(square / width)))
            h, w = shape
            angle = main_axis(engine.reference) if self.cell_aspect > 1.0 else None
            if angle is not None:  # cells along the structure, turned with it from slice to slice
                def along(rng, n, p=self.p):
                    return oriented_masks(rng, n, shape, width, self.cell_aspect * width, angle, p)

                along.cell_angle = round(angle, 1)  # recorded with the map
                return along, lattice
            return (lambda rng, n, p=self.p: rise_masks(rng, n, (square, square), lattice, p)[:, :h, :w]), lattice
        cell = max(2.0, CELL_FRACTION * min(box[2] - box[0] + 1, box[3] - box[1] + 1))
        y0, x0, y1, x1 = mask_rect(engine.roi)
        cells = max(2, int(np.ceil(max(y1 - y0, x1 - x0) / cell)))

        def make(rng, n, p=self.p):
            out = np.ones((n,) + shape, np.float32)
            out[:, y0:y1, x0:x1] = rise_masks(rng, n, (int(y1 - y0), int(x1 - x0)), cells, p)
            return out

        return make, cells

    def attribute(self, engine: PerturbationEngine) -> Attribution:
        rng = np.random.default_rng(self.seed)
        shape = engine.image.shape
        make, cells = self.mask_maker(engine)
        probabilities = keep_probabilities(self.strata, self.p)
        sums = StrataSums(shape, len(probabilities))
        streak, history = 0, []
        converged = False
        reliability = None
        engine.progress.stage(engine.stage, self.n_masks)
        while sums.used < self.n_masks:
            # mask i of the run is drawn in stratum i mod K; a block draws each stratum's masks in turn
            # and scores them in one call
            block = sums.used + np.arange(min(self.check_every, self.n_masks - sums.used))
            counts = [int(np.count_nonzero(block % len(probabilities) == j)) for j in range(len(probabilities))]
            drawn = [make(rng, n, p) for n, p in zip(counts, probabilities) if n]
            masks = drawn[0] if len(drawn) == 1 else np.concatenate(drawn)
            scores = np.asarray(engine.scores(masks, total=0))
            start = 0
            for j, n in enumerate(counts):
                if n:
                    sums.add(j, scores[start:start + n], masks[start:start + n])
                    start += n
            reliability = sums.reliability(engine.roi)
            history.append([sums.used, round(reliability, 4)])
            streak, converged = self.config.next_streak(streak, reliability, sums.used)
            converged = converged and sums.every_half_drawn()  # no stop before each stratum has both halves
            if converged:
                break
        engine.progress.done()
        details = {"masks_used": sums.used, "stopped_at": sums.used, "converged": converged,
                   "reliability": None if reliability is None else round(reliability, 4),
                   "convergence": history, "cells": cells}
        if len(probabilities) > 1:
            details["keep_probabilities"] = [round(p, 4) for p in probabilities]
        if self.cell_aspect != 1.0:  # the main axis the cells followed (None: square cells on this slice)
            details["cell_angle"] = getattr(make, "cell_angle", None)
        if reliability is not None and self.early_stop and not converged:  # --masks ended it before the stop
            details["masks_for_reliability"] = masks_for_reliability(reliability, sums.used, self.converge)
        return Attribution(sums.map(), details)

    @staticmethod
    def _map(kept_sum, kept_w, score_sum, n):
        removed_w = n - kept_w
        kept_mean = np.divide(kept_sum, kept_w, out=np.zeros_like(kept_sum), where=kept_w > 0)
        removed_mean = np.divide(score_sum - kept_sum, removed_w, out=np.zeros_like(kept_sum), where=removed_w > 0)
        return kept_mean - removed_mean


#: a ROI of fewer pixels than this has no reliability (two or three pixels correlate perfectly by chance)
MIN_RELIABILITY_PIXELS = 8


def spearman_brown(r: float) -> float:
    """The reliability, in [0, 1], of a map of twice the masks whose halves correlate at ``r`` (a
    negative correlation is noise: reliability 0)."""
    r = float(np.clip(r, 0.0, 1.0))
    return 2.0 * r / (1.0 + r)


def masks_for_reliability(reliability: float, used: int, target: float) -> Optional[int]:
    """About how many masks a map of reliability ``reliability`` from ``used`` masks needs to reach
    ``target`` (the Spearman-Brown prophecy: a map of k times the masks has reliability
    k r / (1 + (k - 1) r)); ``used`` when it is already there, None when ``reliability`` is 0 (no
    number of masks is predicted to help) or ``target`` is 1."""
    r, t = float(reliability), float(target)
    if not np.isfinite(r):
        return None
    if r >= t:
        return int(used)
    if r <= 0.0 or t >= 1.0:
        return None
    return int(np.ceil(used * (t / (1.0 - t)) / (r / (1.0 - r)) - 1e-9))  # exact answers stay exact


class RiseSums:
    """RISE's running sums over the masks drawn so far, and the same sums for the masks dealt to
    each of two halves (alternately, in drawing order), whose maps measure the whole map's noise."""

    def __init__(self, shape: Tuple[int, int]) -> None:
        self.kept_sum = np.zeros(shape, np.float64)  # sum of s_i * m_i
        self.kept_w = np.zeros(shape, np.float64)    # sum of m_i
        self.score_sum = 0.0
        self.used = 0
        self.halves = [[np.zeros(shape, np.float64), np.zeros(shape, np.float64), 0.0, 0] for _ in range(2)]

    def add(self, scores: np.ndarray, masks: np.ndarray) -> None:
        scores = np.asarray(scores)
        self.kept_sum += np.tensordot(scores, masks, axes=1)
        self.kept_w += masks.sum(axis=0)
        self.score_sum += float(scores.sum())
        for h, half in enumerate(self.halves):
            pick = (self.used + np.arange(len(scores))) % 2 == h
            if pick.any():
                half[0] += np.tensordot(scores[pick], masks[pick], axes=1)
                half[1] += masks[pick].sum(axis=0)
                half[2] += float(scores[pick].sum())
                half[3] += int(pick.sum())
        self.used += len(scores)

    @property
    def whole(self) -> Tuple:
        """The sums over every mask, as a half's: ``(kept_sum, kept_w, score_sum, n)``."""
        return self.kept_sum, self.kept_w, self.score_sum, self.used

    def map(self) -> np.ndarray:
        return RISE._map(*self.whole)

    def half_maps(self) -> Tuple[np.ndarray, np.ndarray]:
        return RISE._map(*self.halves[0]), RISE._map(*self.halves[1])

    def reliability(self, roi: np.ndarray) -> float:
        """Split-half reliability of :meth:`map` over ``roi``: the share of its variance over the ROI
        that is not the draw's noise (0 while a half's map is flat)."""
        return split_half(self.half_maps(), roi)


def split_half(halves: Tuple[np.ndarray, np.ndarray], roi: np.ndarray) -> float:
    """The reliability of a map whose two halves of masks drew ``halves``: their correlation over
    ``roi`` stepped up to the whole map (0 for a ROI of too few pixels)."""
    if int(np.count_nonzero(roi)) < MIN_RELIABILITY_PIXELS:
        return 0.0
    return spearman_brown(pearson(halves[0], halves[1], roi))


class StrataSums:
    """:class:`RiseSums` for each keep-probability stratum.  The map (and each half's) is, per
    pixel, the mean of the strata's maps over the strata where masks both kept and removed it: at a
    probability near 0 or 1 a pixel may be removed (or kept) by every mask of a stratum, which then
    says nothing about it.  One stratum: exactly its :class:`RiseSums`."""

    def __init__(self, shape: Tuple[int, int], strata: int = 1) -> None:
        self.shape = tuple(shape)
        self.strata = [RiseSums(shape) for _ in range(max(1, int(strata)))]
        self.low, self.high = np.inf, -np.inf  # the scores' range over every mask

    @property
    def constant(self) -> bool:
        """Whether every mask scored the same (or none was drawn): nothing moved the model, so the
        map is 0 everywhere.  Its contrasts would otherwise be float rounding (about 1e-6, e.g. a
        model re-drawn by the cascade that draws no mask on any masked image), and a rank
        correlation would read a pattern into them."""
        return not self.high > self.low

    @property
    def used(self) -> int:
        return sum(s.used for s in self.strata)

    def add(self, stratum: int, scores: np.ndarray, masks: np.ndarray) -> None:
        scores = np.asarray(scores)
        if scores.size:
            self.low, self.high = min(self.low, float(scores.min())), max(self.high, float(scores.max()))
        self.strata[stratum].add(scores, masks)

    def _mean(self, parts) -> np.ndarray:
        """The mean map of ``parts`` (each ``(kept_sum, kept_w, score_sum, n)``), per pixel over those
        that both kept and removed it (0 where none did); one part's map as it is."""
        parts = [part for part in parts if part[3]]
        if len(parts) == 1:
            return RISE._map(*parts[0])
        total = np.zeros(self.shape, np.float64)
        count = np.zeros(self.shape, np.float64)
        for kept_sum, kept_w, score_sum, n in parts:
            told = (kept_w > 0) & (n - kept_w > 0)
            total = total + np.where(told, RISE._map(kept_sum, kept_w, score_sum, n), 0.0)
            count = count + told
        return np.divide(total, count, out=np.zeros_like(total), where=count > 0)

    def map(self) -> np.ndarray:
        if self.constant:
            return np.zeros(self.shape, np.float64)
        return self._mean([s.whole for s in self.strata])

    def half_maps(self) -> Tuple[np.ndarray, np.ndarray]:
        if self.constant:
            return np.zeros(self.shape, np.float64), np.zeros(self.shape, np.float64)
        return self._mean([s.halves[0] for s in self.strata]), self._mean([s.halves[1] for s in self.strata])

    def every_half_drawn(self) -> bool:
        """Whether every stratum has drawn masks into both of its halves."""
        return all(half[3] for s in self.strata for half in s.halves)

    def reliability(self, roi: np.ndarray) -> float:
        """As :meth:`RiseSums.reliability`, of the mean map: its halves are the strata's halves, averaged."""
        return split_half(self.half_maps(), roi)
