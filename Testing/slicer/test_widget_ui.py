"""The panel's .ui file and the Widget code agree: every ``self.ui.NAME`` the Widget (and its form
binding) uses exists in the .ui with a class Qt or Slicer provides, every signal it connects exists
on that class, every control the form binds (XAISegExtensionLib.panel.BINDINGS) fits its kind, no
method is hard-coded (the checkboxes and settings controls are made from the explainer classes),
and the node selectors ask for MRML classes that exist (checked on slicer-core's real MRML)."""
import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[2] / "XAISegExtension"
UI = MODULE / "Resources" / "UI" / "XAISegExtension.ui"
WIDGET = MODULE / "XAISegExtension.py"
BINDING = MODULE / "XAISegExtensionLib" / "binding.py"

QT_CLASSES = {"QWidget", "QLabel", "QLineEdit", "QComboBox", "QCheckBox", "QSpinBox", "QDoubleSpinBox",
              "QPushButton", "QProgressBar", "QTextEdit", "QPlainTextEdit"}
# Widgets 3D Slicer provides (CTK and Slicer's MRML/module widgets), with the header Designer needs.
SLICER_CLASSES = {"ctkCollapsibleButton": "ctkCollapsibleButton.h", "ctkPathLineEdit": "ctkPathLineEdit.h",
                  "ctkRangeWidget": "ctkRangeWidget.h", "ctkSliderWidget": "ctkSliderWidget.h",
                  "qMRMLWidget": "qMRMLWidget.h", "qMRMLNodeComboBox": "qMRMLNodeComboBox.h",
                  "qMRMLSegmentSelectorWidget": "qMRMLSegmentSelectorWidget.h", "qSlicerWidget": "qSlicerWidget.h",
                  "qSlicerMarkupsPlaceWidget": "qSlicerMarkupsPlaceWidget.h"}
SIGNALS = {
    "qMRMLNodeComboBox": {"currentNodeChanged(vtkMRMLNode*)", "currentNodeChanged(bool)", "nodeAdded(vtkMRMLNode*)"},
    "qMRMLSegmentSelectorWidget": {"currentSegmentChanged(QString)", "currentNodeChanged(vtkMRMLNode*)"},
    "QComboBox": {"currentIndexChanged(int)", "currentTextChanged(QString)"},
    "QCheckBox": {"toggled(bool)", "stateChanged(int)", "clicked(bool)"},
    "QPushButton": {"clicked(bool)", "clicked()", "toggled(bool)"},
    "QSpinBox": {"valueChanged(int)"},
    "QDoubleSpinBox": {"valueChanged(double)"},
    "QLineEdit": {"textChanged(QString)", "editingFinished()"},
    "ctkRangeWidget": {"valuesChanged(double,double)", "minimumValueChanged(double)", "maximumValueChanged(double)"},
    "ctkSliderWidget": {"valueChanged(double)"},
    "ctkPathLineEdit": {"currentPathChanged(QString)"},
}


def ui_widgets():
    root = ET.parse(UI).getroot()
    widgets = {w.get("name"): w for w in root.iter("widget")}
    custom = {c.findtext("class"): c.findtext("header") for c in root.iter("customwidget")}
    return widgets, custom, root


def widget_uses():
    """(name, attribute-or-None, signal-or-None) for every ``self.ui.NAME`` in the Widget code."""
    tree = ast.parse(WIDGET.read_text() + "\n" + BINDING.read_text())
    uses = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"
                and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"):
            uses.append(node.attr)
    signals = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "connect"
                and node.args and isinstance(node.args[0], ast.Constant)):
            target = node.func.value
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Attribute) and target.value.attr == "ui":
                signals.append((target.attr, node.args[0].value))
    return sorted(set(uses)), signals


def test_every_widget_the_code_uses_is_in_the_ui_with_a_known_class():
    widgets, custom, _ = ui_widgets()
    used, _ = widget_uses()
    assert len(used) > 40, "the parser found too few widget uses"
    missing = [n for n in used if n not in widgets]
    assert not missing, f"the Widget uses {missing}, which Resources/UI/XAISegExtension.ui does not define"
    unknown = {n: widgets[n].get("class") for n in used
               if widgets[n].get("class") not in QT_CLASSES | set(SLICER_CLASSES)}
    assert not unknown, f"widgets of classes neither Qt nor Slicer provides: {unknown}"


def test_custom_widgets_are_declared_with_slicer_headers():
    widgets, custom, _ = ui_widgets()
    used_custom = {w.get("class") for w in widgets.values()} - QT_CLASSES
    assert used_custom <= set(custom), f"undeclared custom widgets: {used_custom - set(custom)}"
    for cls, header in custom.items():
        assert SLICER_CLASSES.get(cls) == header, f"{cls} declared with header {header}"


def test_connected_signals_exist_on_their_widgets():
    widgets, _, _ = ui_widgets()
    _, signals = widget_uses()
    assert signals
    for name, signal in signals:
        cls = widgets[name].get("class")
        assert signal in SIGNALS.get(cls, set()), f"{name} ({cls}) has no signal {signal}"


