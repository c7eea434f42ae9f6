"""The test workers' temporary folders: a running worker's folder is kept by the controller's sweep
even where its process id says nothing (its lock is held), an ended worker's folder goes."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import worker_folders
import xaiseg

fcntl = worker_folders._file_lock.fcntl  # the module the engine's lock takes its locks with
pytestmark = pytest.mark.skipif(fcntl is None, reason="these file locks need POSIX")

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path[:0] = sys.argv[1].split("|")
    import worker_folders
    folder, lock = worker_folders.take(Path(sys.argv[2]), "gw0", int(sys.argv[3]))
    print(folder, flush=True)
    time.sleep(120)
""")


def test_a_running_workers_folder_is_kept_whatever_its_process_id_and_an_ended_ones_goes(tmp_path):
    # a worker whose folder is named for a process id that no process here has (as a worker of another
    # container sharing the temporary folder but not the process ids would be): its held lock keeps it
    # the child imports worker_folders and the engine (its lock) from where this process does
    paths = "|".join([str(Path(worker_folders.__file__).parent), str(Path(xaiseg.__file__).parents[1])])
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, paths, str(tmp_path), "4194999"],
                            stdout=subprocess.PIPE, text=True)
    try:
        folder = Path(proc.stdout.readline().strip())
        assert folder.parent == tmp_path and folder.name.startswith("pytest-xaiseg-gw0-4194999-")
        (folder / "left.txt").write_text("a test's file")
        assert worker_folders.sweep(tmp_path) == []
        assert folder.is_dir() and Path(str(folder) + ".lock").exists()
    finally:
        proc.kill()
        proc.wait()
    # the worker crashed (killed): its lock is free, so its folder and lock file go
    assert worker_folders.sweep(tmp_path) == [folder]
    assert list(tmp_path.iterdir()) == []


def test_a_folder_without_a_lock_falls_back_on_its_process_id(tmp_path):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], stdout=subprocess.PIPE,
                           text=True, check=True)
    gone = worker_folders.folder_for(tmp_path, "gw1", int(ended.stdout), "0a1b2c3d")
    running = worker_folders.folder_for(tmp_path, "gw2", os.getpid())
    other = tmp_path / "pytest-xaiseg-gw3-notanumber"
    for f in (gone, running, other):
        f.mkdir()
    link = worker_folders.folder_for(tmp_path, "gw4", int(ended.stdout) + 1)
    link.symlink_to(gone)  # a link is never followed or removed
    assert worker_folders.sweep(tmp_path) == [gone]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([running.name, other.name, link.name])


def test_a_worker_removes_its_own_folder_and_lock_file(tmp_path):
    folder, lock = worker_folders.take(tmp_path, "gw0", os.getpid())
    (folder / "sub").mkdir()
    assert worker_folders.sweep(tmp_path) == []  # locked by this process: kept
    worker_folders.release(folder, lock)
    assert list(tmp_path.iterdir()) == []
    # a lock file left without its folder (a worker that died between the two) is swept too
    Path(str(folder) + ".lock").write_text("")
    assert worker_folders.sweep(tmp_path) == [] and list(tmp_path.iterdir()) == []


def test_two_workers_of_one_name_and_process_id_get_folders_of_their_own(tmp_path):
    # two containers sharing the temporary folder each number their processes from 1: the same worker
    # name and process id must neither share a folder nor wait for the other's lock
    first, first_lock = worker_folders.take(tmp_path, "gw0", 7)
    second, second_lock = worker_folders.take(tmp_path, "gw0", 7)
    assert first != second and first.is_dir() and second.is_dir()
    assert worker_folders.sweep(tmp_path) == []
    for folder, lock in ((first, first_lock), (second, second_lock)):
        worker_folders.release(folder, lock)
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_between_a_workers_open_and_lock_does_not_leave_it_without_a_lock_file(tmp_path, monkeypatch):
    # the sweep sees the new lock file with no folder yet (as a crashed worker's), locks and removes it
    # just before the worker locks the file it opened
    real, swept = fcntl.flock, []

    def flock(fd, operation):
        if not swept:  # the worker's first lock: the sweep (whose own locks pass straight through) runs first
            swept.append(None)
            swept[0] = worker_folders.sweep(tmp_path)
        return real(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock)
    folder, lock = worker_folders.take(tmp_path, "gw0", 4194999)
    monkeypatch.undo()
    assert swept == [[]]  # the sweep ran there (it removed the lock file, no folder)
    assert Path(str(folder) + ".lock").exists()  # the worker locked a file the next sweep sees
    assert worker_folders.sweep(tmp_path) == [] and folder.is_dir()  # so its process id does not decide
    worker_folders.release(folder, lock)
    assert list(tmp_path.iterdir()) == []
