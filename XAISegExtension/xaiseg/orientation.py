"""In-plane orientation of slices: the 8 ways to turn a 2D slice (rotations and flips), the
physical layout a slice has on a given volume, and the canonical layout the model sees.

A slice is ``(rows, cols)``; boxes are inclusive pixel boxes ``(x0, y0, x1, y1)`` and points are
continuous ``(x, y)`` with pixel centres at integer coordinates (x = column, y = row), as in
:class:`~xaiseg.models.base.SlicePrompt`.

An :class:`InPlane` turns a slice by transposing it (or not), then reversing its rows (or not),
then reversing its columns (or not).  A :class:`Layout` says where a slice's rows and columns run
in the patient, e.g. ``rows "A->P"`` (row index grows towards posterior) and ``cols "R->L"``.
LiteMedSAM is orientation-sensitive, so the engine turns every slice into :data:`CANONICAL`
(measured: docs/benchmarks/orientation.md) before the encoder and turns its output back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import GeometryError, InputError
from .io import Geometry
from .models.base import Embedding, PromptableSegmenter, SlicePrompt

Box = Tuple[float, float, float, float]


@dataclass(frozen=True)
class InPlane:
    """One of the 8 in-plane orientations: transpose, then reverse rows, then reverse columns."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    # names -----------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        flips = {(False, False): "", (True, False): "flip_rows", (False, True): "flip_cols",
                 (True, True): "flip_both"}[(self.flip_rows, self.flip_cols)]
        if self.transpose:
            return "transpose" + ("_" + flips if flips else "")
        return flips or "identity"

    @property
    def description(self) -> str:
        return DESCRIPTIONS[self.name]

    @classmethod
    def named(cls, name: str) -> "InPlane":
        """The orientation called ``name`` (one of :data:`NAMES` or an alias in :data:`ALIASES`)."""
        key = ALIASES.get(str(name), str(name))
        for g in ALL:
            if g.name == key:
                return g
        raise InputError(f"in-plane orientation {name!r} is unknown; expected one of {', '.join(NAMES)} "
                         f"(or {', '.join(sorted(ALIASES))})")

    def __str__(self) -> str:
        return self.name

    # arrays ----------------------------------------------------------------------------------
    def shape(self, shape: Sequence[int]) -> Tuple[int, int]:
        """Shape ``(rows, cols)`` of a slice of ``shape`` after turning."""
        h, w = int(shape[0]), int(shape[1])
        return (w, h) if self.transpose else (h, w)

    def apply(self, plane: np.ndarray) -> np.ndarray:
        """The turned slice (a contiguous copy); extra trailing axes (channels) are kept."""
        out = np.swapaxes(plane, 0, 1) if self.transpose else plane
        if self.flip_rows:
            out = out[::-1]
        if self.flip_cols:
            out = out[:, ::-1]
        return np.array(out, order="C")

    def inverse(self) -> "InPlane":
        """The orientation that undoes this one (a flip before transposing is the other flip after)."""
        if self.transpose:
            return InPlane(True, self.flip_cols, self.flip_rows)
        return self

    def invert(self, plane: np.ndarray) -> np.ndarray:
        """Turn a slice in this orientation back to the original one (exact)."""
        return self.inverse().apply(plane)

    def then(self, other: "InPlane") -> "InPlane":
        """The orientation that applies ``self`` first, then ``other``."""
        probe = np.arange(6).reshape(2, 3)
        want = other.apply(self.apply(probe))
        return next(g for g in ALL if g.shape(probe.shape) == want.shape and np.array_equal(g.apply(probe), want))

    # prompts ---------------------------------------------------------------------------------
    def _xy(self, x: float, y: float, shape: Sequence[int]) -> Tuple[float, float]:
        h2, w2 = self.shape(shape)
        if self.transpose:
            x, y = y, x
        if self.flip_rows:
            y = h2 - 1 - y
        if self.flip_cols:
            x = w2 - 1 - x
        return x, y

    def points(self, points_xy, shape: Sequence[int]) -> Tuple[Tuple[float, float], ...]:
        """Points ``(x, y)`` on a slice of ``shape`` mapped onto the turned slice."""
        return tuple(self._xy(float(x), float(y), shape) for x, y in points_xy)

    def box(self, box_xyxy: Sequence[float], shape: Sequence[int]) -> Box:
        """An inclusive pixel box on a slice of ``shape`` mapped onto the turned slice."""
        x0, y0, x1, y1 = (float(v) for v in box_xyxy)
        (a, b), (c, d) = self._xy(x0, y0, shape), self._xy(x1, y1, shape)
        return (min(a, c), min(b, d), max(a, c), max(b, d))

    def prompt(self, prompt: SlicePrompt, shape: Sequence[int]) -> SlicePrompt:
        """``prompt`` on a slice of ``shape`` as a prompt on the turned slice."""
        box = self.box(prompt.box, shape) if prompt.box is not None else None
        points = self.points(prompt.points, shape) if prompt.points else None
        return SlicePrompt(box, points, prompt.labels if prompt.points else None)


