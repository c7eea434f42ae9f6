"""Reading a result as a radiologist does, on the shared MNI152 run (conftest.mni_run): the views
jump to the explained slice centred on the mask, next/previous explained slice, the slice under
the Red view, each method in every view, label maps as outlines, the layer browser, the compare
and reading layouts, output into an existing segmentation with terminology, Show 3D, and the box's
top and bottom from the current slice.  All on slicer-core's real MRML; no extra model run."""
import dataclasses

import numpy as np
import pytest

import slicer
from XAISegExtensionLib import mrml, segment_output, views
from XAISegExtensionLib.mrml import InputError
from XAISegExtensionLib.selftest import roi_from_kji


@pytest.fixture
def run(mni_run):
    return mni_run


def mask_centre_ras(run, k):
    """World RAS of the mask's centroid on slice k, computed here from the segment and the
    volume's own IJK-to-RAS (independently of the views module)."""
    mask = mrml.segmentation_mask(run["result"].segmentation, run["volume"])
    js, is_ = np.nonzero(mask[k])
    return (mrml.ijk_to_ras(run["volume"]) @ np.array([is_.mean(), js.mean(), k, 1.0]))[:3]


def slice_z(run, k):
    return float((mrml.ijk_to_ras(run["volume"]) @ np.array([0.0, 0.0, k, 1.0]))[2])


def offsets(scene):
    return {n.GetLayoutName(): n.GetSliceOffset() for n in views.slice_nodes(scene)
            if n.GetLayoutName() in ("Red", "Yellow", "Green")}


def test_views_jump_to_the_first_explained_slice_centred_on_the_mask(run):
    scene, result, centre = run["scene"], run["result"], run["centre"]
    assert result.explained == [centre] and result.axis == 0
    run["logic"].jumpToFirstExplainedSlice(result)
    target = mask_centre_ras(run, centre)
    got = offsets(scene)
    # Red is axial (offset = S); every view's plane passes through the mask's centre on that slice
    assert got["Red"] == pytest.approx(slice_z(run, centre), abs=1e-6) == pytest.approx(target[2], abs=1e-6)
    for name in ("Yellow", "Green"):
        m = views.slice_node(scene, name).GetSliceToRAS()
        normal = np.array([m.GetElement(r, 2) for r in range(3)])
        assert abs(normal[0 if name == "Yellow" else 1]) == 1.0  # sagittal / coronal
        assert got[name] == pytest.approx(float(normal @ target), abs=1e-6), name
    red = views.slice_node(scene, "Red")
    assert np.allclose(views.view_centre(red), target, atol=1e-6), "the Red view is not centred on the mask"
    assert run["logic"].currentSliceIndex(run["volume"]) == centre
    # the whole head fits in the view (field of view at least the volume's in-plane extent)
    assert red.GetFieldOfView()[0] >= 182 - 1e-6


def test_next_and_previous_explained_slice(run):
    logic, result, centre = run["logic"], run["result"], run["centre"]
    logic.jumpToSlice(result, centre - 5)
    assert logic.currentSliceIndex(run["volume"]) == centre - 5
    assert logic.stepExplainedSlice(result, +1) == centre
    assert logic.currentSliceIndex(run["volume"]) == centre
    before = offsets(run["scene"])
    assert logic.stepExplainedSlice(result, +1) is None and offsets(run["scene"]) == before, "moved past the last"
    logic.jumpToSlice(result, centre + 3)
    assert logic.stepExplainedSlice(result, -1) == centre
    assert logic.explainedRangeText(result) == f"slice {centre} (1 explained)"


def test_explain_this_slice_reads_the_red_view(run):
    """'Explain this slice' / 'from here to here': the Red view's offset (mm) becomes a slice index."""
    logic, centre = run["logic"], run["centre"]
    red = views.slice_node(run["scene"], "Red")
    for k, nudge in ((centre + 2, 0.0), (centre - 7, 0.4), (centre + 11, -0.4)):
        red.SetSliceOffset(slice_z(run, k) + nudge)
        assert logic.currentSliceIndex(run["volume"]) == k
    red.SetSliceOffset(slice_z(run, 10_000))
    assert logic.currentSliceIndex(run["volume"]) == mrml.volume_array_shape(run["volume"])[0] - 1


