"""Known-answer segmenters for tests (toys, named as such - never used as "the model")."""
import numpy as np
import torch

from xaiseg.models.base import Embedding, PromptableSegmenter, SlicePrompt


class BoxToy(PromptableSegmenter):
    """Mask = the prompt box, but only where the image is bright (> 0.5): a known answer."""

    name = "box-toy"
    weights_sha256 = "none (toy)"

    def embed(self, image):
        return Embedding(np.asarray(image, dtype=np.float32), image.shape, image.shape, 1.0)

    def decode(self, embedding, prompt: SlicePrompt):
        img = embedding.features
        out = np.full(img.shape, -1.0, dtype=np.float32)
        x0, y0, x1, y1 = (int(round(v)) for v in prompt.box)
        out[y0:y1 + 1, x0:x1 + 1] = 1.0
        out[img <= 0.5] = -1.0
        return out


class Threshold(torch.nn.Module):
    """One-channel logits 10 * (x - 0.5): a torch 'model' whose mask is the bright region."""

    def forward(self, x):
        return 10.0 * (x[:, :1] - 0.5)


def threshold_net():
    return Threshold()
