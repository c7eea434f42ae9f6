"""One typed run request for every front door: the command line, the worker Slicer starts, and
the Slicer logic all build a :class:`RunRequest`, and :func:`xaiseg.pipeline.run` carries it out.

The request's JSON form (what the worker reads and :meth:`RunRequest.to_dict` writes)::

    {"version": 2, "input": "t1.nii.gz", "output_dir": "out", "name": "caudate",
     "prompt": {"type": "box", "lo_kji": [k, j, i], "hi_kji": [k, j, i]},
     "segmenter": {"kind": "litemedsam", "device": "cpu"},
     "preprocessing": {"mode": "percentile", "lower": 0.5, "upper": 99.5},
     "axis": "axial", "margin": 0, "slice_range": null, "format": "nrrd", "threads": null,
     "allow_gaps": false, "replace_nonfinite": null,
     "explain": {"methods": [{"name": "occlusion", "settings": {"patch": 64}}],
                 "common": {"seed": 0}, "roi": {"source": "embedding"}, "slices": [80, 81],
                 "target": null, "target_label": null, "roi_mask": null, "pngs": true, "report": null}}

Prompts: ``box`` (``lo_kji``/``hi_kji`` array indices, or ``lo_ras``/``hi_ras`` millimetres),
``slice_box`` (``box`` x0, y0, x1, y1 on slice ``slice``), ``points`` (``points_kji`` or
``points_ras`` with ``labels`` 1/0), ``labelmap`` (``file``, ``label``, ``margin``).  Every parser
names the bad key and value and what was expected; defaults live in the dataclasses below and in
each method's ``Settings``, nowhere else.  Relative paths are resolved against ``base`` (the
request file's folder for the worker, the working directory for the command line).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .cost import CALIBRATION_PASSES
from .errors import InputError
from .names import safe_name, stem_name
from .preprocess import Preprocessing
from .prompt_spec import PromptSpec, resolve_path as _path
from .settings import as_dict, build, coerce, setting

REQUEST_VERSION = 2
SEGMENTERS = ("litemedsam", "medsam", "torch")
FORMATS = ("nrrd", "nifti", "mha")
MAX_THREADS = 256  # torch threads; more would only exhaust the machine
_SEGMENTER_OPTIONS = {"litemedsam": ("checkpoint", "sha256", "device"),
                      "medsam": ("checkpoint", "sha256", "url", "cache_dir", "device"),
                      "torch": ("torchscript", "factory", "factory_kwargs", "checkpoint", "sha256", "class_index",
                                "in_channels", "input_size", "device")}


def parse_slices(value: Any, what: str = "slices") -> Optional[Tuple[int, ...]]:
    """Slice indices from ``"80,82"``, ``"80-84"``, a list, or None (sorted, without repeats)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    out: List[int] = []
    parts = value.replace(";", ",").split(",") if isinstance(value, str) else list(value)
    for part in parts:
        a, sep, b = str(part).strip().partition("-") if isinstance(part, str) else (part, "", None)
        try:
            out.extend(range(int(a), int(b) + 1) if sep else [int(a)])
        except (TypeError, ValueError):
            raise InputError(f"{what} {value!r} must list slice indices like '80,82' or '80-84'") from None
    if any(k < 0 for k in out):
        raise InputError(f"{what} {value!r} must be slice indices of 0 or more")
    return tuple(sorted(set(out)))


