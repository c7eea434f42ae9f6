"""The panel's controls as plain values, and the settings they make.

The widget is a thin binding: :data:`BINDINGS` names each control of the .ui, the kind of value it
holds and the form key it fills; the method checkboxes and every setting of every method (and the
settings the methods share) are generated from the explainer classes (:func:`control_groups`).
:func:`from_form` turns the form's values into :class:`RunSettings` and :class:`PanelState`;
:func:`form_values` does the reverse when a scene is loaded.  Both are Qt-free and tested here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from .parameters import PROMPT_TYPES, PanelState
from .run_settings import RunSettings, available_methods, common_settings

DEVICES = ("auto", "cpu", "cuda", "mps")
NARRATORS = ("template", "llava", "")
PREPROCESSING_MODES = ("percentile", "window", "level_width", "minmax")
NO_MARGIN = -1  # the margin spin box's "auto" (the ROI's own default margin)

# (form key, widget name in Resources/UI/XAISegExtension.ui, kind of value)
BINDINGS: Tuple[Tuple[str, str, str], ...] = (
    ("input_volume", "inputVolumeSelector", "node"),
    ("name", "structureNameLineEdit", "text"),
    ("prompt_type", "promptTypeComboBox", "choice"),
    ("box", "roiSelector", "node"),
    ("points", "pointsSelector", "node"),
    ("negative_points", "negativePointsSelector", "node"),
    ("prompt_segment", "segmentSelector", "segment"),
    ("output_segmentation", "outputSegmentationSelector", "node"),
    ("segmenter", "segmenterComboBox", "choice"),
    ("checkpoint", "checkpointPathLineEdit", "path"),
    ("url", "checkpointUrlLineEdit", "text"),
    ("sha256", "sha256LineEdit", "text"),
    ("device", "deviceComboBox", "choice"),
    ("force_cpu", "forceCpuCheckBox", "check"),
    ("preprocessing_mode", "preprocessingModeComboBox", "choice"),
    ("window", "windowPresetComboBox", "choice"),
    ("level", "windowLevelSpinBox", "float"),
    ("width", "windowWidthSpinBox", "float"),
    ("lower", "lowerPercentileSpinBox", "float"),
    ("upper", "upperPercentileSpinBox", "float"),
    ("clahe", "claheCheckBox", "check"),
    ("roi_source", "roiSourceComboBox", "choice"),
    ("roi_margin", "roiMarginSpinBox", "int"),
    ("clip_prompts", "clipPromptsLineEdit", "text"),
    ("clip_model", "clipWeightsPathLineEdit", "path"),
    ("use_reference", "useReferenceCheckBox", "check"),
    ("reference_segment", "referenceSegmentSelector", "segment"),
    ("all_slices", "allSlicesCheckBox", "check"),
    ("slice_range", "sliceRangeWidget", "range"),
    ("explain_slices", "explainSlicesLineEdit", "text"),
    ("narrator", "narratorComboBox", "choice"),
    ("llava_model", "llavaPathLineEdit", "path"),
    ("show_3d", "show3DCheckBox", "check"),
    ("opacity", "opacitySliderWidget", "float"),
)
# the property that holds the value of each kind of control (node, segment, choice and range
# controls are read and set through their methods)
PROPERTY = {"text": "text", "path": "currentPath", "check": "checked", "int": "value", "float": "value"}
# the signal each kind of control emits when the user changes it
SIGNALS = {"node": "currentNodeChanged(vtkMRMLNode*)", "segment": "currentSegmentChanged(QString)",
           "choice": "currentIndexChanged(int)", "text": "textChanged(QString)", "path": "currentPathChanged(QString)",
           "check": "toggled(bool)", "int": "valueChanged(int)", "float": "valueChanged(double)",
           "range": "valuesChanged(double,double)"}


def choices(key: str) -> Tuple[Any, ...]:
    """The values a choice control offers, in the order of its items (from the engine where it
    defines them)."""
    from xaiseg.preprocess import CT_WINDOWS
    from xaiseg.request import SEGMENTERS
    from xaiseg.roi import SOURCES

    table = {"prompt_type": PROMPT_TYPES, "segmenter": SEGMENTERS, "device": DEVICES, "narrator": NARRATORS,
             "preprocessing_mode": PREPROCESSING_MODES, "window": tuple(CT_WINDOWS), "roi_source": SOURCES}
    return tuple(table[key])


def choice_label(key: str, value: Any) -> str:
    """Item text for combo boxes the .ui leaves empty (filled at setup)."""
    if key == "window":
        from xaiseg.preprocess import CT_WINDOWS

        level, width = CT_WINDOWS[value]
        return f"{value} (level {level:g}, width {width:g} HU)"
    return str(value)


# ----------------------------------------------------------------------------------------- generated

@dataclass(frozen=True)
class Control:
    """One generated control: a setting of a method (``group`` is its name) or of every method
    (``group`` "common").  kind: ``check``, ``int``, ``float``, ``choice`` or ``text``."""

    group: str
    name: str
    label: str
    kind: str
    default: Any
    tooltip: str = ""
    choices: Tuple[Any, ...] = ()
    minimum: float = -1e9
    maximum: float = 1e9
    decimals: int = 3
    step: float = 1.0

    @property
    def qt_property(self) -> str:
        """The Qt property holding the control's raw value (a combo box's index for a choice)."""
        return {"check": "checked", "choice": "currentIndex", "int": "value", "float": "value"}.get(self.kind, "text")

    @property
    def signal(self) -> str:
        return {"check": "toggled(bool)", "choice": "currentIndexChanged(int)", "int": "valueChanged(int)",
                "float": "valueChanged(double)"}.get(self.kind, "textChanged(QString)")

    def raw(self, value: Any) -> Any:
        """The control's raw value for a setting's value (the inverse of :meth:`value`)."""
        if self.kind == "choice":
            return self.choices.index(value) if value in self.choices else self.choices.index(self.default)
        return "" if value is None and self.kind == "text" else value

    def value(self, raw: Any) -> Any:
        """A control's raw value (check state, number, combo index, text) as the setting's type."""
        if self.kind == "choice":
            return self.choices[int(raw)] if 0 <= int(raw) < len(self.choices) else self.default
        if self.kind == "check":
            return bool(raw)
        if self.kind == "int":
            return int(raw)
        if self.kind == "float":
            return float(raw)
        return str(raw)


def _control(group: str, spec: Dict[str, Any]) -> Control:
    kind = {"bool": "check", "int": "int", "float": "float"}.get(spec["type"], "text")
    if spec.get("choices"):
        kind = "choice"
    default = spec["default"]
    lo = spec["minimum"] if spec.get("minimum") is not None else -1e9
    hi = spec["maximum"] if spec.get("maximum") is not None else 1e9
    # fine steps for a share (default within 1, no maximum above 1), whole ones for such as an aspect (0 - 10)
    fine = kind == "float" and default is not None and abs(float(default)) <= 1 and \
        (spec.get("maximum") is None or spec["maximum"] <= 1)
    step = 0.05 if fine else 1.0
    # the command line's word for it (a switch's flag may say the opposite: its name then)
    label = (spec["name"] if kind == "check" else spec.get("flag") or spec["name"]).lstrip("-")
    label = label.replace("-", " ").replace("_", " ")
    return Control(group, spec["name"], label, kind,
                   "" if default is None and kind == "text" else default, spec.get("help", ""),
                   tuple(spec.get("choices") or ()), lo, hi, 3, step)


def method_list() -> List[Dict[str, Any]]:
    """The methods the panel offers a checkbox for (every registered explainer)."""
    return available_methods()


def control_groups() -> List[Tuple[str, str, List[Control]]]:
    """``(group, title, controls)``: the settings every method shares, then each method's own."""
    groups = [("common", "Every method", [_control("common", s) for s in common_settings()])]
    for m in method_list():
        groups.append((m["name"], m["title"], [_control(m["name"], s) for s in m["settings"]]))
    return groups


