"""The test workers' temporary folders: a running worker's folder is kept by the controller's sweep
even where its process id says nothing (its lock is held), an ended worker's folder goes."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import worker_folders

pytestmark = pytest.mark.skipif(worker_folders.fcntl is None, reason="file locks need POSIX")

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    import worker_folders
    lock = worker_folders.take(Path(sys.argv[2]))
    print("held", flush=True)
    time.sleep(120)
""")


def _holder(folder: Path) -> subprocess.Popen:
    """A process that takes ``folder`` as a worker does and keeps running."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(Path(worker_folders.__file__).parent), str(folder)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_running_workers_folder_is_kept_whatever_its_process_id_and_an_ended_ones_goes(tmp_path):
    # named for a process id that no process here has (as a worker of another container sharing
    # the temporary folder but not the process ids would be): its held lock keeps it
    folder = worker_folders.folder_for(tmp_path, "gw0", 4194999)
    proc = _holder(folder)
    try:
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
    gone = worker_folders.folder_for(tmp_path, "gw1", int(ended.stdout))
    running = worker_folders.folder_for(tmp_path, "gw2", os.getpid())
    other = tmp_path / "pytest-xaiseg-gw3-notanumber"
    for f in (gone, running, other):
        f.mkdir()
    link = worker_folders.folder_for(tmp_path, "gw4", int(ended.stdout) + 1)
    link.symlink_to(gone)  # a link is never followed or removed
    assert worker_folders.sweep(tmp_path) == [gone]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([running.name, other.name, link.name])


def test_a_worker_removes_its_own_folder_and_lock_file(tmp_path):
    folder = worker_folders.folder_for(tmp_path, "gw0", os.getpid())
    lock = worker_folders.take(folder)
    (folder / "sub").mkdir()
    assert worker_folders.sweep(tmp_path) == []  # locked by this process: kept
    worker_folders.release(folder, lock)
    assert list(tmp_path.iterdir()) == []
    # a lock file left without its folder (a worker that died between the two) is swept too
    Path(str(folder) + ".lock").write_text("")
    assert worker_folders.sweep(tmp_path) == [] and list(tmp_path.iterdir()) == []
