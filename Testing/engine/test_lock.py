"""Two runs into one output folder: the second is refused with the first one's pid.

The other run is a real second process that takes the lock and says so on a pipe; it lets go
when told to on its stdin.  No sleeps: every step waits for the other side's message.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import xaiseg
from xaiseg.errors import OutputBusyError
from xaiseg.lock import LOCK_NAME, is_internal, output_lock

HOLDER = r"""
import sys
from xaiseg.lock import output_lock
with output_lock(sys.argv[1], use_os_lock=sys.argv[2] == "os"):
    print("locked", flush=True)
    sys.stdin.readline()  # hold the folder until told to let go
print("released", flush=True)
"""


class Holder:
    """A second process holding the lock on ``outdir`` until :meth:`release`."""

    def __init__(self, outdir: Path, mode: str):
        env = dict(os.environ, PYTHONPATH=str(Path(xaiseg.__file__).parent.parent))
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(outdir), mode], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "released"
        assert self.proc.wait(timeout=60) == 0


@pytest.mark.parametrize("mode", ["os", "excl"])
def test_second_run_is_refused_then_goes_after_the_first(tmp_path, mode):
    outdir = tmp_path / "out"
    holder = Holder(outdir, mode)
    try:
        with pytest.raises(OutputBusyError) as info:
            with output_lock(outdir, use_os_lock=mode == "os"):
                pytest.fail("took a folder another run holds")
        assert str(info.value).startswith(f"output folder {outdir} is in use by another xaiseg run "
                                          f"(pid {holder.proc.pid})")
    finally:
        holder.release()
    assert not outdir.exists()  # the first run made the folder and left it empty: lock file and folder gone
    with output_lock(outdir, use_os_lock=mode == "os") as lock:
        assert lock.name == LOCK_NAME and is_internal(lock.name)
        assert int(lock.read_text().split()[0]) == os.getpid()
        (outdir / "x_mask.nrrd").write_text("an output")
    assert os.listdir(outdir) == ["x_mask.nrrd"]  # the lock is never left among the outputs


def test_same_process_twice_is_refused(tmp_path):
    with output_lock(tmp_path / "out"):
        with pytest.raises(OutputBusyError, match=f"pid {os.getpid()}"):
            with output_lock(tmp_path / "out"):
                pass


def test_lock_left_by_a_dead_run_is_taken_over(tmp_path):
    """Without OS locks the lock file is all there is; one whose process has ended does not block."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    outdir = tmp_path / "out"
    outdir.mkdir()
    (outdir / LOCK_NAME).write_text(f"{dead.pid}\n")
    with output_lock(outdir, use_os_lock=False) as lock:
        assert int(lock.read_text().split()[0]) == os.getpid()
    assert os.listdir(outdir) == []


def test_lock_released_when_the_run_fails(tmp_path):
    with pytest.raises(RuntimeError, match="stage failed"):
        with output_lock(tmp_path / "runs" / "out"):
            raise RuntimeError("stage failed")
    assert os.listdir(tmp_path) == []  # neither the lock file nor the folders it made
    (tmp_path / "kept").mkdir()
    with output_lock(tmp_path / "kept"):
        pass
    assert os.listdir(tmp_path) == ["kept"]  # a folder that was there stays


def test_internal_names():
    assert is_internal(".xaiseg.lock") and is_internal(".xaiseg-abc123")
    assert is_internal(".vol_mask.nrrd.k2j3.part.nrrd")
    assert not is_internal("vol_mask.nrrd") and not is_internal("vol_run.json")
