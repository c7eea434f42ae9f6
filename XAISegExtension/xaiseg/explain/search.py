"""A deletion order found by search: how low can a slice's deletion curve go at all?

The faithfulness benchmark asks every map to beat the trivial maps (the blurred mask, the box
centre, random) on the deletion curve.  Whether that is reachable on a given slice, with a given
model and curve, is a question about the curve, not about any one method.  This module answers it
with a greedy search that optimises the curve itself: the order it finds shows how low the curve
can be driven (a ranking that good exists; being greedy, the search need not find the best one).
It is not an explanation to trust: it is tuned to the very curve it is measured with.

:func:`backward_search` starts from the whole ROI removed (the curve's last point) and walks the
curve's fractions back to the first: at each fraction it tries putting back each block of the ROI
on its own (one pass per block still removed) and puts back the blocks whose return raised the
score least, until only that fraction of the ROI is still removed.  The pixels removed longest
come first in the ranking.  Searching from the end finds pixels that matter together (a structure
that stays segmented unless most of it is gone); a forward search (remove the block that lowers the
score most, then the next) sees only what each block does on its own.

Blocks are squares of the ROI's bounding rectangle, about ``blocks`` of them over the ROI;
``steps`` and ``fill`` are the curve's.  Cost: one pass per block still removed at each curve step
(5 - 7 times ``blocks`` passes for the benchmark's 8-step curves, :mod:`xaiseg.bench_bound`).

:func:`polish` starts from a given order instead (the best trivial map's, say) and moves one block
at a time a curve step earlier or later, keeping a move only where it lowers the deletion AUC.  The
order it returns is never worse than the one it started from, so where it ends strictly below the
best trivial map, an order that beats every trivial map on that slice exists.  Where it ends equal,
no block of its grid moved one curve step earlier or later lowers the curve; other moves (further,
of other shapes, of several blocks together) are not tried.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Tuple

import numpy as np

from ..errors import InputError
from ..metrics import curve_auc
from .base import removed
from .measure import curve_counts, metric_fill, removal_order


@dataclasses.dataclass
class SearchOrder:
    """``ranking``: higher first, 0 outside the ROI; ``passes``: encoder passes the search made;
    ``block_px``: the blocks' side in slice pixels."""

    ranking: np.ndarray
    passes: int
    block_px: int


def _roi(engine) -> np.ndarray:
    """The engine's ROI as booleans; an empty one is refused (there is nothing to order)."""
    roi = np.asarray(engine.roi, bool)
    if not roi.any():
        raise InputError("the ROI is empty; expected at least one ROI pixel to order")
    return roi


def roi_blocks(roi: np.ndarray, blocks: int) -> Tuple[Dict[Tuple[int, int], np.ndarray], int]:
    """The ROI's pixels grouped into squares of one side, chosen so that about ``blocks`` of them
    cover the ROI; each block's (row, column) pixels in row order, and the side."""
    ys, xs = np.nonzero(roi)
    side = max(1, int(math.ceil(math.sqrt(len(ys) / float(blocks)))))
    keys = (ys - ys.min()) // side, (xs - xs.min()) // side
    out: Dict[Tuple[int, int], List[Tuple[int, int]]] = {}
    for ky, kx, y, x in zip(*keys, ys, xs):
        out.setdefault((int(ky), int(kx)), []).append((int(y), int(x)))
    return {k: np.asarray(v, int).reshape(-1, 2) for k, v in out.items()}, side


def backward_search(engine, steps: int = 8, blocks: int = 48, fill: str = "inpaint") -> SearchOrder:
    """The deletion order of the module docs on ``engine``'s slice and ROI."""
    steps, blocks = int(steps), int(blocks)
    if steps < 1 or blocks < 1:
        raise InputError(f"search steps {steps} and blocks {blocks} must both be at least 1")
    fill = metric_fill(fill, engine)  # as the curves resolve it ("method": the engine's own fill)
    roi = _roi(engine)
    parts, side = roi_blocks(roi, blocks)
    total = int(roi.sum())
    # how many pixels stay removed at each curve fraction, from the last-but-one back to the first
    targets = curve_counts(total, steps)[1:-1][::-1]
    gone = roi.copy()
    left = total
    back: List[np.ndarray] = []  # pixels put back, in the order they came back
    before = engine.evaluations
    for target in targets:
        if left <= target:
            continue
        keys = [k for k in sorted(parts) if len(parts[k])]
        images = []
        for k in keys:
            trial = gone.copy()
            trial[parts[k][:, 0], parts[k][:, 1]] = False
            images.append(removed(engine.image, trial, fill))
        scores = engine.score_images(images)
        for i in np.argsort(scores, kind="stable"):
            if left <= target:
                break
            pixels = parts[keys[i]]
            put = pixels[:left - target]
            gone[put[:, 0], put[:, 1]] = False
            back.append(put)
            parts[keys[i]] = pixels[len(put):]
            left -= len(put)
    # the ranking: the pixels never put back first, then the rest, the last to come back first
    coords = np.concatenate([np.argwhere(gone)] + back[::-1])
    ranking = np.zeros(roi.shape, np.float32)
    ranking[coords[:, 0], coords[:, 1]] = np.arange(len(coords), 0, -1, dtype=np.float32)
    return SearchOrder(ranking, engine.evaluations - before, side)