def test_each_method_can_be_shown_as_foreground_of_every_view(run):
    scene, logic, result = run["scene"], run["logic"], run["result"]
    assert result.methods() == ["occlusion", "layers"]
    for method in result.methods():
        logic.showMethod(result, method)
        for node in views.slice_nodes(scene):
            c = views.composite_node(scene, node)
            assert c.GetBackgroundVolumeID() == run["volume"].GetID()
            assert c.GetForegroundVolumeID() == result.saliency[method].GetID(), node.GetLayoutName()
            assert c.GetLabelVolumeID() == result.labels[method].GetID()
            assert c.GetForegroundOpacity() == 0.5
    with pytest.raises(InputError, match="'rise'.*occlusion"):
        logic.showMethod(result, "rise")


def test_label_maps_are_displayed_as_outlines(run, tmp_path):
    scene, logic, result, centre = run["scene"], run["logic"], run["result"], run["centre"]
    logic.showMethod(result, "occlusion")
    for node in views.slice_nodes(scene):
        assert node.GetUseLabelOutline(), f"{node.GetLayoutName()} fills the label map instead of outlining it"
    # what that setting draws: an outline colours fewer pixels than the filled label, and some
    from XAISegExtensionLib.snapshot import png_pixels, render_slice

    label = result.labels["occlusion"]
    z = slice_z(run, centre)
    plain = png_pixels(render_slice(scene, tmp_path / "p.png", run["volume"], ras_offset=z, size=256))[..., :3]
    counts = {}
    for outline in (True, False):
        png = render_slice(scene, tmp_path / f"{outline}.png", run["volume"], label=label, ras_offset=z, size=256,
                           outline=outline)
        counts[outline] = int((np.abs(png_pixels(png)[..., :3].astype(int) - plain).sum(axis=-1) > 30).sum())
    assert 0 < counts[True] < 0.8 * counts[False], counts


def test_layer_browser_shows_each_layer_in_the_views(run):
    scene, logic, result, centre = run["scene"], run["logic"], run["result"], run["centre"]
    names = result.layer_names()
    for index in (0, 7, len(names) - 1):
        assert logic.showLayer(result, index) == names[index]
        assert result.layer_browser.GetSelectedItemNumber() == index
        shown = slicer.util.arrayFromVolume(result.layer_proxy)
        item = slicer.util.arrayFromVolume(result.layers.GetNthDataNode(index))
        assert np.array_equal(shown, item) and shown[centre].max() == 1.0
        for node in views.slice_nodes(scene):
            assert views.composite_node(scene, node).GetForegroundVolumeID() == result.layer_proxy.GetID()
    assert logic.showLayer(result, "neck") == "neck"
    assert np.allclose(mrml.ijk_to_ras(result.layer_proxy), mrml.ijk_to_ras(run["volume"]))
    with pytest.raises(InputError, match="out of range"):
        logic.showLayer(result, len(names))
    logic.showMethod(result, "occlusion")


def test_compare_layout_puts_one_method_per_linked_view(run):
    scene, logic, result, centre = run["scene"], run["logic"], run["result"], run["centre"]
    logic.jumpToFirstExplainedSlice(result)
    compare = logic.showCompareLayout(result)
    layout = views.layout_node(scene)
    assert layout.GetViewArrangement() == views.COMPARE_LAYOUT_ID
    xml = layout.GetLayoutDescription(views.COMPARE_LAYOUT_ID)
    assert xml.count('class="vtkMRMLSliceNode"') == 2 and views.TABLE_TAG in xml
    assert [n.GetAttribute("XAISeg.method") for n in compare] == ["occlusion", "layers"]
    for node, method in zip(compare, ["occlusion", "layers"]):
        c = views.composite_node(scene, node)
        assert c.GetBackgroundVolumeID() == run["volume"].GetID()
        assert c.GetForegroundVolumeID() == result.saliency[method].GetID()
        assert c.GetLabelVolumeID() == result.labels[method].GetID() and node.GetUseLabelOutline()
        assert c.GetLinkedControl()
        assert node.GetOrientation() == "Axial"
        assert node.GetSliceOffset() == pytest.approx(slice_z(run, centre), abs=1e-6)
    assert views.table_view(scene).GetTableNodeID() == result.table.GetID()
    # a third method would be a third view: the description follows the result
    assert views.compare_layout_xml(3).count('class="vtkMRMLSliceNode"') == 3


