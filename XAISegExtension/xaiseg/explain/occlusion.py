"""ROI-guided occlusion sensitivity (seed 001): patches slide over the slice (by default strips along
the structure, below; seed 001's squares with a fixed ``--patch``); only patches
that overlap the ROI are evaluated, and a pixel's value is the mean score of the patches covering
it (by default then smoothed, see below).  A patch's score (``mode``):

* both (the default for the structure-sized patches, below, since stop 40): the sum of the two
  scores below, two passes per patch and one for the inpainted ROI.  Restore alone won more of the
  faithfulness bench's middle slices (7 of 12 against 6), but on structures no issue names it found
  no change above the model's noise on 7 of 8 slices, so those maps were not painted, and the maps
  of neighbouring slices hardly agreed (docs/explain_measurements.md, "Occlusion scored both ways").
* max: the larger of the two scores below, at both's passes: evidence the mask needs or evidence
  that draws it on its own.  It won 10 of the goal table's 12 middle slices but 14 of 28 held-out
  slices where both won 20 (stop 52, docs/explain_measurements.md, "A strip scored by the larger of
  its two halves"), so it is an option.
* restore: the whole ROI is inpainted from the pixels around it (the slice without the structure,
  one pass), then each patch alone is put back; its score is the rise of the explained score over
  the inpainted ROI (the Dice it brings back).  LiteMedSAM keeps a mask until most of the structure
  is gone, so removing one patch at a time shows little; what one patch restores on its own says
  which part the mask needs (stop 27, docs/explain_measurements.md, "Occlusion scored by restore").
* remove (seed 001; the fixed ``--patch`` grid and the ``--occlusion-passes`` cells keep it): a
  patch's score is the drop of the explained score when it alone is removed (by ``fill``): the
  whole patch, outside the ROI too (``removal`` whole, seed 001), or only its pixels inside the ROI
  (``removal`` roi, those the curves remove; stop 49, "Strips removed inside the ROI only").

Patch size, by default, from the structure.  The squares (``aspect`` 1), coarse to fine: first
patches as large as the prompt box's shorter side (within ``[MIN_PATCH, 64]`` model-grid pixels)
tile the ROI; then, only inside the ``REFINE`` coarse patches with the highest scores, patches of
half that size at a quarter's stride refine the map.  The map resolves the structure at a fraction
of the passes a fine grid over the whole ROI would cost, and a slice costs at most its coarse patches plus
``9 * REFINE`` (twice that when scoring both ways, and the inpainted ROI's pass when the patches are
put back; fewer only where a coarse patch scored nothing, so is not refined, or finer patches
coincide at the slice's edge), so the estimate before
a run, which counts that most, does not depend on the maps.  In a
volume, with ``sizing="structure"``, the patch is sized once for the whole structure, so its slices
share one grid.  In this mode (a single slice, a volume, either sizing) each pixel then takes the
mean score of the patches around it with Gaussian weights of a quarter of the coarse patch's side
(``smooth``), not only of the patches covering it: a flat patch left its pixels to be ranked by
their position, and the neighbours' scores say which side of a patch lies nearer the evidence.
By default (``aspect`` 0: :data:`DEFAULT_ASPECT`) and with ``aspect`` A > 1 (``--occlusion-aspect``;
1 keeps the squares) the structure-sized patches become strips of the same area, A times longer
along the structure's main axis on the slice (the longer principal axis of the model's mask) than
across it, on a lattice turned with that axis about the slice's centre,
with steps of half a strip both ways; every strip touching the ROI is scored, none refined, and the
map is smoothed by ``smooth`` times a strip's width (a round mask keeps the squares).  Thin,
slanted structures are about one square patch across, so a square takes in the tissue beside them;
a strip follows them (docs/explain_measurements.md, "Occlusion strips along the structure").  ``shifts`` N
(``--occlusion-shifts``) scores N such lattices, each moved a further 1/N of a step along and across,
and each pixel takes the mean of all strips covering it, at N times the passes: where one lattice
happens to fall moves a slice's figures (docs/explain_measurements.md, "Strips on shifted lattices").
``--patch 64 --stride 32`` gives seed 001's fixed single-level grid (never smoothed, nor are the
budgeted cells below), measured on the model's input grid (``grid="model"``, LiteMedSAM's 256) or on
the slice's pixels (``grid="image"``).

With a pass budget (``passes``, ``--occlusion-passes N``, N >= 4; N >= 5 when restoring, whose
inpainted ROI is one of the N, and 9 with ``both`` or ``max``, two passes per cell) the patches are cells of the
ROI's bounding rectangle instead, coarse to fine until the budget is spent: its four quadrants
first, then the cells half a cell off that grid (the centre, the edge middles), then the quadrants
of those cells, and so on; each round takes the cells whose area the map so far rates hottest.
Every slice then costs at most N passes, whatever the structure's size (:func:`budget_rounds`)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import InputError
from ..models.base import mask_rect
from ..settings import setting
from .base import (MAX_ASPECT, Attribution, CommonSettings, Explainer, PerturbationEngine, main_axis, removed,
                   side_setting, sized_for_structure, sizing_setting)
from .registry import register


def positions(length: int, patch: int, stride: int) -> List[int]:
    """Patch starts along one axis, covering it to the end (a last patch is added at the border)."""
    if patch >= length:
        return [0]
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)
    return starts


MIN_PATCH = 8  # model-grid pixels: the smallest coarse structure-sized patch
REFINE = 2  # coarse patches refined: those with the highest scores (if positive at all)
FINE_PER_PATCH = 9  # a refined patch's finer patches: half its size at a quarter's stride, 3 x 3
#: a patch's score: the rise when it alone is kept (restore), the fall when it alone is removed
#: (remove), the sum of the two (both), the larger of the two (max), or (auto) :data:`AUTO_SCORING`
#: for the structure-sized patches and remove otherwise (:attr:`Occlusion.scoring`)
MODES = ("auto", "both", "max", "restore", "remove")
#: the modes that remove each patch and put it back, two passes per patch
TWO_WAYS = ("both", "max")
AUTO_SCORING = "both"
#: what a removed patch takes away: all of it (seed 001), or only its pixels inside the ROI
REMOVALS = ("whole", "roi")
#: the structure-sized patches' strips by default (``aspect`` 0): 4 times longer along the structure than
#: across (stop 45; squares, aspect 1, until then): on the bench's 12 middle slices they beat every
#: trivial map on 9 where the squares beat them on 6 (docs/explain_measurements.md, "Occlusion strips along
#: the structure")
DEFAULT_ASPECT = 4.0
#: the pass estimate's strips per square cell (coarse and refined) of the same ROI: a pixel lies in
#: about four strips of a square's area, and none is refined.  On the faithfulness bench's 20 slices the
#: strips took 1.1 - 2.3 times the squares' passes (mean 1.9), and twice the squares' estimate (from
#: the prompt box, as a run estimates) came to 0.72 - 1.79 times the strips' passes (mean 1.04), where
#: the bound over every angle used at stop 44 came to 1.04 - 1.91 (mean 1.40)
STRIPS_PER_SQUARE = 2.0
#: the most lattices of strips (``shifts``): four shifted a quarter step apart already cut the ROI at
#: every eighth of a strip's length
MAX_SHIFTS = 4
#: cells whose perturbed images are held at once (each a whole slice: the strips of a large slice
#: number a few hundred)
CELLS_AT_ONCE = 32
#: passes a pass budget must allow: the ROI's four quadrants, and the inpainted ROI when restoring
LEAST_PASSES = {"remove": 4, "restore": 5, "both": 9, "max": 9}
#: what the rest of the ROI becomes in mode restore, whatever ``fill`` says: emptied to zero (or a
#: flat grey) the ROI leaves each patch put back floating in a blank hole, an image unlike any the
#: model was trained on; inpainted from around the ROI, it is the slice without the structure
RESTORE_FILL = "inpaint"


@dataclass(frozen=True)
class OcclusionSettings(CommonSettings):
    patch: int = setting(0, "occlusion patch, on the model grid (or the slice, see --occlusion-grid); 0: sized "
                            "from the structure: strips along it by default, squares coarse to fine with "
                            "--occlusion-aspect 1 (64 with --stride 32 is seed 001's fixed size)",
                         minimum=0, flag="--patch")
    stride: int = setting(0, "occlusion stride, on the same grid as the patch; 0: half the patch", minimum=0,
                          flag="--stride")
    passes: int = setting(0, "most encoder passes per slice: 0 for no limit (structure-sized patches: strips, or "
                             "squares coarse to fine); N >= 4 for cells of the ROI coarse to fine until N are "
                             "spent (its quadrants first; N >= 5 with --occlusion-mode restore, 9 with both or max)",
                         minimum=0, flag="--occlusion-passes")
    grid: str = setting("model", "what patch and stride are measured on: the model's input grid or the slice's "
                                 "pixels", choices=("model", "image"), flag="--occlusion-grid")
    smooth: float = setting(0.25, "structure-sized occlusion: each pixel takes the mean score of the patches around "
                                  "it weighted by a Gaussian of this share of the coarse patch's side (of a strip's "
                                  "width for the strips, the default), so pixels "
                                  "inside one patch are ranked by its neighbours' scores (0: the plain mean of the "
                                  "patches covering it, flat over each patch; the fixed --patch grid and the "
                                  "--occlusion-passes cells are never smoothed)", minimum=0.0,
                            flag="--occlusion-smooth")
    mode: str = setting("auto", "what a patch's score is: restore - its rise when the patch alone is kept and the "
                                "rest of the ROI is inpainted from around the ROI (--fill is not used there; one "
                                "pass more per slice, the whole ROI inpainted); remove - the fall of the score when "
                                "the patch alone is removed by --fill (seed 001); both - the sum of the two (two "
                                "passes per patch); max - the larger of the two (two passes per patch); auto - "
                                + AUTO_SCORING + " for the structure-sized patches, remove for a fixed --patch and "
                                "for --occlusion-passes", choices=MODES,
                        flag="--occlusion-mode")
    aspect: float = setting(0.0, "structure-sized occlusion: strips this many times longer along the structure's main "
                                 "axis on each slice than across it, of the square patch's area, on a lattice turned "
                                 "with the structure, every strip scored and none refined (1: squares, coarse to fine; "
                                 "a round mask keeps the squares; 0: " + f"{DEFAULT_ASPECT:g}" + ", or squares with "
                                 "--patch, --occlusion-passes or --stride)", minimum=0.0, maximum=MAX_ASPECT,
                            flag="--occlusion-aspect")
    shifts: int = setting(1, "strips: lattices of strips scored, each moved a further 1/N of a step (a step is half "
                             "a strip) along and across, and every pixel given the mean score of all strips covering "
                             "it, so the map depends less on where one lattice happens to fall (N times the passes)",
                          minimum=1, maximum=MAX_SHIFTS, flag="--occlusion-shifts")
    removal: str = setting("whole", "what a removed patch takes away (--occlusion-mode remove, both and max, and auto, "
                                    "which picks one of them): whole - the whole patch, outside the ROI too (seed "
                                    "001); roi - only its pixels inside the ROI, the pixels the curves remove (a "
                                    "patch put back is put back inside the ROI either way)", choices=REMOVALS,
                           flag="--occlusion-removal")
    sizing: str = sizing_setting()
    side: float = side_setting()

    def check(self) -> None:
        if 0.0 < self.aspect < 1.0:
            raise InputError(f"occlusion aspect (--occlusion-aspect) {self.aspect}: expected 0 (the default, "
                             f"{DEFAULT_ASPECT:g} for the structure-sized patches), 1 (squares) or more, up to "
                             f"{MAX_ASPECT:g}")
        fixed = self._no_strips()
        if self.aspect > 1.0 and fixed:
            raise InputError(f"occlusion aspect (--occlusion-aspect) {self.aspect} turns the structure-sized patches "
                             f"into strips; expected 0 or 1 (squares) with {fixed}")
        if self.shifts > 1 and (fixed or self.aspect == 1.0):
            raise InputError(f"occlusion shifts (--occlusion-shifts) {self.shifts} move the strips' lattice; expected 1 "
                             f"with {fixed or '--occlusion-aspect 1, the squares'}, which use no strips")
        if self.removal != "whole" and self.mode == "restore":
            raise InputError(f"occlusion removal (--occlusion-removal) {self.removal} says what a removed patch takes "
                             "away; expected whole with --occlusion-mode restore, which removes no patch")
        how = "remove" if self.mode == "auto" else self.mode  # auto removes with a pass budget
        if self.passes and self.passes < LEAST_PASSES[how]:
            first = {"remove": "the ROI's four quadrants come first",
                     "restore": "the ROI removed, then its four quadrants put back",
                     "both": "the ROI removed, then its four quadrants removed and put back"}[
                         "both" if how in TWO_WAYS else how]
            raise InputError(f"occlusion passes {self.passes} must be 0 (no limit) or at least {LEAST_PASSES[how]} "
                             f"with --occlusion-mode {self.mode} ({first})")
        if self.passes and (self.patch or self.stride):
            raise InputError(f"occlusion passes {self.passes} choose the patches themselves; expected no --patch "
                             f"(got {self.patch}) or --stride (got {self.stride}) with them")

    def _no_strips(self) -> str:
        """The setting that rules out strips, in words ('' where none does)."""
        if self.patch:
            return f"--patch {self.patch}, whose patches are fixed"
        if self.passes:
            return f"--occlusion-passes {self.passes}, whose cells the budget chooses"
        if self.stride:
            return f"--stride {self.stride}: the strips step half their length along and half their width across"
        return ""


Cell = Tuple[int, int, int, int]  # y0, x0, y1, x1 (end exclusive)


@dataclass
class PatchScoring:
    """One slice's patch scoring: ``how`` (remove, restore, both or max), the inpainted ROI's score when
    patches are put back (``emptied``), and the largest single fall or rise a patch's pass caused."""

    how: str
    emptied: Optional[float] = None
    largest: float = 0.0


