"""CLIP-guided ROI (seed 001): patch-text similarity of a CLIP model for each text prompt, Gaussian
smoothing (sigma 2), min-max normalisation, threshold 0.5, union over prompts.

Weights come from a local folder or an existing Hugging Face cache (``local_files_only``: nothing
is downloaded).  Any CLIP checkpoint in transformers' format works, including medical ones such as
PubMedCLIP; the folder must hold the model and its tokenizer (``save_pretrained`` writes both).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from ..errors import InputError, ModelError, WeightsMissingError, require
from ..metrics import normalise01
from .similarity import to_image

MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's image normalisation
STD = (0.26862954, 0.26130258, 0.27577711)


class ClipRoi:
    """model: a folder or a cached model name; prompts: text prompts, e.g. ("caudate nucleus",)."""

    def __init__(self, model: Optional[str], prompts: Sequence[str], sigma: float = 2.0, threshold: float = 0.5,
                 device: str = "cpu") -> None:
        if not model:
            raise InputError("the CLIP ROI needs CLIP weights: pass --clip-model with a local folder or a "
                             "cached Hugging Face name (nothing is downloaded), or use --roi embedding, box or mask")
        prompts = [p.strip() for p in prompts if p and p.strip()]
        if not prompts:
            raise InputError("the CLIP ROI needs at least one text prompt naming the structure, e.g. 'caudate nucleus'")
        if not 0.0 < float(threshold) < 1.0:
            raise InputError(f"CLIP threshold {threshold} must lie strictly between 0 and 1")
        self.model_name, self.prompts = str(model), prompts
        self.sigma, self.threshold, self.device = float(sigma), float(threshold), device
        self._model = self._tokenizer = None

    def load(self):
        if self._model is None:
            transformers = require("transformers", "clip", "the CLIP ROI")
            try:
                self._model = transformers.CLIPModel.from_pretrained(self.model_name, local_files_only=True).eval()
                self._tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_name, local_files_only=True)
            except OSError as exc:
                raise WeightsMissingError(f"CLIP weights {self.model_name!r} are not a local folder or in the "
                                          f"Hugging Face cache ({str(exc).splitlines()[0]})") from exc
            self._model.to(self.device)
        return self._model, self._tokenizer

    def similarity(self, image01: np.ndarray) -> List[np.ndarray]:
        """One (H, W) patch-text cosine similarity map per prompt, before smoothing."""
        import torch
        import torch.nn.functional as F

        model, tokenizer = self.load()
        size = int(model.config.vision_config.image_size)
        x = torch.from_numpy(np.asarray(image01, np.float32))[None, None]
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
        x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
        tokens = tokenizer(list(self.prompts), padding=True, return_tensors="pt")
        with torch.inference_mode():
            vision = model.vision_model(pixel_values=x.to(self.device))
            patches = model.visual_projection(model.vision_model.post_layernorm(vision.last_hidden_state[:, 1:]))
            text = model.text_model(input_ids=tokens["input_ids"].to(self.device),
                                    attention_mask=tokens["attention_mask"].to(self.device))
            text = model.text_projection(text.pooler_output)
        patches = F.normalize(patches[0], dim=-1)
        text = F.normalize(text, dim=-1)
        grid = int(round(patches.shape[0] ** 0.5))
        if grid * grid != patches.shape[0]:
            raise ModelError(f"CLIP vision model gave {patches.shape[0]} patch tokens, not a square grid")
        sims = (patches @ text.T).T.reshape(len(self.prompts), grid, grid).cpu().numpy()
        return [to_image(s, image01.shape) for s in sims]

    def roi(self, image01: np.ndarray) -> np.ndarray:
        """Union over prompts of the smoothed, normalised similarity at or above the threshold."""
        import cv2

        out = np.zeros(image01.shape, bool)
        for sim in self.similarity(image01):
            if self.sigma > 0:
                sim = cv2.GaussianBlur(sim, (0, 0), sigmaX=self.sigma)
            out |= normalise01(sim) >= self.threshold
        return out

    def record(self) -> dict:
        return {"model": self.model_name, "prompts": list(self.prompts), "sigma": self.sigma,
                "threshold": self.threshold}
