"""Fixtures for the Slicer module's tests, run on slicer-core's real MRML (no GUI).

The module folder (XAISegExtension/, which holds XAISegExtensionLib and xaiseg) goes first on
sys.path, as Slicer puts it there.  The MNI152 template with the Harvard-Oxford left caudate is the
real volume the logic runs on; one run of the worker (segment five slices, explain one) is shared
by the tests of a module to keep the suite within a few minutes on two CPU cores.
"""
import sys
from pathlib import Path

import numpy as np
import pytest

MODULE_DIR = Path(__file__).resolve().parents[2] / "XAISegExtension"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

slicer = pytest.importorskip("slicer", reason="slicer-core (pip install slicer-core) provides MRML in plain Python")
if not hasattr(slicer, "vtkMRMLScene"):  # pragma: no cover - PyPI 'slicer' installed after slicer-core
    pytest.skip("the installed 'slicer' package is not slicer-core's (reinstall slicer-core)", allow_module_level=True)


@pytest.fixture
def scene():
    """A fresh MRML scene, also set as slicer.mrmlScene (what slicer.util uses)."""
    from slicer_scene import new_scene

    s = new_scene()
    yield s
    s.Clear(1)


@pytest.fixture(scope="session")
def atlas():
    pytest.importorskip("nibabel")
    from xaiseg.sample_data import load_mni_atlas

    return load_mni_atlas(("Left_Caudate",))


@pytest.fixture(scope="session")
def caudate_box(atlas):
    """Inclusive (k, j, i) corners of the left caudate's bounding box and its central slice."""
    idx = np.argwhere(atlas.mask("Left_Caudate"))
    lo, hi = idx.min(axis=0), idx.max(axis=0)
    return tuple(int(v) for v in lo), tuple(int(v) for v in hi), int((lo[0] + hi[0]) // 2)


@pytest.fixture
def mni_volume(scene, atlas):
    """The MNI152 template as a scalar volume node of ``scene``."""
    return slicer.util.addVolumeFromArray(atlas.image.array, atlas.image.geometry.ijk_to_ras, name="MNI152")