def test_reading_layout_shows_the_metrics_table_beside_the_views(run):
    scene, logic, result = run["scene"], run["logic"], run["result"]
    view = logic.showReadingLayout(result)
    layout = views.layout_node(scene)
    assert layout.GetViewArrangement() == views.READING_LAYOUT_ID
    xml = layout.GetLayoutDescription(views.READING_LAYOUT_ID)
    assert all(f'singletontag="{n}"' in xml for n in ("Red", "Yellow", "Green", views.TABLE_TAG))
    assert view.GetTableNodeID() == result.table.GetID()


def paint_segmentation(scene, volume, boxes):
    """A user's segmentation with one segment per (name, k0, k1, j0, j1, i0, i1) box."""
    seg = None
    for name, *b in boxes:
        mask = np.zeros(mrml.volume_array_shape(volume), np.uint8)
        mask[b[0]:b[1], b[2]:b[3], b[4]:b[5]] = 1
        if seg is None:
            seg = mrml.add_segmentation(scene, mask, volume, "my segmentation", name, color=(0.2, 0.4, 0.9))
        else:
            segment_output.write_mask(scene, mask, volume, name, run_key="user", node_name="x", segmentation=seg)
    return seg


def segment_voxels(seg, segment_id, volume):
    return int(mrml.segment_labelmap(seg, segment_id, volume).sum())


def test_output_into_an_existing_segmentation_adds_one_segment_and_keeps_the_others(run):
    scene, logic, volume = run["scene"], run["logic"], run["volume"]
    mask = mrml.segmentation_mask(run["result"].segmentation, volume)
    seg = paint_segmentation(scene, volume, [("ventricle", 60, 70, 100, 120, 80, 100), ("other", 20, 25, 50, 60, 50, 60)])
    s = seg.GetSegmentation()
    before = {s.GetNthSegmentID(i): segment_voxels(seg, s.GetNthSegmentID(i), volume) for i in range(2)}
    assert sorted(before.values()) == [500, 4000]
    job = logic.job
    original = job.settings
    try:
        result = logic.loadResults(job, job.workdir / "output", job.process.final, outputSegmentation=seg)
        assert result.segmentation is seg and result.output_segmentation
        assert s.GetNumberOfSegments() == 3
        for segment_id, voxels in before.items():
            assert segment_voxels(seg, segment_id, volume) == voxels, "an existing segment changed"
        new = s.GetSegment(result.segment_id)
        assert new.GetName() == "left caudate"
        assert np.array_equal(mrml.segment_labelmap(seg, result.segment_id, volume), mask)
        entry = slicer.vtkSlicerTerminologyEntry()
        text = segment_output.segment_tag(new, slicer.vtkSegment.GetTerminologyEntryTagName())
        assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(text, entry)
        assert (entry.GetCategoryObject().GetCodeValue(), entry.GetTypeObject().GetCodeValue(),
                entry.GetTypeObject().GetCodeMeaning(), entry.GetTypeModifierObject().GetCodeMeaning()) == (
            "123037004", "11000004", "Caudate nucleus", "Left")
        assert entry.GetTypeObject().GetCodingSchemeDesignator() == "SCT"
        # the user's node is not part of the run's folder: loading the run again replaces the
        # segment it added and leaves the node and its other segments alone
        sh = mrml.subject_hierarchy(scene)
        assert sh.GetItemParent(sh.GetItemByDataNode(seg)) != result.folder_item
        # the panel names the output segmentation in the run's settings (RunSettings.output_segmentation)
        job.settings = dataclasses.replace(original, output_segmentation=seg.GetID())
        again = logic.loadResults(job, job.workdir / "output", job.process.final)
        assert again.segmentation is seg and again.output_segmentation
        assert seg.GetScene() is scene and s.GetNumberOfSegments() == 3
        assert s.GetSegment(result.segment_id) is None and s.GetSegment(again.segment_id) is not None
    finally:
        job.settings = original
        run["result"] = logic.loadResults(job, job.workdir / "output", job.process.final)
        mrml.remove_node(scene, seg)
    assert run["result"].segmentation is not seg and not run["result"].output_segmentation


