"""Volumes as stacks of slices: choosing the slicing axis, turning 3D prompts into per-slice
prompts (including propagation of one 3D box from its central slice), caching every slice's
embedding, and stacking slice masks back into a 3D mask on the volume's grid.

All indices here are in numpy array order ``(k, j, i)``; the CLI converts from ``i, j, k`` or RAS.
Slices, prompts and masks are in array order at this module's surface; the model sees each slice
turned into the run's orientation (:mod:`xaiseg.orientation`), and its output is turned back.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import DimensionError, GeometryError, InputError, PromptError
from .io import Geometry, axis_codes
from .models.base import Embedding, PromptableSegmenter, SlicePrompt
from .orientation import IDENTITY, InPlane
from .progress import Progress, ensure

ANATOMICAL_AXES = {"axial": "SI", "coronal": "AP", "sagittal": "LR"}


def slicing_axis(geometry: Geometry, axis: Union[str, int] = "axial") -> int:
    """Array axis (0 = k, 1 = j, 2 = i) to slice along; names pick the axis closest to that plane's normal."""
    if isinstance(axis, (int, np.integer)) or (isinstance(axis, str) and axis.isdigit()):
        a = int(axis)
        if a not in (0, 1, 2):
            raise InputError(f"slicing axis {axis} is invalid; expected 0, 1, 2 or axial/coronal/sagittal")
        return a
    if axis not in ANATOMICAL_AXES:
        raise InputError(f"slicing axis {axis!r} is unknown; expected axial, coronal, sagittal or 0/1/2")
    codes = axis_codes(geometry)
    for a, code in enumerate(codes):
        if code in ANATOMICAL_AXES[axis]:
            return a
    raise GeometryError(f"no array axis runs along the {axis} normal (axes run {codes})")  # pragma: no cover


def in_plane_axes(axis: int) -> Tuple[int, int]:
    """Array axes that become the slice's rows (y) and columns (x)."""
    rows, cols = [a for a in (0, 1, 2) if a != axis]
    return rows, cols


def plane_index(axis: int, k: Union[int, slice]) -> tuple:
    """The index of plane ``k`` (or a ``slice`` of planes) along ``axis`` of a 3D array."""
    index: List[Union[int, slice]] = [slice(None)] * 3
    index[axis] = k if isinstance(k, slice) else int(k)
    return tuple(index)


def put_plane(out: np.ndarray, axis: int, k: int, plane: np.ndarray) -> np.ndarray:
    """Write the 2D ``plane`` into ``out`` as plane ``k`` along ``axis``; returns ``out``."""
    out[plane_index(axis, k)] = plane
    return out


@dataclass(frozen=True)
class BoxPrompt:
    """An inclusive voxel box ``lo..hi`` in array order; one slice thick means a 2D box."""

    lo: Tuple[int, int, int]
    hi: Tuple[int, int, int]

    def check(self, shape: Sequence[int]) -> "BoxPrompt":
        if any(h < l for l, h in zip(self.lo, self.hi)):
            raise PromptError(f"box from {self.lo} to {self.hi} has a corner below the other; "
                              "expected lo <= hi on every axis")
        if any(h < 0 or l > n - 1 for l, h, n in zip(self.lo, self.hi, shape)):
            raise PromptError(f"box (k, j, i) from {self.lo} to {self.hi} lies outside the volume of shape "
                              f"{tuple(shape)} (k, j, i)")
        lo = tuple(int(max(0, l)) for l in self.lo)
        hi = tuple(int(min(n - 1, h)) for h, n in zip(self.hi, shape))
        return BoxPrompt(lo, hi)  # type: ignore[arg-type]

    def slice_box(self, axis: int) -> Tuple[int, int, int, int]:
        r, c = in_plane_axes(axis)
        return (self.lo[c], self.lo[r], self.hi[c], self.hi[r])

    def record(self) -> dict:
        return {"type": "box", "lo_kji": list(self.lo), "hi_kji": list(self.hi)}