def test_widget_names_are_unique_and_the_top_level_is_an_mrml_widget():
    _, _, root = ui_widgets()
    names = [w.get("name") for w in root.iter("widget")]
    assert len(names) == len(set(names)), "duplicate widget names in the .ui"
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == "XAISegExtension"
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    mrml_widgets = {n for n, w in ui_widgets()[0].items() if w.get("class") in
                    ("qMRMLNodeComboBox", "qMRMLSegmentSelectorWidget", "qSlicerMarkupsPlaceWidget")}
    assert mrml_widgets <= receivers, f"not given the scene: {mrml_widgets - receivers}"


def test_node_selectors_ask_for_mrml_classes_that_exist():
    slicer = pytest.importorskip("slicer")
    widgets, _, _ = ui_widgets()
    scene = slicer.vtkMRMLScene()
    seen = 0
    for name, w in widgets.items():
        if w.get("class") != "qMRMLNodeComboBox":
            continue
        types = [s.text for s in w.find("property[@name='nodeTypes']").iter("string")]
        for t in types:
            node = scene.CreateNodeByClass(t)
            assert node is not None, f"{name} asks for {t}, which MRML does not know"
            seen += 1
    assert seen >= 4


def test_advanced_settings_start_collapsed_and_apply_starts_disabled():
    widgets, _, _ = ui_widgets()

    def prop(name, key):
        el = widgets[name].find(f"property[@name='{key}']")
        return el[0].text if el is not None else None

    assert prop("advancedCollapsibleButton", "collapsed") == "true"
    assert prop("applyButton", "enabled") == "false"


KIND_CLASSES = {"node": {"qMRMLNodeComboBox"}, "segment": {"qMRMLSegmentSelectorWidget"}, "choice": {"QComboBox"},
                "text": {"QLineEdit"}, "path": {"ctkPathLineEdit"}, "check": {"QCheckBox"}, "int": {"QSpinBox"},
                "float": {"QDoubleSpinBox", "ctkSliderWidget"}, "range": {"ctkRangeWidget"}}


def test_every_bound_control_is_in_the_ui_with_a_class_and_signal_of_its_kind():
    from XAISegExtensionLib import panel

    widgets, _, _ = ui_widgets()
    for key, name, kind in panel.BINDINGS:
        assert name in widgets, f"{key} is bound to {name}, which the .ui does not define"
        cls = widgets[name].get("class")
        assert cls in KIND_CLASSES[kind], f"{name} is a {cls}; a {kind} control must be one of {KIND_CLASSES[kind]}"
        assert panel.SIGNALS[kind] in SIGNALS[cls], f"{name} ({cls}) has no signal {panel.SIGNALS[kind]}"
        if kind == "choice":  # the .ui's items are the choices in order, or the widget fills them
            items = [i.findtext("property/string") for i in widgets[name].findall("item")]
            assert len(items) in (0, len(panel.choices(key))), f"{name}: {items} vs {panel.choices(key)}"
    assert len({name for _, name, _ in panel.BINDINGS}) == len(panel.BINDINGS)
    form = panel.form_values(__import__("XAISegExtensionLib.parameters", fromlist=["x"]).default_settings())
    visible, enabled = panel.control_states(form)
    assert set(visible) | set(enabled) <= set(widgets)


def test_roi_sources_are_listed_in_the_engines_order_with_the_default_first():
    from xaiseg.roi import SOURCES, RoiConfig

    widgets, _, _ = ui_widgets()
    items = [i.findtext("property/string") for i in widgets["roiSourceComboBox"].findall("item")]
    assert [t.split(" ")[0].lower() for t in items] == list(SOURCES) and SOURCES[0] == RoiConfig().source
    margin = widgets["roiMarginSpinBox"]
    assert margin.find("property[@name='specialValueText']/string").text == "auto"
    assert margin.find("property[@name='value']/number").text == margin.find("property[@name='minimum']/number").text


def test_no_method_is_hard_coded_in_the_ui_or_the_widget():
    from XAISegExtensionLib.run_settings import available_methods

    widgets, _, _ = ui_widgets()
    names = [m["name"] for m in available_methods()]
    assert {"occlusion", "rise", "lime", "shap", "layers"} <= set(names)
    hard = [w for w in widgets for m in names if re.match(m + "[A-Z]", w)]  # occlusionCheckBox, riseMasksSpinBox
    assert hard == [], f"per-method widgets left in the .ui: {hard}"
    for container in ("methodsWidget", "methodSettingsWidget"):
        assert widgets[container].find("layout") is not None, f"{container} needs a layout to hold generated controls"
    literals = {n.value for path in (WIDGET, BINDING) for n in ast.walk(ast.parse(path.read_text()))
                if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert not literals & set(names), f"method names in the widget code: {literals & set(names)}"
