"""RISE restricted to the ROI (seed 001: N = 2000 masks of 7 x 7 cells kept with p = 0.5, upsampled
bilinearly with a random shift).  Each pixel's saliency is the mean explained score of the masks
that kept it minus the mean score of those that removed it (the masks' correlation with the score,
which is the RISE estimate with its baseline removed).

Early stop: every ``check_every`` masks (after ``min_masks``), the map is compared with the map at
the previous check by Spearman rank correlation over the ROI; when it reaches ``converge`` at
``patience`` checks in a row the run stops.  It never uses more than ``n_masks``; the result
records how many masks it used and whether it converged.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np

from ..errors import InputError
from ..metrics import spearman
from .base import Explainer, PerturbationEngine


def rise_masks(rng: np.random.Generator, n: int, shape: Tuple[int, int], cells: int, p: float) -> np.ndarray:
    """``n`` smooth keep maps of ``shape``: ``cells`` x ``cells`` Bernoulli(p) grids, upsampled bilinearly
    to (cells + 1) cell sizes and cropped at a random shift (Petsiuk et al. 2018)."""
    import cv2

    h, w = shape
    ch, cw = int(np.ceil(h / cells)), int(np.ceil(w / cells))
    out = np.empty((n, h, w), np.float32)
    for i in range(n):
        grid = (rng.random((cells, cells)) < p).astype(np.float32)
        big = cv2.resize(grid, ((cells + 1) * cw, (cells + 1) * ch), interpolation=cv2.INTER_LINEAR)
        dy, dx = int(rng.integers(0, ch)), int(rng.integers(0, cw))
        out[i] = big[dy:dy + h, dx:dx + w]
    return out


class RISE(Explainer):
    name = "rise"

    def __init__(self, segmenter=None, *, n_masks: int = 2000, cells: int = 7, p: float = 0.5,
                 early_stop: bool = True, check_every: int = 50, min_masks: int = 100, converge: float = 0.95,
                 patience: int = 2, **common) -> None:
        common.setdefault("batch_size", 16)
        super().__init__(segmenter, **common)
        if int(n_masks) < 2 or int(cells) < 1 or not 0.0 < float(p) < 1.0:
            raise InputError(f"RISE needs n_masks >= 2, cells >= 1 and 0 < p < 1; got {n_masks}, {cells}, {p}")
        if int(check_every) < 1 or not 0.0 < float(converge) <= 1.0 or int(patience) < 1:
            raise InputError(f"RISE early stop needs check_every >= 1, 0 < converge <= 1, patience >= 1; "
                             f"got {check_every}, {converge}, {patience}")
        self.n_masks, self.cells, self.p = int(n_masks), int(cells), float(p)
        self.early_stop, self.check_every, self.min_masks = bool(early_stop), int(check_every), int(min_masks)
        self.converge, self.patience = float(converge), int(patience)

    def settings(self) -> Dict[str, Any]:
        return dict(super().settings(), n_masks=self.n_masks, cells=self.cells, p=self.p,
                    early_stop=self.early_stop, check_every=self.check_every, min_masks=self.min_masks,
                    converge=self.converge, patience=self.patience)

    def attribute(self, engine: PerturbationEngine):
        rng = np.random.default_rng(self.seed)
        shape = engine.image.shape
        kept_sum = np.zeros(shape, np.float64)    # sum of s_i * m_i
        kept_w = np.zeros(shape, np.float64)      # sum of m_i
        score_sum = 0.0
        used, streak, previous, history = 0, 0, None, []
        converged = False
        engine.progress.stage(engine.stage, self.n_masks)
        while used < self.n_masks:
            n = min(self.check_every, self.n_masks - used)
            masks = rise_masks(rng, n, shape, self.cells, self.p)
            scores = engine.scores(masks, total=0)
            kept_sum += np.tensordot(scores, masks, axes=1)
            kept_w += masks.sum(axis=0)
            score_sum += float(scores.sum())
            used += n
            current = self._map(kept_sum, kept_w, score_sum, used)
            if previous is not None:
                rho = spearman(current, previous, engine.roi)
                history.append([used, round(rho, 4)])
                streak = streak + 1 if rho >= self.converge else 0
                if self.early_stop and used >= self.min_masks and streak >= self.patience:
                    converged = True
                    break
            previous = current
        engine.progress.done()
        return current, {"masks_used": used, "stopped_at": used, "converged": converged,
                         "convergence": history}

    @staticmethod
    def _map(kept_sum, kept_w, score_sum, n):
        removed_w = n - kept_w
        kept_mean = np.divide(kept_sum, kept_w, out=np.zeros_like(kept_sum), where=kept_w > 0)
        removed_mean = np.divide(score_sum - kept_sum, removed_w, out=np.zeros_like(kept_sum), where=removed_w > 0)
        return kept_mean - removed_mean