ALL: Tuple[InPlane, ...] = tuple(InPlane(t, r, c) for t in (False, True) for r in (False, True) for c in (False, True))
IDENTITY = InPlane()
NAMES: Tuple[str, ...] = tuple(g.name for g in ALL)
#: other common names: rotations are counter-clockwise as shown with row 0 at the top
ALIASES: Dict[str, str] = {"rot90": "transpose_flip_rows", "rot180": "flip_both", "rot270": "transpose_flip_cols",
                           "antitranspose": "transpose_flip_both", "flip_vertical": "flip_rows",
                           "flip_horizontal": "flip_cols"}
DESCRIPTIONS: Dict[str, str] = {
    "identity": "as the array holds it", "flip_rows": "flipped upside down", "flip_cols": "mirrored left-right",
    "flip_both": "rotated 180 degrees", "transpose": "transposed (rows become columns)",
    "transpose_flip_rows": "rotated 90 degrees counter-clockwise", "transpose_flip_cols": "rotated 90 degrees clockwise",
    "transpose_flip_both": "transposed across the other diagonal"}


# physical layouts --------------------------------------------------------------------------------

#: RAS axes: index 0 runs towards R, 1 towards A, 2 towards S
_TOWARDS = (("L", "R"), ("P", "A"), ("I", "S"))  # (negative end, positive end)
PLANES: Dict[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}  # plane name -> RAS axis of its normal
_ITK_COLUMN = {0: 2, 1: 1, 2: 0}  # array axis (k, j, i) -> column of the ITK direction matrix


@dataclass(frozen=True)
class Layout:
    """Where a slice's row index and column index run in the patient, e.g. ``"A->P"``, ``"R->L"``."""

    rows: str
    cols: str

    def __post_init__(self) -> None:
        for d in (self.rows, self.cols):
            if _axis_of(d) is None:
                raise InputError(f"direction {d!r} is not one of L->R, R->L, P->A, A->P, I->S, S->I")
        if _axis_of(self.rows) == _axis_of(self.cols):
            raise InputError(f"rows {self.rows} and columns {self.cols} run along the same axis")

    @property
    def plane(self) -> str:
        normal = ({0, 1, 2} - {_axis_of(self.rows), _axis_of(self.cols)}).pop()
        return next(p for p, a in PLANES.items() if a == normal)

    def after(self, g: InPlane) -> "Layout":
        """The layout of a slice with this layout once ``g`` has turned it."""
        rows, cols = (self.cols, self.rows) if g.transpose else (self.rows, self.cols)
        return Layout(_reverse(rows) if g.flip_rows else rows, _reverse(cols) if g.flip_cols else cols)

    def to(self, target: "Layout") -> InPlane:
        """The orientation that turns a slice with this layout into ``target``."""
        if {_axis_of(self.rows), _axis_of(self.cols)} != {_axis_of(target.rows), _axis_of(target.cols)}:
            raise GeometryError(f"a slice whose rows run {self.rows} and columns {self.cols} cannot be turned "
                                f"into rows {target.rows}, columns {target.cols} (another plane)")
        return next(g for g in ALL if self.after(g) == target)

    def record(self) -> Dict[str, str]:
        return {"rows": self.rows, "cols": self.cols}


