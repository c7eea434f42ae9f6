"""The narrator interface: findings (and the run's overlay images) in, a short text out.

Template text is built from findings and cannot invent anything; text written by a language model
is checked against findings (:mod:`xaiseg.narrate.checker`) and its unsupported claims are marked.
"""
from __future__ import annotations

import io as _io
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..errors import XAISegError
from .checker import Claim, check_text

SYSTEM_PROMPT = (
    "You help a radiologist read an explanation of an automatic segmentation. You get the overlay image of one "
    "or more slices (saliency in colour, the mask outlined) and FINDINGS, a JSON summary computed from the run. "
    "Write 3 to 5 plain sentences: what was segmented and its size, where the saliency concentrates (inside or "
    "outside the mask, which labelled structures), how faithful the leading method's map is (its metrics), and "
    "the method's limits. Use ONLY numbers and anatomical names that appear in FINDINGS; copy numbers exactly. "
    "Do not diagnose and do not describe anything FINDINGS does not state."
)


class NarratorError(XAISegError):
    """A narrator could not produce text (endpoint down, timeout, HTTP error, bad answer)."""


@dataclass(frozen=True)
class ReportImage:
    """One rendered slice of the run (PNG) and what it shows."""

    path: Path
    method: Optional[str]
    slice: int
    caption: str

    def png_bytes(self) -> bytes:
        """The PNG re-encoded from its pixels: no text chunks or other metadata travel with it."""
        from PIL import Image

        with Image.open(self.path) as im:
            im = im.convert("RGB")
            buf = _io.BytesIO()
            im.save(buf, format="PNG")
        return buf.getvalue()


@dataclass
class Narrative:
    """A narrator's text and, for model-written text, every claim checked against findings."""

    text: str
    narrator: str
    model_written: bool
    claims: List[Claim] = field(default_factory=list)
    model: Dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    prompt: Optional[str] = None
    images_sent: List[str] = field(default_factory=list)
    error: Optional[str] = None

    @property
    def unsupported(self) -> List[Claim]:
        return [c for c in self.claims if not c.supported]

    def as_dict(self) -> dict:
        return {"narrator": self.narrator, "model_written": self.model_written, "text": self.text,
                "claims": [c.as_dict() for c in self.claims],
                "unsupported": [c.text for c in self.unsupported], "model": self.model,
                "seconds": round(self.seconds, 3), "prompt": self.prompt, "images_sent": self.images_sent,
                "error": self.error}


class Narrator(ABC):
    """Turns findings into text. ``name`` appears in reports; ``model_written`` text is checked."""

    name = "narrator"
    model_written = True

    @abstractmethod
    def narrate(self, findings: dict, images: Sequence[ReportImage]) -> Narrative:
        """Text about ``findings``; ``images`` are the run's overlay PNGs, best first."""

    def finish(self, text: str, findings: dict, **kwargs) -> Narrative:
        """Wrap ``text`` into a :class:`Narrative` with its claims checked."""
        text = text.strip()
        return Narrative(text=text, narrator=self.name, model_written=self.model_written,
                         claims=check_text(text, findings), **kwargs)


def user_prompt(context: dict) -> str:
    """The text part of a model request: the instructions' data, FINDINGS as compact JSON."""
    return ("FINDINGS (JSON):\n" + json.dumps(context, separators=(",", ":"), sort_keys=False) +
            "\n\nDescribe the explanation of this segmentation for the radiologist, using only FINDINGS.")
