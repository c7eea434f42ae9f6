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
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Tuple

import numpy as np

from ..errors import InputError
from .base import removed
from .measure import curve_counts, metric_fill


@dataclasses.dataclass
class SearchOrder:
    """``ranking``: higher first, 0 outside the ROI; ``passes``: encoder passes the search made;
    ``block_px``: the blocks' side in slice pixels."""

    ranking: np.ndarray
    passes: int
    block_px: int


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
    roi = np.asarray(engine.roi, bool)
    if not roi.any():
        raise InputError("the ROI is empty; expected at least one ROI pixel to order")
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
