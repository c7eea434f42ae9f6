"""Cancelling a running job through the logic (what the panel's Cancel button calls) stops the worker
mid-run, leaves the scene's node count unchanged and removes the job's temporary files."""
import time

import numpy as np

import slicer
from XAISegExtensionLib.logic import CANCELLED, RUNNING, RunSettings, XAISegLogic
from XAISegExtensionLib.selftest import roi_from_kji


def test_cancel_mid_run_leaves_the_scene_unchanged(scene):
    rng = np.random.default_rng(0)
    a = rng.normal(100, 5, (8, 64, 64)).astype(np.float32)
    a[:, 20:44, 20:44] += 250
    volume = slicer.util.addVolumeFromArray(a, np.diag([-1.0, -1.0, 2.0, 1.0]), name="phantom")
    roi = roi_from_kji(scene, volume, (0, 18, 18), (7, 45, 45), "phantom box")
    logic = XAISegLogic(scene)
    states = []
    logic.progressCallback = lambda s: states.append((s.status, s.stage, s.done))
    before = scene.GetNumberOfNodes()
    job = logic.start(volume, roi, RunSettings(threads=2))
    assert job.workdir.is_dir() and (job.workdir / "input.nrrd").is_file()
    deadline = time.monotonic() + 300
    while logic.poll().status == RUNNING and logic.state.done == 0:  # wait until a slice was segmented
        assert time.monotonic() < deadline, logic.state.log
        time.sleep(0.05)
    assert logic.state.status == RUNNING and 0 < logic.state.done < logic.state.total, logic.state
    logic.cancel()
    assert logic.state.status == CANCELLED
    assert job.process.returncode is not None, "the worker is still running"
    assert scene.GetNumberOfNodes() == before, "cancelling changed the scene"
    assert not job.workdir.exists(), "the job's temporary folder was left behind"
    assert logic.poll().status == CANCELLED and logic.result is None
    assert any(s[0] == CANCELLED for s in states)