# ----------------------------------------------------------------------------------------- form

def _split(text: str) -> List[str]:
    return [p.strip() for p in (text or "").split(";") if p.strip()]


def _preprocessing(v: Dict[str, Any]) -> Dict[str, Any]:
    mode = v.get("preprocessing_mode") or "percentile"
    if mode == "window":
        out: Dict[str, Any] = {"mode": "window", "window": v["window"]}
    elif mode == "level_width":
        out = {"mode": "window", "level": float(v["level"]), "width": float(v["width"])}
    elif mode == "minmax":
        out = {"mode": "minmax"}
    else:
        out = {"mode": "percentile", "lower": float(v["lower"]), "upper": float(v["upper"])}
    if v.get("clahe"):
        out["clahe"] = True
    return out


def from_form(v: Dict[str, Any], base: Optional[RunSettings] = None) -> Tuple[RunSettings, PanelState]:
    """The settings and panel state of the form's values (keys of :data:`BINDINGS`, plus
    ``methods``: the checked methods, and ``settings``: {group: {setting: value}}).  A value
    the form shows disabled is not sent: the checkpoint for LiteMedSAM, the URL except for
    MedSAM, the CLIP fields except for the CLIP ROI, the LLaVA folder except for LLaVA.  Fields
    the panel has no control for (axis, margin, class index, threads) come from ``base``."""
    base = base or RunSettings()
    segmenter, narrator, source = v["segmenter"], v["narrator"], v["roi_source"]
    roi: Dict[str, Any] = {"source": source}
    margin = v.get("roi_margin")
    if margin is not None and int(margin) > NO_MARGIN:
        roi["margin"] = int(margin)
    if source == "clip":
        roi.update(clip_model=v.get("clip_model") or "", clip_prompts=_split(v.get("clip_prompts", "")))
    groups = dict(v.get("settings") or {})
    lo_hi = v.get("slice_range")
    prompt_seg, ref_seg = v.get("prompt_segment") or ("", ""), v.get("reference_segment") or ("", "")
    settings = RunSettings(
        name=(v.get("name") or "").strip(), segmenter=segmenter,
        checkpoint=(v.get("checkpoint") or "") if segmenter != "litemedsam" else "",
        url=(v.get("url") or "").strip() if segmenter == "medsam" else "",
        sha256=(v.get("sha256") or "").strip() if segmenter != "litemedsam" else "",
        device=v["device"], force_cpu=bool(v.get("force_cpu")), methods=tuple(v.get("methods") or ()),
        common=dict(groups.pop("common", {})), method_settings={g: dict(s) for g, s in groups.items()},
        roi=roi, slice_range=None if v.get("all_slices", True) or not lo_hi else (int(lo_hi[0]), int(lo_hi[1])),
        explain_slices=(v.get("explain_slices") or "").strip() or None, preprocessing=_preprocessing(v),
        narrator=narrator, report_options={"llava_model": v.get("llava_model") or ""} if narrator == "llava" else {},
        output_segmentation=v.get("output_segmentation") or "", show_3d=bool(v.get("show_3d")),
        axis=base.axis, margin=base.margin, class_index=base.class_index, threads=base.threads)
    state = PanelState(
        input_volume=v.get("input_volume") or "", prompt_type=v["prompt_type"], box=v.get("box") or "",
        points=v.get("points") or "", negative_points=v.get("negative_points") or "",
        prompt_segmentation=prompt_seg[0] or "", prompt_segment=prompt_seg[1] or "",
        use_reference=bool(v.get("use_reference")), reference_segmentation=ref_seg[0] or "",
        reference_segment=ref_seg[1] or "", opacity=float(v.get("opacity", 0.5)))
    return settings, state


