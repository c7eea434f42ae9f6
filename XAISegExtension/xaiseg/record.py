"""The run record attached to every result: what ran, on what, with which settings and seed."""
from __future__ import annotations

import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Optional

from . import __version__


def versions() -> Dict[str, str]:
    out = {"xaiseg": __version__, "python": sys.version.split()[0], "platform": platform.platform()}
    for name in ("numpy", "torch", "SimpleITK"):
        module = sys.modules.get(name)
        if module is None:
            try:
                module = __import__(name)
            except ImportError:
                continue
        out[name] = getattr(module, "__version__", "unknown")
    return out


def run_record(*, model: Dict[str, Any], preprocessing: Dict[str, Any], prompt: Dict[str, Any],
               settings: Dict[str, Any], seconds: float, evaluations: Dict[str, int],
               seed: Optional[int] = None, source: Optional[str] = None) -> Dict[str, Any]:
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "input": source,
        "model": model,
        "preprocessing": preprocessing,
        "prompt": prompt,
        "settings": settings,
        "seed": seed,
        "seconds": round(float(seconds), 3),
        "evaluations": evaluations,
        "versions": versions(),
    }


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for NumPy scalars and arrays and paths (the one encoder)."""
    import numpy as np

    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.floating, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(document: Any, indent: Optional[int] = 2) -> str:
    """A JSON document with NumPy values."""
    return json.dumps(document, indent=indent, default=json_default)
