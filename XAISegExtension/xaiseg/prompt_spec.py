"""The prompt of a run request as given (array indices or RAS millimetres, a box, a box on one
slice, points or a label map), checked when parsed and resolved against the volume when the run
starts (:meth:`PromptSpec.resolve`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .errors import PromptError
from .settings import coerce

PROMPT_TYPES = ("box", "slice_box", "points", "labelmap")
COORDS = ("kji", "ras")


def resolve_path(value: Optional[str], base: Optional[Path]) -> Optional[str]:
    if value in (None, ""):
        return None
    p = Path(str(value)).expanduser()
    return str(p if p.is_absolute() or base is None else Path(base) / p)


@dataclass(frozen=True)
class PromptSpec:
    """The prompt as given, resolved against the volume by :meth:`resolve`."""

    type: str
    lo: Optional[Tuple[float, float, float]] = None
    hi: Optional[Tuple[float, float, float]] = None
    box: Optional[Tuple[float, float, float, float]] = None
    slice: Optional[int] = None
    points: Tuple[Tuple[float, float, float], ...] = ()
    labels: Tuple[int, ...] = ()
    coords: str = "kji"
    file: Optional[str] = None
    label: int = 1
    margin: int = 0

    @classmethod
    def from_dict(cls, p: Any, base: Optional[Path] = None) -> "PromptSpec":
        if not isinstance(p, Mapping) or p.get("type") not in PROMPT_TYPES:
            raise PromptError(f"prompt {p!r} must be an object with type one of {', '.join(PROMPT_TYPES)}")
        kind = p["type"]
        if kind == "box":
            coords = "ras" if "lo_ras" in p or "hi_ras" in p else "kji"
            lo = _numbers(p.get(f"lo_{coords}"), 3, f"prompt lo_{coords}")
            hi = _numbers(p.get(f"hi_{coords}"), 3, f"prompt hi_{coords}")
            return cls("box", lo=lo, hi=hi, coords=coords)
        if kind == "slice_box":
            return cls("slice_box", box=_numbers(p.get("box"), 4, "prompt box (x0, y0, x1, y1)"),
                       slice=coerce(p.get("slice"), int, "prompt slice"))
        if kind == "points":
            coords = "ras" if "points_ras" in p else "kji"
            pts = p.get(f"points_{coords}")
            if not isinstance(pts, (list, tuple)) or not pts:
                raise PromptError(f"points_{coords} {pts!r} must be a non-empty list of [k, j, i] (or RAS) triples")
            points = tuple(_numbers(q, 3, f"point {q!r}") for q in pts)
            labels = p.get("labels") or [1] * len(points)
            labels = tuple(coerce(v, int, "point label") for v in labels)
            if len(labels) != len(points) or any(v not in (0, 1) for v in labels):
                raise PromptError(f"labels {list(labels)} must be one 1 (positive) or 0 (negative) per point")
            if 1 not in labels:
                raise PromptError("point prompts need at least one positive point")
            return cls("points", points=points, labels=labels, coords=coords)
        file = resolve_path(p.get("file"), base)
        if not file:
            raise PromptError(f"label map prompt {dict(p)!r} needs a file")
        return cls("labelmap", file=file, label=coerce(p.get("label", 1), int, "prompt label"),
                   margin=coerce(p.get("margin", 0), int, "prompt margin"))

    def to_dict(self) -> Dict[str, Any]:
        if self.type == "box":
            return {"type": "box", f"lo_{self.coords}": list(self.lo), f"hi_{self.coords}": list(self.hi)}
        if self.type == "slice_box":
            return {"type": "slice_box", "box": list(self.box), "slice": self.slice}
        if self.type == "points":
            return {"type": "points", f"points_{self.coords}": [list(q) for q in self.points],
                    "labels": list(self.labels)}
        return {"type": "labelmap", "file": self.file, "label": self.label, "margin": self.margin}

    def resolve(self, volume, axis: int, slice_range: Optional[Tuple[int, int]] = None):
        """The engine's volume prompt (array order k, j, i), restricted to ``slice_range``."""
        import numpy as np

        from .io import read_labelmap
        from .volume import BoxPrompt, LabelBoxPrompt, PointsPrompt, in_plane_axes

        geom = volume.geometry

        def kji(xyz) -> np.ndarray:
            xyz = np.atleast_2d(np.asarray(xyz, float))
            return geom.ras_to_ijk(xyz)[:, ::-1] if self.coords == "ras" else xyz

        if self.type == "labelmap":
            labels = read_labelmap(self.file, reference=volume).array
            if slice_range is not None:
                labels = labels.copy()
                outside = np.ones(labels.shape[axis], bool)
                outside[slice_range[0]:slice_range[1] + 1] = False
                index: List[Any] = [slice(None)] * 3
                index[axis] = outside
                labels[tuple(index)] = 0
            return LabelBoxPrompt(labels, self.label, self.margin, self.file)
        if self.type == "points":
            pts, labels = kji(self.points), list(self.labels)
            if slice_range is not None:
                keep = [i for i, q in enumerate(pts) if slice_range[0] <= round(q[axis]) <= slice_range[1]]
                if not keep:
                    raise PromptError(f"no point lies in the slice range {slice_range[0]}..{slice_range[1]}")
                pts, labels = pts[keep], [labels[i] for i in keep]
            return PointsPrompt(tuple(tuple(float(v) for v in q) for q in pts), tuple(labels)).check(volume.shape)
        if self.type == "slice_box":
            r, c = in_plane_axes(axis)
            lo, hi = [0, 0, 0], [0, 0, 0]
            lo[axis] = hi[axis] = int(self.slice)
            lo[c], lo[r], hi[c], hi[r] = (int(round(v)) for v in self.box)
        else:
            corners = kji([self.lo, self.hi])
            lo = np.floor(np.minimum(corners[0], corners[1]) + 0.5).astype(int).tolist()
            hi = np.floor(np.maximum(corners[0], corners[1]) + 0.5).astype(int).tolist()
        box = BoxPrompt(tuple(int(v) for v in lo), tuple(int(v) for v in hi)).check(volume.shape)
        if slice_range is not None:
            lo, hi = list(box.lo), list(box.hi)
            first, last = max(lo[axis], slice_range[0]), min(hi[axis], slice_range[1])
            if first > last:
                raise PromptError(f"slice range {slice_range[0]}..{slice_range[1]} does not overlap the box, which "
                                  f"covers slices {lo[axis]}..{hi[axis]} along axis {axis}")
            lo[axis], hi[axis] = first, last
            box = BoxPrompt(tuple(lo), tuple(hi))
        return box


def _numbers(value: Any, n: int, what: str) -> Tuple[float, ...]:
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v != ""]
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise PromptError(f"{what} {value!r} must be {n} numbers")
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise PromptError(f"{what} {value!r} must be {n} numbers") from None
    if any(v != v or v in (float("inf"), float("-inf")) for v in out):
        raise PromptError(f"{what} {value!r} must be finite numbers")
    return tuple(int(v) if float(v).is_integer() else v for v in out)  # type: ignore[return-value]
