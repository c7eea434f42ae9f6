"""The panel's settings object, :class:`RunSettings`, and what it reads from the engine: the one
request parser (:func:`parse_request`) and the methods and settings the explainer classes declare
(:func:`available_methods`, :func:`common_settings`), from which the panel builds its controls.

Everything here is plain data (no node, no Qt), so the settings are compared, saved in the
scene's parameter node (:mod:`parameters`) and turned into the engine's typed request the same way
in tests and in Slicer.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .mrml import InputError


def _segmenter_default(name: str):
    from xaiseg.request import SegmenterSpec
    from xaiseg.settings import defaults

    return defaults(SegmenterSpec)[name]


@dataclass
class RunSettings:
    """Everything the panel sets besides the input and prompt nodes; :meth:`request` turns it into
    the engine's typed :class:`~xaiseg.request.RunRequest`, whose parser checks every value.

    Empty or None fields take the request's defaults (``xaiseg.request`` and each method's
    ``Settings``), so the panel and the command line share one set of defaults.
    segmenter: ``litemedsam`` (built in), ``medsam`` (ViT-B ``checkpoint`` or ``url`` + ``sha256``)
    or ``torch`` (a TorchScript ``checkpoint`` file).  device: ``auto`` (CUDA, then MPS, then the
    CPU; resolved by :meth:`XAISegLogic.resolveDevice` before a run), ``cpu``, ``cuda``, ``mps``;
    force_cpu: run on the CPU whatever ``device`` says.  methods: explanation methods to run after
    segmenting (empty: segment only); ``common``: settings every method shares (seed,
    metric_steps, threshold, sanity, ...); ``method_settings``: per-method settings (those of
    methods not chosen are kept but not sent).  roi: fields of :class:`xaiseg.roi.RoiConfig`
    (empty: the embedding ROI; no ``margin`` or None: the ROI's own default, 0 for embedding and
    clip, 8 for box and mask).  slice_range: ``(first, last)`` array indices along the slicing
    axis, or None for every slice the prompt covers.  explain_slices: which slices to explain
    (text such as ``"80,82"`` / ``"80-84"`` or a list, parsed by the request; None: every segmented
    slice in the range).  preprocessing: fields of :class:`xaiseg.preprocess.Preprocessing`
    (e.g. ``{"mode": "window", "window": "brain", "clahe": True}``).  output_segmentation: ID of
    a segmentation node to add the mask to as one more segment ("" : a new segmentation node);
    show_3d: show the segmentation as a surface after loading.
    """

    name: str = ""
    segmenter: str = field(default_factory=lambda: _segmenter_default("kind"))
    checkpoint: str = ""
    sha256: str = ""
    url: str = ""
    device: str = field(default_factory=lambda: _segmenter_default("device"))
    force_cpu: bool = False
    class_index: Optional[int] = None
    methods: Tuple[str, ...] = ()
    common: Dict[str, Any] = field(default_factory=dict)
    method_settings: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    roi: Dict[str, Any] = field(default_factory=dict)
    slice_range: Optional[Tuple[int, int]] = None
    explain_slices: Any = None
    axis: str = "axial"
    margin: int = 0
    preprocessing: Dict[str, Any] = field(default_factory=dict)
    seed: Optional[int] = None
    threads: Optional[int] = None
    narrator: str = "template"  # "" for no narrative; "template" is offline and instant
    report_options: Dict[str, Any] = field(default_factory=dict)
    output_segmentation: str = field(default="", metadata={"reference": "outputSegmentation"})
    show_3d: bool = False

    def segmenter_options(self) -> Dict[str, Any]:
        """The request's ``segmenter`` object (only what the panel set)."""
        opts: Dict[str, Any] = {"kind": self.segmenter, "device": "cpu" if self.force_cpu else self.device}
        key = "torchscript" if self.segmenter == "torch" else "checkpoint"
        for k, v in ((key, self.checkpoint), ("sha256", self.sha256), ("class_index", self.class_index)):
            if v not in (None, ""):
                opts[k] = v
        if self.segmenter == "medsam" and self.url:
            opts["url"] = self.url
        return opts

    def roi_options(self) -> Dict[str, Any]:
        """The request's ``roi`` object: unset (None or empty) fields are left to the ROI's defaults."""
        return {k: v for k, v in self.roi.items() if v is not None and v != ""}

    def explain_options(self) -> Optional[Dict[str, Any]]:
        """The request's ``explain`` object, or None when no method is chosen."""
        if not self.methods:
            return None
        common = dict(self.common)
        if self.seed is not None:
            common.setdefault("seed", self.seed)
        return {"methods": [{"name": m, "settings": dict(self.method_settings.get(m, {}))} for m in self.methods],
                "common": common, "roi": self.roi_options(), "slices": self.explain_slices,
                "report": dict(self.report_options, narrator=self.narrator) if self.narrator else None}

    def request_dict(self, input_file: str, output_dir: str, prompt: Dict[str, Any], name: str) -> Dict[str, Any]:
        """The JSON form of the run request (what the worker reads)."""
        data: Dict[str, Any] = {"input": input_file, "output_dir": output_dir, "name": name, "prompt": prompt,
                                "segmenter": self.segmenter_options(), "preprocessing": dict(self.preprocessing),
                                "axis": self.axis, "margin": self.margin, "slice_range": self.slice_range,
                                "threads": self.threads}
        explain = self.explain_options()
        if explain:
            data["explain"] = explain
        return data

    def request(self, input_file: str, output_dir: str, prompt: Dict[str, Any], name: str, base=None):
        """The typed :class:`~xaiseg.request.RunRequest` (raises :class:`InputError` naming a bad value)."""
        return parse_request(self.request_dict(input_file, output_dir, prompt, name), base)

    def check(self) -> None:
        """Check the settings alone (no volume or prompt yet), the ROI too when no method is chosen."""
        self.request("input.nrrd", "output", {"type": "box", "lo_kji": [0, 0, 0], "hi_kji": [0, 0, 0]}, "check")
        if not self.methods:
            from xaiseg.errors import XAISegError
            from xaiseg.roi import RoiConfig
            from xaiseg.settings import build

            try:
                build(RoiConfig, self.roi_options(), "roi")
            except XAISegError as exc:
                raise InputError(str(exc)) from None

    def method_label(self) -> str:
        return "+".join(self.methods) if self.methods else "segmentation"