@dataclasses.dataclass
class Polished:
    """``ranking``: the polished order (higher first, 0 outside the ROI); ``deletion_auc``: its
    curve's, as :func:`~.measure.faithfulness` computes it; ``start_auc``: the starting order's;
    ``moves``: the moves kept; ``passes``: encoder passes spent; ``block_px``: the blocks' side in
    slice pixels; ``curve``: the polished order's deletion curve (scores, not divided by the
    unperturbed one, as :func:`~.measure.faithfulness` gives it)."""

    ranking: np.ndarray
    deletion_auc: float
    start_auc: float
    moves: int
    passes: int
    block_px: int
    curve: List[float]


def polish(engine, ranking: np.ndarray, steps: int = 8, blocks: int = 48, fill: str = "inpaint",
           sweeps: int = 3) -> Polished:
    """Local search from ``ranking`` (module docs): in each of at most ``sweeps`` sweeps over the
    blocks (row order), move each block's pixels one curve step earlier, else one later, where
    that lowers the deletion AUC; stop early after a sweep that kept no move.  Each curve point's
    removed set is scored once (a move re-scores only the points whose set it changes), so a sweep
    costs at most two passes per block and move, about ``2 * blocks`` passes when few moves are kept."""
    steps, blocks, sweeps = int(steps), int(blocks), int(sweeps)
    bad = [f"{name} {value} (expected at least {least})" for name, value, least in
           (("steps", steps, 2), ("blocks", blocks, 1), ("sweeps", sweeps, 0)) if value < least]
    if bad:
        raise InputError("polish " + ", ".join(bad))
    fill = metric_fill(fill, engine)
    roi = _roi(engine)
    if np.shape(ranking) != roi.shape:
        raise InputError(f"the ranking to polish has shape {np.shape(ranking)}; expected the slice's {roi.shape}")
    before = engine.evaluations
    total = int(roi.sum())
    counts = curve_counts(total, steps)
    fractions = np.linspace(0.0, 1.0, steps + 1)
    base = engine.baseline if abs(engine.baseline) > 1e-12 else 1.0
    ys, xs = np.nonzero(roi)  # ROI pixels in row order: a position per pixel stands for the ranking
    index = np.full(roi.shape, -1, int)
    index[ys, xs] = np.arange(total)
    coords = removal_order(ranking, roi)
    place = np.empty(total, np.float64)  # each pixel's place in the removal order, 0 first
    place[index[coords[:, 0], coords[:, 1]]] = np.arange(total)
    known: Dict[bytes, float] = {}  # a curve point's score, by its removed ROI pixels' packed bits

    def curve(order: np.ndarray) -> List[float]:
        first = np.argsort(order, kind="stable")  # pixels, earliest removed first
        keys, todo = [], {}
        for count in counts[1:]:
            gone = np.zeros(total, bool)
            gone[first[:count]] = True
            key = np.packbits(gone).tobytes()
            keys.append(key)
            if key not in known:
                todo[key] = gone
        if todo:
            images = []
            for gone in todo.values():
                image_gone = np.zeros(roi.shape, bool)
                image_gone[ys[gone], xs[gone]] = True
                images.append(removed(engine.image, image_gone, fill))
            for key, v in zip(todo, engine.score_images(images)):
                known[key] = float(v)
        return [float(engine.baseline)] + [known[k] for k in keys]

    def auc(order: np.ndarray) -> float:
        return curve_auc(fractions, np.asarray(curve(order)) / base)

    parts, side = roi_blocks(roi, blocks)
    members = [index[p[:, 0], p[:, 1]] for _, p in sorted(parts.items())]
    shift = total / float(steps)
    start = best = auc(place)
    moves = 0
    for _ in range(sweeps):
        kept = 0
        for m in members:
            for delta in (-shift, shift):  # earlier (a lower place), then later
                trial = place.copy()
                trial[m] += delta
                value = auc(trial)
                if value < best - 1e-12:
                    # renumber so that places stay 0 .. total - 1 (ties keep row order, as the curves do)
                    place = np.empty(total, np.float64)
                    place[np.argsort(trial, kind="stable")] = np.arange(total)
                    best, kept = value, kept + 1
                    break
        moves += kept
        if not kept:
            break
    out = np.zeros(roi.shape, np.float32)
    out[ys, xs] = (total - place).astype(np.float32)
    return Polished(out, best, start, moves, engine.evaluations - before, side,
                    [round(v, 4) for v in curve(place)])
