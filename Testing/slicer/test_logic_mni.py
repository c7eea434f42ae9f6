"""The logic end to end on real data: the MNI152 template as a scalar volume node, a markups ROI on
the left caudate, segmentation of three slices and an occlusion map of the central one, all through
the worker the GUI starts, with the encoder's layer maps beside it.  One run (conftest.mni_run, about
12 encoder passes) is shared by these tests and those of test_reading_mni.py."""
import json

import numpy as np
import pytest

import slicer
from XAISegExtensionLib import mrml
from XAISegExtensionLib.logic import SUCCEEDED

SLICES = 1  # slices either side of the caudate's central slice (conftest.MNI_SLICES)

LAYERS = 18  # LiteMedSAM's encoder: patch_embed, 16 blocks and stage outputs, neck


@pytest.fixture
def run(mni_run):
    """The session's shared run (conftest.mni_run)."""
    assert mni_run["slices"] == SLICES
    return mni_run


def test_run_succeeds_and_reports_progress(run):
    logic = run["logic"]
    assert logic.state.status == SUCCEEDED, logic.state.error
    stages = {p[1] for p in run["progress"] if p[1]}
    assert any(s.startswith("segment") for s in stages) and any(s.startswith("occlusion") for s in stages)
    seg_steps = [p for p in run["progress"] if p[1].startswith("segment")]
    assert max(p[2] for p in seg_steps) == 2 * SLICES + 1 == seg_steps[-1][3]


def test_layer_maps_arrive_as_one_sequence_with_the_input_geometry(run):
    """Per-layer maps: one sequence of 18 items (patch_embed to neck, in encoder order) with a
    browser, not 18 loose volumes; every item lies on the input's grid."""
    result, centre = run["result"], run["centre"]
    fused = mrml.volume_array(result.saliency["layers"])
    assert fused[centre].max() == 1.0 and not np.delete(fused, centre, axis=0).any()
    seq = result.layers
    assert seq.IsA("vtkMRMLSequenceNode") and seq.GetNumberOfDataNodes() == LAYERS
    names = result.layer_names()
    assert names[0] == "patch_embed" and names[-1] == "neck" and len(set(names)) == LAYERS
    assert {"stage0", "stage1", "stage2", "stage3"} <= set(names)
    assert not [n for n in result.extra_volumes if "layers_" in n.GetName()], "layer maps also arrived as volumes"
    expected = mrml.ijk_to_ras(run["volume"])
    shape = mrml.volume_array_shape(run["volume"])
    for i in range(seq.GetNumberOfDataNodes()):
        item = seq.GetNthDataNode(i)
        assert np.array_equal(mrml.ijk_to_ras(item), expected), names[i]
        array = slicer.util.arrayFromVolume(item)
        assert array.shape == shape and array[centre].max() == 1.0 and not np.delete(array, centre, axis=0).any()
    browser = result.layer_browser
    assert browser.GetMasterSequenceNode() is seq and browser.GetProxyNode(seq) is result.layer_proxy


def test_result_nodes_share_the_input_geometry(run):
    expected = mrml.ijk_to_ras(run["volume"])
    result = run["result"]
    volumes = [result.roi, result.saliency["occlusion"], result.labels["occlusion"]]
    for node in volumes:
        assert np.array_equal(mrml.ijk_to_ras(node), expected), node.GetName()
        assert mrml.volume_array_shape(node) == mrml.volume_array_shape(run["volume"])
    seg = result.segmentation
    segment_id = seg.GetSegmentation().GetNthSegmentID(0)
    labelmap = seg.GetBinaryLabelmapInternalRepresentation(segment_id)
    import vtk

    m = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(m)
    assert np.allclose([[m.GetElement(r, c) for c in range(4)] for r in range(4)], expected)


def test_mask_matches_the_atlas_caudate(run, atlas):
    centre = run["centre"]
    mask = mrml.segmentation_mask(run["result"].segmentation, run["volume"]).astype(bool)
    truth = atlas.mask("Left_Caudate")
    ks = slice(centre - SLICES, centre + SLICES + 1)
    assert not mask[:centre - SLICES].any() and not mask[centre + SLICES + 1:].any(), "mask outside the slice range"
    dice = 2 * (mask[ks] & truth[ks]).sum() / (mask[ks].sum() + truth[ks].sum())
    assert dice >= 0.6, f"Dice {dice:.3f} of LiteMedSAM's left caudate against Harvard-Oxford"
    # the segment is named after the structure
    assert run["result"].segmentation.GetSegmentation().GetNthSegment(0).GetName() == "left caudate"