def _cells(rect: Cell, level: int, offset: bool) -> List[Cell]:
    """The cells of ``rect`` split ``2**level`` ways per axis; with ``offset`` the cells half a cell
    off that grid (those the plain grid does not already hold)."""
    y0, x0, y1, x1 = rect
    n = 2 ** level
    hy, hx = (y1 - y0) / n, (x1 - x0) / n
    # cell starts along one axis, in cells: the grid's, then (offset) those half a cell off it
    steps = [(i, False) for i in range(n)] + ([(i + 0.5, True) for i in range(n - 1)] if offset else [])
    out = []
    for a, a_off in steps:
        for b, b_off in steps:
            if offset and not (a_off or b_off):
                continue  # a plain-grid cell
            c = (int(round(y0 + a * hy)), int(round(x0 + b * hx)), int(round(y0 + (a + 1) * hy)),
                 int(round(x0 + (b + 1) * hx)))
            if c[2] > c[0] and c[3] > c[1]:
                out.append(c)
    return out


def strips(shape: Tuple[int, int], roi: np.ndarray, angle: float, width: float, length: float,
           shift: float = 0.0) -> List[np.ndarray]:
    """The strips ``width`` across and ``length`` along the direction ``angle`` (degrees from the
    columns' axis towards the rows', as :func:`~xaiseg.explain.base.main_axis` gives it) that touch
    ``roi``, each a boolean mask of ``shape``: a lattice turned about the slice's centre with steps of
    half a strip along and across, so a pixel lies in about four strips, and two slices of one
    structure whose axes agree are cut by the same lattice; ``shift`` moves the lattice that share of
    a step along and across (0 to 1)."""
    if not roi.any():
        return []
    h, w = shape
    t = np.radians(angle)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    yy -= (h - 1) / 2.0
    xx -= (w - 1) / 2.0
    su, sv = length / 2.0, width / 2.0
    along = xx * np.cos(t) + yy * np.sin(t) - shift * su
    across = yy * np.cos(t) - xx * np.sin(t) - shift * sv
    out = []
    for i in range(int(np.floor(along[roi].min() / su)) - 1, int(np.floor(along[roi].max() / su)) + 1):
        band = (along >= i * su) & (along < i * su + length)
        if not (band & roi).any():
            continue
        for j in range(int(np.floor(across[roi].min() / sv)) - 1, int(np.floor(across[roi].max() / sv)) + 1):
            cell = band & (across >= j * sv) & (across < j * sv + width)
            if (cell & roi).any():
                out.append(cell)
    return out