@dataclass(frozen=True)
class PointsPrompt:
    """Points in array order ``(k, j, i)`` (continuous) with labels 1 (positive) / 0 (negative)."""

    points: Tuple[Tuple[float, float, float], ...]
    labels: Tuple[int, ...]

    def check(self, shape: Sequence[int]) -> "PointsPrompt":
        if not self.points:
            raise PromptError("no points given")
        if len(self.points) != len(self.labels):
            raise PromptError(f"{len(self.points)} points but {len(self.labels)} labels")
        for p in self.points:
            if any(not (-0.5 <= v <= n - 0.5) for v, n in zip(p, shape)):
                raise PromptError(f"point (k, j, i) = {tuple(round(v, 2) for v in p)} lies outside the volume "
                                  f"of shape {tuple(shape)}")
        return self

    def per_slice(self, axis: int) -> Dict[int, SlicePrompt]:
        r, c = in_plane_axes(axis)
        groups: Dict[int, List[Tuple[Tuple[float, float], int]]] = {}
        for p, lab in zip(self.points, self.labels):
            groups.setdefault(int(round(p[axis])), []).append(((p[c], p[r]), lab))
        out = {}
        for k, items in sorted(groups.items()):
            if any(lab == 1 for _, lab in items):
                out[k] = SlicePrompt(points=tuple(xy for xy, _ in items), labels=tuple(lab for _, lab in items))
        if not out:
            raise PromptError("point prompts need at least one positive point")
        return out

    def record(self) -> dict:
        return {"type": "points", "points_kji": [list(p) for p in self.points], "labels": list(self.labels)}


@dataclass(frozen=True)
class LabelBoxPrompt:
    """A tight box per slice around ``label`` in a label map on the volume's grid."""

    labelmap: np.ndarray = field(repr=False)
    label: int = 1
    margin: int = 0
    source: Optional[str] = None

    def per_slice(self, axis: int) -> Dict[int, SlicePrompt]:
        mask = self.labelmap == self.label
        if not mask.any():
            present = [int(v) for v in np.unique(self.labelmap) if v != 0][:20]
            raise PromptError(f"label {self.label} does not occur in the label map {self.source or ''}; "
                              f"labels present: {present}")
        out = {}
        for k in np.where(np.moveaxis(mask, axis, 0).any(axis=(1, 2)))[0]:
            ys, xs = np.nonzero(np.take(mask, k, axis=axis))
            m = self.margin
            out[int(k)] = SlicePrompt(box=(xs.min() - m, ys.min() - m, xs.max() + m, ys.max() + m))
        return out

    def record(self) -> dict:
        return {"type": "labelmap-boxes", "label": int(self.label), "margin": self.margin, "labelmap": self.source}


VolumePrompt = Union[BoxPrompt, PointsPrompt, LabelBoxPrompt]


