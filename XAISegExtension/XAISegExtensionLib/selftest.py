"""The body of the module's self-test: it runs the real logic (worker, LiteMedSAM, occlusion) on a
small real volume and checks the nodes it creates.  Slicer's XAISegExtensionTest calls it with a
sample-data volume; CI calls it on slicer-core with a crop of the MNI152 template.

Kept cheap on purpose: three slices are segmented and one is explained with four occlusion
patches, about ten encoder passes in all.
"""
from __future__ import annotations

import shutil
import time
from typing import Callable, Optional

import numpy as np

from . import mrml
from .logic import CANCELLED, SUCCEEDED, RunSettings, XAISegLogic

CHEAP_OCCLUSION = {"patch": 128, "stride": 128, "metric_steps": 0}


def cheap_settings(first: int, last: int, explain_slice: int, name: str = "selftest") -> RunSettings:
    """Segment slices ``first..last``, explain ``explain_slice`` with four occlusion patches."""
    return RunSettings(name=name, slice_range=(first, last), methods=("occlusion",),
                       method_settings={"occlusion": dict(CHEAP_OCCLUSION)}, roi={"source": "box", "margin": 8},
                       explain_slices=[explain_slice], threads=2)


def roi_from_kji(scene, volume_node, lo_kji, hi_kji, name: str = "XAISeg self-test ROI"):
    """A markups ROI that covers voxels ``lo_kji..hi_kji`` of ``volume_node``."""
    m = mrml.ijk_to_ras(volume_node)
    corners = np.array([[lo_kji[2], lo_kji[1], lo_kji[0], 1.0], [hi_kji[2], hi_kji[1], hi_kji[0], 1.0]])
    ras = (m @ corners.T).T[:, :3]
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)
    roi.SetCenter(*((ras[0] + ras[1]) / 2.0))
    roi.SetSize(*(np.abs(ras[1] - ras[0]) + 0.5))  # inclusive voxels, a little inside the next ones
    return roi


def run_selftest(scene, volume_node, lo_kji, hi_kji, truth: Optional[np.ndarray] = None,
                 dice_floor: float = 0.5, delay: Callable[[str], None] = print, python: Optional[str] = None,
                 timeout: float = 600.0) -> dict:
    """Place a markups ROI on voxels ``lo_kji..hi_kji`` (a few slices thick along the axial axis),
    run, check, load again (replaces), cancel (changes nothing).  ``truth`` (k, j, i) adds a Dice check.

    Raises ``AssertionError`` naming the failed check; returns the figures it measured.
    """
    from xaiseg.volume import slicing_axis

    axis = slicing_axis(mrml.geometry_of(volume_node), "axial")
    first, last = int(lo_kji[axis]), int(hi_kji[axis])
    roi_node = roi_from_kji(scene, volume_node, lo_kji, hi_kji)
    logic = XAISegLogic(scene, python=python)
    centre = (first + last) // 2
    settings = cheap_settings(first, last, centre)

    delay("Bad input adds no node")
    before = scene.GetNumberOfNodes()
    for bad_volume, bad_prompt in ((None, roi_node), (volume_node, None)):
        try:
            logic.start(bad_volume, bad_prompt, settings)
        except ValueError as exc:
            assert str(exc), "the error must say what is wrong"
        else:  # pragma: no cover - a failure
            raise AssertionError("a missing volume or prompt was accepted")
    assert scene.GetNumberOfNodes() == before, "bad input added nodes"

    delay("Segmenting 3 slices and explaining 1 with occlusion (about a minute on a CPU)")
    logic.keepFiles = True  # kept for the reload check below, then removed
    result = logic.run(volume_node, roi_node, settings, timeout=timeout)
    assert logic.state.status == SUCCEEDED, logic.state.error
    after_first = scene.GetNumberOfNodes()
    expected = mrml.ijk_to_ras(volume_node)
    for node in [result.roi, *result.saliency.values(), *result.labels.values()]:
        assert np.allclose(mrml.ijk_to_ras(node), expected), f"{node.GetName()} is not on the input's grid"
    mask = mrml.segmentation_mask(result.segmentation, volume_node)
    assert mask.shape == mrml.volume_array_shape(volume_node)
    per_slice = np.moveaxis(mask, axis, 0)
    ks = np.nonzero(per_slice.any(axis=(1, 2)))[0]
    assert len(ks) and ks.min() >= first and ks.max() <= last, f"mask on slices {list(ks)}, expected {first}..{last}"
    saliency = mrml.volume_array(result.saliency["occlusion"])
    explained = np.nonzero(np.moveaxis(saliency, axis, 0).reshape(saliency.shape[axis], -1).max(axis=1) > 0)[0]
    assert list(explained) == [centre], f"saliency on slices {list(explained)}, expected only {centre}"
    assert 0.0 <= saliency.min() and saliency.max() <= 1.0 + 1e-6
    rows = {(r[0], r[1], r[2]): r[3] for r in mrml.table_rows(result.table)}
    assert rows[("segmentation", "all", "voxels")] == mask.sum()
    assert ("occlusion", str(centre), "dice_drop") in rows, "the metrics table lacks the Dice drop"
    sh = mrml.subject_hierarchy(scene)
    for node in result.nodes():
        assert sh.GetItemParent(sh.GetItemByDataNode(node)) == result.folder_item, f"{node.GetName()} not in folder"
        assert node.GetAttribute("XAISeg.weightsSHA256"), f"{node.GetName()} lacks the run record"
    figures = {"voxels": int(mask.sum()), "seconds": logic.state.seconds}
    if truth is not None:
        sel = np.zeros(mask.shape, bool)
        index = [slice(None)] * 3
        index[axis] = slice(first, last + 1)
        sel[tuple(index)] = True
        inter = float((mask.astype(bool) & truth.astype(bool) & sel).sum())
        dice = 2 * inter / max(1.0, float((mask.astype(bool) & sel).sum() + (truth.astype(bool) & sel).sum()))
        figures["dice"] = dice
        assert dice >= dice_floor, f"Dice {dice:.3f} against the reference, expected at least {dice_floor}"

    delay("Loading the same run again replaces its nodes instead of adding copies")
    again = logic.loadResults(logic.job, logic.job.workdir / "output", logic.job.process.final)
    assert scene.GetNumberOfNodes() == after_first, "a second load of the same run added nodes"
    assert result.segmentation.GetScene() is None and again.segmentation.GetScene() is scene
    shutil.rmtree(logic.job.workdir, ignore_errors=True)
    logic.keepFiles = False
    delay("Cancelling a run leaves the scene unchanged")
    logic.start(volume_node, roi_node, settings)
    while logic.poll().status == "running" and logic.state.done == 0:
        time.sleep(0.1)
    logic.cancel()
    assert logic.state.status == CANCELLED
    assert scene.GetNumberOfNodes() == after_first, "cancelling changed the scene"
    delay("XAISeg self-test passed")
    return figures
