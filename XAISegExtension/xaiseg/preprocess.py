"""Intensity normalisation and resizing to the model grid.

Seed 001: percentile clipping, then CLAHE (clip limit 2.0, 8x8 tiles).  CT window presets are
offered for CT.  Everything returns float32 in [0, 1]; :class:`Preprocessing` records what was
done so it lands in the run record.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Tuple

import numpy as np

from .errors import InputError

#: CT windows as (level, width) in Hounsfield units.
CT_WINDOWS = {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (40.0, 40.0),
    "soft-tissue": (50.0, 350.0),
    "abdomen": (40.0, 400.0),
    "liver": (60.0, 160.0),
    "mediastinum": (50.0, 350.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
}


@dataclass(frozen=True)
class Preprocessing:
    """How a volume is turned into [0, 1] model input.

    mode: ``percentile`` clips to the ``lower``/``upper`` percentiles of the foreground voxels
    (voxels above the volume's minimum, so zero background around a skull-stripped brain or air
    around a body does not shift the window); ``window`` uses a CT ``window`` preset or explicit
    ``level``/``width``; ``minmax`` rescales the full range.  ``clahe`` then equalises each slice
    with CLAHE (``clahe_clip`` as OpenCV's clip limit, ``clahe_tiles`` x ``clahe_tiles`` tiles).
    """

    mode: str = "percentile"
    lower: float = 0.5
    upper: float = 99.5
    window: Optional[str] = None
    level: Optional[float] = None
    width: Optional[float] = None
    clahe: bool = False
    clahe_clip: float = 2.0
    clahe_tiles: int = 8

    def __post_init__(self) -> None:
        if self.mode not in ("percentile", "window", "minmax"):
            raise InputError(f"preprocessing mode {self.mode!r} is unknown; expected percentile, window or minmax")
        if self.mode == "percentile" and not (0.0 <= self.lower < self.upper <= 100.0):
            raise InputError(f"percentiles {self.lower}/{self.upper} are invalid; expected 0 <= lower < upper <= 100")
        if self.mode == "window":
            if self.window is not None and self.window not in CT_WINDOWS:
                raise InputError(f"CT window {self.window!r} is unknown; expected one of {', '.join(CT_WINDOWS)}")
            if self.window is None and (self.level is None or self.width is None or self.width <= 0):
                raise InputError(f"window mode needs a preset or a level and a positive width "
                                 f"(got level={self.level}, width={self.width})")
        if self.clahe_tiles < 1 or self.clahe_clip <= 0:
            raise InputError(f"CLAHE needs tiles >= 1 and clip > 0 (got {self.clahe_tiles}, {self.clahe_clip})")

    def bounds(self, volume: np.ndarray) -> Tuple[float, float]:
        """Intensity range mapped to [0, 1]."""
        if self.mode == "window":
            level, width = CT_WINDOWS[self.window] if self.window else (self.level, self.width)
            return float(level - width / 2.0), float(level + width / 2.0)
        if self.mode == "minmax":
            return float(volume.min()), float(volume.max())
        fg = volume[volume > volume.min()]
        if fg.size == 0:
            fg = volume.ravel()
        lo, hi = np.percentile(fg, [self.lower, self.upper])
        if hi <= lo:  # constant foreground (e.g. a two-level image): keep it above the background
            lo = volume.min()
        return float(lo), float(hi)

    def record(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


#: slices (along axis 0) normalised at a time: the only temporaries are this many slices' worth
CHUNK_VOXELS = 1 << 22


def normalise(volume: np.ndarray, prep: Preprocessing) -> Tuple[np.ndarray, Tuple[float, float]]:
    """Map a 2D or 3D array to float32 [0, 1] with ``prep``; CLAHE per 2D slice along axis 0 for 3D.

    Returns the array and the intensity bounds used.  The result is computed in place, a few
    slices at a time, in float32 (the same values as ``clip((volume - lo) / (hi - lo), 0, 1)`` in
    float32), so a volume costs its float32 copy and no full-size temporaries.
    """
    lo, hi = prep.bounds(volume)
    if hi <= lo:
        hi = lo + 1.0
    out = np.empty(volume.shape, np.float32)
    step = max(1, CHUNK_VOXELS // max(1, int(np.prod(volume.shape[1:]))))
    for start in range(0, volume.shape[0], step):
        block = out[start:start + step]
        block[...] = volume[start:start + step]
        block -= np.float32(lo)
        block /= np.float32(hi - lo)
        np.clip(block, 0.0, 1.0, out=block)
    if prep.clahe:
        if out.ndim == 3:
            for k in range(out.shape[0]):
                out[k] = clahe(out[k], prep.clahe_clip, prep.clahe_tiles)
        else:
            out = clahe(out, prep.clahe_clip, prep.clahe_tiles)
    return out, (lo, hi)


def clahe(image: np.ndarray, clip: float = 2.0, tiles: int = 8) -> np.ndarray:
    """CLAHE of a [0, 1] slice with OpenCV (16-bit, so no banding); returns float32 [0, 1]."""
    import cv2

    u16 = np.round(np.clip(image, 0, 1) * 65535).astype(np.uint16)
    eq = cv2.createCLAHE(clipLimit=float(clip), tileGridSize=(int(tiles), int(tiles))).apply(u16)
    return eq.astype(np.float32) / 65535.0


def resize_longest(image: np.ndarray, target: int) -> Tuple[np.ndarray, Tuple[int, int], float]:
    """Resize a 2D image so its longest side is ``target`` and zero-pad to ``target`` x ``target``.

    Returns the padded image, the resized (h, w) before padding, and the scale factor.
    """
    import cv2

    h, w = image.shape[:2]
    scale = target / float(max(h, w))
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(np.ascontiguousarray(image, dtype=np.float32), (nw, nh), interpolation=interp)
    padded = np.zeros((target, target) + image.shape[2:], dtype=np.float32)
    padded[:nh, :nw] = resized
    return padded, (nh, nw), scale


def unpad_resize(logits: np.ndarray, resized: Tuple[int, int], original: Tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`resize_longest` for a 2D map on the model grid (bilinear)."""
    import cv2

    nh, nw = resized
    crop = np.ascontiguousarray(logits[:nh, :nw], dtype=np.float32)
    return cv2.resize(crop, (original[1], original[0]), interpolation=cv2.INTER_LINEAR)