def mask_box(mask2d: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    ys, xs = np.nonzero(mask2d)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


@dataclass
class SliceRun:
    """What happened on one slice (for progress, the run record and the bench)."""

    index: int
    prompt: dict
    voxels: int
    encoded: bool
    seconds_embed: float
    seconds_decode: float


class VolumeSegmenter:
    """Segments slices of one preprocessed volume, caching each slice's embedding.

    image01: float32 array in [0, 1], shape (k, j, i); axis: array axis to slice along.
    cache_bytes: the least-recently used embeddings are dropped above this size.
    orientation: how each array slice is turned before the model (the "model slice"); prompts
    are turned with it and the model's output is turned back, so callers speak array order.
    The cache holds embeddings of model slices.
    """

    def __init__(self, segmenter: PromptableSegmenter, image01: np.ndarray, axis: int = 0,
                 cache_bytes: int = 1 << 30, orientation: InPlane = IDENTITY) -> None:
        if image01.ndim != 3:
            raise DimensionError(f"a 3D volume is needed, got an array of shape {image01.shape}")
        if not isinstance(orientation, InPlane):
            raise InputError(f"orientation {orientation!r} is not an InPlane; build one with InPlane.named()")
        self.segmenter = segmenter
        self.image = image01
        self.axis = int(axis)
        self.orientation = orientation
        self.cache_bytes = int(cache_bytes)
        self._cache: "OrderedDict[int, Embedding]" = OrderedDict()
        self.encoder_passes = 0
        self.decoder_passes = 0
        self.kept = None  # where slices' activation caches are kept as they are encoded (keep_activations)
        self.kept_slices: Optional[set] = None

    @property
    def n_slices(self) -> int:
        return self.image.shape[self.axis]

    def slice(self, k: int) -> np.ndarray:
        """Slice ``k`` as the array holds it."""
        return np.ascontiguousarray(np.take(self.image, k, axis=self.axis))

    # the model's view -------------------------------------------------------------------------
    def model_slice(self, k: int) -> np.ndarray:
        """Slice ``k`` as the model sees it (turned into the run's orientation)."""
        return self.orientation.apply(self.slice(k))

    @property
    def model_shape(self) -> Tuple[int, int]:
        return self.orientation.shape(self.slice_shape)

    def to_model_prompt(self, prompt: SlicePrompt) -> SlicePrompt:
        """An array-order slice prompt as a prompt on the model slice."""
        return self.orientation.prompt(prompt, self.slice_shape)

    def from_model(self, plane: np.ndarray) -> np.ndarray:
        """A plane on the model slice (mask, logits, saliency, ROI) back in array order (exact)."""
        return self.orientation.invert(plane)

    def to_model(self, plane: np.ndarray) -> np.ndarray:
        """An array-order plane (a mask, a ground truth) as the model slice sees it."""
        return self.orientation.apply(plane)

    def put(self, out: np.ndarray, k: int, plane: np.ndarray) -> None:
        """Write an array-order plane into slice ``k`` of the 3D volume ``out``."""
        put_plane(out, self.axis, k, plane)

    def keep_activations(self, store, slices: Optional[Sequence[int]] = None) -> bool:
        """From now on encode slices (``slices`` only, None: every one) through the segmenter's
        activation cache and keep each cache in ``store`` (a :class:`~xaiseg.kept_caches.KeptCaches`)
        for the explanation that follows, which then needs no full pass of its own.  Only for
        segmenters that reuse activations; False (nothing kept) for the others."""
        if not getattr(self.segmenter, "supports_reuse", False):
            return False
        self.kept, self.kept_slices = store, None if slices is None else {int(k) for k in slices}
        return True

    def embedding(self, k: int) -> Tuple[Embedding, bool]:
        """Embedding of model slice ``k`` and whether it had to be computed."""
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k], False
        image = self.model_slice(k)
        if self.kept is not None and (self.kept_slices is None or k in self.kept_slices):
            # the features of a plain pass (to float rounding: the cache's pass runs the same layers
            # in pieces), with what a changed pass reuses
            cache = self.segmenter.embed_cache(image)
            self.kept.put(k, cache)
            emb = cache.embedding
        else:
            emb = self.segmenter.embed(image)
        self.encoder_passes += 1
        self._cache[k] = emb
        while len(self._cache) > 1 and sum(e.nbytes for e in self._cache.values()) > self.cache_bytes:
            self._cache.popitem(last=False)
        return emb, True

    def logits(self, k: int, prompt: SlicePrompt) -> Tuple[np.ndarray, bool]:
        """The model's logits for an array-order ``prompt`` on slice ``k``, in array order, and
        whether the slice had to be encoded."""
        shape = self.slice_shape
        prompt.check_inside(shape)
        emb, encoded = self.embedding(k)
        out = self.from_model(self.segmenter.decode(emb, self.to_model_prompt(prompt.clipped(shape))))
        self.decoder_passes += 1
        return out, encoded

    def segment_slice(self, k: int, prompt: SlicePrompt) -> Tuple[np.ndarray, SliceRun]:
        prompt.check_inside(self.slice_shape)
        t0 = time.perf_counter()
        emb, encoded = self.embedding(k)
        t1 = time.perf_counter()
        logits, _ = self.logits(k, prompt)
        mask = logits > 0
        t2 = time.perf_counter()
        return mask, SliceRun(int(k), prompt.record(), int(mask.sum()), encoded, t1 - t0, t2 - t1)

    @property
    def slice_shape(self) -> Tuple[int, int]:
        r, c = in_plane_axes(self.axis)
        return self.image.shape[r], self.image.shape[c]

    def run_slices(self, prompts: Dict[int, SlicePrompt], progress: Optional[Progress] = None,
                   stage: str = "segment") -> Tuple[np.ndarray, List[SliceRun]]:
        """Segment each slice that has a prompt; other slices stay empty."""
        progress = ensure(progress)
        out = np.zeros(self.image.shape, dtype=np.uint8)
        bad = [k for k in prompts if not 0 <= k < self.n_slices]
        if bad:
            raise PromptError(f"slice(s) {bad} lie outside the volume's {self.n_slices} slices along axis {self.axis}")
        runs = []
        progress.stage(stage, len(prompts))
        for k in sorted(prompts):
            progress.check()
            mask, run = self.segment_slice(k, prompts[k])
            self.put(out, k, mask)
            runs.append(run)
            progress.step(slice=int(k), voxels=run.voxels)
        progress.done()
        return out, runs

    def propagate(self, box: BoxPrompt, margin: int = 0, progress: Optional[Progress] = None,
                  stage: str = "segment") -> Tuple[np.ndarray, List[SliceRun]]:
        """Segment the central slice of ``box`` with its 2D box, then walk outwards slice by slice,
        prompting each slice with the box (plus ``margin``) of the previous slice's mask; stop in a
        direction when the mask vanishes or the box ends."""
        progress = ensure(progress)
        box = box.check(self.image.shape)
        a = self.axis
        lo, hi = box.lo[a], box.hi[a]
        centre = (lo + hi) // 2
        out = np.zeros(self.image.shape, dtype=np.uint8)
        runs: List[SliceRun] = []
        progress.stage(stage, hi - lo + 1)
        progress.check()
        first, run = self.segment_slice(centre, SlicePrompt(box=box.slice_box(a)))
        self.put(out, centre, first)
        runs.append(run)
        progress.step(slice=centre, voxels=run.voxels)
        h, w = self.slice_shape
        for direction, end in ((1, hi), (-1, lo)):
            prev = first
            k = centre + direction
            while (k <= end if direction > 0 else k >= end):
                b = mask_box(prev)
                if b is None:
                    break
                progress.check()
                x0, y0, x1, y1 = b
                prompt = SlicePrompt(box=(max(0, x0 - margin), max(0, y0 - margin),
                                          min(w - 1, x1 + margin), min(h - 1, y1 + margin)))
                prev, run = self.segment_slice(k, prompt)
                self.put(out, k, prev)
                runs.append(run)
                progress.step(slice=int(k), voxels=run.voxels)
                k += direction
        progress.done()
        runs.sort(key=lambda r: r.index)
        return out, runs

    def run(self, prompt: VolumePrompt, margin: int = 0, progress: Optional[Progress] = None,
            stage: str = "segment") -> Tuple[np.ndarray, List[SliceRun]]:
        """Dispatch a volume prompt: a multi-slice box propagates, anything else runs per slice."""
        if isinstance(prompt, BoxPrompt):
            box = prompt.check(self.image.shape)
            if box.lo[self.axis] == box.hi[self.axis]:
                return self.run_slices({box.lo[self.axis]: SlicePrompt(box=box.slice_box(self.axis))},
                                       progress, stage)
            return self.propagate(box, margin, progress, stage)
        if isinstance(prompt, PointsPrompt):
            return self.run_slices(prompt.check(self.image.shape).per_slice(self.axis), progress, stage)
        if isinstance(prompt, LabelBoxPrompt):
            if prompt.labelmap.shape != self.image.shape:
                raise GeometryError(f"label map of shape {prompt.labelmap.shape} does not match the volume's "
                                    f"shape {self.image.shape}")
            return self.run_slices(prompt.per_slice(self.axis), progress, stage)
        raise PromptError(f"unsupported prompt {type(prompt).__name__}")
