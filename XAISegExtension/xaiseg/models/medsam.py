"""Full MedSAM (SAM ViT-B fine-tuned on medical images) through segment-anything's classes.

The user supplies the checkpoint (``medsam_vit_b.pth``): a local path, or a URL that is
downloaded once into a cache folder.  Either way its SHA-256 is checked before
``torch.load(weights_only=True)``.  As in MedSAM's own inference, the slice is resized to
1024 x 1024 (stretched, as in MedSAM training) with three channels in [0, 1], the box is scaled
the same way, and the 256 x 256 low-resolution logits are resized back to the slice.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError, WeightsError, require
from ..weights import default_cache_dir, fetch, load_into, load_state_dict
from .base import Embedding, PromptableSegmenter, SlicePrompt, check_slice


@dataclass(frozen=True)
class SamArch:
    """Architecture of a SAM-style model; the default is ViT-B as used by MedSAM."""

    img_size: int = 1024
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    global_attn_indexes: Tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    patch_size: int = 16
    prompt_dim: int = 256
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8


def build_sam(arch: SamArch = SamArch()):
    """Build an (untrained) SAM model of ``arch`` from segment-anything's modules."""
    import torch

    require("segment_anything", "medsam", "MedSAM ViT-B")
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    grid = arch.img_size // arch.patch_size
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=arch.depth, embed_dim=arch.embed_dim, img_size=arch.img_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=arch.num_heads,
            patch_size=arch.patch_size, qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=tuple(arch.global_attn_indexes), window_size=arch.window_size,
            out_chans=arch.prompt_dim),
        prompt_encoder=PromptEncoder(embed_dim=arch.prompt_dim, image_embedding_size=(grid, grid),
                                     input_image_size=(arch.img_size, arch.img_size), mask_in_chans=16),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=arch.prompt_dim, mlp_dim=arch.decoder_mlp_dim,
                                          num_heads=arch.decoder_heads),
            transformer_dim=arch.prompt_dim, iou_head_depth=3, iou_head_hidden_dim=256),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    ).eval()


class MedSAMViT(PromptableSegmenter):
    """MedSAM ViT-B from a verified checkpoint."""

    name = "MedSAM-ViT-B"

    def __init__(self, checkpoint: str, sha256: Optional[str], arch: SamArch = SamArch(), device: str = "cpu") -> None:
        state, sha = load_state_dict(checkpoint, sha256, "MedSAM checkpoint")
        self.module = build_sam(arch)
        load_into(self.module, state, checkpoint, sha, "MedSAM checkpoint")
        self.arch = arch
        self.model_grid = arch.img_size
        self.checkpoint = str(checkpoint)
        self.weights_sha256 = sha
        self.device = device
        self.module.to(device)

    @classmethod
    def from_options(cls, checkpoint: Optional[str] = None, sha256: Optional[str] = None, url: Optional[str] = None,
                     cache_dir: Optional[str] = None, arch: SamArch = SamArch(), device: str = "cpu",
                     progress=None) -> "MedSAMViT":
        if url:
            if not sha256:
                raise WeightsError(f"downloading {url} needs --sha256 so the file can be verified")
            checkpoint = str(fetch(url, sha256, cache_dir or default_cache_dir(), progress))
        if not checkpoint:
            raise InputError("MedSAM ViT-B needs --checkpoint PATH (medsam_vit_b.pth) or --url URL with --sha256")
        return cls(checkpoint, sha256, arch, device)

    def embed(self, image: np.ndarray) -> Embedding:
        return self.embed_batch([image])[0]

    def embed_batch(self, images: Sequence[np.ndarray]) -> List[Embedding]:
        import cv2
        import torch

        size = self.arch.img_size
        batch = []
        for im in images:
            check_slice(im)
            batch.append(cv2.resize(im.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR))
        x = torch.from_numpy(np.clip(np.stack(batch), 0, 1)).to(self.device)[:, None].repeat(1, 3, 1, 1)
        with torch.inference_mode():
            feats = self.module.image_encoder(x)
        return [Embedding(feats[i:i + 1], tuple(im.shape), (size, size),
                          (size / im.shape[1], size / im.shape[0])) for i, im in enumerate(images)]

    def decode(self, embedding: Embedding, prompt: SlicePrompt) -> np.ndarray:
        import cv2
        import torch

        sx, sy = embedding.scale  # type: ignore[misc]
        boxes = points = None
        if prompt.box is not None:
            x0, y0, x1, y1 = prompt.box
            boxes = torch.tensor([[x0 * sx, y0 * sy, (x1 + 1) * sx, (y1 + 1) * sy]], dtype=torch.float32,
                                 device=self.device)
        if prompt.points:
            coords = torch.tensor([[[(x + 0.5) * sx, (y + 0.5) * sy] for x, y in prompt.points]],
                                  dtype=torch.float32, device=self.device)
            points = (coords, torch.tensor([list(prompt.labels)], dtype=torch.int64, device=self.device))
        m = self.module
        with torch.inference_mode():
            sparse, dense = m.prompt_encoder(points=points, boxes=boxes, masks=None)
            low, _ = m.mask_decoder(image_embeddings=embedding.features, image_pe=m.prompt_encoder.get_dense_pe(),
                                    sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                    multimask_output=False)
        low = low[0, 0].float().cpu().numpy()
        h, w = embedding.image_shape
        return cv2.resize(low, (w, h), interpolation=cv2.INTER_LINEAR)

    def describe(self) -> dict:
        return {"name": self.name, "weights_sha256": self.weights_sha256, "checkpoint": self.checkpoint,
                "arch": asdict(self.arch), "device": self.device}