def parse_request(data: Dict[str, Any], base=None):
    """The engine's one parser, with its errors raised as the panel's :class:`InputError`."""
    from xaiseg.errors import XAISegError
    from xaiseg.request import RunRequest

    try:
        return RunRequest.from_dict(data, base)
    except XAISegError as exc:
        raise InputError(str(exc)) from None


def describe_fields(settings_cls: type, fields: List[dataclasses.Field]) -> List[Dict[str, Any]]:
    """Each field as a form describes it: name, command-line flag, type (``bool``, ``int``,
    ``float``, ``str`` or the type's text), default, help, choices, minimum, maximum.  Fields
    hidden from the command line (``cli=False``) are hidden from the panel too."""
    from xaiseg.settings import flag_of, hints

    types = hints(settings_cls)
    out = []
    for f in fields:
        meta = f.metadata or {}
        if not meta.get("cli", True):
            continue
        tp = types[f.name]
        out.append({"name": f.name, "flag": flag_of(f), "type": getattr(tp, "__name__", str(tp)),
                    "default": None if f.default is dataclasses.MISSING else f.default,
                    "help": meta.get("help", ""), "choices": meta.get("choices"),
                    "minimum": meta.get("minimum"), "maximum": meta.get("maximum")})
    return out


def available_methods() -> List[Dict[str, Any]]:
    """Every registered explanation method as the panel lists it: name, title, limits, whether it
    perturbs, its requirements and its own settings (:func:`describe_fields`)."""
    from xaiseg.explain import EXPLAINERS

    return [{"name": name, "title": cls.title, "limits": cls.limits, "perturbs": cls.perturbs,
             "requirements": [r.spec for r in cls.requirements],
             "settings": describe_fields(cls.Settings, cls.method_fields())}
            for name, cls in EXPLAINERS.items()]


def common_settings() -> List[Dict[str, Any]]:
    """The settings every method shares (:class:`xaiseg.explain.CommonSettings`), described as
    :func:`available_methods` describes a method's own."""
    from xaiseg.explain import CommonSettings

    return describe_fields(CommonSettings, list(dataclasses.fields(CommonSettings)))
