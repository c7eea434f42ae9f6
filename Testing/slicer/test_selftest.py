"""The module's self-test body (XAISegExtensionLib.selftest.run_selftest, which the Slicer
XAISegExtensionTest calls on MRHead) run here on slicer-core with a small real volume: a crop of the
MNI152 template (nine axial slices through the left caudate), with the atlas as the reference for a
Dice check."""
import ast
from pathlib import Path

import numpy as np

import slicer
from XAISegExtensionLib.selftest import run_selftest


def test_module_test_class_calls_the_shared_body():
    tree = ast.parse((Path(__file__).resolve().parents[2] / "XAISegExtension" / "XAISegExtension.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "XAISegExtensionTest")
    calls = {n.func.id for n in ast.walk(cls) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert "run_selftest" in calls, "the Slicer self-test must run the logic, not skip it"


def test_selftest_body_on_a_crop_of_mni152(scene, atlas, caudate_box):
    lo, hi, centre = caudate_box
    k0, k1 = centre - 4, centre + 4  # whole axial slices: the model sees what it sees in the full volume
    crop = np.ascontiguousarray(atlas.image.array[k0:k1 + 1])
    truth = atlas.mask("Left_Caudate")[k0:k1 + 1]
    j0 = i0 = 0
    m = atlas.image.geometry.ijk_to_ras.copy()
    m[:3, 3] = (m @ np.array([0.0, 0.0, k0, 1.0]))[:3]
    volume = slicer.util.addVolumeFromArray(crop, m, name="MNI152 crop")
    # three slices around the caudate's centre, the caudate's box in-plane
    box_lo = (centre - k0 - 1, lo[1] - j0, lo[2] - i0)
    box_hi = (centre - k0 + 1, hi[1] - j0, hi[2] - i0)
    figures = run_selftest(scene, volume, box_lo, box_hi, truth=truth, dice_floor=0.6, delay=lambda msg: None)
    assert figures["voxels"] > 100 and figures["dice"] >= 0.6
