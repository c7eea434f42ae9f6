"""XAISeg's logic, free of qt, ctk, ``slicer.app`` and ScriptedLoadableModule.

It checks the inputs (adding no node when they are bad), writes the input volume and prompt for
the worker, starts the worker, turns its JSON-line progress into a :class:`RunState`, and when
the worker succeeded turns its files into nodes in one subject-hierarchy folder per run
(:mod:`results`) and moves the views to the first explained slice (:mod:`reading`).  A run with
the same input, structure and methods replaces the nodes of the previous one.  Cancelling ends
the worker's whole process tree without waiting (the timer that calls :meth:`XAISegLogic.poll`
finishes the job) and leaves the scene exactly as it was.  Calibration runs in the worker too.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from . import device, mrml
from .mrml import InputError
from .parameters import PanelMixin
from .run_settings import RunSettings, parse_request
from .calibration import CalibrationJob, CalibrationMixin
from .process import WorkerProcess
from .reading import ReadingMixin
from .results import RunResult, load_results


IDLE, RUNNING, SUCCEEDED, FAILED, CANCELLED = "idle", "running", "succeeded", "failed", "cancelled"


@dataclass
class RunState:
    """What the panel shows: status, the current stage and step, the log."""

    status: str = IDLE
    stage: str = ""
    done: int = 0
    total: int = 0
    slice: Optional[int] = None
    message: str = ""
    log: List[str] = field(default_factory=list)
    error: str = ""
    error_type: str = ""
    out_of_memory: bool = False  # the GPU ran out of memory: XAISegLogic.retryOnCpu() offers a way out
    seconds: float = 0.0
    worker_pid: Optional[int] = None  # the Python running the worker (a child of the PythonSlicer launcher)

    def describe(self) -> str:
        """``slice i of n, method`` for the progress bar."""
        if not self.stage:
            return self.message
        method = self.stage.split(" ")[0]
        text = f"{method}: step {self.done} of {self.total}"
        if self.slice is not None:
            text += f" (slice {self.slice})"
        return text


@dataclass
class Job:
    """One run: its request, files and the nodes it was started from."""

    request: Any  # xaiseg.request.RunRequest
    workdir: Path
    input_node_id: str
    run_key: str
    base_name: str
    settings: RunSettings
    notes: List[str] = field(default_factory=list)
    process: Optional[WorkerProcess] = None


class XAISegLogic(ReadingMixin, CalibrationMixin, PanelMixin):
    """Runs segmentation and explanation through the worker and turns results into nodes.

    ``scene``: the MRML scene (default ``slicer.mrmlScene``); ``python``: the interpreter for the
    worker (default: Slicer's Python).  ``progressCallback(state)`` and ``logCallback(text)`` are
    called from :meth:`poll`; ``keepFiles`` keeps the worker's folder after loading; ``forceCpu``
    runs on the CPU whatever device is chosen (as ``RunSettings.force_cpu`` does); ``stopGrace`` is
    how long a cancelled worker gets to stop by itself before its process group is killed.  The
    panel's state lives in the scene's parameter node (:mod:`parameters`: :meth:`savePanel`,
    :meth:`loadPanel`, :meth:`startFromPanel`).
    """

    def __init__(self, scene=None, python: Optional[str] = None) -> None:
        self._scene = scene
        self.python = python
        self.progressCallback: Optional[Callable[[RunState], None]] = None
        self.logCallback: Optional[Callable[[str], None]] = None
        self.calibrationCallback: Optional[Callable[[CalibrationJob], None]] = None
        self.deviceCallback: Optional[Callable[[device.TorchInfo], None]] = None
        self.keepFiles = False
        self.forceCpu = False
        self.stopGrace = 0.5
        self.job: Optional[Job] = None
        self.state = RunState()
        self.result: Optional[RunResult] = None
        self.calibration: Dict[str, Dict[str, float]] = {}
        self.calibrationJob: Optional[CalibrationJob] = None
        self._stopping: List[Any] = []
        self._lastStart: Optional[tuple] = None
        self._probe: Optional[Any] = None

    @property
    def scene(self):
        if self._scene is not None:
            return self._scene
        import slicer

        return slicer.mrmlScene

    # ------------------------------------------------------------------ requests

    def buildJob(self, inputVolume, prompt, settings: Optional[RunSettings] = None, negativePoints=None,
                 target=None, write: bool = True) -> Job:
        """Check everything and (with ``write``) write the worker's files; adds no node and raises
        :class:`InputError` naming the bad input.

        prompt: a markups ROI (box), a markups point list (positive points; ``negativePoints`` adds
        negative ones) or ``(segmentationNode, segmentId)`` for a box per slice around a segment.
        target: optional ``(segmentationNode, segmentId)`` ground truth for pointing-game metrics.
        """
        settings = settings or RunSettings()
        mrml.check_input_volume(inputVolume)
        mrml.world_to_local(inputVolume)  # refuses non-linear transforms early
        notes: List[str] = []
        arrays: Dict[str, np.ndarray] = {}
        if isinstance(prompt, (tuple, list)):
            seg_node, segment_id = prompt
            arrays["prompt_labels.nrrd"] = mrml.segment_labelmap(seg_node, segment_id, inputVolume)
            prompt_spec = {"type": "labelmap", "file": "prompt_labels.nrrd", "label": 1, "margin": settings.margin}
        elif prompt is None:
            raise InputError("no prompt is given; place a markups ROI or points on the structure, or pick a segment")
        elif prompt.IsA("vtkMRMLMarkupsROINode"):
            prompt_spec, notes = mrml.box_prompt_from_roi(prompt, inputVolume)
        elif prompt.IsA("vtkMRMLMarkupsFiducialNode"):
            prompt_spec = mrml.points_prompt_from_markups(prompt, inputVolume, negativePoints)
        else:
            raise InputError(f"prompt '{prompt.GetName()}' is a {prompt.GetClassName()}; expected a markups ROI, "
                             "a markups point list or a segment")
        if target is not None and settings.methods:
            arrays["target.nrrd"] = mrml.segment_labelmap(target[0], target[1], inputVolume)
        shape = mrml.volume_array_shape(inputVolume)
        if settings.slice_range is not None:
            if settings.slice_range[1] < 0 or settings.slice_range[0] > max(shape) - 1:
                raise InputError(f"slice range {settings.slice_range[0]}..{settings.slice_range[1]} lies outside "
                                 f"the volume's slices (shape k, j, i = {shape})")
        base = inputVolume.GetName() + (f" {settings.name}" if settings.name else "")
        run_key = f"{inputVolume.GetID()}|{settings.name}|{settings.method_label()}"
        workdir = Path(tempfile.mkdtemp(prefix="xaiseg-run-")) if write else Path(tempfile.gettempdir())
        try:
            data = settings.request_dict("input.nrrd", "output", prompt_spec, base)
            if data.get("explain") and "target.nrrd" in arrays:
                data["explain"]["target"] = "target.nrrd"
            request = parse_request(data, workdir)
            if write:
                mrml.write_volume_file(inputVolume, workdir / "input.nrrd")
                for fname, array in arrays.items():
                    mrml.write_volume_file(inputVolume, workdir / fname, array)
                doc = dict(request.to_dict(), task="run", cancel_file="cancel")
                (workdir / "request.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")
        except BaseException:
            if write:
                shutil.rmtree(workdir, ignore_errors=True)
            raise
        return Job(request, workdir, inputVolume.GetID(), run_key, base, settings, notes)

    # ------------------------------------------------------------------ running

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.process is not None and self.state.status == RUNNING

    @property
    def busy(self) -> bool:
        """A run, a calibration or a cancelled worker that is still being stopped: keep polling."""
        return self.running or bool(self._stopping) or self.calibrationJob is not None or self._probe is not None

    def startDeviceProbe(self) -> None:
        """Ask the worker's interpreter what torch sees, without waiting; :meth:`poll` calls
        ``deviceCallback(info)`` with the answer (at once when it is already known)."""
        info = device.cached(self.python)
        if info is not None:
            if self.deviceCallback is not None:
                self.deviceCallback(info)
        elif self._probe is None:
            self._probe = device.begin_probe(self.python) or False

    def _advanceProbe(self, wait: bool = False) -> None:
        if self._probe is None or (not wait and self._probe is not False and self._probe.poll() is None):
            return
        info = device.end_probe(self._probe or None, self.python)
        self._probe = None
        if self.deviceCallback is not None:
            self.deviceCallback(info)

    def resolveDevice(self, requested: str, forceCpu: bool = False, wait: bool = True) -> str:
        """The device a run will use (``auto``: CUDA, then MPS, then CPU; ``forceCpu`` or
        :attr:`forceCpu` wins); raises :class:`device.DeviceError` naming the fix when the chosen one
        cannot work.  With ``wait`` False it does not wait for a device probe still in flight (``""``:
        not known yet); with no probe started and nothing known it asks torch at once (scripts, tests)."""
        force = bool(forceCpu or self.forceCpu)
        if force or (requested or "").strip().lower() == "cpu":
            return device.resolve(requested, force_cpu=True)
        if self._probe is not None:
            if not wait and self._probe is not False and self._probe.poll() is None:
                return ""
            self._advanceProbe(wait=True)
        return device.resolve(requested, force_cpu=False, python=self.python)

    def _resolved(self, settings: RunSettings) -> RunSettings:
        """``settings`` with its device resolved (``auto`` and Force CPU turned into the real device)."""
        resolved = self.resolveDevice(settings.device, settings.force_cpu)
        return settings if resolved == settings.device else dataclasses.replace(settings, device=resolved)

    def start(self, inputVolume, prompt, settings: Optional[RunSettings] = None, negativePoints=None,
              target=None, *, outputSegmentation=None, show3D: Optional[bool] = None) -> Job:
        """Check the inputs, then start the worker; call :meth:`poll` until it is no longer running.

        Where the mask goes and whether it is shown in 3D come from ``settings.output_segmentation``
        and ``settings.show_3d``; ``outputSegmentation`` (a segmentation node) and ``show3D``
        override them for this run.
        """
        if self.running:
            raise RuntimeError("a run is in progress; cancel it or wait for it to finish")
        settings = settings or RunSettings()
        if outputSegmentation is not None:
            settings = dataclasses.replace(settings, output_segmentation=outputSegmentation.GetID())
        if show3D is not None:
            settings = dataclasses.replace(settings, show_3d=bool(show3D))
        settings = self._resolved(settings)
        output = self.scene.GetNodeByID(settings.output_segmentation) if settings.output_segmentation else None
        if settings.output_segmentation and (output is None or not output.IsA("vtkMRMLSegmentationNode")):
            raise InputError(f"the output segmentation ({settings.output_segmentation}) is not a segmentation node "
                             "of the scene; choose another one or 'Create new segmentation'")
        job = self.buildJob(inputVolume, prompt, settings, negativePoints, target)
        self._lastStart = (inputVolume, prompt, settings, negativePoints, target)
        self.result = None
        self.state = RunState(status=RUNNING, message=f"starting the worker on {settings.device}")
        for note in job.notes:
            self._log(note)
        job.process = WorkerProcess(job.workdir / "request.json", python=self.python)
        self.job = job
        self._notify()
        return job

    def retryOnCpu(self) -> Job:
        """Start the last run again on the CPU (offered after the GPU ran out of memory); the
        output segmentation and Show 3D travel in its settings."""
        if self._lastStart is None:
            raise RuntimeError("there is no earlier run to repeat")
        volume, prompt, settings, negative, target = self._lastStart
        return self.start(volume, prompt, dataclasses.replace(settings, device="cpu"), negative, target)

    def poll(self) -> RunState:
        """Read the worker's new events; when it finished, load its results (once).  Also moves
        cancelled workers towards their end and finishes calibrations."""
        self._advanceStopping()
        self._advanceCalibration()
        self._advanceProbe()
        job = self.job
        if job is None or job.process is None or self.state.status != RUNNING:
            return self.state
        proc = job.process
        for event in proc.poll():
            self._handle(event)
        if proc.finished and self.state.status == RUNNING:
            self.state.seconds = time.monotonic() - proc.started
            self._conclude(job, proc.final or {}, proc.returncode)
            proc.close()
            self._cleanup(job)
        self._notify()
        return self.state

    def _conclude(self, job: Job, final: Dict[str, Any], returncode: Optional[int]) -> None:
        """The run's end from the worker's last event: load the results, or say why not (a GPU
        out of memory gets its own message and :meth:`retryOnCpu`)."""
        kind = final.get("event")
        if kind == "result" and returncode == 0:
            try:
                self.result = self.loadResults(job, Path(final["output_dir"]), final)
                self.state.status = SUCCEEDED
                self.state.message = f"done in {self.state.seconds:.0f} s"
            except Exception as exc:  # noqa: BLE001 - reported to the panel
                self.state.status = FAILED
                self.state.error = f"loading the results failed: {exc}"
        elif kind == "cancelled":
            self.state.status = CANCELLED
            self.state.message = "cancelled; the scene was not changed"
        else:
            self.state.status = FAILED
            self.state.error_type = str(final.get("error") or self.state.error_type)
            self.state.error = final.get("message") or (
                f"the worker exited with status {returncode}: {job.process.stderr_tail(8) if job.process else ''}")
            if device.is_out_of_memory(self.state.error_type, self.state.error):
                self.state.out_of_memory = True
                self.state.error = (f"the GPU ran out of memory (device {job.settings.device}). Retry on the CPU "
                                    "(slower), or explain fewer slices at a time. The worker said: "
                                    f"{self.state.error}")
        if self.state.error:
            self._log("ERROR: " + self.state.error)

    def wait(self, timeout: float = 600.0, interval: float = 0.1) -> RunState:
        """Poll until the run ends (tests, the self-test and scripts); cancels it after ``timeout``."""
        end = time.monotonic() + timeout
        while self.poll().status == RUNNING:
            if time.monotonic() > end:
                self.cancel()
                self.waitStopped()
                raise TimeoutError(f"the run did not finish within {timeout:.0f} s and was cancelled")
            time.sleep(interval)
        return self.state

    def waitStopped(self, timeout: float = 10.0, interval: float = 0.02) -> bool:
        """Poll until every cancelled worker is gone (scripts and tests); True when none is left."""
        end = time.monotonic() + timeout
        while self._stopping and time.monotonic() < end:
            self.poll()
            time.sleep(interval)
        self.poll()
        return not self._stopping

    def run(self, inputVolume, prompt, settings: Optional[RunSettings] = None, negativePoints=None,
            target=None, timeout: float = 600.0, **loadOptions) -> RunResult:
        """Start, wait, and return the result nodes; raises ``RuntimeError`` with the worker's message."""
        self.start(inputVolume, prompt, settings, negativePoints, target, **loadOptions)
        state = self.wait(timeout)
        if state.status != SUCCEEDED:
            raise RuntimeError(state.error or state.message)
        return self.result

    def cancel(self) -> RunState:
        """Stop the worker and its process tree without waiting; nothing is added to the scene.
        The worker gets :attr:`stopGrace` seconds to stop by itself, then its group is killed; its
        files are removed once it is gone (:meth:`poll` does both)."""
        job = self.job
        if job is None or job.process is None or self.state.status != RUNNING:
            return self.state
        try:
            (job.workdir / "cancel").write_text("cancel", encoding="utf-8")
        except OSError:
            pass
        job.process.terminate(self.stopGrace)
        self._stopping.append(job)
        self.state.status = CANCELLED
        self.state.message = "cancelled; the scene was not changed"
        self._log("cancelled by the user")
        self._advanceStopping()
        self._notify()
        return self.state

    def _advanceStopping(self) -> None:
        for item in list(self._stopping):
            if item.process.reap():
                item.process.poll()
                item.process.close()
                self._stopping.remove(item)
                if isinstance(item, Job):
                    self._cleanup(item)
                else:
                    shutil.rmtree(item.workdir, ignore_errors=True)

    def _cleanup(self, job: Job) -> None:
        if not self.keepFiles:
            shutil.rmtree(job.workdir, ignore_errors=True)

    def _handle(self, event: Dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "stage":
            self.state.stage, self.state.total, self.state.done = event.get("stage", ""), int(event.get("total", 0)), 0
            self.state.slice = None
            self._log(f"{self.state.stage}: {self.state.total} step(s)")
        elif kind == "step":
            self.state.done, self.state.total = int(event.get("done", 0)), int(event.get("total", 0))
            self.state.slice = event.get("slice")
        elif kind == "done":
            self.state.done = int(event.get("done", self.state.done))
        elif kind == "log":
            self._log(str(event.get("message", "")))
        elif kind == "start":
            self.state.message = "running"
            self.state.worker_pid = event.get("pid")
        elif kind == "error":
            self.state.error = str(event.get("message", "unknown error"))
            self.state.error_type = str(event.get("error", ""))

    def _log(self, text: str) -> None:
        self.state.log.append(text)
        if self.logCallback is not None:
            self.logCallback(text)

    def _notify(self) -> None:
        if self.progressCallback is not None:
            self.progressCallback(self.state)

    # ------------------------------------------------------------------ results

    def loadResults(self, job: Job, outdir: Path, final: Optional[Dict[str, Any]] = None, *,
                    outputSegmentation=None, show3D: Optional[bool] = None, jump: bool = True) -> RunResult:
        """Turn the worker's files into nodes (:func:`results.load_results`), show the first
        method over the input with its label map outlined, and move every view to the first
        explained slice centred on the mask.  The output segmentation and Show 3D come from the
        job's settings; ``outputSegmentation`` / ``show3D`` override them."""
        if outputSegmentation is None and job.settings.output_segmentation:
            outputSegmentation = self.scene.GetNodeByID(job.settings.output_segmentation)
            if outputSegmentation is None:
                raise InputError(f"the output segmentation ({job.settings.output_segmentation}) was removed from "
                                 "the scene during the run")
        show3D = job.settings.show_3d if show3D is None else bool(show3D)
        result = load_results(self.scene, job, outdir, final, outputSegmentation=outputSegmentation, show3D=show3D)
        if result.saliency:
            self.showMethod(result, next(iter(result.saliency)))
        else:
            mrml.show_layers(self.scene, background=result.input_volume)
        if jump:
            self.jumpToFirstExplainedSlice(result)
        return result

    # ------------------------------------------------------------------ cost

    def estimateCost(self, inputVolume, prompt, settings: Optional[RunSettings] = None, negativePoints=None,
                     calibration: Optional[Dict[str, float]] = None) -> Dict[str, Any]:
        """Model evaluations and minutes the run will take, on the device it will run on (``auto``
        resolved first; never waits for the device probe), from the calibration for this segmenter
        and device when there is one (:meth:`calibrate`), else from reference figures."""
        from .cost import estimate

        settings = settings or RunSettings()
        resolved = self.resolveDevice(settings.device, settings.force_cpu, wait=False)
        label = device.describe(resolved, device.cached(self.python)) if resolved else \
            f"{settings.device} (still detecting the device)"
        if resolved and resolved != settings.device:
            settings = dataclasses.replace(settings, device=resolved)
        if calibration is None:
            calibration = self.calibration.get(self.calibrationKey(settings))
        job = self.buildJob(inputVolume, prompt, settings, negativePoints, write=False)
        return estimate(job.request, mrml.volume_array_shape(inputVolume), mrml.geometry_of(inputVolume), calibration,
                        device_label=label)
