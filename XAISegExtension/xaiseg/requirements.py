"""Optional Python packages a feature needs: checked without importing (``find_spec``), imported
where used with a message that says how to install them.

Each explainer lists its own (``Explainer.requirements``); the Slicer module's dependency check
and install read them from there.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from .errors import DependencyError


@dataclass(frozen=True)
class Requirement:
    """module: import name; spec: pip requirement; purpose: what it is for; extra: xaiseg's pip extra."""

    module: str
    spec: str
    purpose: str
    extra: str = "explain"

    def installed(self) -> bool:
        try:
            return importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):
            return False

    def load(self):
        """Import the module, or raise :class:`DependencyError` naming the pip extra."""
        try:
            return importlib.import_module(self.module)
        except ImportError as exc:
            raise DependencyError(
                f"{self.purpose} needs the Python package '{self.module}', which is not installed ({exc}). "
                f"Install it with: pip install '{self.spec}' (or pip install 'xaiseg[{self.extra}]')") from exc


SKIMAGE = Requirement("skimage", "scikit-image>=0.21", "superpixels (LIME, SHAP)")
SKLEARN = Requirement("sklearn", "scikit-learn>=1.2", "LIME's ridge surrogate")
SHAP = Requirement("shap", "shap>=0.44", "SHAP values")
SCIPY = Requirement("scipy", "scipy>=1.9", "rank statistics")
TRANSFORMERS_CLIP = Requirement("transformers", "transformers>=4.40", "the CLIP ROI", extra="clip")
TRANSFORMERS_LLAVA = Requirement("transformers", "transformers>=4.48", "the LLaVA narrator", extra="llava")
SEGMENT_ANYTHING = Requirement("segment_anything", "segment-anything>=1.0", "full MedSAM ViT-B", extra="medsam")
