"""Make the engine importable without installing it, keep torch to the cores this process may use,
and, when `make test` runs the suite in several processes (pytest-xdist), run each file in one
process, the slowest first, and give each process its own temporary folder."""
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import pytest

if importlib.util.find_spec("xaiseg") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "XAISegExtension"))

import worker_folders  # noqa: E402 - beside this file (pytest puts its folder on the path); uses xaiseg.lock

#: pytest-xdist's worker name (gw0, gw1, ...) and the number of workers; none when run in one process
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
if WORKER:
    # each worker its own temporary folder, locked while it runs (worker_folders): the tests that check
    # no temporary folder was left look at the whole temporary folder, where another process's run must
    # not show up
    _own, _own_lock = worker_folders.take(Path(tempfile.gettempdir()), WORKER, os.getpid())
    os.environ["TMPDIR"] = str(_own)  # for the workers and launchers the tests start
    tempfile.tempdir = str(_own)

try:
    import torch
except ImportError:  # pragma: no cover - torch is a hard dependency of the engine
    torch = None
else:
    # two threads in one process (as before the suite ran in several); one each with two workers on two cores
    torch.set_num_threads(max(1, min(2, (os.cpu_count() or 2) // WORKERS)))


#: test files that share a fixture costing a minute or more: one worker runs them all, so it is built
#: once - the Slicer logic's run on MNI152 (``mni_run`` in Testing/slicer/conftest.py) and the engine's
#: run that the report's tests read (``mni_run`` in Testing/engine/test_narrate_runs.py, cached per process)
SHARED = {"test_logic_mni.py": "mni_run", "test_reading_mni.py": "mni_run", "test_screenshots_mni.py": "mni_run",
          "test_narrate_runs.py": "narrate", "test_narrate_findings.py": "narrate", "test_narrate_html.py": "narrate",
          "test_narrate_http.py": "narrate", "test_narrate_llava.py": "narrate"}
#: the units that took a minute or more in one worker of two (a full run's --durations), slowest first:
#: they start first, so that no worker is left with a long file while the other idles
SLOW_FIRST = ("test_litemedsam_accuracy.py", "test_layers.py", "mni_run", "test_explain_litemedsam.py",
              "test_trust.py", "narrate", "test_reuse.py", "test_cancel.py", "test_selftest.py",
              "test_bench_faithfulness.py", "test_quiet.py")

try:
    from xdist.scheduler import LoadScopeScheduling
except ImportError:  # run in one process
    LoadScopeScheduling = None

if LoadScopeScheduling is not None:
    class FileUnits(LoadScopeScheduling):
        """pytest-xdist's scheduling with each test file as one unit of work (its module fixtures are
        built once), the files of :data:`SHARED` as one unit, and the units of :data:`SLOW_FIRST`
        handed out first."""

        def _split_scope(self, nodeid):
            path = nodeid.split("::", 1)[0]
            return SHARED.get(path.rsplit("/", 1)[-1], path)

        def _assign_work_unit(self, node):
            def rank(unit):
                name = unit.rsplit("/", 1)[-1]
                return SLOW_FIRST.index(name) if name in SLOW_FIRST else len(SLOW_FIRST)

            self.workqueue = type(self.workqueue)(sorted(self.workqueue.items(), key=lambda kv: rank(kv[0])))
            super()._assign_work_unit(node)

    @pytest.hookimpl(optionalhook=True)  # xdist installed but not loaded (-p no:xdist): no such hook
    def pytest_xdist_make_scheduler(config, log):
        # `-n` alone means --dist load; another --dist given (each, worksteal, ...) keeps xdist's own
        if config.getvalue("dist") not in ("load", "loadfile", "loadscope"):
            return None
        return FileUnits(config, log)


def pytest_sessionfinish(session, exitstatus):
    """Remove this worker's own temporary folder (what a test left there, each test checks itself);
    in the controlling process (or a run in one process), this user's folders of workers that ended
    without removing theirs (a worker that crashed)."""
    if WORKER:
        worker_folders.release(_own, _own_lock)
        return
    worker_folders.sweep(Path(tempfile.gettempdir()))
