"""Segmenters behind one interface: embed an image once, decode many prompts on the embedding."""
from .base import Embedding, PromptableSegmenter, SlicePrompt, randomized_copy

__all__ = ["Embedding", "PromptableSegmenter", "SlicePrompt", "randomized_copy", "load_segmenter"]


def load_segmenter(kind: str = "litemedsam", **options) -> PromptableSegmenter:
    """Build a segmenter by name: ``litemedsam`` (default), ``medsam`` or ``torch``."""
    from ..errors import InputError

    if kind == "litemedsam":
        from .litemedsam import LiteMedSAM

        return LiteMedSAM(**options)
    if kind == "medsam":
        from .medsam import MedSAMViT

        return MedSAMViT.from_options(**options)
    if kind == "torch":
        from .torch_model import TorchSegmenter

        return TorchSegmenter.from_options(**options)
    raise InputError(f"segmenter {kind!r} is unknown; expected litemedsam, medsam or torch")
