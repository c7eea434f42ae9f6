"""Fixtures for the Slicer module's tests, run on slicer-core's real MRML (no GUI).

The module folder (XAISegExtension/, which holds XAISegExtensionLib and xaiseg) goes first on
sys.path, as Slicer puts it there.  The MNI152 template with the Harvard-Oxford left caudate is the
real volume the logic runs on; one run of the worker (segment three slices, explain one with
occlusion and the encoder's layer maps) is shared by every test of the session that asks for
``mni_run``, to keep the suite within a few minutes on two CPU cores.
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


MNI_SLICES = 1  # slices either side of the caudate's central slice in the shared run


@pytest.fixture(scope="session")
def mni_run(atlas, caudate_box):
    """The shared run: MNI152 as a volume node of a scene with the application's Red, Yellow and
    Green views, a markups ROI on the left caudate, LiteMedSAM on three slices, occlusion (four
    patches) and the layer maps of all 18 encoder layers on the central slice."""
    import shutil

    from slicer_scene import add_app_views, new_scene
    from XAISegExtensionLib.logic import RunSettings, XAISegLogic
    from XAISegExtensionLib.selftest import roi_from_kji

    scene = new_scene()
    slice_logics = add_app_views(scene)
    volume = slicer.util.addVolumeFromArray(atlas.image.array, atlas.image.geometry.ijk_to_ras, name="MNI152")
    lo, hi, centre = caudate_box
    roi = roi_from_kji(scene, volume, lo, hi, "left caudate box")
    logic = XAISegLogic(scene)
    logic.keepFiles = True
    settings = RunSettings(name="left caudate", slice_range=(centre - MNI_SLICES, centre + MNI_SLICES),
                           methods=("occlusion", "layers"), explain_slices=[centre], roi={"source": "box", "margin": 8},
                           method_settings={"occlusion": {"patch": 128, "stride": 128, "metric_steps": 2},
                                            "layers": {"metric_steps": 0, "layers": "all"}},
                           threads=2)
    progress = []
    logic.progressCallback = lambda state: progress.append((state.status, state.stage, state.done, state.total))
    nodes_before = scene.GetNumberOfNodes()
    result = logic.run(volume, roi, settings, timeout=900)
    yield {"scene": scene, "volume": volume, "roi": roi, "logic": logic, "result": result, "settings": settings,
           "progress": progress, "nodes_before": nodes_before, "centre": centre, "slice_logics": slice_logics,
           "slices": MNI_SLICES}
    shutil.rmtree(logic.job.workdir, ignore_errors=True)
    scene.Clear(1)
