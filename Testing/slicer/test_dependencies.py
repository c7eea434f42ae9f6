"""Installing the worker's packages on a Slicer without ``slicer.packaging`` (before 5.12): the
fallback hands ``slicer.util.pip_install`` the requirements plus ``-c constraints.txt``, and that
file pins the numpy, SimpleITK and torch installed here.  Stand-ins record what
``slicer.util.pip_install`` and PyTorchUtils are handed (nothing is installed)."""
import sys
import types
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement as PipRequirement

import slicer
from XAISegExtensionLib import dependencies


class Recorder:
    """Records what pip would be handed, and the constraints file's text while pip would run."""

    def __init__(self):
        self.calls = []
        self.constraints = []

    def __call__(self, requirements):
        self.calls.append(list(requirements) if isinstance(requirements, list) else requirements)
        if isinstance(requirements, list) and "-c" in requirements:
            self.constraints.append(Path(requirements[requirements.index("-c") + 1]).read_text())


def test_fallback_pins_installed_numpy_simpleitk_and_torch(monkeypatch, tmp_path):
    assert dependencies.packaging_module() is None, "slicer-core has no slicer.packaging: the fallback is used"
    recorder = Recorder()
    monkeypatch.setattr(slicer.util, "pip_install", recorder)
    reqs = [r for r in dependencies.CORE if r.module in ("timm", "tqdm")]  # installed here, so nothing is missing after
    held = dependencies.install(reqs)
    assert len(recorder.calls) == 1
    args = recorder.calls[0]
    assert isinstance(args, list), "a list keeps each argument whole (paths with spaces)"
    assert args[:-2] == ["timm", "tqdm>=4.60"] and args[-2] == "-c"
    assert not Path(args[-1]).exists() and not Path(args[-1]).parent.exists(), \
        "the constraints file and its temporary folder are deleted once pip is done"
    assert recorder.constraints[0].splitlines()[1:] == held, "install returns the pins pip was handed"
    pins = {}
    for line in recorder.constraints[0].splitlines():
        if line and not line.startswith("#"):
            req = PipRequirement(line)
            pins[req.name] = req
    assert set(pins) == {"numpy", "SimpleITK", "torch"}
    for name, req in pins.items():
        installed = metadata.version(name)
        assert str(req.specifier) == f"=={installed}" and req.specifier.contains(installed)
    import numpy
    import SimpleITK
    import torch

    # the pins hold what this interpreter imports (torch's local build label is ignored by ==)
    assert pins["numpy"].specifier.contains(numpy.__version__)
    assert pins["SimpleITK"].specifier.contains(SimpleITK.__version__)
    assert pins["torch"].specifier.contains(torch.__version__, prereleases=True)


def test_the_panel_runs_the_same_pip_command(tmp_path):
    constraints = dependencies.write_constraints(tmp_path, {"numpy": "1.26.4"})
    assert constraints.read_text().splitlines()[1:] == ["numpy==1.26.4"]
    command = dependencies.pip_command(["timm"], constraints, python="/opt/Slicer/bin/PythonSlicer")
    assert command == ["/opt/Slicer/bin/PythonSlicer", "-m", "pip", "install", "timm", "-c", str(constraints)]
    dependencies.remove_constraints(constraints)  # what the panel does when pip finishes
    assert not constraints.exists() and tmp_path.exists(), "a folder the caller gave is left in place"
    own = dependencies.write_constraints(versions={"numpy": "1.26.4"})
    (own.parent / "other").write_text("not XAISeg's")
    dependencies.remove_constraints(own)
    assert not own.exists() and (own.parent / "other").exists(), "a folder holding something else is kept"
    (own.parent / "other").unlink()
    own.parent.rmdir()  # this test's own leftover
    own = dependencies.write_constraints(versions={})
    dependencies.remove_constraints(own)
    assert not own.parent.exists(), "the folder write_constraints made is deleted with its file"
    dependencies.remove_constraints(None)  # nothing was written: nothing to do


def test_torch_comes_through_pytorchutils_with_the_version_requirement(monkeypatch):
    calls = []

    class PyTorchUtilsLogic:  # PyTorchUtils' signature (SlicerPyTorch, PyTorchUtils/PyTorchUtils.py)
        @staticmethod
        def torchInstalled():
            return False

        def installTorch(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None,
                         torchvisionVersionRequirement=None):
            calls.append({"askConfirmation": askConfirmation, "forceComputationBackend": forceComputationBackend,
                          "torchVersionRequirement": torchVersionRequirement})
            return object()

    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=PyTorchUtilsLogic))
    recorder = Recorder()
    monkeypatch.setattr(slicer.util, "pip_install", recorder)
    dependencies.install([dependencies.TORCH])
    assert calls == [{"askConfirmation": False, "forceComputationBackend": None, "torchVersionRequirement": ">=2.0"}]
    assert recorder.calls == [], "torch must not go through pip_install"
    assert dependencies.TORCH.spec == "torch>=2.0"


def test_missing_pytorch_extension_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)
    with pytest.raises(RuntimeError, match="install 'PyTorch' from the Extension Manager"):
        dependencies.install_torch()
