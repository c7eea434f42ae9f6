"""Cancel (what the panel's Cancel button calls) ends the worker's whole process tree within 2 s,
without the call waiting for it, and leaves no node and no file; calibration runs in the worker
without blocking the caller.

The worker is started through a launcher, as inside Slicer (``PythonSlicer`` is a launcher whose
child runs Python): here a small Python script that runs the real interpreter as its child and
waits for it, so the test sees a real two-process tree.  Processes are checked by id."""
import os
import stat
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import slicer
from XAISegExtensionLib.logic import CANCELLED, RUNNING, RunSettings, XAISegLogic
from XAISegExtensionLib.process import pid_alive
from XAISegExtensionLib.selftest import roi_from_kji

LAUNCHER = """#!{python}
import subprocess, sys
sys.exit(subprocess.call([{python!r}] + sys.argv[1:]))
"""


@pytest.fixture
def launcher(tmp_path):
    path = tmp_path / "PythonSlicer"
    path.write_text(LAUNCHER.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def parent_of(pid: int) -> int:
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text[text.rindex(")") + 2:].split()[1])


def phantom(scene):
    rng = np.random.default_rng(0)
    a = rng.normal(100, 5, (8, 64, 64)).astype(np.float32)
    a[:, 20:44, 20:44] += 250
    volume = slicer.util.addVolumeFromArray(a, np.diag([-1.0, -1.0, 2.0, 1.0]), name="phantom")
    roi = roi_from_kji(scene, volume, (0, 18, 18), (7, 45, 45), "phantom box")
    return volume, roi


def run_dirs():
    return {p.name for p in Path(tempfile.gettempdir()).glob("xaiseg-*")}


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads the process table from /proc")
def test_cancel_ends_the_worker_tree_within_two_seconds(scene, launcher):
    volume, roi = phantom(scene)
    logic = XAISegLogic(scene, python=launcher)
    states = []
    logic.progressCallback = lambda s: states.append((s.status, s.stage, s.done))
    before_nodes, before_dirs = scene.GetNumberOfNodes(), run_dirs()
    job = logic.start(volume, roi, RunSettings(threads=2))
    assert job.workdir.is_dir() and (job.workdir / "input.nrrd").is_file()
    deadline = time.monotonic() + 300
    while logic.poll().status == RUNNING and logic.state.done == 0:  # wait until a slice was segmented
        assert time.monotonic() < deadline, logic.state.log
        time.sleep(0.05)
    assert logic.state.status == RUNNING and 0 < logic.state.done < logic.state.total, logic.state
    launcher_pid, worker_pid = job.process.proc.pid, logic.state.worker_pid
    assert worker_pid and worker_pid != launcher_pid and parent_of(worker_pid) == launcher_pid, \
        "the worker should run as the launcher's child"
    assert pid_alive(launcher_pid) and pid_alive(worker_pid)

    cancelled_at = time.monotonic()
    logic.cancel()
    assert logic.state.status == CANCELLED and not logic.running
    while (pid_alive(launcher_pid) or pid_alive(worker_pid)) and time.monotonic() - cancelled_at < 2.0:
        logic.poll()  # what the panel's timer does
        time.sleep(0.02)
    assert not pid_alive(worker_pid), "the worker (the launcher's child) outlived the cancel by 2 s"
    assert not pid_alive(launcher_pid), "the launcher outlived the cancel by 2 s"
    logic.poll()
    assert not logic.busy, "the logic still waits for a stopped worker"
    assert scene.GetNumberOfNodes() == before_nodes, "cancelling changed the scene"
    assert not job.workdir.exists(), "the job's temporary folder was left behind"
    assert run_dirs() <= before_dirs, "a temporary folder was added"
    assert logic.poll().status == CANCELLED and logic.result is None
    assert any(s[0] == CANCELLED for s in states)


def test_calibration_runs_in_the_worker_without_blocking(scene):
    logic = XAISegLogic(scene)
    finished = []
    logic.calibrationCallback = finished.append
    cal = logic.startCalibration(RunSettings(threads=2))
    # the call returned while the worker is still loading the model: nothing waited for it
    assert logic.calibrationJob is cal and logic.busy and not cal.process.finished and not finished
    deadline = time.monotonic() + 300
    while not finished:
        assert time.monotonic() < deadline
        logic.poll()
        time.sleep(0.05)
    assert finished == [cal] and cal.error == "", cal.error
    assert 0 < cal.result["seconds_decoder"] < cal.result["seconds_encoder"], cal.result
    assert logic.calibration[logic.calibrationKey(RunSettings(threads=2))] == cal.result
    assert not cal.workdir.exists() and not logic.busy
    # a second start while nothing runs begins a new worker; cancelling it ends it
    again = logic.startCalibration(RunSettings(threads=2))
    pid = again.process.proc.pid
    logic.cancelCalibration()
    assert logic.waitStopped(5.0) and not pid_alive(pid) and not again.workdir.exists()
    assert os.path.isdir(tempfile.gettempdir())