def parse_range(value: Any, what: str = "slice range") -> Optional[Tuple[int, int]]:
    """A ``(first, last)`` slice range from ``"80-84"``, ``[80, 84]`` or None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        a, sep, b = value.strip().partition("-")
        value = [a, b] if sep else None
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise InputError(f"{what} {value!r} must be two slice indices first, last (or 'first-last')")
    first, last = (coerce(v, int, what) for v in value)
    if first > last or first < 0:
        raise InputError(f"{what} {first}..{last} is empty or negative; expected 0 <= first <= last")
    return first, last


# ----------------------------------------------------------------------------------------- parts

#: the segmenter options that name files (relative ones are taken from the request's folder)
SEGMENTER_PATHS = ("checkpoint", "torchscript", "cache_dir")

@dataclass(frozen=True)
class SegmenterSpec:
    """Which segmenter to load and how (keyword arguments of :func:`xaiseg.models.load_segmenter`)."""

    kind: str = setting("litemedsam", "litemedsam: built in, offline; medsam: MedSAM ViT-B from a checkpoint or "
                                      "URL with its SHA-256; torch: a TorchScript file or a factory",
                        choices=SEGMENTERS)
    checkpoint: Optional[str] = setting(None, "checkpoint file (MedSAM ViT-B, LiteMedSAM, or the torch model's "
                                              "state dict)")
    sha256: Optional[str] = setting(None, "expected SHA-256 of the checkpoint; a different file is refused")
    url: Optional[str] = setting(None, "download the MedSAM checkpoint from this URL (needs the SHA-256)")
    cache_dir: Optional[str] = setting(None, "where downloaded checkpoints are kept")
    torchscript: Optional[str] = setting(None, "a TorchScript file mapping (B, C, H, W) to logits")
    factory: Optional[str] = setting(None, "'package.module:callable' that builds the network")
    factory_kwargs: Dict[str, Any] = setting(None, "keyword arguments for the factory", default_factory=dict)
    class_index: int = setting(1, "output channel to segment (a single-channel model uses its one channel)",
                               minimum=0)
    in_channels: int = setting(1, "input channels (the slice is repeated)", minimum=1, maximum=64)
    input_size: Optional[int] = setting(None, "resize slices to this square size", minimum=1, maximum=8192)
    device: str = setting("cpu", "torch device, e.g. cpu, cuda or mps")

    def __post_init__(self) -> None:
        if self.kind == "medsam" and not (self.checkpoint or self.url):
            raise InputError("MedSAM ViT-B needs a checkpoint file (medsam_vit_b.pth) or a download URL with its "
                             "SHA-256")
        if self.url and not self.sha256:
            raise InputError(f"downloading {self.url} needs the file's SHA-256 so it can be verified")
        if self.kind == "torch" and bool(self.torchscript) == bool(self.factory):
            raise InputError("a torch model needs exactly one of a TorchScript file or a factory "
                             "'package.module:callable'")
        for key in ("checkpoint", "torchscript"):
            value = getattr(self, key)
            if value and not Path(value).is_file():
                raise InputError(f"{key} {value} does not exist; expected a model file")
        unused = [k for k in ("url", "cache_dir", "torchscript", "factory") if getattr(self, k)
                  and k not in _SEGMENTER_OPTIONS[self.kind]]
        if unused:
            raise InputError(f"segmenter option(s) {unused} do not apply to {self.kind}; expected some of "
                             f"{list(_SEGMENTER_OPTIONS[self.kind])}")

    def options(self) -> Dict[str, Any]:
        """Keyword arguments of ``load_segmenter`` for this kind (unset ones left out)."""
        out = {k: getattr(self, k) for k in _SEGMENTER_OPTIONS[self.kind]}
        return {k: v for k, v in out.items() if v not in (None, "")}

    def load(self, progress=None):
        from .models import load_segmenter

        opts = self.options()
        if self.kind == "medsam":
            opts["progress"] = progress
        return load_segmenter(self.kind, **opts)


@dataclass(frozen=True)
class MethodSpec:
    """One explanation method and its complete, typed settings (its class's ``Settings``)."""

    name: str
    settings: Any

    def explainer(self):
        from .explain import explainer_class

        return explainer_class(self.name)(**as_dict(self.settings))


@dataclass(frozen=True)
class ExplainSpec:
    """What to explain and how: methods, region of interest, slices, ground truth, report."""

    methods: Tuple[MethodSpec, ...]
    roi: Any = None  # xaiseg.roi.RoiConfig (the embedding ROI by default)
    slices: Optional[Tuple[int, ...]] = None
    target: Optional[str] = None
    target_label: Optional[int] = None  # None: any non-zero voxel
    roi_mask: Optional[str] = None
    pngs: bool = True
    report: Optional[Dict[str, Any]] = None  # fields of xaiseg.narrate.ReportOptions

    @classmethod
    def from_dict(cls, e: Any, base: Optional[Path], name: str) -> "ExplainSpec":
        from .explain import expand, explainer_class
        from .roi import RoiConfig

        if not isinstance(e, Mapping):
            raise InputError(f"explain {e!r} must be an object with methods, roi, slices, ...")
        known = {"methods", "common", "roi", "slices", "target", "target_label", "roi_mask", "pngs", "report"}
        unknown = sorted(set(e) - known)
        if unknown:
            raise InputError(f"explain: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(known))}")
        common = e.get("common") or {}
        if not isinstance(common, Mapping):
            raise InputError(f"explain.common {common!r} must be an object of settings shared by every method")
        methods = e.get("methods")
        if isinstance(methods, str):
            methods = [{"name": m} for m in expand(methods)]
        if not isinstance(methods, (list, tuple)) or not methods:
            raise InputError(f"explain.methods {methods!r} must be a non-empty list of {{name, settings}}")
        specs = []
        for m in methods:
            m = {"name": m} if isinstance(m, str) else m
            if not isinstance(m, Mapping) or not isinstance(m.get("name"), str):
                raise InputError(f"explain method {m!r} must be an object with a name")
            for n in expand(m["name"]):
                cls_ = explainer_class(n)
                own = m.get("settings") or {}
                if not isinstance(own, Mapping):
                    raise InputError(f"settings of method {n!r} {own!r} must be an object")
                specs.append(MethodSpec(n, build(cls_.Settings, dict(common, **own), f"{n} settings")))
        roi = _mapping(e.get("roi"), "explain.roi")
        if roi.get("source") == "clip" and not roi.get("clip_prompts"):
            roi["clip_prompts"] = [name.replace("_", " ")]
        roi = build(RoiConfig, roi, "explain.roi")
        if roi.source == "clip" and not roi.clip_model:
            raise InputError("the CLIP ROI needs CLIP weights (a local folder or a cached Hugging Face name; none can "
                             "be downloaded here): give clip_model (--clip-model), or use the embedding, box or "
                             "mask ROI")
        target_label = e.get("target_label")
        return cls(tuple(specs), roi, parse_slices(e.get("slices"), "explain.slices"), _path(e.get("target"), base),
                   None if target_label is None else coerce(target_label, int, "explain.target_label"),
                   _path(e.get("roi_mask"), base), coerce(e.get("pngs", True), bool, "explain.pngs"),
                   _report(e.get("report")))

    def to_dict(self) -> Dict[str, Any]:
        return {"methods": [{"name": m.name, "settings": as_dict(m.settings)} for m in self.methods],
                "roi": as_dict(self.roi), "slices": list(self.slices) if self.slices is not None else None,
                "target": self.target, "target_label": self.target_label, "roi_mask": self.roi_mask,
                "pngs": self.pngs, "report": self.report}

    def explainers(self) -> list:
        return [m.explainer() for m in self.methods]


def _report(value: Any) -> Optional[Dict[str, Any]]:
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if not isinstance(value, Mapping):
        raise InputError(f"explain.report {value!r} must be an object of report options or null")
    from .narrate.report import ReportOptions

    allowed = {f.name for f in dataclasses.fields(ReportOptions)} - {"name", "output"}
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise InputError(f"explain.report: unknown option(s) {', '.join(unknown)}; expected some of "
                         f"{', '.join(sorted(allowed))}")
    options = as_dict(build(ReportOptions, value, "explain.report"))
    return {k: v for k, v in options.items() if k in allowed}  # complete, so equal requests compare equal


# ----------------------------------------------------------------------------------------- request

@dataclass(frozen=True)
class RunRequest:
    """One segmentation (and, with ``explain``, explanation) run; see the module docs."""

    input: str
    output_dir: str
    prompt: PromptSpec
    name: str = ""
    series: Optional[str] = None
    segmenter: SegmenterSpec = field(default_factory=SegmenterSpec)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    axis: str = "axial"
    margin: int = 0
    orientation: str = "auto"  # how slices are turned before the model: auto, array or a turn's name
    tta: int = 1  # orientations whose logits are averaged (N encoder passes per slice)
    slice_range: Optional[Tuple[int, int]] = None
    format: str = "nrrd"
    explain: Optional[ExplainSpec] = None
    threads: Optional[int] = None
    allow_gaps: bool = False  # read a DICOM series with missing slices (filled; listed in the run record)
    replace_nonfinite: Optional[float] = None  # NaN/inf voxels become this value (recorded) instead of an error

    @classmethod
    def from_dict(cls, data: Any, base: Optional[Path] = None) -> "RunRequest":
        """The request from its JSON form; relative paths are taken from ``base``."""
        if not isinstance(data, Mapping):
            raise InputError(f"the request must be a JSON object, got {type(data).__name__}")
        version = data.get("version", REQUEST_VERSION)
        if version != REQUEST_VERSION:
            raise InputError(f"request version {version!r} is not supported; expected {REQUEST_VERSION}")
        known = {f.name for f in dataclasses.fields(cls)} | {"version", "task", "cancel_file"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"request: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(known))}")
        source = _path(data.get("input"), base)
        if not source:
            raise InputError(f"input {data.get('input')!r} must be a volume file or DICOM folder")
        output = _path(data.get("output_dir"), base)
        if not output:
            raise InputError(f"output_dir {data.get('output_dir')!r} must be a folder path")
        name = safe_name(data.get("name")) if data.get("name") else stem_name(source)
        segmenter = _mapping(data.get("segmenter"), "segmenter")
        for key in SEGMENTER_PATHS:
            if segmenter.get(key):
                segmenter[key] = _path(segmenter[key], base)
        fmt = data.get("format", "nrrd")
        if fmt not in FORMATS:
            raise InputError(f"output format {fmt!r} is unknown; expected one of {', '.join(FORMATS)}")
        axis = data.get("axis", "axial")
        axis = str(axis) if axis is not None else "axial"
        from .volume import ANATOMICAL_AXES

        if axis not in ANATOMICAL_AXES and axis not in ("0", "1", "2"):
            raise InputError(f"slicing axis {axis!r} is unknown; expected axial, coronal, sagittal or 0/1/2")
        threads = data.get("threads")
        explain = data.get("explain")
        replace = data.get("replace_nonfinite")
        return cls(
            input=source, output_dir=output, prompt=PromptSpec.from_dict(data.get("prompt"), base), name=name,
            series=data.get("series") or None, segmenter=build(SegmenterSpec, segmenter, "segmenter"),
            preprocessing=build(Preprocessing, data.get("preprocessing") or {}, "preprocessing"), axis=axis,
            margin=_nonnegative(data.get("margin", 0), "margin"),
            orientation=_orientation(data.get("orientation", "auto")), tta=_tta(data.get("tta", 1)),
            slice_range=parse_range(data.get("slice_range"), "slice range"), format=fmt,
            explain=ExplainSpec.from_dict(explain, base, name) if explain else None,
            threads=None if threads is None else _positive(threads, "threads", MAX_THREADS),
            allow_gaps=coerce(data.get("allow_gaps") or False, bool, "allow_gaps"),
            replace_nonfinite=None if replace is None else coerce(replace, float, "replace_nonfinite"))

    def to_dict(self) -> Dict[str, Any]:
        """The JSON form; ``from_dict(to_dict())`` gives an equal request."""
        return {"version": REQUEST_VERSION, "input": self.input, "output_dir": self.output_dir, "name": self.name,
                "series": self.series, "prompt": self.prompt.to_dict(), "segmenter": as_dict(self.segmenter),
                "preprocessing": as_dict(self.preprocessing), "axis": self.axis, "margin": self.margin,
                "orientation": self.orientation, "tta": self.tta, "slice_range": list(self.slice_range) if self.slice_range else None, "format": self.format,
                "explain": self.explain.to_dict() if self.explain else None, "threads": self.threads,
                "allow_gaps": self.allow_gaps, "replace_nonfinite": self.replace_nonfinite}

    def replace(self, **changes: Any) -> "RunRequest":
        return dataclasses.replace(self, **changes)


def _mapping(value: Any, what: str) -> Dict[str, Any]:
    """``value`` as a dict (None or empty: {}), or an InputError naming it."""
    if not value:
        return {}
    if not isinstance(value, Mapping):
        raise InputError(f"{what} {value!r} must be an object (name: value)")
    return dict(value)


def _orientation(value: Any) -> str:
    from .orientation import InPlane

    text = str(value)
    if text not in ("auto", "array"):
        InPlane.named(text)  # an unknown name raises, listing the known ones
    return text


def _tta(value: Any) -> int:
    n = coerce(value, int, "tta")
    if not 1 <= n <= 8:
        raise InputError(f"tta {value!r} must be a number of orientations from 1 to 8")
    return n


def _positive(value: Any, what: str, most: int) -> int:
    v = coerce(value, int, what)
    if not 1 <= v <= most:
        raise InputError(f"{what} {value!r} must be an integer from 1 to {most}")
    return v


def _nonnegative(value: Any, what: str) -> int:
    v = coerce(value, int, what)
    if v < 0:
        raise InputError(f"{what} {value!r} must be 0 or more")
    return v


@dataclass(frozen=True)
class CalibrateRequest:
    """Time a segmenter's encoder and decoder passes, the median of ``repeats`` each (the worker's
    ``calibrate`` task)."""

    segmenter: SegmenterSpec = field(default_factory=SegmenterSpec)
    repeats: int = CALIBRATION_PASSES
    threads: Optional[int] = None

    @classmethod
    def from_dict(cls, data: Mapping, base: Optional[Path] = None) -> "CalibrateRequest":
        segmenter = _mapping(data.get("segmenter"), "segmenter")
        for key in SEGMENTER_PATHS:
            if segmenter.get(key):
                segmenter[key] = _path(segmenter[key], base)
        threads = data.get("threads")
        return cls(build(SegmenterSpec, segmenter, "segmenter"), _positive(data.get("repeats", CALIBRATION_PASSES), "repeats", 100),
                   None if threads is None else _positive(threads, "threads", MAX_THREADS))


def parse(data: Any, base: Optional[Path] = None):
    """A worker request: a :class:`RunRequest` (task ``run``) or a :class:`CalibrateRequest`."""
    if not isinstance(data, Mapping):
        raise InputError(f"the request must be a JSON object, got {type(data).__name__}")
    task = data.get("task", "run")
    if task == "calibrate":
        return CalibrateRequest.from_dict(data, base)
    if task != "run":
        raise InputError(f"task {task!r} is unknown; expected run or calibrate")
    return RunRequest.from_dict(data, base)


def method_fields(names: Sequence[str]) -> Dict[str, List[dataclasses.Field]]:
    """The method-specific settings fields of each named method (for front ends that build forms)."""
    from .explain import explainer_class

    return {n: explainer_class(n).method_fields() for n in names}