def _preprocessing_values(p: Dict[str, Any]) -> Dict[str, Any]:
    from xaiseg.preprocess import CT_WINDOWS, Preprocessing
    from xaiseg.settings import defaults

    d = defaults(Preprocessing)
    window = p.get("window") or next(iter(CT_WINDOWS))
    mode = p.get("mode", d["mode"])
    if mode == "window":
        mode = "window" if p.get("window") else "level_width"
    level, width = CT_WINDOWS[window]
    return {"preprocessing_mode": mode, "window": window, "level": float(p.get("level", level) or level),
            "width": float(p.get("width", width) or width), "lower": float(p.get("lower", d["lower"])),
            "upper": float(p.get("upper", d["upper"])), "clahe": bool(p.get("clahe", d["clahe"]))}


def form_values(settings: RunSettings, state: Optional[PanelState] = None) -> Dict[str, Any]:
    """The value of every control for ``settings`` and ``state`` (what the widget shows after a
    scene is loaded).  ``slice_range`` is None when every slice is used (the range control keeps
    its values)."""
    state = state or PanelState()
    roi = settings.roi or {}
    common = dict(settings.common)
    if settings.seed is not None:
        common.setdefault("seed", settings.seed)
    values: Dict[str, Any] = {
        "input_volume": state.input_volume, "name": settings.name, "prompt_type": state.prompt_type,
        "box": state.box, "points": state.points, "negative_points": state.negative_points,
        "prompt_segment": [state.prompt_segmentation, state.prompt_segment],
        "output_segmentation": settings.output_segmentation, "segmenter": settings.segmenter,
        "checkpoint": settings.checkpoint, "url": settings.url, "sha256": settings.sha256,
        "device": settings.device, "force_cpu": settings.force_cpu,
        "roi_source": roi.get("source") or _roi_default("source"),
        "roi_margin": NO_MARGIN if roi.get("margin") is None else int(roi["margin"]),
        "clip_prompts": "; ".join(roi.get("clip_prompts") or []), "clip_model": roi.get("clip_model") or "",
        "use_reference": state.use_reference,
        "reference_segment": [state.reference_segmentation, state.reference_segment],
        "all_slices": settings.slice_range is None,
        "slice_range": list(settings.slice_range) if settings.slice_range is not None else None,
        "explain_slices": _slices_text(settings.explain_slices), "narrator": settings.narrator,
        "llava_model": (settings.report_options or {}).get("llava_model") or "", "show_3d": settings.show_3d,
        "opacity": state.opacity, "methods": list(settings.methods), "settings": {}}
    values.update(_preprocessing_values(settings.preprocessing or {}))
    for group, _, controls in control_groups():
        given = common if group == "common" else settings.method_settings.get(group, {})
        values["settings"][group] = {c.name: given.get(c.name, c.default) for c in controls}
    return values


