"""Bad input to the logic raises an error that names the bad value, and adds no node to the scene.
None of these start the worker (they are checked before), so they are fast."""
import numpy as np
import pytest

import slicer
from XAISegExtensionLib.logic import RunSettings, XAISegLogic
from XAISegExtensionLib.mrml import InputError
from XAISegExtensionLib.selftest import roi_from_kji


@pytest.fixture
def small(scene):
    """A 12 x 40 x 40 MR-like volume with a bright blob, and an ROI on the blob."""
    rng = np.random.default_rng(0)
    a = rng.normal(100, 5, (12, 40, 40)).astype(np.float32)
    a[4:8, 15:25, 15:25] += 200
    volume = slicer.util.addVolumeFromArray(a, np.diag([-1.0, -1.0, 2.0, 1.0]), name="small")
    roi = roi_from_kji(scene, volume, (4, 12, 12), (7, 27, 27), "blob box")
    return volume, roi


def check_refused(scene, call, *fragments):
    before = scene.GetNumberOfNodes()
    with pytest.raises(InputError) as info:
        call()
    assert scene.GetNumberOfNodes() == before, "a refused run added nodes"
    for f in fragments:
        assert f in str(info.value), f"{f!r} not in {info.value}"
    return str(info.value)


def test_no_volume(scene, small):
    logic = XAISegLogic(scene)
    check_refused(scene, lambda: logic.start(None, small[1]), "no input volume")
    assert logic.job is None


def test_no_prompt(scene, small):
    check_refused(scene, lambda: XAISegLogic(scene).start(small[0], None), "no prompt")


def test_roi_outside_the_volume(scene, small):
    volume, roi = small
    roi.SetCenter(500.0, 500.0, 500.0)
    msg = check_refused(scene, lambda: XAISegLogic(scene).start(volume, roi), "lies outside volume 'small'",
                        "blob box")
    assert "RAS x" in msg


def test_unplaced_roi(scene, small):
    empty = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "empty box")
    check_refused(scene, lambda: XAISegLogic(scene).start(small[0], empty), "'empty box' is not placed")


def test_two_dimensional_image(scene):
    flat = slicer.util.addVolumeFromArray(np.random.rand(1, 64, 64).astype(np.float32), name="one slice")
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    roi.SetCenter(-32, -32, 0)
    roi.SetSize(20, 20, 1)
    check_refused(scene, lambda: XAISegLogic(scene).start(flat, roi), "'one slice' is a 2D image", "64 x 64 x 1")


def test_label_map_is_not_an_input_volume(scene, small):
    labels = slicer.util.addVolumeFromArray(np.zeros((12, 40, 40), np.uint8), name="labels",
                                            nodeClassName="vtkMRMLLabelMapVolumeNode")
    check_refused(scene, lambda: XAISegLogic(scene).start(labels, small[1]), "vtkMRMLLabelMapVolumeNode")


def test_points_outside_the_volume(scene, small):
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "clicks")
    points.AddControlPoint(-20.0, -20.0, 10.0)
    points.AddControlPoint(900.0, 0.0, 0.0)
    check_refused(scene, lambda: XAISegLogic(scene).start(small[0], points), "of 'clicks'", "lies outside volume")


def test_empty_point_list(scene, small):
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "nothing")
    check_refused(scene, lambda: XAISegLogic(scene).start(small[0], points), "'nothing' has no points")


def test_unknown_segmenter_and_missing_checkpoint(scene, small):
    check_refused(scene, lambda: XAISegLogic(scene).start(small[0], small[1], RunSettings(segmenter="sam3")),
                  "'sam3' is unknown")
    check_refused(scene, lambda: XAISegLogic(scene).start(small[0], small[1], RunSettings(segmenter="medsam")),
                  "checkpoint file")
    check_refused(scene, lambda: XAISegLogic(scene).start(
        small[0], small[1], RunSettings(segmenter="medsam", checkpoint="/nonexistent/medsam_vit_b.pth")),
        "/nonexistent/medsam_vit_b.pth does not exist")


def test_output_segmentation_that_is_not_one(scene, small):
    logic = XAISegLogic(scene)
    check_refused(scene, lambda: logic.start(*small, RunSettings(output_segmentation=small[0].GetID())),
                  f"output segmentation ({small[0].GetID()}) is not a segmentation node")
    check_refused(scene, lambda: logic.start(*small, RunSettings(output_segmentation="vtkMRMLSegmentationNode9")),
                  "(vtkMRMLSegmentationNode9) is not a segmentation node of the scene")
    assert logic.job is None


def test_clip_roi_without_weights(scene, small):
    settings = RunSettings(methods=("occlusion",), roi={"source": "clip", "clip_prompts": ["blob"]})
    check_refused(scene, lambda: XAISegLogic(scene).start(small[0], small[1], settings), "CLIP")


def test_empty_segment_as_prompt(scene, small):
    from XAISegExtensionLib import mrml

    seg = mrml.add_segmentation(scene, np.zeros((12, 40, 40), np.uint8), small[0], "segs", "empty")
    segment_id = seg.GetSegmentation().GetNthSegmentID(0)
    check_refused(scene, lambda: XAISegLogic(scene).start(small[0], (seg, segment_id)), "is empty")
    check_refused(scene, lambda: XAISegLogic(scene).start(small[0], (seg, "nope")), "'nope' is not in")


def test_non_linear_transform_is_refused(scene, small):
    volume, roi = small
    grid = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "warp")
    volume.SetAndObserveTransformNodeID(grid.GetID())
    check_refused(scene, lambda: XAISegLogic(scene).start(volume, roi), "non-linear transform 'warp'")


def test_roi_partly_outside_is_clipped_with_a_note(scene, small):
    volume, roi = small
    roi.SetSize(200.0, 30.0, 8.0)
    job = XAISegLogic(scene).buildJob(volume, roi, write=False)
    assert job.request.to_dict()["prompt"]["lo_kji"][2] == 0 and job.request.to_dict()["prompt"]["hi_kji"][2] == 39
    assert any("clipped" in n for n in job.notes)


def test_roi_becomes_the_right_voxel_box(scene, small):
    volume, roi = small
    job = XAISegLogic(scene).buildJob(volume, roi, write=False)
    assert job.request.to_dict()["prompt"] == {"type": "box", "lo_kji": [4, 12, 12], "hi_kji": [7, 27, 27]}


def test_linear_transform_is_followed(scene, small):
    """A volume moved by a linear transform: the ROI is placed in world space on the moved volume."""
    volume, _ = small
    shift = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    import vtk

    m = vtk.vtkMatrix4x4()
    m.SetElement(0, 3, 50.0)
    shift.SetMatrixTransformToParent(m)
    volume.SetAndObserveTransformNodeID(shift.GetID())
    roi = roi_from_kji(scene, volume, (4, 12, 12), (7, 27, 27), "moved box")
    c = roi.GetCenter()
    roi.SetCenter(c[0] + 50.0, c[1], c[2])  # follow the volume in world space
    job = XAISegLogic(scene).buildJob(volume, roi, write=False)
    assert job.request.to_dict()["prompt"]["lo_kji"] == [4, 12, 12] and job.request.to_dict()["prompt"]["hi_kji"] == [7, 27, 27]