def _square(y: int, x: int, p: int) -> Cell:
    """A grid patch (top-left corner and side) as a cell."""
    return (y, x, y + p, x + p)


def _region(cell, shape: Tuple[int, int]) -> np.ndarray:
    """A cell (a rectangle, or already a boolean mask such as a strip) as a boolean mask of ``shape``."""
    if isinstance(cell, np.ndarray):
        if cell.dtype != bool or cell.shape != tuple(shape):
            raise ValueError(f"an occlusion cell mask must be boolean of shape {tuple(shape)}; got {cell.dtype} "
                             f"{cell.shape}")
        return cell
    y0, x0, y1, x1 = cell
    out = np.zeros(shape, bool)
    out[y0:y1, x0:x1] = True
    return out


def _add(total: np.ndarray, count: np.ndarray, cells, drops) -> None:
    """Each cell's score added over its pixels (the map is ``total / count``)."""
    for cell, d in zip(cells, drops):
        inside = _region(cell, total.shape)
        total[inside] += d
        count[inside] += 1


def _mean(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    """The map of :func:`_add`'s sums: each pixel's mean score (0 where no cell covers it)."""
    return np.divide(total, count, out=np.zeros(total.shape), where=count > 0)


def _mean_map(shape: Tuple[int, int], cells, drops) -> Tuple[np.ndarray, np.ndarray]:
    """The mean score of the cells covering each pixel (0 where none does), and which pixels any covers."""
    total = np.zeros(shape, np.float64)
    count = np.zeros(shape, np.float64)
    _add(total, count, cells, drops)
    return _mean(total, count), count > 0


def smoothed(raw: np.ndarray, covered: np.ndarray, sigma: float) -> np.ndarray:
    """``raw`` (the mean score of the patches covering each pixel) averaged with Gaussian weights of
    ``sigma`` pixels over the ``covered`` pixels only (normalised convolution), 0 elsewhere: a
    weighted mean of scores, so still in score units, and no longer flat inside a patch.

    Measured on the faithfulness bench's middle pairs (stop 24, sigma a quarter of the patch):
    deletion AUC lower than the flat map's on 10 of 12 slices, by 0.05 on average, at no extra
    pass; the flat map's ties were broken by pixel order (top rows of a patch first)."""
    import cv2

    if sigma <= 0:
        return raw
    cov = covered.astype(np.float64)
    num = cv2.GaussianBlur(raw * cov, (0, 0), sigmaX=float(sigma), borderType=cv2.BORDER_CONSTANT)
    den = cv2.GaussianBlur(cov, (0, 0), sigmaX=float(sigma), borderType=cv2.BORDER_CONSTANT)
    return np.divide(num, den, out=np.zeros_like(raw), where=covered & (den > 1e-12))


def budget_rounds(rect: Cell, levels: int = 6):
    """The candidate cells of each round of budgeted occlusion, coarse to fine."""
    for level in range(1, levels + 1):
        yield _cells(rect, level, False)
        yield _cells(rect, level, True)


@register
class Occlusion(Explainer):
    """patch, stride: pixels on the model grid (``grid="model"``) or on the slice (``grid="image"``)."""

    name = "occlusion"
    title = "Occlusion"
    limits = ("occlusion shows which patches bring the mask back when each alone is kept in an ROI inpainted from "
              "around it (or, scored by removal, change the mask when blanked out); its resolution is the patch size "
              "and it misses evidence that only works together with other patches")
    Settings = OcclusionSettings

    @property
    def strip_aspect(self) -> float:
        """The strips' aspect in use: ``aspect``, or where it is 0, :data:`DEFAULT_ASPECT` for the
        structure-sized patches and 1 (squares) with a fixed ``patch``, a pass budget or a ``stride``."""
        if self.aspect:
            return float(self.aspect)
        return 1.0 if (self.patch or self.passes or self.stride) else DEFAULT_ASPECT

    @property
    def uses_strips(self) -> bool:
        """Whether the structure-sized patches are strips (a round mask keeps the squares); a fixed
        ``patch`` or a pass budget never is (:attr:`strip_aspect` is 1 there, and ``check`` refuses more)."""
        return self.strip_aspect > 1.0

    def grid_sizes(self, short_side: Optional[float], grid: int = 256) -> Tuple[float, float]:
        """Patch and stride of the first (or only) level on the grid they are measured on;
        ``short_side``: the prompt box's shorter side on that grid (for the structure-sized patch)."""
        if self.patch:
            patch = float(self.patch)
            return patch, float(self.stride) if self.stride else max(1.0, round(patch / 2.0))
        side = short_side if short_side else grid / 4.0
        patch = float(min(64.0, max(MIN_PATCH, round(side))))
        return patch, float(self.stride) if self.stride else patch

    def for_structure(self, boxes) -> "Occlusion":
        """With structure-sized patches and ``sizing`` 'structure': this explainer with ``side`` set
        to the median shorter side of ``boxes`` (the explained slices' prompt boxes, x0, y0, x1, y1),
        so every slice of the structure is tiled by the same grid."""
        return sized_for_structure(self, boxes, fixed=bool(self.patch or self.passes))

    def pixel_sizes(self, shape: Tuple[int, int], box=None) -> Tuple[int, int]:
        """Patch and stride of the first level in slice pixels (``box``: the slice's prompt box,
        used when no structure ``side`` is set)."""
        f = self._scale(shape)
        if self.side and not self.patch:
            short: Optional[float] = self.side / f
        else:
            short = None if box is None else min(box[2] - box[0] + 1, box[3] - box[1] + 1) / f
        grid = getattr(self.segmenter, "model_grid", None)
        p, s = self.grid_sizes(short, int(grid or max(shape)))
        return max(1, int(round(p * f))), max(1, int(round(s * f)))

    def _scale(self, shape: Tuple[int, int]) -> float:
        grid = getattr(self.segmenter, "model_grid", None)
        return max(shape) / float(grid) if self.grid == "model" and grid else 1.0

    def patches(self, shape: Tuple[int, int], box=None) -> List[Tuple[int, int, int]]:
        p, s = self.pixel_sizes(shape, box)
        return [(y, x, p) for y in positions(shape[0], p, s) for x in positions(shape[1], p, s)]

    def _levels(self, roi_extent: Optional[Tuple[float, float]], grid: int) -> Tuple[int, int, float]:
        """Coarse patches, refining patches and the coarse patch's side on ``grid`` for a slice
        whose ROI has ``roi_extent`` (rows, columns on that grid; None: unknown)."""
        short = min(roi_extent) / 1.5 if roi_extent is not None else None  # the ROI is about the box plus context
        patch, stride = self.grid_sizes(short, grid)
        per_axis = len(positions(grid, int(round(patch)), int(round(stride))))
        counts = [per_axis, per_axis] if roi_extent is None else \
            [min(per_axis, int(math.ceil((e + patch - 1) / stride))) for e in roi_extent]
        coarse = max(1, counts[0] * counts[1])
        return coarse, 0 if self.patch else FINE_PER_PATCH * min(REFINE, coarse), patch

    def _strip_count(self, cells: int, patch: float) -> Tuple[int, float, float]:
        """About how many strips touch a ROI where the squares make ``cells`` (coarse and refined), as
        measured (:data:`STRIPS_PER_SQUARE`), in all ``shifts`` lattices, and a strip's width and length
        for the coarse ``patch`` that :meth:`_levels` sizes from the ROI (unknown ROI: from the whole grid)."""
        width, length = self.strip_sizes(patch)
        return int(math.ceil(STRIPS_PER_SQUARE * cells)) * self.shifts, width, length

    def cost(self, roi_extent: Optional[Tuple[float, float]] = None, grid: int = 256) -> int:
        if self.passes:
            return int(self.passes)
        coarse, fine, patch = self._levels(roi_extent, grid)
        squares = (coarse + fine) * self._per_patch() + self._emptied_passes()
        if self.uses_strips:  # a round mask keeps the squares
            n = self._strip_count(coarse + fine, patch)[0]
            return max(squares, n * self._per_patch() + self._emptied_passes())
        return squares

    @property
    def scoring(self) -> str:
        """``mode`` resolved: 'restore', 'remove', 'both' or 'max' (auto: :data:`AUTO_SCORING` for the
        structure-sized patches; remove, as measured before restore existed, for a fixed ``patch`` and with
        ``passes``)."""
        if self.mode != "auto":
            return self.mode
        return "remove" if self.patch or self.passes else AUTO_SCORING

    @property
    def scores_emptied(self) -> bool:  # type: ignore[override]
        """Whether attribution scores the slice with its whole ROI inpainted (``emptied_score``): when
        the patches are put back, the image the metrics' share of the prompt needs too."""
        return self.scoring != "remove"

    def _per_patch(self) -> int:
        """Passes per patch: one, or two when scoring both ways (both, max)."""
        return 2 if self.scoring in TWO_WAYS else 1

    def _emptied_passes(self) -> int:
        """Passes before the patches: the ROI removed, when the patches are put back."""
        return int(self.scores_emptied)

    def cost_equivalents(self, roi_extent: Optional[Tuple[float, float]], grid: int, share) -> float:
        """A removal pass removes one patch: the coarse ones, then patches of half their side; a
        restore pass removes the ROI but one patch, so it changes the ROI's whole extent."""
        if self.scoring == "restore":
            return self.cost(roi_extent, grid) * share(roi_extent)
        both = self.scoring in TWO_WAYS  # each patch removed and put back, and the inpainted ROI once
        if self.passes:  # cells of the ROI's rectangle, its quadrants first (their size at most)
            half = None if roi_extent is None else (roi_extent[0] / 2.0, roi_extent[1] / 2.0)
            cells = (self.passes - self._emptied_passes()) // self._per_patch()
            return cells * share(half) + ((cells + 1) * share(roi_extent) if both else 0.0)
        coarse, fine, patch = self._levels(roi_extent, grid)
        removal = coarse * share((patch, patch)) + fine * share((patch / 2.0, patch / 2.0))
        squares = removal + ((coarse + fine + 1) * share(roi_extent) if both else 0.0)
        if self.uses_strips:  # strips; a round mask keeps the squares
            n, width, length = self._strip_count(coarse + fine, patch)
            turned = (width + length) / math.sqrt(2.0)  # a strip's bounding box at the worst angle, 45 degrees
            return max(squares, n * share((turned, turned)) + ((n + 1) * share(roi_extent) if both else 0.0))
        return squares

    def _begin(self, engine: PerturbationEngine) -> "PatchScoring":
        """One slice's scoring; when patches are put back, the inpainted ROI's score (one pass)."""
        how = self.scoring
        emptied = None if how == "remove" else \
            float(engine.score_images([removed(engine.image, engine.roi, RESTORE_FILL)], total=0)[0])
        return PatchScoring(how, emptied)

    def _scores(self, engine: PerturbationEngine, cells, shape, scoring: "PatchScoring") -> np.ndarray:
        """Each cell's score (see the module docs): the fall of the explained score when the cell
        alone is removed (by the engine's fill), its rise over the inpainted ROI when the cell alone
        is kept, or the sum (both) or the larger (max) of the two; ``scoring`` keeps the largest single change.  The
        perturbed images are built :data:`CELLS_AT_ONCE` cells at a time (rounded up to whole
        batches, so every batch the encoder sees is the same), so a slice's memory does not grow with
        its number of cells."""
        batch = max(1, int(engine.batch_size))
        n = batch * int(math.ceil(CELLS_AT_ONCE / batch))
        parts = [self._chunk_scores(engine, cells[i:i + n], shape, scoring) for i in range(0, len(cells), n)]
        return np.concatenate(parts) if parts else np.zeros(0)

    def _chunk_scores(self, engine: PerturbationEngine, cells, shape, scoring: "PatchScoring") -> np.ndarray:
        """:meth:`_scores` of a few cells."""
        parts = []
        if scoring.how != "restore":
            keeps = [(~_region(c, shape)).astype(np.float32) for c in cells]
            # the ROI chooses the patches; by default each chosen patch is removed whole (seed 001), so
            # inside the ROI the drops equal full-image occlusion's at a fraction of the cost; with removal
            # "roi" only its pixels inside the ROI, those the curves can remove
            drops = engine.baseline - engine.scores(keeps, restrict=self.removal == "roi", total=0)
            scoring.largest = max([scoring.largest] + list(drops))
            parts.append(drops)
        if scoring.emptied is not None:
            images = [removed(engine.image, engine.roi & ~_region(c, shape), RESTORE_FILL) for c in cells]
            rises = engine.score_images(images, total=0) - scoring.emptied
            scoring.largest = max([scoring.largest] + list(rises))
            parts.append(rises)
        return np.max(parts, axis=0) if scoring.how == "max" else np.sum(parts, axis=0)

    @staticmethod
    def _result(raw: np.ndarray, details: Dict, scoring: "PatchScoring") -> Attribution:
        """The attribution, with how the patches were scored among the details; when they were put
        back, also the inpainted ROI's score, and as the evidence check's signal the largest single
        change a patch caused (every restore pass removes the ROI, so the engine's largest fall
        would always read as evidence)."""
        if scoring.emptied is None:
            return Attribution(raw, dict(details, mode=scoring.how))
        return Attribution(raw, dict(details, mode=scoring.how, emptied_score=scoring.emptied),
                           largest_change=float(max(0.0, scoring.largest)))

    def refined(self, coarse, drops, shape) -> List[Tuple[int, int, int]]:
        """Finer patches (half the size, a quarter's stride) inside the ``REFINE`` coarse patches
        with the highest scores (``drops``: removal's falls or restore's rises); a patch whose score
        is not positive is not refined."""
        fine: set = set()
        for i in np.argsort(-np.asarray(drops, np.float64), kind="stable")[:REFINE]:
            if drops[i] <= 0:
                continue
            y, x, p = coarse[i]
            q = max(1, p // 2)
            step = max(1, q // 2)
            for yy in range(y, y + p - q + 1, step):
                for xx in range(x, x + p - q + 1, step):
                    fine.add((min(yy, shape[0] - q), min(xx, shape[1] - q), q))
        return sorted(fine)

    def strip_sizes(self, patch: float) -> Tuple[float, float]:
        """A strip's width and length for the square patch's side ``patch``: the same area,
        :attr:`strip_aspect` times longer than wide."""
        r = math.sqrt(self.strip_aspect)
        return max(1.0, patch / r), patch * r

    def stripped(self, engine: PerturbationEngine, box, angle: float) -> Attribution:
        """Strips along the structure's main axis (``angle``), each scored, none refined, in ``shifts``
        lattices (one at a time, so only one lattice's masks are held); each pixel takes the mean score
        of all strips covering it, smoothed by a Gaussian of ``smooth`` times a strip's width."""
        shape = engine.image.shape
        p, _ = self.pixel_sizes(shape, box)
        width, length = self.strip_sizes(p)

        def lattice(k: int) -> List[np.ndarray]:
            return strips(shape, engine.roi, angle, width, length, k / self.shifts)

        first = lattice(0)  # the others are built twice, to count them first for the progress
        n = len(first) + sum(len(lattice(k)) for k in range(1, self.shifts))
        engine.progress.stage(engine.stage, self._emptied_passes() + n * self._per_patch())
        scoring = self._begin(engine)
        total, count = np.zeros(shape, np.float64), np.zeros(shape, np.float64)
        for k in range(self.shifts):
            cells, first = (first if k == 0 else lattice(k)), []
            _add(total, count, cells, self._scores(engine, cells, shape, scoring))
        engine.progress.done()
        raw = _mean(total, count)
        if self.smooth:
            raw = smoothed(raw, count > 0, self.smooth * width)
        # stride_px: the step across, half a strip's width in each lattice, which the shifts divide
        return self._result(raw, {"patches_evaluated": n, "patches_full": n, "patches_refined": 0,
                                  "patch_px": p, "stride_px": max(1, int(round(width / (2.0 * self.shifts)))),
                                  "strip_px": [round(width, 1), round(length, 1)], "strip_angle": round(angle, 1),
                                  "strip_aspect": self.strip_aspect, "strip_shifts": self.shifts},
                            scoring)

    def budgeted(self, engine: PerturbationEngine) -> Attribution:
        """Cells of the ROI's bounding rectangle, coarse to fine, at most ``passes`` of them."""
        shape, roi = engine.image.shape, engine.roi
        rect = mask_rect(roi)
        budget = int(self.passes)
        engine.progress.stage(engine.stage, budget)
        scoring = self._begin(engine)
        budget = (budget - self._emptied_passes()) // self._per_patch()  # cells
        total = np.zeros(shape, np.float64)
        count = np.zeros(shape, np.float64)
        done: List[Cell] = []
        rounds = 0
        for candidates in budget_rounds(rect):
            left = budget - len(done)
            if left <= 0:
                break
            # on a thin rectangle different cells round to the same pixels: each is evaluated once
            seen = set(done)
            fresh = list(dict.fromkeys(c for c in candidates if c not in seen and roi[c[0]:c[2], c[1]:c[3]].any()))
            if not fresh:
                continue
            current = _mean(total, count)
            # the hottest first (the map so far, over the cell's ROI pixels); the first round takes all
            heat = [float(current[c[0]:c[2], c[1]:c[3]][roi[c[0]:c[2], c[1]:c[3]]].mean()) for c in fresh]
            order = np.argsort(-np.asarray(heat), kind="stable")
            take = [fresh[i] for i in order[:left]]
            _add(total, count, take, self._scores(engine, take, shape, scoring))
            rounds += 1
            done.extend(take)
        engine.progress.done()
        raw = _mean(total, count)
        sizes = sorted({(c[2] - c[0], c[3] - c[1]) for c in done})
        # patch_px / stride_px: the longest side of the largest cell and the shortest of the smallest
        return self._result(raw, {"patches_evaluated": len(done), "patches_full": len(done), "patches_refined": 0,
                                  "patch_px": max(max(s) for s in sizes), "stride_px": min(min(s) for s in sizes),
                                  "budget_rounds": rounds}, scoring)

    def attribute(self, engine: PerturbationEngine) -> Attribution:
        from ..roi.geometry import prompt_box

        if self.passes:
            return self.budgeted(engine)
        shape = engine.image.shape
        box = prompt_box(engine.prompt, engine.reference) if not self.patch else None
        if self.uses_strips:
            angle = main_axis(engine.reference)
            if angle is not None:  # a round mask has no axis: squares
                return self.stripped(engine, box, angle)
        every = self.patches(shape, box)
        chosen = [(y, x, p) for (y, x, p) in every if engine.roi[y:y + p, x:x + p].any()]
        fine_passes = 0 if self.patch else FINE_PER_PATCH * min(REFINE, len(chosen))
        engine.progress.stage(engine.stage, self._emptied_passes() + (len(chosen) + fine_passes) * self._per_patch())
        scoring = self._begin(engine)
        drops = self._scores(engine, [_square(*c) for c in chosen], shape, scoring)
        fine = [] if self.patch else self.refined(chosen, drops, shape)
        if fine:
            drops = np.concatenate([drops, self._scores(engine, [_square(*c) for c in fine], shape, scoring)])
        raw, covered = _mean_map(shape, [_square(*c) for c in chosen + fine], drops)
        engine.progress.done()
        p, s = self.pixel_sizes(shape, box)
        if self.smooth and not self.patch:
            raw = smoothed(raw, covered, self.smooth * p)
        return self._result(raw, {"patches_evaluated": len(chosen) + len(fine), "patches_full": len(every),
                                  "patches_refined": len(fine), "patch_px": p, "stride_px": s,
                                  "roi_ratio": len(chosen) / len(every)}, scoring)