def test_terminology_table_and_generic_entry():
    (value, scheme, meaning), side = segment_output.lookup("Right thalamus")
    assert (value, scheme, meaning, side[2]) == ("119406000", "SCT", "Thalamus", "Right")
    assert segment_output.lookup("liver")[0][0] == "10200004" and segment_output.lookup("liver")[1] is None
    assert segment_output.lookup("left lesion") == (segment_output.GENERIC, None)
    text = segment_output.terminology_string("mystery blob")
    entry = slicer.vtkSlicerTerminologyEntry()
    assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(text, entry)
    assert (entry.GetTypeObject().GetCodeValue(), entry.GetTypeObject().GetCodeMeaning()) == (
        "91723000", "Anatomical structure")


def test_show_3d_builds_a_closed_surface(run):
    logic, result = run["logic"], run["result"]
    points = logic.setShow3D(result, True)
    assert points > 100
    name = slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName()
    assert result.segmentation.GetSegmentation().ContainsRepresentation(name)
    assert result.segmentation.GetDisplayNode().GetVisibility3D()
    assert logic.setShow3D(result, False) == 0
    assert not result.segmentation.GetSegmentation().ContainsRepresentation(name)


def test_box_top_and_bottom_from_the_current_slice(run, caudate_box):
    scene, logic, volume, centre = run["scene"], run["logic"], run["volume"], run["centre"]
    lo, hi, _ = caudate_box
    roi = roi_from_kji(scene, volume, lo, hi, "box to trim")
    try:
        red = views.slice_node(scene, "Red")
        red.SetSliceOffset(slice_z(run, centre + 1))
        assert logic.setRoiFaceAtSlice(roi, volume, "top") == (lo[0], centre + 1)
        red.SetSliceOffset(slice_z(run, centre - 1))
        assert logic.setRoiFaceAtSlice(roi, volume, "bottom") == (centre - 1, centre + 1)
        prompt, _ = mrml.box_prompt_from_roi(roi, volume)
        assert prompt["lo_kji"][1:] == [lo[1], lo[2]] and prompt["hi_kji"][1:] == [hi[1], hi[2]], "in-plane changed"
        with pytest.raises(InputError, match="'middle'"):
            logic.setRoiFaceAtSlice(roi, volume, "middle")
    finally:
        mrml.remove_node(scene, roi)


def test_the_trust_line_of_the_slice_under_the_red_view(run):
    """The panel's "This slice" line: the shown method's trust on the slice under the Red view, from
    the run's own metrics (each figure as the metrics table holds it), and the saliency node lists
    the slices of each mark."""
    from xaiseg.explain import title_of
    from xaiseg.explain.trust import MARKS, slice_row, slice_trust
    from XAISegExtensionLib.results import TRUST_ATTRIBUTES

    logic, result, centre = run["logic"], run["result"], run["centre"]
    logic.jumpToSlice(result, centre)
    trust = logic.sliceTrust(result, "occlusion")
    row = slice_row(result.metrics, "occlusion", centre)
    title = title_of("occlusion")
    assert trust == slice_trust(row, "occlusion", centre, title) and trust["explained"]
    assert trust["text"].startswith(f"Slice {centre}, {title}: ")
    # this run measures the curves (2 steps) without the trivial maps (off by default: they cost passes)
    assert f"deletion AUC {row['deletion_auc']:.3f}, not compared with the trivial maps" in trust["text"]
    assert ("evidence beyond the model's noise" in trust["text"]) == (row["evidence"] is True)
    assert ("below_trivial" in trust["marks"]) == (row.get("beats_trivial_deletion") is False)
    # the attributes agree with the marks of every explained slice
    node = result.saliency["occlusion"]
    assert set(TRUST_ATTRIBUTES) == set(MARKS)
    for mark, attribute in TRUST_ATTRIBUTES.items():
        listed = [int(k) for k in (node.GetAttribute(attribute) or "").split(",") if k]
        assert listed == [k for k in result.explained if mark in logic.sliceTrust(result, "occlusion", k)["marks"]]
    # a slice that was not explained, reached by moving the Red view
    logic.jumpToSlice(result, centre - 2)
    assert logic.sliceTrust(result, "occlusion") == {"slice": centre - 2, "method": "occlusion", "explained": False,
                                                      "marks": [], "text": f"Slice {centre - 2}: not explained by {title}."}
    with pytest.raises(InputError, match="method 'rise' has no map in this result; it holds"):
        logic.sliceTrust(result, "rise")
