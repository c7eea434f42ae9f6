"""The widget's side of the panel form: reads and sets the controls :data:`panel.BINDINGS` names,
makes the method checkboxes and the settings controls from the explainer classes
(:func:`panel.control_groups`), and shows or enables controls as :func:`panel.control_states`
says.  It imports no Qt itself (the widget hands it the ``qt`` module and its ``ui``), so the
library stays importable on slicer-core; what to show for which values is decided in :mod:`panel`.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Tuple

from . import panel


class FormBinding:
    """The panel's controls as one form of values (see :func:`panel.from_form`)."""

    def __init__(self, ui) -> None:
        self.ui = ui
        self.methodBoxes: Dict[str, Any] = {}
        self.controls: Dict[str, List[Tuple[panel.Control, Any]]] = {}
        self.groups: Dict[str, Any] = {}

    def build(self, qt, onChange: Callable) -> None:
        """Fill the combo boxes the .ui leaves empty, make the generated controls, and call
        ``onChange`` whenever the user changes any control of the form."""
        for key, name, kind in panel.BINDINGS:
            widget = getattr(self.ui, name)
            if kind == "choice" and widget.count == 0:
                for value in panel.choices(key):
                    widget.addItem(panel.choice_label(key, value))
            widget.connect(panel.SIGNALS[kind], onChange)
        for selector in (self.ui.segmentSelector, self.ui.referenceSegmentSelector):
            selector.connect(panel.SIGNALS["node"], onChange)
        for method in panel.method_list():
            box = qt.QCheckBox(method["title"])
            box.toolTip = method["limits"]
            box.connect("toggled(bool)", onChange)
            self.ui.methodsWidget.layout().addWidget(box)
            self.methodBoxes[method["name"]] = box
        for group, title, controls in panel.control_groups():
            frame = qt.QGroupBox(title)
            form = qt.QFormLayout(frame)
            self.controls[group] = [(c, self._make(qt, c, onChange)) for c in controls]
            for control, widget in self.controls[group]:
                form.addRow(control.label + ":", widget)
            self.groups[group] = frame
            if controls:
                self.ui.methodSettingsWidget.layout().addWidget(frame)

    @staticmethod
    def _make(qt, control: panel.Control, onChange: Callable):
        widget = {"check": qt.QCheckBox, "choice": qt.QComboBox, "int": qt.QSpinBox,
                  "float": qt.QDoubleSpinBox}.get(control.kind, qt.QLineEdit)()
        if control.kind == "choice":
            for value in control.choices:
                widget.addItem(str(value))
        elif control.kind in ("int", "float"):
            cast = int if control.kind == "int" else float
            if control.kind == "float":
                widget.decimals, widget.singleStep = control.decimals, control.step
            widget.minimum, widget.maximum = cast(control.minimum), cast(control.maximum)
        setattr(widget, control.qt_property, control.raw(control.default))
        widget.toolTip = control.tooltip
        widget.connect(control.signal, onChange)
        return widget

    # ------------------------------------------------------------------ values

    @staticmethod
    def get(widget, kind: str, key: str) -> Any:
        if kind in ("node", "segment"):
            node = widget.currentNode()
            node_id = node.GetID() if node is not None else ""
            return [node_id, widget.currentSegmentID() or ""] if kind == "segment" else node_id
        if kind == "choice":
            options = panel.choices(key)
            return options[widget.currentIndex] if 0 <= widget.currentIndex < len(options) else options[0]
        if kind == "range":
            return [widget.minimumValue, widget.maximumValue]
        return getattr(widget, panel.PROPERTY[kind])

    def set(self, widget, kind: str, key: str, value: Any) -> None:
        if value is None or self.get(widget, kind, key) == value:
            return  # unchanged controls are left alone (no cursor jumps, no signals)
        if kind == "node":
            widget.setCurrentNodeID(value)
        elif kind == "segment":
            widget.setCurrentNodeID(value[0])
            widget.setCurrentSegmentID(value[1])
        elif kind == "choice":
            options = panel.choices(key)
            widget.currentIndex = options.index(value) if value in options else 0
        elif kind == "range":
            widget.setValues(value[0], value[1])
        else:
            setattr(widget, panel.PROPERTY[kind], value)

    def values(self) -> Dict[str, Any]:
        """Every control's value, keyed as :func:`panel.from_form` reads them."""
        values = {key: self.get(getattr(self.ui, name), kind, key) for key, name, kind in panel.BINDINGS}
        values["methods"] = [name for name, box in self.methodBoxes.items() if box.checked]
        values["settings"] = {group: {c.name: c.value(getattr(w, c.qt_property)) for c, w in made}
                              for group, made in self.controls.items()}
        return values

    def show(self, values: Dict[str, Any]) -> None:
        """Set every control to ``values`` (:func:`panel.form_values`)."""
        for key, name, kind in panel.BINDINGS:
            self.set(getattr(self.ui, name), kind, key, values[key])
        for name, box in self.methodBoxes.items():
            box.checked = name in values["methods"]
        for group, made in self.controls.items():
            for control, widget in made:
                raw = control.raw(values["settings"].get(group, {}).get(control.name, control.default))
                if getattr(widget, control.qt_property) != raw:
                    setattr(widget, control.qt_property, raw)

    def update(self, values: Dict[str, Any]) -> None:
        """Show and enable the controls that apply to ``values``."""
        visible, enabled = panel.control_states(values)
        for name, on in visible.items():
            for widget in (getattr(self.ui, name), getattr(self.ui, name + "Label", None)):  # a row and its label
                if widget is not None:
                    widget.setVisible(on)
        for name, on in enabled.items():
            getattr(self.ui, name).enabled = on
        for group, frame in self.groups.items():
            frame.setVisible(group == "common" or group in values["methods"])