def test_saliency_is_on_the_explained_slice_only(run):
    sal = mrml.volume_array(run["result"].saliency["occlusion"])
    per_slice = sal.reshape(sal.shape[0], -1).max(axis=1)
    assert list(np.nonzero(per_slice)[0]) == [run["centre"]]
    assert sal.min() >= 0.0 and sal.max() == pytest.approx(1.0)
    label = mrml.volume_array(run["result"].labels["occlusion"])
    assert set(np.unique(label)) <= {0, 1} and np.array_equal(label > 0, sal >= 0.5)
    display = run["result"].saliency["occlusion"].GetDisplayNode()
    color = display.GetColorNode()
    assert "inferno" in color.GetName().lower()
    assert display.GetApplyThreshold() and display.GetWindowLevelMin() == 0.0 and display.GetWindowLevelMax() == 1.0


def test_roi_is_the_box_on_the_explained_slice(run, caudate_box):
    roi = mrml.volume_array(run["result"].roi)
    lo, hi, centre = caudate_box
    assert roi[centre].any() and roi.sum() == roi[centre].sum()
    ys, xs = np.nonzero(roi[centre])
    # the box of the unperturbed mask plus 8 pixels stays inside the prompt box plus the margin
    assert ys.min() >= lo[1] - 9 and ys.max() <= hi[1] + 9 and xs.min() >= lo[2] - 9 and xs.max() <= hi[2] + 9


def test_nodes_live_in_one_folder_named_after_input_and_method(run):
    scene, result = run["scene"], run["result"]
    sh = mrml.subject_hierarchy(scene)
    assert sh.GetItemName(result.folder_item) == "XAISeg MNI152 left caudate - occlusion+layers"
    names = sorted(n.GetName() for n in result.nodes())
    assert names == sorted(["MNI152 left caudate segmentation", "MNI152 left caudate explained ROI",
                            "MNI152 left caudate occlusion saliency", "MNI152 left caudate occlusion label",
                            "MNI152 left caudate occlusion raw (score units)",
                            "MNI152 left caudate layers saliency", "MNI152 left caudate layers label",
                            "MNI152 left caudate metrics", "MNI152 left caudate run record",
                            "MNI152 left caudate narrative", "MNI152 left caudate layers layer maps",
                            "MNI152 left caudate layers layer browser", "MNI152 left caudate layers layer map"])
    for node in result.nodes():
        assert sh.GetItemParent(sh.GetItemByDataNode(node)) == result.folder_item


def test_narrative_is_grounded_in_the_run(run):
    """The template narrator (the default, offline) writes text from the findings of this run."""
    text = run["result"].narrative.GetText()
    mask = mrml.segmentation_mask(run["result"].segmentation, run["volume"])
    assert "LiteMedSAM" in text and "Occlusion" in text
    assert f"{mask.sum()} voxels" in text and f"slice {run['centre']}" in text


def test_metrics_table_holds_segmentation_and_explanation_figures(run):
    rows = {(r[0], r[1], r[2]): (r[3], r[4]) for r in mrml.table_rows(run["result"].table)}
    mask = mrml.segmentation_mask(run["result"].segmentation, run["volume"])
    assert rows[("segmentation", "all", "voxels")][0] == mask.sum()
    assert rows[("segmentation", "all", "volume_ml")][0] == pytest.approx(mask.sum() / 1000.0)
    assert rows[("segmentation", "all", "encoder_passes")][0] == 2 * SLICES + 1
    c = str(run["centre"])
    assert rows[("occlusion", c, "evaluations")][0] == rows[("occlusion", c, "patches_evaluated")][0] >= 1
    for metric in ("dice_drop", "deletion_auc", "insertion_auc", "roi_ratio"):
        value = rows[("occlusion", c, metric)][0]
        assert np.isfinite(value), metric
    assert rows[("roi", "all", "source")][1] == "box"


def test_run_record_is_on_every_node(run):
    from xaiseg.models.litemedsam import LITEMEDSAM_SHA256

    for node in run["result"].nodes():
        assert node.GetAttribute("XAISeg.weightsSHA256") == LITEMEDSAM_SHA256, node.GetName()
        assert node.GetAttribute("XAISeg.model") == "LiteMedSAM"
        assert node.GetAttribute("XAISeg.seed") == "0"
    record = json.loads(run["result"].record_text.GetText())
    assert record["request"]["explain"]["methods"][0]["name"] == "occlusion"
    assert record["metrics"]["methods"]["occlusion"]["settings"]["patch"] == 128


