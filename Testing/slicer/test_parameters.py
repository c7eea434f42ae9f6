"""The panel's state is kept with the scene: every field of the settings and of the panel state goes
into the module's parameter node and comes back from a scene file (.mrml, Commit + Import) and from
an MRB (vtkMRMLScene.WriteToMRB / ReadFromMRB, what Slicer's Save and Open use), the nodes it names
included (checked on slicer-core's real MRML)."""
import dataclasses

import numpy as np
import pytest

import slicer
from slicer_scene import add_io_logics, new_scene
from XAISegExtensionLib import mrml, panel
from XAISegExtensionLib.logic import RunSettings, XAISegLogic
from XAISegExtensionLib.parameters import (PanelState, default_settings, parameter_node, read_parameters,
                                           write_parameters)
from XAISegExtensionLib.selftest import roi_from_kji

NODE_FIELDS = {"output_segmentation", "input_volume", "box", "points", "negative_points", "prompt_segmentation",
               "reference_segmentation"}


def build_scene(scene):
    """A volume, an ROI, positive and negative points, a segmentation with a prompt and a
    reference segment, and an output segmentation; returns them by name."""
    rng = np.random.default_rng(1)
    volume = slicer.util.addVolumeFromArray(rng.normal(100, 5, (12, 40, 40)).astype(np.float32), name="volume")
    roi = roi_from_kji(scene, volume, (3, 10, 10), (8, 25, 25), "box")
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "positive")
    points.AddControlPoint(1.0, 2.0, 3.0)
    points.AddControlPoint(4.0, 5.0, 6.0)
    negative = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "negative")
    negative.AddControlPoint(-3.0, -2.0, 5.0)
    mask = np.zeros((12, 40, 40), np.uint8)
    mask[4:7, 12:20, 12:20] = 1
    segs = mrml.add_segmentation(scene, mask, volume, "user segments", "prompt", color=(0.2, 0.4, 0.9))
    other = mask.copy()
    other[:] = 0
    other[5, 30:35, 30:35] = 1
    from XAISegExtensionLib import segment_output

    segment_output.write_mask(scene, other, volume, "reference", run_key="user", node_name="x", segmentation=segs)
    output = mrml.add_segmentation(scene, mask, volume, "output segmentation", "existing")
    return {"volume": volume, "box": roi, "positive": points, "negative": negative, "segs": segs, "output": output}


def every_field(nodes):
    """Settings and panel state with every field away from the panel's default."""
    s = nodes["segs"].GetSegmentation()
    settings = RunSettings(
        name="left caudate", segmenter="medsam", checkpoint="/models/medsam_vit_b.pth", sha256="ab" * 32,
        url="https://example.org/medsam_vit_b.pth", device="cuda", force_cpu=True, class_index=2,
        methods=("rise", "layers"), common={"seed": 7, "metric_steps": 4, "sanity": True, "threshold": 0.3},
        method_settings={"rise": {"n_masks": 500, "p": 0.25}, "layers": {"layers": "blocks", "stage": 2},
                         "occlusion": {"patch": 32, "stride": 16}},
        roi={"source": "box", "margin": 5}, slice_range=(3, 9), explain_slices="4-6", axis="coronal", margin=2,
        preprocessing={"mode": "window", "window": "lung", "clahe": True}, seed=11, threads=3, narrator="llava",
        report_options={"llava_model": "/models/llava"}, output_segmentation=nodes["output"].GetID(), show_3d=True)
    state = PanelState(
        input_volume=nodes["volume"].GetID(), prompt_type="points", box=nodes["box"].GetID(),
        points=nodes["positive"].GetID(), negative_points=nodes["negative"].GetID(),
        prompt_segmentation=nodes["segs"].GetID(), prompt_segment=s.GetNthSegmentID(0), use_reference=True,
        reference_segmentation=nodes["segs"].GetID(), reference_segment=s.GetNthSegmentID(1), opacity=0.8)
    defaults, blank = default_settings(), PanelState()
    same = [f.name for f in dataclasses.fields(settings) if getattr(settings, f.name) == getattr(defaults, f.name)]
    same += [f.name for f in dataclasses.fields(state) if getattr(state, f.name) == getattr(blank, f.name)]
    assert same == [], f"fields left at their defaults, so the round trip would not check them: {same}"
    return settings, state


