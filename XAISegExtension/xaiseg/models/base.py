"""The PromptableSegmenter interface shared by LiteMedSAM, MedSAM ViT-B and plain torch models.

Coordinates on a slice are pixel coordinates of the 2D array: ``x`` is the column, ``y`` the row.
``embed`` runs the (expensive) image encoder once per image; ``decode`` runs the (cheap) prompt
encoder and mask decoder and returns logits with the image's shape, so many prompts - and many
perturbations in the explainers - reuse one embedding.
"""
from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError, PromptError


@dataclass(frozen=True)
class SlicePrompt:
    """A prompt on one 2D image: a box ``(x0, y0, x1, y1)`` (inclusive pixels) and/or points.

    ``points`` is ``(N, 2)`` as ``(x, y)``; ``labels`` is ``(N,)`` with 1 for positive and 0 for
    negative points.
    """

    box: Optional[Tuple[float, float, float, float]] = None
    points: Optional[Tuple[Tuple[float, float], ...]] = None
    labels: Optional[Tuple[int, ...]] = None

    def __post_init__(self) -> None:
        if self.box is None and not self.points:
            raise PromptError("a prompt needs a box or at least one point")
        if self.box is not None:
            if len(self.box) != 4 or not np.all(np.isfinite(self.box)):
                raise PromptError(f"box {self.box} must be four finite numbers x0, y0, x1, y1")
            x0, y0, x1, y1 = self.box
            if x1 < x0 or y1 < y0:
                raise PromptError(f"box {tuple(self.box)} has x1 < x0 or y1 < y0; expected x0 <= x1 and y0 <= y1")
        if self.points:
            labels = self.labels if self.labels is not None else (1,) * len(self.points)
            if len(labels) != len(self.points):
                raise PromptError(f"{len(self.points)} points but {len(labels)} labels")
            if any(lab not in (0, 1) for lab in labels):
                raise PromptError(f"point labels {labels} must be 1 (positive) or 0 (negative)")
            if 1 not in labels and self.box is None:
                raise PromptError("point prompts need at least one positive point")
            object.__setattr__(self, "labels", tuple(int(v) for v in labels))

    def check_inside(self, shape: Tuple[int, int]) -> None:
        """Raise :class:`PromptError` if the prompt does not overlap an image of ``shape`` (rows, cols)."""
        h, w = shape
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if x1 < 0 or y1 < 0 or x0 > w - 1 or y0 > h - 1:
                raise PromptError(f"box {tuple(self.box)} lies outside the image of {w} x {h} pixels "
                                  f"(x in 0..{w - 1}, y in 0..{h - 1})")
        for (x, y) in self.points or ():
            if not (0 <= x <= w - 1 and 0 <= y <= h - 1):
                raise PromptError(f"point ({x}, {y}) lies outside the image of {w} x {h} pixels "
                                  f"(x in 0..{w - 1}, y in 0..{h - 1})")

    def clipped(self, shape: Tuple[int, int]) -> "SlicePrompt":
        """The same prompt with the box clipped to the image."""
        if self.box is None:
            return self
        h, w = shape
        x0, y0, x1, y1 = self.box
        box = (max(0.0, x0), max(0.0, y0), min(w - 1.0, x1), min(h - 1.0, y1))
        return SlicePrompt(box, self.points, self.labels)

    def record(self) -> dict:
        out: dict = {}
        if self.box is not None:
            out["box"] = [float(v) for v in self.box]
        if self.points:
            out["points"] = [[float(a), float(b)] for a, b in self.points]
            out["labels"] = list(self.labels or ())
        return out


@dataclass
class Embedding:
    """Output of the image encoder for one image plus what ``decode`` needs to map back."""

    features: Any  # torch.Tensor (1, C, h, w) or model-specific
    image_shape: Tuple[int, int]
    resized_shape: Tuple[int, int]
    scale: Any  # float (uniform) or (sx, sy)
    #: estimated share of a full encoder pass this embedding cost: below 1 when cached activations
    #: were reused (:meth:`PromptableSegmenter.embed_changed_batch`), 0 when nothing had changed
    pass_share: float = 1.0

    @property
    def nbytes(self) -> int:
        f = self.features
        if hasattr(f, "nelement"):
            return int(f.element_size() * f.nelement())
        return int(getattr(f, "nbytes", 0))


@dataclass
class ReuseCache:
    """The unperturbed slice, its embedding and what a segmenter keeps of that pass (``state``) so
    that images differing from it in a box are encoded cheaply (:meth:`~PromptableSegmenter.embed_changed`).
    ``owner`` ties it to the segmenter (and weights) that made it."""

    image: np.ndarray
    embedding: Embedding
    state: Any = None
    owner: Tuple[int, Optional[str]] = (0, None)

    @property
    def nbytes(self) -> int:
        return int(getattr(self.state, "nbytes", 0)) + self.embedding.nbytes + int(self.image.nbytes)


