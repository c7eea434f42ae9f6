"""Whether the process that left a lock file or a folder behind has ended (``xaiseg.processes``),
and what the lock and the spill folders do with that answer: only a process the system says is gone
(or a zombie) counts as ended, and every answer it cannot give keeps what the process left."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from xaiseg import processes, spill
from xaiseg.errors import OutputBusyError
from xaiseg.lock import LOCK_NAME, output_lock
from xaiseg.processes import process_ended

posix = pytest.mark.skipif(os.name != "posix", reason="signal 0 asks about a process only on POSIX")
#: a process id no system gives (above every pid_max), but a number os.kill refuses with OverflowError
HUGE = 2 ** 70


def reaped_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@posix
def test_a_running_process_has_not_ended_and_a_reaped_one_has():
    assert not process_ended(os.getpid())
    assert process_ended(reaped_pid())


@pytest.mark.skipif(not os.path.isfile("/proc/self/stat"), reason="zombies are seen through /proc")
def test_a_zombie_has_ended():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        # it has exited but is not reaped while os.waitid leaves it waiting
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        assert process_ended(child.pid)
    finally:
        child.wait()


# the ids stay the same in every test worker (xdist refuses workers that collect different ids)
@pytest.mark.parametrize("pid", [None, 0, -1, "minus this process id", True, "123", 1.5])
def test_what_is_not_a_process_id_is_never_asked_about(pid, monkeypatch):
    """0 and negative numbers name process groups (True is 1, init): none is signalled, and none reads
    as 'ended' even where the system would say no such process (group) exists."""
    if pid == "minus this process id":
        pid = -os.getpid()
    calls = []

    def kill(*args):
        calls.append(args)
        raise ProcessLookupError

    monkeypatch.setattr(processes.os, "kill", kill)
    assert process_ended(pid) is False and calls == []


def test_a_number_too_large_for_os_kill_is_not_ended():
    """os.kill raises OverflowError for a number beyond a C int: unknown, so not ended, and no error."""
    assert process_ended(HUGE) is False


def test_off_posix_no_process_is_ended_and_none_is_signalled(monkeypatch):
    """On Windows os.kill(pid, 0) would end the process: it is never called there."""
    calls = []
    monkeypatch.setattr(processes, "POSIX", False)
    monkeypatch.setattr(processes.os, "kill", lambda *a: calls.append(a))
    assert process_ended(os.getpid()) is False and calls == []


@posix
def test_a_lock_file_naming_a_number_too_large_for_a_process_keeps_the_folder(tmp_path):
    """The no-OS-locks fallback: a lock file whose owner cannot be asked about is taken to be held
    (it used to raise OverflowError out of the lock), and the refusal names the file to remove if its
    run died; one of a reaped process is taken over."""
    outdir = tmp_path / "out"
    outdir.mkdir()
    (outdir / LOCK_NAME).write_text(f"{HUGE}\n")
    with pytest.raises(OutputBusyError, match=f"pid {HUGE}") as info:
        with output_lock(outdir, use_os_lock=False):
            pass
    # the user is told which file to remove when the run that left it has died
    assert str(info.value).endswith(f"if no such run is going, its lock file {outdir / LOCK_NAME} was left by one "
                                    "that died: remove it")
    assert (outdir / LOCK_NAME).read_text() == f"{HUGE}\n"
    (outdir / LOCK_NAME).write_text(f"{reaped_pid()}\n")
    with output_lock(outdir, use_os_lock=False) as lock:
        assert int(lock.read_text().split()[0]) == os.getpid()


@pytest.mark.parametrize("text", ["", "not a pid\n", "0\n"])
def test_a_lock_file_without_its_owners_pid_is_held(tmp_path, text):
    """Between creating the lock file and writing its pid a run's lock is empty: a lock file whose
    owner cannot be read (or is no process id) keeps the folder."""
    outdir = tmp_path / "out"
    outdir.mkdir()
    (outdir / LOCK_NAME).write_text(text)
    with pytest.raises(OutputBusyError, match="is in use by another xaiseg run"):
        with output_lock(outdir, use_os_lock=False):
            pass
    assert (outdir / LOCK_NAME).read_text() == text


@pytest.mark.skipif(not os.path.isfile("/proc/self/stat"), reason="zombies are seen through /proc")
def test_the_lock_of_a_zombie_is_taken_over(tmp_path):
    outdir = tmp_path / "out"
    outdir.mkdir()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        (outdir / LOCK_NAME).write_text(f"{child.pid}\n")
        with output_lock(outdir, use_os_lock=False) as lock:
            assert int(lock.read_text().split()[0]) == os.getpid()
    finally:
        child.wait()


@posix
def test_spill_folders_are_removed_only_when_their_process_has_ended(tmp_path):
    mine = spill._prefix()
    ended = tmp_path / f"{mine}{reaped_pid()}-abc"
    running = tmp_path / f"{mine}{os.getpid()}-abc"
    huge = tmp_path / f"{mine}{HUGE}-abc"  # no process can have it: kept, and no OverflowError
    group = tmp_path / f"{mine}0-abc"  # 0 names this process group: kept
    unnamed = tmp_path / f"{mine}x-abc"
    for folder in (ended, running, huge, group, unnamed):
        folder.mkdir()
    spill.remove_stale(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (running, huge, group, unnamed))