def names(scene, settings, state):
    """The names of the nodes the settings and state refer to (IDs may change on import)."""
    out = {}
    for obj in (settings, state):
        for f in dataclasses.fields(obj):
            if f.name in NODE_FIELDS:
                node = scene.GetNodeByID(getattr(obj, f.name))
                out[f.name] = node.GetName() if node is not None else None
    return out


def without_nodes(obj):
    return dataclasses.replace(obj, **{f.name: "" for f in dataclasses.fields(obj) if f.name in NODE_FIELDS})


def check_restored(scene, written, read, original_scene):
    (settings, state), (settings2, state2) = written, read
    assert without_nodes(settings2) == without_nodes(settings)
    assert without_nodes(state2) == without_nodes(state)
    assert names(scene, settings2, state2) == names(original_scene, settings, state)
    assert None not in names(scene, settings2, state2).values()


def test_every_setting_and_node_survives_a_scene_file(scene, tmp_path):
    nodes = build_scene(scene)
    written = every_field(nodes)
    logic = XAISegLogic(scene)
    logic.savePanel(*written)
    scene.SetURL(str(tmp_path / "panel.mrml"))
    assert scene.Commit()
    loaded = new_scene()
    loaded.SetURL(str(tmp_path / "panel.mrml"))
    assert loaded.Import()
    check_restored(loaded, written, XAISegLogic(loaded).loadPanel(), scene)
    # and the form the widget shows for them gives the same settings back
    settings, state = XAISegLogic(loaded).loadPanel()
    assert panel.from_form(panel.form_values(*panel.from_form(panel.form_values(settings, state)))) == \
        panel.from_form(panel.form_values(settings, state))


def test_every_setting_and_node_survives_an_mrb(tmp_path):
    saved = new_scene()
    keep = add_io_logics(saved, tmp_path / "cache-save")
    nodes = build_scene(saved)
    written = every_field(nodes)
    write_parameters(parameter_node(saved), *written)
    path = tmp_path / "session.mrb"
    assert saved.WriteToMRB(str(path)) and path.stat().st_size > 1000

    opened = new_scene()  # a scene whose panel was used already: opening the MRB replaces its state
    keep2 = add_io_logics(opened, tmp_path / "cache-open")
    other = slicer.util.addVolumeFromArray(np.zeros((2, 3, 4), np.float32), name="other")
    write_parameters(parameter_node(opened), RunSettings(methods=("shap",)), PanelState(input_volume=other.GetID()))
    before = parameter_node(opened)
    assert opened.ReadFromMRB(str(path), True)
    node = parameter_node(opened, create=False)
    assert node is before, "the module's parameter node is a singleton: the file's values go into it"
    check_restored(opened, written, read_parameters(node), saved)
    settings, state = read_parameters(node)
    # the nodes came back with their data, not only their names
    volume = opened.GetNodeByID(state.input_volume)
    assert np.array_equal(slicer.util.arrayFromVolume(volume), slicer.util.arrayFromVolume(nodes["volume"]))
    box = opened.GetNodeByID(state.box)
    assert np.allclose(box.GetSize(), nodes["box"].GetSize()) and np.allclose(box.GetCenter(), nodes["box"].GetCenter())
    assert opened.GetNodeByID(state.points).GetNumberOfControlPoints() == 2
    assert opened.GetNodeByID(state.negative_points).GetNumberOfControlPoints() == 1
    segs = opened.GetNodeByID(state.prompt_segmentation).GetSegmentation()
    assert segs.GetSegment(state.prompt_segment).GetName() == "prompt"
    assert segs.GetSegment(state.reference_segment).GetName() == "reference"
    out = opened.GetNodeByID(settings.output_segmentation)
    assert out.GetName() == "output segmentation" and out.GetSegmentation().GetNumberOfSegments() == 1
    assert mrml.segment_labelmap(opened.GetNodeByID(state.prompt_segmentation), state.prompt_segment,
                                 volume).sum() == 3 * 8 * 8
    del keep, keep2