def _axis_of(direction: str) -> Optional[int]:
    for axis, (neg, pos) in enumerate(_TOWARDS):
        if direction in (f"{neg}->{pos}", f"{pos}->{neg}"):
            return axis
    return None


def _reverse(direction: str) -> str:
    a, b = direction.split("->")
    return f"{b}->{a}"


def _direction(axis: int, sign: float) -> str:
    neg, pos = _TOWARDS[axis]
    return f"{neg}->{pos}" if sign > 0 else f"{pos}->{neg}"


def slice_vectors(geometry: Geometry, axis: int) -> Tuple[np.ndarray, np.ndarray]:
    """Unit RAS vectors along which a slice's row index and column index grow (slicing ``axis``)."""
    ras = geometry.direction_matrix * np.array([-1.0, -1.0, 1.0])[:, None]  # columns: i, j, k in RAS
    rows, cols = [a for a in (0, 1, 2) if a != axis]
    return ras[:, _ITK_COLUMN[rows]], ras[:, _ITK_COLUMN[cols]]


def slice_layout(geometry: Geometry, axis: int) -> Layout:
    """The layout of the array's slices along ``axis``: rows and columns get the two anatomical axes
    of the plane closest to the slice (jointly, so oblique volumes still get two different axes)."""
    r, c = slice_vectors(geometry, axis)
    normal = np.cross(r, c)
    n_axis = int(np.argmax(np.abs(normal)))
    a, b = [x for x in (0, 1, 2) if x != n_axis]
    if abs(r[a]) + abs(c[b]) >= abs(r[b]) + abs(c[a]):
        return Layout(_direction(a, r[a]), _direction(b, c[b]))
    return Layout(_direction(b, r[b]), _direction(a, c[a]))


#: Layouts in the order LiteMedSAM segments them best, per plane: mean Dice over the six demo
#: structures on MNI152 with a tight box per slice (docs/benchmarks/orientation.md, measured with
#: ``python -m xaiseg.bench_orientation --planes axial coronal sagittal``).  The first is the
#: canonical layout; test-time augmentation with N orientations averages the first N.
TTA_ORDER: Dict[str, Tuple[Layout, ...]] = {
    # axial 0.794 (MNI152 as stored: posterior at the top, the patient's right on the left) ... 0.724
    "axial": (Layout("P->A", "R->L"), Layout("P->A", "L->R"), Layout("L->R", "A->P"), Layout("R->L", "A->P"),
              Layout("A->P", "L->R"), Layout("A->P", "R->L"), Layout("L->R", "P->A"), Layout("R->L", "P->A")),
    # coronal 0.729 (superior at the top, the patient's right on the left) ... 0.636 (every 2nd slice)
    "coronal": (Layout("S->I", "R->L"), Layout("L->R", "S->I"), Layout("S->I", "L->R"), Layout("R->L", "S->I"),
                Layout("R->L", "I->S"), Layout("L->R", "I->S"), Layout("I->S", "L->R"), Layout("I->S", "R->L")),
    # sagittal 0.734 (superior at the top, anterior on the left; 0.0002 ahead of anterior on the
    # right) ... 0.631 (every 2nd slice)
    "sagittal": (Layout("S->I", "A->P"), Layout("S->I", "P->A"), Layout("P->A", "I->S"), Layout("I->S", "A->P"),
                 Layout("A->P", "I->S"), Layout("A->P", "S->I"), Layout("P->A", "S->I"), Layout("I->S", "P->A")),
}
#: The layout the model sees, per plane: the best measured one.
CANONICAL: Dict[str, Layout] = {plane: order[0] for plane, order in TTA_ORDER.items()}


@dataclass(frozen=True)
class Orientation:
    """The in-plane orientation a run uses: how array slices are turned before the model."""

    turn: InPlane
    requested: str
    array_layout: Layout

    @property
    def layout(self) -> Layout:
        return self.array_layout.after(self.turn)

    def record(self) -> dict:
        return {"orientation": self.turn.name, "requested": self.requested, "rows": self.layout.rows,
                "cols": self.layout.cols, "array_rows": self.array_layout.rows, "array_cols": self.array_layout.cols,
                "plane": self.array_layout.plane}


