"""Any torch module or MONAI network that maps an image to logits, without prompts.

The model gets the preprocessed slice as (1, C, H, W) in [0, 1] (the slice repeated over
``in_channels``), optionally resized to ``input_size``; its output (1, K, H', W') is resized back
and channel ``class_index`` becomes the logit map (for K > 1, the margin of that class over the
best other class, so ``> 0`` is exactly the argmax).  Prompts are accepted and ignored:
``uses_prompt`` is False and the run record says so.
"""
from __future__ import annotations

import importlib
from typing import Optional

import numpy as np

from ..errors import InputError, ModelError, WeightsMissingError
from ..weights import load_into, load_state_dict, verify
from .base import Embedding, PromptableSegmenter, SlicePrompt, check_slice, forward_slices


class TorchSegmenter(PromptableSegmenter):
    name = "torch-model"
    uses_prompt = False

    def __init__(self, module, class_index: int = 1, in_channels: int = 1, input_size: Optional[int] = None,
                 device: str = "cpu", name: Optional[str] = None, weights_sha256: Optional[str] = None) -> None:
        self.module = module.eval().to(device)
        self.class_index = int(class_index)
        self.in_channels = int(in_channels)
        self.input_size = input_size
        self.model_grid = input_size
        self.device = device
        self.name = name or type(module).__name__
        self.weights_sha256 = weights_sha256

    @classmethod
    def from_options(cls, torchscript: Optional[str] = None, factory: Optional[str] = None,
                     factory_kwargs: Optional[dict] = None, checkpoint: Optional[str] = None,
                     sha256: Optional[str] = None, **kw) -> "TorchSegmenter":
        import torch

        if bool(torchscript) == bool(factory):
            raise InputError("--model torch needs exactly one of --torchscript FILE or --factory module:callable")
        if torchscript:
            sha = verify(torchscript, sha256, "TorchScript model")
            try:
                module = torch.jit.load(str(torchscript), map_location="cpu")
            except Exception as exc:
                raise ModelError(f"{torchscript} (SHA-256 {sha}) is not a TorchScript model: {exc}".splitlines()[0]) from exc
            return cls(module, name=f"torchscript:{torchscript}", weights_sha256=sha, **kw)
        mod_name, _, attr = str(factory).partition(":")
        if not attr:
            raise InputError(f"--factory {factory!r} must look like 'package.module:callable'")
        try:
            fn = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as exc:
            raise InputError(f"cannot import {factory!r}: {exc}") from exc
        try:
            module = fn(**(factory_kwargs or {}))
        except TypeError as exc:
            raise InputError(f"{factory}(**{factory_kwargs}) failed: {exc}") from exc
        sha = None
        if checkpoint:
            state, sha = load_state_dict(checkpoint, sha256, "model checkpoint")
            load_into(module, state, checkpoint, sha, "model checkpoint")
        elif sha256:
            raise WeightsMissingError(f"--sha256 was given but no --checkpoint for {factory}")
        return cls(module, name=factory, weights_sha256=sha or "untrained (no checkpoint)", **kw)

    def embed(self, image: np.ndarray) -> Embedding:
        import cv2
        import torch

        check_slice(image)
        h, w = image.shape
        out = forward_slices(self.module, image[None], self.input_size, self.in_channels, self.device)
        if out.dim() != 4:
            raise ModelError(f"{self.name} returned shape {tuple(out.shape)}; expected (1, K, H, W) logits")
        k = out.shape[1]
        if not 0 <= self.class_index < k:
            raise ModelError(f"class index {self.class_index} is outside the model's {k} output channel(s)")
        if k == 1:
            logit = out[0, 0]
        else:
            others = torch.cat([out[0, :self.class_index], out[0, self.class_index + 1:]])
            logit = out[0, self.class_index] - others.max(dim=0).values
        logit = logit.float().cpu().numpy()
        if logit.shape != (h, w):
            logit = cv2.resize(logit, (w, h), interpolation=cv2.INTER_LINEAR)
        return Embedding(logit, (h, w), (h, w), 1.0)

    def decode(self, embedding: Embedding, prompt: SlicePrompt) -> np.ndarray:
        return np.array(embedding.features, dtype=np.float32, copy=True)

    def describe(self) -> dict:
        return {"name": self.name, "weights_sha256": self.weights_sha256, "uses_prompt": False,
                "class_index": self.class_index, "in_channels": self.in_channels, "input_size": self.input_size,
                "device": self.device}
