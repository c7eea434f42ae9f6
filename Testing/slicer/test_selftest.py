"""The module's self-test (XAISegExtensionLib.selftest, which Slicer's XAISegExtensionTest calls)
runs here on slicer-core exactly as on the extensions factory: on a phantom it builds itself (no
download), with the model when torch is there, and with a clear skip of the model part when not."""
import ast
from pathlib import Path

import numpy as np

from XAISegExtensionLib import mrml
from XAISegExtensionLib.selftest import PHANTOM_SHAPE, SKIP_MESSAGE, build_phantom, run_selftest

MODULE_FILE = Path(__file__).resolve().parents[2] / "XAISegExtension" / "XAISegExtension.py"


def test_module_test_class_builds_its_own_volume_and_calls_the_shared_body():
    tree = ast.parse(MODULE_FILE.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "XAISegExtensionTest")
    calls = {n.func.id for n in ast.walk(cls) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert {"run_selftest", "build_phantom"} <= calls, "the Slicer self-test must run the logic on its own volume"
    names = {a.name for n in ast.walk(cls) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    modules = {n.module for n in ast.walk(cls) if isinstance(n, ast.ImportFrom)}
    assert "SampleData" not in names | modules, "the factory has no network: no SampleData download"


def test_phantom_has_the_structure_it_says(scene):
    volume, truth, lo, hi = build_phantom(scene)
    voxels = mrml.volume_array(volume)
    assert voxels.shape == truth.shape == PHANTOM_SHAPE
    inside, outside = voxels[truth > 0].mean(), voxels[(truth == 0) & (voxels > 50)].mean()
    assert inside - outside > 100, (inside, outside)
    idx = np.argwhere(truth[lo[0]:hi[0] + 1])
    assert idx[:, 1].min() - 3 == lo[1] and idx[:, 2].max() + 3 == hi[2] and (lo[0], hi[0]) == (4, 6)


def test_selftest_without_torch_skips_the_model_part_and_says_so(scene):
    volume, truth, lo, hi = build_phantom(scene)
    messages = []
    before = scene.GetNumberOfNodes()
    figures = run_selftest(scene, volume, lo, hi, truth=truth, delay=messages.append, torch_available=False)
    assert figures == {"model": False, "skipped": SKIP_MESSAGE}
    assert messages[-1] == SKIP_MESSAGE and "torch is not installed" in SKIP_MESSAGE
    assert not any(m.startswith("Segmenting") for m in messages), "the model part ran"
    assert scene.GetNumberOfNodes() == before + 1  # the self-test's ROI, nothing else


def test_selftest_body_on_the_phantom(scene):
    volume, truth, lo, hi = build_phantom(scene)
    messages = []
    figures = run_selftest(scene, volume, lo, hi, truth=truth, dice_floor=0.8, delay=messages.append)
    assert figures["model"] and figures["voxels"] > 1000 and figures["dice"] >= 0.8, figures
    assert messages[-1] == "XAISeg self-test passed"