def resolve(spec, geometry: Geometry, axis: int) -> Orientation:
    """``spec``: ``"auto"`` (the canonical layout of the slice's plane), ``"array"`` (no turning),
    an :class:`InPlane` or its name (applied to the array's slices as they are)."""
    layout = slice_layout(geometry, axis)
    if isinstance(spec, InPlane):
        return Orientation(spec, spec.name, layout)
    if spec == "auto":
        return Orientation(layout.to(CANONICAL[layout.plane]), "auto", layout)
    if spec == "array":
        return Orientation(IDENTITY, "array", layout)
    try:
        return Orientation(InPlane.named(spec), str(spec), layout)
    except InputError:
        raise InputError(f"orientation {spec!r} is unknown; expected auto, array or one of {', '.join(NAMES)}") from None


def tta_turns(orientation: Orientation, n: int) -> Tuple[InPlane, ...]:
    """The ``n`` orientations test-time augmentation averages, relative to the model's slice
    (the first is the identity): the canonical plane's :data:`TTA_ORDER`, then the other layouts."""
    if not 1 <= int(n) <= 8:
        raise InputError(f"tta {n} is invalid; expected 1 to 8 orientations")
    start = orientation.layout
    order = list(TTA_ORDER.get(start.plane, ()))
    order = [start] + [lay for lay in order if lay != start]
    order += [start.after(g) for g in ALL if start.after(g) not in order]
    return tuple(start.to(lay) for lay in order[:int(n)])


# test-time augmentation ----------------------------------------------------------------------------

@dataclass
class TTAEmbedding(Embedding):
    """The embedding of the image itself (its fields) plus one embedding per turn, for decoding."""

    parts: Tuple[Tuple[InPlane, Embedding], ...] = ()

    @property
    def nbytes(self) -> int:
        return int(sum(e.nbytes for _, e in self.parts))


class TTASegmenter(PromptableSegmenter):
    """``base`` averaged over several orientations: ``embed`` encodes the image turned by each of
    ``turns`` (one encoder pass each), ``decode`` decodes the prompt turned the same way, turns
    each logit map back and averages them.  The first turn must be the identity; its embedding is
    the one the explainers' ROI and layer maps read (it is encoded last, so forward hooks see it).
    """

    def __init__(self, base: PromptableSegmenter, turns: Sequence[InPlane]) -> None:
        turns = tuple(turns)
        if not turns or turns[0] != IDENTITY or len(set(turns)) != len(turns):
            raise InputError(f"TTA turns {[str(g) for g in turns]} must start with identity and not repeat")
        self.base = base
        self.turns = turns
        self.name = base.name
        self.weights_sha256 = base.weights_sha256
        self.uses_prompt = base.uses_prompt
        self.model_grid = base.model_grid
        self.device = base.device

    @property
    def module(self):  # type: ignore[override]
        return self.base.module

    @property
    def encoder_passes_per_image(self) -> int:
        return len(self.turns)

    def embed(self, image: np.ndarray) -> Embedding:
        return self.embed_batch([image])[0]

    def embed_batch(self, images: Sequence[np.ndarray]) -> List[Embedding]:
        per_turn = {g: self.base.embed_batch([g.apply(im) for im in images]) for g in reversed(self.turns)}
        out: List[Embedding] = []
        for i in range(len(images)):
            own = per_turn[IDENTITY][i]
            out.append(TTAEmbedding(own.features, own.image_shape, own.resized_shape, own.scale,
                                    parts=tuple((g, per_turn[g][i]) for g in self.turns)))
        return out

    def decode(self, embedding: Embedding, prompt: SlicePrompt) -> np.ndarray:
        if not isinstance(embedding, TTAEmbedding):
            return self.base.decode(embedding, prompt)
        shape = embedding.image_shape
        total = None
        for g, e in embedding.parts:
            back = g.invert(self.base.decode(e, g.prompt(prompt, shape))).astype(np.float32)
            total = back if total is None else total + back
        return total / np.float32(len(embedding.parts))

    def describe(self) -> dict:
        return dict(self.base.describe(), tta={"turns": [g.name for g in self.turns],
                                               "encoder_passes_per_slice": len(self.turns)})