def test_loading_the_same_run_again_replaces_its_nodes(run):
    scene, logic = run["scene"], run["logic"]
    count = scene.GetNumberOfNodes()
    old = run["result"]
    again = logic.loadResults(logic.job, logic.job.workdir / "output", logic.job.process.final)
    assert scene.GetNumberOfNodes() == count
    assert old.segmentation.GetScene() is None and again.segmentation.GetScene() is scene
    sh = mrml.subject_hierarchy(scene)
    assert sh.GetItemName(again.folder_item) == "XAISeg MNI152 left caudate - occlusion+layers"
    assert mrml.find_run_folder(scene, logic.job.run_key) == again.folder_item
    run["result"] = again


def test_scene_round_trips_through_mrb(run, tmp_path):
    """Saving the scene as an MRB bundle keeps the result nodes, their attributes and the folder."""
    scene = run["scene"]
    app = slicer.vtkMRMLApplicationLogic()
    app.SetMRMLScene(scene)
    (tmp_path / "bundle").mkdir()
    ok = app.SaveSceneToSlicerDataBundleDirectory(str(tmp_path / "bundle"), None)
    assert ok, "saving the scene failed"
    saved = (tmp_path / "bundle").rglob("*")
    names = {p.name for p in saved}
    assert any(n.endswith(".seg.nrrd") for n in names) and any(n.endswith(".mrml") for n in names)
    mrml_text = next((tmp_path / "bundle").rglob("*.mrml")).read_text(errors="replace")
    assert "MNI152 left caudate occlusion saliency" in mrml_text and "XAISeg.weightsSHA256" in mrml_text
    assert "XAISeg MNI152 left caudate - occlusion+layers" in mrml_text  # the subject-hierarchy folder


def test_slice_logic_renders_volume_saliency_and_mask(run, tmp_path):
    """vtkMRMLSliceLogic blends the template, the occlusion map (Inferno, 50 %) and the mask outline
    into PNGs without a screen; with XAISEG_UPDATE_DOCS=1 they replace the user guide's figures."""
    import os
    import shutil
    from pathlib import Path

    from XAISegExtensionLib.snapshot import png_pixels, render_slice

    scene, volume, result, centre = run["scene"], run["volume"], run["result"], run["centre"]
    mask = mrml.segmentation_mask(result.segmentation, volume)
    outline = mrml.add_volume(scene, mask, volume, "mask outline", labelmap=True)
    try:
        m = mrml.ijk_to_ras(volume)
        ks, js, is_ = np.nonzero(mask[centre:centre + 1])
        centre_ras = (m @ np.array([is_.mean(), js.mean(), centre, 1.0]))[:3]
        z = float(centre_ras[2])
        saliency = result.saliency["occlusion"]
        plain = render_slice(scene, tmp_path / "plain.png", volume, ras_offset=z, field_of_view=(90, 90),
                             center=centre_ras, size=384)
        overlay = render_slice(scene, tmp_path / "slicer_review_overlay.png", volume, foreground=saliency,
                               label=outline, ras_offset=z, field_of_view=(90, 90), center=centre_ras, size=384)
        whole = render_slice(scene, tmp_path / "slicer_review_saliency.png", volume, foreground=saliency,
                             label=outline, ras_offset=z, size=384)
        a, b, c = png_pixels(plain)[..., :3].astype(int), png_pixels(overlay)[..., :3].astype(int), \
            png_pixels(whole)[..., :3].astype(int)
        assert a.shape == b.shape == (384, 384, 3)
        grey = (np.abs(a[..., 0] - a[..., 1]) < 3) & (np.abs(a[..., 1] - a[..., 2]) < 3)
        assert grey.mean() > 0.99, "the plain render should be grey-scale"
        coloured = (np.abs(b - a).sum(axis=-1) > 30)
        # the saliency and the outline colour a part of the zoomed view, not all of it and not nothing
        assert 0.005 < coloured.mean() < 0.6, coloured.mean()
        # hot saliency shows orange-yellow (Inferno's top): red channel well above blue somewhere
        assert ((b[..., 0] - b[..., 2]) > 80).any()
        assert (np.abs(c - c.mean(axis=-1, keepdims=True)) > 20).any(), "the whole-slice render lost the overlay"
        if os.environ.get("XAISEG_UPDATE_DOCS") == "1":
            docs = Path(__file__).resolve().parents[2] / "docs" / "images"
            for png in (overlay, whole):
                shutil.copyfile(png, docs / png.name)
    finally:
        mrml.remove_node(scene, outline)
