"""Importing shap next to 3D Slicer.

shap does ``from slicer import Alias, Obj, Slicer``, meaning the small PyPI package ``slicer``.
Inside 3D Slicer the application's own ``slicer`` module answers that import instead, and with
slicer-core installed after shap the ``slicer`` folder holds both.  :func:`import_shap` therefore
loads the PyPI package's files under a private name, shows them to shap as ``slicer`` only while
shap is imported, and puts back whatever ``slicer`` module was there before - so Slicer's module is
untouched, and shap works in Slicer, in an environment with slicer-core and in a plain one.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Optional

from ..errors import DependencyError

PRIVATE = "_xaiseg_pypi_slicer"
NAMES = ("Alias", "Obj", "Slicer")


def _pypi_slicer_folder() -> Optional[Path]:
    """Folder of the PyPI ``slicer`` package's ``slicer.py`` (from its installed metadata)."""
    try:
        from importlib import metadata
        dist = metadata.distribution("slicer")
    except Exception:  # noqa: BLE001 - not installed, or no metadata
        return None
    for f in dist.files or ():
        if str(f).replace("\\", "/").endswith("slicer/slicer.py"):
            path = Path(str(dist.locate_file(f)))
            return path.parent if path.is_file() else None
    return None


def _load_private(folder: Path) -> types.ModuleType:
    """The PyPI slicer API (Alias, Obj, Slicer) from ``folder``, imported as a private package."""
    if PRIVATE + ".slicer" in sys.modules:
        inner = sys.modules[PRIVATE + ".slicer"]
    else:
        package = types.ModuleType(PRIVATE)
        package.__path__ = [str(folder)]  # type: ignore[attr-defined]
        sys.modules[PRIVATE] = package
        spec = importlib.util.spec_from_file_location(PRIVATE + ".slicer", folder / "slicer.py")
        inner = importlib.util.module_from_spec(spec)
        sys.modules[PRIVATE + ".slicer"] = inner
        spec.loader.exec_module(inner)  # type: ignore[union-attr]
    shim = types.ModuleType("slicer")
    shim.__doc__ = "PyPI 'slicer' as seen by shap (loaded privately by xaiseg)"
    for name in NAMES:
        setattr(shim, name, getattr(inner, name))
    return shim


def import_shap():
    """Import and return shap, whichever ``slicer`` module this process already has."""
    if "shap" in sys.modules:
        return sys.modules["shap"]
    folder = _pypi_slicer_folder()
    if folder is None:
        try:
            return importlib.import_module("shap")
        except ImportError as exc:
            raise DependencyError(f"SHAP needs the Python package 'shap' ({exc}). Install it with: "
                                  "pip install 'xaiseg[explain]'") from exc
    previous = sys.modules.get("slicer")
    sys.modules["slicer"] = _load_private(folder)
    try:
        return importlib.import_module("shap")
    except ImportError as exc:
        raise DependencyError(f"SHAP needs the Python package 'shap' ({exc}). Install it with: "
                              "pip install 'xaiseg[explain]'") from exc
    finally:
        if previous is not None:
            sys.modules["slicer"] = previous
        else:
            sys.modules.pop("slicer", None)
