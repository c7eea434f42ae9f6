"""The panel's state in the scene: one ``vtkMRMLScriptedModuleNode`` (the module's parameter node)
holds every field of :class:`~run_settings.RunSettings` and of :class:`PanelState`, so a scene file
or an MRB brings the panel back as it was.

Values are parameters (JSON text, one per field); nodes (input volume, prompt ROI or points,
negative points, prompt and reference segmentations, output segmentation) are node references,
which MRML keeps right when it renames node IDs on import.  :func:`write_parameters` and
:func:`read_parameters` are plain functions of a node, so tests drive them on slicer-core's MRML;
the widget only binds its controls to them (:mod:`panel`).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Optional, Tuple

from xaiseg.explain.registry import DEFAULT_METHODS  # the command line's default too

from .mrml import InputError
from .run_settings import RunSettings

MODULE_NAME = "XAISegExtension"
PARAMETERS_VERSION = "3"
#: version 1 (before stop 28) saved every common control, so its ``fill`` "zero" was that version's
#: default rather than a choice; since version 2 the default is "auto" (RISE inpaints its cells)
FILL_DEFAULT_BEFORE = {"1": "zero"}
#: versions before 3 (stop 45) saved every occlusion control, so an ``aspect`` of 1 (squares) was the
#: default of the day rather than a choice; since version 3 the default is 0 (strips along the structure)
OCCLUSION_ASPECT_BEFORE = {"1": 1.0, "2": 1.0}
PROMPT_TYPES = ("box", "points", "segment")


def _ref(role: str, default: str = "") -> Any:
    return field(default=default, metadata={"reference": role})


@dataclass
class PanelState:
    """What the panel holds besides the :class:`RunSettings`: the input and prompt nodes (node
    IDs, "" for none), the prompt type (``box``, ``points`` or ``segment``), the reference segment
    for pointing-game metrics, and the saliency opacity."""

    input_volume: str = _ref("inputVolume")
    prompt_type: str = "box"
    box: str = _ref("promptBox")
    points: str = _ref("promptPoints")
    negative_points: str = _ref("negativePoints")
    prompt_segmentation: str = _ref("promptSegmentation")
    prompt_segment: str = ""
    use_reference: bool = False
    reference_segmentation: str = _ref("referenceSegmentation")
    reference_segment: str = ""
    opacity: float = 0.5

    def nodes(self, scene) -> Tuple[Any, Any, Any, Any]:
        """``(volume, prompt, negative points, target)`` as :meth:`XAISegLogic.start` takes them;
        the prompt is a node or ``(segmentation, segment ID)``, the target None unless used."""
        get = lambda node_id: scene.GetNodeByID(node_id) if node_id else None  # noqa: E731
        if self.prompt_type not in PROMPT_TYPES:
            raise InputError(f"prompt type {self.prompt_type!r} is unknown; expected one of {', '.join(PROMPT_TYPES)}")
        negative = None
        if self.prompt_type == "box":
            prompt = get(self.box)
        elif self.prompt_type == "points":
            prompt, negative = get(self.points), get(self.negative_points)
        else:
            seg = get(self.prompt_segmentation)
            prompt = (seg, self.prompt_segment) if seg is not None and self.prompt_segment else None
        target = None
        reference = get(self.reference_segmentation)
        if self.use_reference and reference is not None and self.reference_segment:
            target = (reference, self.reference_segment)
        return get(self.input_volume), prompt, negative, target


def default_settings() -> RunSettings:
    """The panel's settings before the user changes anything: the request's defaults, the command
    line's default method, and the device detected (``auto``)."""
    return RunSettings(methods=DEFAULT_METHODS, device="auto")


def _fields(obj) -> Tuple[dataclasses.Field, ...]:
    return dataclasses.fields(obj)


