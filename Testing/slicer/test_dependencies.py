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
    def __init__(self):
        self.calls = []

    def __call__(self, requirements):
        self.calls.append(list(requirements) if isinstance(requirements, list) else requirements)


def test_fallback_pins_installed_numpy_simpleitk_and_torch(monkeypatch, tmp_path):
    assert dependencies.packaging_module() is None, "slicer-core has no slicer.packaging: the fallback is used"
    recorder = Recorder()
    monkeypatch.setattr(slicer.util, "pip_install", recorder)
    reqs = [r for r in dependencies.CORE if r.module in ("timm", "tqdm")]  # installed here, so nothing is missing after
    constraints = dependencies.install(reqs)
    assert len(recorder.calls) == 1
    args = recorder.calls[0]
    assert isinstance(args, list), "a list keeps each argument whole (paths with spaces)"
    assert args[:-2] == ["timm", "tqdm>=4.60"] and args[-2] == "-c" and Path(args[-1]) == constraints
    pins = {}
    for line in Path(args[-1]).read_text().splitlines():
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
