"""Known-answer models for the engine tests (fast, deterministic, no weights).

* :class:`Ramp` / :func:`ramp` - a torch module whose single logit channel is ``10 * (x - 0.5)``,
  so the mask is exactly "normalised intensity above 0.5".  Used through
  ``--model torch --factory toys:ramp``; :func:`slow_ramp` the same, 50 ms per image.
* :func:`crash` - a factory that ends its process at once (``os._exit``): a case that takes its
  worker down (``--factory toys:crash``).
* :class:`BoxToy` - a :class:`PromptableSegmenter` that answers +1 inside the prompt box (or
  near positive points) and -1 elsewhere, optionally only where the slice is bright, and counts
  its encoder/decoder calls.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np
import torch
from torch import nn

from xaiseg.models.base import Embedding, PromptableSegmenter, SlicePrompt


class Ramp(nn.Module):
    def __init__(self, gain: float = 10.0) -> None:
        super().__init__()
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain * (x[:, :1] - 0.5)


def ramp(gain: float = 10.0) -> nn.Module:
    """Factory for ``--factory toys:ramp``."""
    return Ramp(gain)


class SlowRamp(Ramp):
    """:class:`Ramp` that takes ``seconds`` per image it is given (a stage long enough for a signal
    to land inside it, however fast the machine)."""

    def __init__(self, seconds: float = 0.05) -> None:
        super().__init__()
        self.seconds = seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import time

        time.sleep(self.seconds * x.shape[0])
        return super().forward(x)


def slow_ramp(seconds: float = 0.05) -> nn.Module:
    """Factory for ``--factory toys:slow_ramp``."""
    return SlowRamp(seconds)


def crash(code: int = 3) -> nn.Module:
    """Factory for ``--factory toys:crash``: the process that loads it dies on the spot."""
    import os

    os._exit(code)


class BoxToy(PromptableSegmenter):
    """+1 inside the prompt box (inclusive pixels), -1 outside; with ``gate`` only where image > 0.5.

    Point prompts give +1 within 1.5 pixels of a positive point (minus negative points' discs).
    """

    name = "box-toy"
    weights_sha256 = "none (known-answer toy)"

    def __init__(self, gate: bool = False) -> None:
        self.gate = gate
        self.embed_calls = 0
        self.decode_calls = 0
        self.embedded_images: List[np.ndarray] = []
        self.prompts: List[SlicePrompt] = []

    def embed(self, image: np.ndarray) -> Embedding:
        self.embed_calls += 1
        img = np.array(image, dtype=np.float32, copy=True)
        self.embedded_images.append(img)
        return Embedding(img, img.shape, img.shape, 1.0)

    def decode(self, embedding: Embedding, prompt: SlicePrompt) -> np.ndarray:
        self.decode_calls += 1
        self.prompts.append(prompt)
        h, w = embedding.image_shape
        inside = np.zeros((h, w), dtype=bool)
        if prompt.box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in prompt.box)
            inside[max(0, y0):y1 + 1, max(0, x0):x1 + 1] = True
        if prompt.points:
            yy, xx = np.mgrid[0:h, 0:w]
            for (x, y), lab in zip(prompt.points, prompt.labels):
                disc = (xx - x) ** 2 + (yy - y) ** 2 <= 1.5 ** 2
                inside = inside | disc if lab == 1 else inside & ~disc
        if self.gate:
            inside &= embedding.features > 0.5
        return np.where(inside, 1.0, -1.0).astype(np.float32)


def box_toy(gate: bool = False) -> BoxToy:
    return BoxToy(gate)


def expected_box_mask(shape, lo, hi) -> np.ndarray:
    """uint8 array of ``shape`` that is 1 on the inclusive (k, j, i) box ``lo..hi``."""
    out = np.zeros(shape, dtype=np.uint8)
    out[tuple(slice(int(a), int(b) + 1) for a, b in zip(lo, hi))] = 1
    return out


def rotation(axis: int, degrees: float) -> np.ndarray:
    """3x3 rotation about coordinate ``axis`` (0 = x, 1 = y, 2 = z)."""
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    a, b = [i for i in range(3) if i != axis]
    r = np.eye(3)
    r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
    return r


def make_image(array: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
               direction: Optional[np.ndarray] = None):
    """A SimpleITK image of ``array`` (k, j, i) with the given geometry."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(array)
    if array.ndim == 3:
        img.SetSpacing(tuple(float(v) for v in spacing))
        img.SetOrigin(tuple(float(v) for v in origin))
        if direction is not None:
            img.SetDirection(tuple(float(v) for v in np.asarray(direction, dtype=float).ravel()))
    return img


class SquareEvidence(PromptableSegmenter):
    """Known answer for explainers: the mask is the prompt box, drawn only while a known square
    elsewhere on the slice (the evidence) stays bright.

    The decoder is a torch weight map (1 on the square, 0 elsewhere) in ``module.mask_decoder``;
    logits inside the box are ``gain * (weighted mean of the image - level)``, -5 outside.  Removing
    the square is the only perturbation that changes the mask, so every faithful saliency map
    peaks in the square; re-drawing the weights (sanity check) moves the evidence elsewhere.  A
    ``level`` near the square's brightness (0.9 in :func:`evidence_image`) makes the mask give way to a
    small dimming of the square, such as inpainting a cell at its edge.
    """

    name = "square-evidence toy"
    weights_sha256 = "none (known-answer toy)"

    def __init__(self, shape=(64, 64), square=(8, 8, 24, 24), gain: float = 20.0, level: float = 0.5) -> None:
        h, w = shape
        y0, x0, y1, x1 = square
        weight = torch.zeros(h, w)
        weight[y0:y1, x0:x1] = 1.0
        self.module = nn.Module()
        self.module.mask_decoder = nn.Module()
        self.module.mask_decoder.weight = nn.Parameter(weight)
        self.square = square
        self.gain = gain
        self.level = level
        self.embed_calls = 0

    def embed(self, image: np.ndarray) -> Embedding:
        self.embed_calls += 1
        img = np.array(image, dtype=np.float32, copy=True)
        return Embedding(img, img.shape, img.shape, 1.0)

    def decode(self, embedding: Embedding, prompt: SlicePrompt) -> np.ndarray:
        w = self.module.mask_decoder.weight.detach().numpy().astype(np.float64)
        evidence = float((w * embedding.features).sum() / max(np.abs(w).sum(), 1e-12))
        out = np.full(embedding.image_shape, -5.0, dtype=np.float32)
        x0, y0, x1, y1 = (int(round(v)) for v in prompt.box)
        out[y0:y1 + 1, x0:x1 + 1] = self.gain * (evidence - self.level)
        return out

    def square_mask(self) -> np.ndarray:
        y0, x0, y1, x1 = self.square
        out = np.zeros(self.module.mask_decoder.weight.shape, bool)
        out[y0:y1, x0:x1] = True
        return out


def evidence_image(shape=(64, 64), square=(8, 8, 24, 24), seed: int = 0) -> np.ndarray:
    """A textured slice with a bright square (the evidence) and a bright block where the box is."""
    rng = np.random.default_rng(seed)
    img = 0.2 + 0.1 * rng.random(shape)
    y0, x0, y1, x1 = square
    img[y0:y1, x0:x1] = 0.9
    img[36:56, 36:56] = 0.7
    return img.astype(np.float32)


class HashedEvidence(SquareEvidence):
    """A model whose logit is noise: a pseudo-random function of the whole image, so no region
    explains it and every RISE map of it is the draw's noise."""

    def decode(self, embedding, prompt):
        import hashlib

        digest = hashlib.sha256(np.ascontiguousarray(embedding.features).tobytes()).digest()
        noise = int.from_bytes(digest[:4], "little") / 2 ** 32
        out = np.full(embedding.image_shape, -5.0, dtype=np.float32)
        x0, y0, x1, y1 = (int(round(v)) for v in prompt.box)
        out[y0:y1 + 1, x0:x1 + 1] = 10.0 * (noise - 0.5)
        return out