def test_a_new_parameter_node_holds_the_panel_defaults(scene):
    volume = slicer.util.addVolumeFromArray(np.zeros((2, 3, 4), np.float32), name="first")
    node = parameter_node(scene)
    assert parameter_node(scene) is node and node.GetModuleName() == "XAISegExtension"
    settings, state = read_parameters(node)
    assert settings == default_settings() and settings.methods == ("occlusion",) and settings.device == "auto"
    assert state == PanelState(input_volume=volume.GetID())


def test_a_removed_node_reads_as_none_and_a_missing_parameter_as_its_default(scene):
    nodes = build_scene(scene)
    settings, state = every_field(nodes)
    node = parameter_node(scene)
    write_parameters(node, settings, state)
    scene.RemoveNode(nodes["output"])
    node.UnsetParameter("narrator")
    read, _ = read_parameters(node)
    assert read.output_segmentation == "" and read.narrator == default_settings().narrator
    assert read.methods == ("rise", "layers") and read.slice_range == (3, 9)


def test_a_scene_saved_before_rise_inpainted_takes_the_new_fill_default(scene):
    # version 1 saved every common control, so its fill "zero" was the default of the day; RISE
    # should inpaint when that scene is opened again. A choice saved by version 2 stays.
    node = parameter_node(scene)
    settings = dataclasses.replace(default_settings(), methods=("rise",), common={"fill": "zero", "seed": 4})
    write_parameters(node, settings)
    assert read_parameters(node)[0].common == {"fill": "zero", "seed": 4}
    node.SetParameter("version", "1")
    read, _ = read_parameters(node)
    assert read.common == {"seed": 4} and "fill" not in read.explain_options()["common"]
    node.SetParameter("common", '{"fill": "blur"}')  # not version 1's default: a choice, kept
    assert read_parameters(node)[0].common == {"fill": "blur"}


def test_a_scene_saved_before_the_strips_takes_the_new_occlusion_default(scene):
    # versions 1 and 2 saved every occlusion control, so an aspect of 1 (squares) was the default of the
    # day; occlusion should use its strips when that scene is opened again. Version 3's squares stay.
    from xaiseg.explain import make_explainer

    node = parameter_node(scene)
    squares = {"aspect": 1.0, "smooth": 0.25}
    write_parameters(node, dataclasses.replace(default_settings(), methods=("occlusion",),
                                               method_settings={"occlusion": squares}))
    assert read_parameters(node)[0].method_settings["occlusion"] == squares
    node.SetParameter("version", "2")
    read, _ = read_parameters(node)
    assert read.method_settings["occlusion"] == {"smooth": 0.25}
    assert make_explainer("occlusion", **read.method_settings["occlusion"]).uses_strips
    node.SetParameter("method_settings", '{"occlusion": {"aspect": 3.0}}')  # not version 2's default: a choice
    assert read_parameters(node)[0].method_settings["occlusion"] == {"aspect": 3.0}


def test_a_damaged_parameter_is_named(scene):
    node = parameter_node(scene)
    node.SetParameter("methods", "[occlusion")
    from XAISegExtensionLib.mrml import InputError

    with pytest.raises(InputError, match="parameter 'methods' .* '\\[occlusion', which is not valid JSON"):
        read_parameters(node)


def test_settings_and_state_parameters_do_not_collide():
    def plain(cls):
        return {f.name for f in dataclasses.fields(cls) if "reference" not in f.metadata}

    assert not plain(RunSettings) & plain(PanelState)