def write_parameters(node, settings: RunSettings, state: Optional[PanelState] = None) -> None:
    """Write ``settings`` (and ``state``) into the parameter node, one modified event in all."""
    was = node.StartModify()
    try:
        node.SetParameter("version", PARAMETERS_VERSION)
        for obj in (settings, state or PanelState()):
            for f in _fields(obj):
                value = getattr(obj, f.name)
                role = f.metadata.get("reference")
                if role:
                    node.SetNodeReferenceID(role, value or None)
                else:
                    node.SetParameter(f.name, json.dumps(value, sort_keys=True))
    finally:
        node.EndModify(was)


def _read_into(obj, node):
    changes = {}
    for f in _fields(obj):
        role = f.metadata.get("reference")
        if role:
            ref = node.GetNodeReference(role)
            changes[f.name] = ref.GetID() if ref is not None else ""
            continue
        text = node.GetParameter(f.name)
        if not text:
            continue  # not saved (an older scene): the default
        try:
            value = json.loads(text)
        except ValueError:
            raise InputError(f"parameter {f.name!r} of node '{node.GetName()}' is {text!r}, which is not valid "
                             "JSON; expected a value saved by XAISeg") from None
        if isinstance(value, list) and "Tuple" in str(f.type):
            value = tuple(value)
        changes[f.name] = value
    return dataclasses.replace(obj, **changes)


def read_parameters(node) -> Tuple[RunSettings, PanelState]:
    """The settings and panel state a parameter node holds; a field it does not hold takes the
    panel's default, a node reference whose node is gone becomes "" (none)."""
    settings = _read_into(default_settings(), node)
    version = node.GetParameter("version") or "1"
    old_default = FILL_DEFAULT_BEFORE.get(version)
    if old_default is not None and settings.common.get("fill") == old_default:
        settings = dataclasses.replace(settings, common={k: v for k, v in settings.common.items() if k != "fill"})
    occlusion = settings.method_settings.get("occlusion") or {}
    if "aspect" in occlusion and occlusion["aspect"] == OCCLUSION_ASPECT_BEFORE.get(version):
        kept = {k: v for k, v in occlusion.items() if k != "aspect"}
        settings = dataclasses.replace(settings, method_settings=dict(settings.method_settings, occlusion=kept))
    return settings, _read_into(PanelState(), node)


def parameter_node(scene, create: bool = True):
    """The module's parameter node in ``scene`` (a singleton, as Slicer's scripted modules keep
    theirs, so loading a scene updates it in place); made with the panel's defaults when missing."""
    import slicer

    node = scene.GetSingletonNode(MODULE_NAME, "vtkMRMLScriptedModuleNode")
    if node is not None or not create:
        return node
    node = slicer.vtkMRMLScriptedModuleNode()
    node.SetSingletonTag(MODULE_NAME)
    node.SetModuleName(MODULE_NAME)
    node.SetName(scene.GenerateUniqueName(MODULE_NAME))
    state = PanelState()
    first = scene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
    if first is not None:
        state.input_volume = first.GetID()
    node = scene.AddNode(node)
    write_parameters(node, default_settings(), state)
    return node


class PanelMixin:
    """The panel's entry points on :class:`XAISegLogic`: its parameter node, and a run or cost
    estimate from the panel's settings and state (needs ``self.scene``, :meth:`start`,
    :meth:`estimateCost`)."""

    def panelParameterNode(self, create: bool = True):
        return parameter_node(self.scene, create)

    def savePanel(self, settings: RunSettings, state: PanelState) -> None:
        write_parameters(self.panelParameterNode(), settings, state)

    def loadPanel(self) -> Tuple[RunSettings, PanelState]:
        return read_parameters(self.panelParameterNode())

    def startFromPanel(self, settings: RunSettings, state: PanelState):
        """:meth:`start` with the nodes the panel state names."""
        volume, prompt, negative, target = state.nodes(self.scene)
        return self.start(volume, prompt, settings, negative, target)

    def estimateFromPanel(self, settings: RunSettings, state: PanelState):
        """:meth:`estimateCost` for the panel, or None while the input or the prompt is missing."""
        volume, prompt, negative, _ = state.nodes(self.scene)
        if volume is None or prompt is None:
            return None
        return self.estimateCost(volume, prompt, settings, negative)