#: a box on a slice or grid: (y0, x0, y1, x1), rows and columns, half-open; (0, 0, 0, 0) is empty
ChangedBox = Tuple[int, int, int, int]


def mask_rect(mask: np.ndarray) -> ChangedBox:
    """Bounding rectangle (y0, x0, y1, x1, half-open) of a boolean map; (0, 0, 0, 0) when it is empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return (0, 0, 0, 0)
    return (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)


class PromptableSegmenter(ABC):
    """Embed an image once, decode many prompts on that embedding."""

    #: Human-readable model name for the run record.
    name: str = "segmenter"
    #: SHA-256 of the weights file, or a description of where weights came from.
    weights_sha256: Optional[str] = None
    #: Whether ``decode`` uses the prompt (False for plain torch models).
    uses_prompt: bool = True
    #: Longest side of the model's input grid (slices are resized to it), or None for native size.
    #: Explainers measure patch sizes on this grid (seed 001: 64/32 on the model grid).
    model_grid: Optional[int] = None

    @abstractmethod
    def embed(self, image: np.ndarray) -> Embedding:
        """Encode a 2D float image in [0, 1] of shape (H, W)."""

    def embed_batch(self, images: Sequence[np.ndarray]) -> List[Embedding]:
        """Encode several images; models override this to run one batched forward pass."""
        return [self.embed(im) for im in images]

    # activation reuse ---------------------------------------------------------------------------
    #: whether :meth:`embed_changed_batch` reuses the cached pass (else it is a full pass)
    supports_reuse: bool = False

    def embed_cache(self, image: np.ndarray) -> ReuseCache:
        """Encode the unperturbed ``image`` and keep what :meth:`embed_changed` reuses (here: nothing
        but the embedding)."""
        check_slice(image)
        return ReuseCache(np.array(image, dtype=np.float32, copy=True), self.embed(image), None, self._owner())

    def embed_changed(self, cache: ReuseCache, image: np.ndarray,
                      changed_box: Optional[ChangedBox] = None) -> Embedding:
        """The embedding of ``image``, which equals ``cache.image`` outside ``changed_box`` (y0, x0,
        y1, x1 on the slice; None: found from the pixels)."""
        return self.embed_changed_batch(cache, [image], None if changed_box is None else [changed_box])[0]

    def embed_changed_batch(self, cache: ReuseCache, images: Sequence[np.ndarray],
                            changed_boxes: Optional[Sequence[Optional[ChangedBox]]] = None) -> List[Embedding]:
        """:meth:`embed_changed` for several images sharing one cache.  Here: full passes."""
        self.check_cache(cache, images)
        return self.embed_batch(images)

    def save_cache(self, cache: ReuseCache, path) -> None:
        """Write ``cache`` to ``path`` (tensors, numbers and lists only, so that :meth:`load_cache`
        reads it with ``torch.load(weights_only=True)``)."""
        import torch

        e = cache.embedding
        numpy = isinstance(e.features, np.ndarray)  # models whose features are arrays, not tensors
        features = torch.from_numpy(np.ascontiguousarray(e.features)) if numpy else e.features
        torch.save({"image": torch.from_numpy(np.ascontiguousarray(cache.image)), "features": features,
                    "numpy": numpy, "meta": (tuple(e.image_shape), tuple(e.resized_shape), e.scale,
                                             float(e.pass_share)),
                    "state": self.cache_tree(cache.state), "owner": tuple(cache.owner)}, str(path))

    def load_cache(self, path) -> ReuseCache:
        """The cache :meth:`save_cache` wrote to ``path``; refused unless this segmenter made it."""
        import torch

        d = torch.load(str(path), weights_only=True)
        owner = tuple(d["owner"])
        if owner != self._owner():
            raise InputError(f"the activation cache in {path} was made by another segmenter ({owner}); "
                             f"expected one made by this one ({self._owner()})")
        image_shape, resized_shape, scale, share = d["meta"]
        features = d["features"].numpy() if d["numpy"] else d["features"]
        return ReuseCache(d["image"].numpy(), Embedding(features, tuple(image_shape), tuple(resized_shape), scale,
                                                        share), self.cache_from_tree(d["state"]), owner)

    def cache_tree(self, state: Any) -> Any:
        """``ReuseCache.state`` as plain containers of tensors (models with their own state type
        override this and :meth:`cache_from_tree`)."""
        return state

    def cache_from_tree(self, tree: Any) -> Any:
        return tree

    def _owner(self) -> Tuple[int, Optional[str]]:
        return (id(self.module) if self.module is not None else id(self), self.weights_sha256)

    def check_cache(self, cache: ReuseCache, images: Sequence[np.ndarray]) -> None:
        """Raise :class:`InputError` unless ``cache`` was made by this segmenter for images of this shape."""
        if cache.owner != self._owner():
            raise InputError(f"the activation cache was made by another segmenter or weights ({cache.owner[1]}); "
                             f"expected one made by {self.name} ({self.weights_sha256})")
        for im in images:
            check_slice(im)
            if im.shape != cache.image.shape:
                raise InputError(f"image of shape {im.shape} does not match the cached slice's shape "
                                 f"{cache.image.shape}")

    @abstractmethod
    def decode(self, embedding: Embedding, prompt: SlicePrompt) -> np.ndarray:
        """Logits of shape (H, W) for ``prompt`` on an image encoded as ``embedding``."""

    def segment(self, image: np.ndarray, prompt: SlicePrompt) -> np.ndarray:
        """Boolean mask of ``prompt`` on ``image`` (encodes then decodes)."""
        check_slice(image)
        prompt.check_inside(image.shape)
        return self.decode(self.embed(image), prompt.clipped(image.shape)) > 0

    def describe(self) -> dict:
        """What the run record says about this model."""
        return {"name": self.name, "weights_sha256": self.weights_sha256}

    # torch plumbing shared by the implementations -------------------------------------------
    module: Any = None
    device: str = "cpu"


def check_slice(image: np.ndarray) -> None:
    if image.ndim != 2:
        raise InputError(f"a 2D slice of shape (H, W) is expected, got shape {image.shape}")


def forward_slices(module, images: np.ndarray, input_size: Optional[int], in_channels: int, device: str):
    """Run a plain torch ``module`` on slices (N, H, W) in [0, 1]: resized to ``input_size``
    squared when given, repeated over ``in_channels``, without gradients.  Returns the output
    tensor (the first one when the module returns several)."""
    import cv2
    import torch

    x = np.asarray(images, dtype=np.float32)
    if input_size:
        x = np.stack([cv2.resize(im, (int(input_size), int(input_size)), interpolation=cv2.INTER_LINEAR) for im in x])
    t = torch.from_numpy(np.ascontiguousarray(x)).to(device)[:, None].repeat(1, int(in_channels), 1, 1)
    with torch.inference_mode():
        out = module(t)
    return out[0] if isinstance(out, (tuple, list)) else out


def _submodule(root, dotted: str):
    target = root
    for part in dotted.split("."):
        target = target[int(part)] if part.isdigit() else getattr(target, part)
    return target


def without_reuse(segmenter: PromptableSegmenter) -> PromptableSegmenter:
    """A shallow copy of ``segmenter`` (the same weights) that makes every perturbed pass a full one:
    the baseline that activation reuse is measured and checked against."""
    plain = copy.copy(segmenter)
    plain.supports_reuse = False
    return plain


def randomized_copy(segmenter: PromptableSegmenter, seed: int = 0, part=None) -> PromptableSegmenter:
    """A deep copy of ``segmenter`` whose weights (all, or the submodule(s) named by ``part``: a
    dotted name such as ``image_encoder.layers.3`` or a list of them) are re-drawn.

    This is the model-randomisation sanity check of Adebayo et al.: explanations of the copy must
    differ from those of the trained model.
    """
    import torch

    clone = copy.deepcopy(segmenter)
    root = clone.module
    parts = [None] if part is None else ([part] if isinstance(part, str) else list(part))
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for name in parts:
            target = root if name is None else _submodule(root, name)
            for p in target.parameters():
                if p.dim() >= 2:
                    fan_in = int(np.prod(p.shape[1:]))
                    p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / np.sqrt(max(1, fan_in))))
                else:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    label = "all" if part is None else "+".join(str(n) for n in parts)
    clone.weights_sha256 = f"randomized(seed={seed}, part={label}) of {segmenter.weights_sha256}"
    return clone


def randomisation_cascade(segmenter: PromptableSegmenter) -> List[str]:
    """The parts re-drawn one after another in the cascading randomisation check (Adebayo et al.),
    from the output back to the input: the mask decoder and prompt encoder, then the image
    encoder's neck, its stages from the last to the first, and its patch embedding.  Models
    without that structure: their top-level sub-modules in reverse order."""
    root = getattr(segmenter, "module", None)
    if root is None:
        return []
    out: List[str] = [n for n in ("mask_decoder", "prompt_encoder") if hasattr(root, n)]
    enc = getattr(root, "image_encoder", None)
    if enc is not None:
        for name in ("neck",):
            if hasattr(enc, name):
                out.append(f"image_encoder.{name}")
        stages = getattr(enc, "layers", None) if hasattr(enc, "layers") else getattr(enc, "blocks", None)
        key = "layers" if hasattr(enc, "layers") else "blocks"
        if stages is not None:
            out += [f"image_encoder.{key}.{i}" for i in reversed(range(len(stages)))]
        if hasattr(enc, "patch_embed"):
            out.append("image_encoder.patch_embed")
    if not out:
        out = [n for n, _ in reversed(list(root.named_children()))]
    return out