def _roi_default(name: str) -> Any:
    from xaiseg.roi import RoiConfig

    return getattr(RoiConfig(), name)


def _slices_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return ",".join(str(int(k)) for k in value)


def control_states(v: Dict[str, Any]) -> Tuple[Dict[str, bool], Dict[str, bool]]:
    """``(visible, enabled)`` by widget name for the form's values: the prompt type's selectors,
    and the controls that apply only to some segmenter, ROI source, narrator or intensity mode."""
    kind, mode = v["prompt_type"], v["preprocessing_mode"]
    visible = {"roiSelector": kind == "box", "roiPlaceWidget": kind == "box", "boxFromSliceWidget": kind == "box",
               "pointsSelector": kind == "points", "pointsPlaceWidget": kind == "points",
               "negativePointsSelector": kind == "points", "negativePointsPlaceWidget": kind == "points",
               "segmentSelector": kind == "segment"}
    own_model, clip = v["segmenter"] != "litemedsam", v["roi_source"] == "clip"
    enabled = {"checkpointPathLineEdit": own_model, "checkpointUrlLineEdit": v["segmenter"] == "medsam",
               "sha256LineEdit": own_model, "clipPromptsLineEdit": clip, "clipWeightsPathLineEdit": clip,
               "referenceSegmentSelector": bool(v["use_reference"]),
               "llavaPathLineEdit": v["narrator"] == "llava", "sliceRangeWidget": not v["all_slices"],
               "windowPresetComboBox": mode == "window", "windowLevelWidthWidget": mode == "level_width",
               "percentilesWidget": mode == "percentile", "deviceComboBox": not v["force_cpu"]}
    return visible, enabled
