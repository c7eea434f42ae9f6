"""The body of the module's self-test: it runs the real logic (worker, LiteMedSAM, occlusion) on a
small volume it builds itself (no download, so it runs on the extensions factory) and checks the
nodes it creates.  Slicer's XAISegExtensionTest and the slicer-core tests call the same body.

Where torch is not installed (a factory machine without the PyTorch extension's download) the
model part is skipped with a message saying so, and the checks that need no model still run.

Kept cheap on purpose: three slices are segmented and one is explained with four occlusion
patches, about ten encoder passes in all.
"""
from __future__ import annotations

import shutil
import time
from typing import Callable, Optional

import numpy as np

from . import mrml
from .device import torch_installed
from .logic import CANCELLED, SUCCEEDED, RunSettings, XAISegLogic

CHEAP_OCCLUSION = {"patch": 128, "stride": 128, "metric_steps": 0}


def cheap_settings(first: int, last: int, explain_slice: int, name: str = "selftest") -> RunSettings:
    """Segment slices ``first..last``, explain ``explain_slice`` with four occlusion patches."""
    return RunSettings(name=name, slice_range=(first, last), methods=("occlusion",),
                       method_settings={"occlusion": dict(CHEAP_OCCLUSION)}, roi={"source": "box", "margin": 8},
                       explain_slices=[explain_slice], threads=2)


PHANTOM_SHAPE = (12, 96, 96)  # (k, j, i)
SKIP_MESSAGE = ("Skipping the model part of the self-test: torch is not installed in Slicer's Python "
                "(install the PyTorch extension, then open XAISeg once to add the worker's packages)")


def build_phantom(scene, name: str = "XAISeg phantom"):
    """A small MR-like volume with a known structure: a bright ellipsoid inside an elliptic body,
    with noise; 12 axial slices of 96 x 96 voxels, 1 x 1 x 2 mm.  Returns ``(volume, truth,
    lo_kji, hi_kji)``: the node, the structure's mask and a box around its three central slices."""
    import slicer

    rng = np.random.default_rng(7)
    k, j, i = np.indices(PHANTOM_SHAPE).astype(float)
    body = ((j - 47.5) / 44.0) ** 2 + ((i - 47.5) / 40.0) ** 2 <= 1.0
    truth = (((k - 5.5) / 5.0) ** 2 + ((j - 50.0) / 15.0) ** 2 + ((i - 42.0) / 11.0) ** 2 <= 1.0).astype(np.uint8)
    voxels = np.where(body, 90.0, 0.0) + rng.normal(0.0, 4.0, PHANTOM_SHAPE) + 120.0 * truth
    ijk_to_ras = np.diag([-1.0, -1.0, 2.0, 1.0])
    ijk_to_ras[:3, 3] = (47.5, 47.5, -11.0)
    volume = slicer.util.addVolumeFromArray(voxels.astype(np.float32), ijk_to_ras, name=name)
    idx = np.argwhere(truth[4:7])
    lo = (4, int(idx[:, 1].min()) - 3, int(idx[:, 2].min()) - 3)
    hi = (6, int(idx[:, 1].max()) + 3, int(idx[:, 2].max()) + 3)
    return volume, truth, lo, hi


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
                 timeout: float = 600.0, torch_available: Optional[bool] = None) -> dict:
    """Place a markups ROI on voxels ``lo_kji..hi_kji`` (a few slices thick along the axial axis),
    run, check, load again (replaces), cancel (changes nothing).  ``truth`` (k, j, i) adds a Dice check.
    Without torch (``torch_available`` None: look for it) only the checks that need no model run.

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

    delay("The request for the worker is written and the cost estimated without a model")
    job = logic.buildJob(volume_node, roi_node, settings)
    try:
        request = job.request.to_dict()
        assert (job.workdir / "input.nrrd").is_file() and (job.workdir / "request.json").is_file()
        assert request["prompt"]["type"] == "box" and request["slice_range"] == [first, last]
        assert request["explain"]["slices"] == [centre]
    finally:
        shutil.rmtree(job.workdir, ignore_errors=True)
    cost = logic.estimateCost(volume_node, roi_node, settings)
    assert cost["slices"] == last - first + 1 and cost["encoder_passes"] > cost["slices"], cost
    assert scene.GetNumberOfNodes() == before, "building the request added nodes"
    if torch_available is None:
        torch_available = torch_installed()
    if not torch_available:
        delay(SKIP_MESSAGE)
        return {"model": False, "skipped": SKIP_MESSAGE}

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
    trust = logic.sliceTrust(result, "occlusion", centre)
    assert trust["explained"] and trust["text"].startswith(f"Slice {centre}, "), trust
    sh = mrml.subject_hierarchy(scene)
    for node in result.nodes():
        assert sh.GetItemParent(sh.GetItemByDataNode(node)) == result.folder_item, f"{node.GetName()} not in folder"
        assert node.GetAttribute("XAISeg.weightsSHA256"), f"{node.GetName()} lacks the run record"
    figures = {"model": True, "voxels": int(mask.sum()), "seconds": logic.state.seconds}
    if truth is not None:
        from xaiseg.volume import plane_index

        sel = np.zeros(mask.shape, bool)
        sel[plane_index(axis, slice(first, last + 1))] = True
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
    assert logic.waitStopped(5.0), "the cancelled worker did not end"
    assert scene.GetNumberOfNodes() == after_first, "cancelling changed the scene"
    delay("XAISeg self-test passed")
    return figures
