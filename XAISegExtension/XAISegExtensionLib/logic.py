"""XAISeg's logic, free of qt, ctk, ``slicer.app`` and ScriptedLoadableModule.

It checks the inputs (adding no node when they are bad), writes the input volume and prompt for
the worker, starts the worker, turns its JSON-line progress into a :class:`RunState`, and when
the worker succeeded turns its files into nodes in one subject-hierarchy folder per run.  A run
with the same input, structure and methods replaces the nodes of the previous one.  Cancelling
stops the worker and leaves the scene exactly as it was.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from . import mrml
from .mrml import InputError
from .process import WorkerProcess

IDLE, RUNNING, SUCCEEDED, FAILED, CANCELLED = "idle", "running", "succeeded", "failed", "cancelled"


def _segmenter_default(name: str):
    from xaiseg.request import SegmenterSpec
    from xaiseg.settings import defaults

    return defaults(SegmenterSpec)[name]


@dataclass
class RunSettings:
    """Everything the panel sets besides the input nodes; :meth:`request` turns it into the
    engine's typed :class:`~xaiseg.request.RunRequest`, whose parser checks every value.

    Empty or None fields take the request's defaults (``xaiseg.request`` and each method's
    ``Settings``), so the panel and the command line share one set of defaults.
    segmenter: ``litemedsam`` (built in), ``medsam`` (ViT-B ``checkpoint`` or ``url`` + ``sha256``)
    or ``torch`` (a TorchScript ``checkpoint`` file).  methods: explanation methods to run after
    segmenting (empty: segment only); ``common``: settings every method shares (seed,
    metric_steps, threshold, sanity, ...); ``method_settings``: per-method settings.  roi: fields of
    :class:`xaiseg.roi.RoiConfig` (empty: the embedding ROI).  slice_range: ``(first, last)`` array
    indices along the slicing axis, or None for every slice the prompt covers.  explain_slices:
    which slices to explain (a list, or text such as ``"80,82"`` / ``"80-84"``; None: every
    segmented slice in the range).
    """

    name: str = ""
    segmenter: str = field(default_factory=lambda: _segmenter_default("kind"))
    checkpoint: str = ""
    sha256: str = ""
    url: str = ""
    device: str = field(default_factory=lambda: _segmenter_default("device"))
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

    def segmenter_options(self) -> Dict[str, Any]:
        """The request's ``segmenter`` object (only what the panel set)."""
        opts: Dict[str, Any] = {"kind": self.segmenter, "device": self.device}
        key = "torchscript" if self.segmenter == "torch" else "checkpoint"
        for k, v in ((key, self.checkpoint), ("sha256", self.sha256), ("class_index", self.class_index)):
            if v not in (None, ""):
                opts[k] = v
        if self.segmenter == "medsam" and self.url:
            opts["url"] = self.url
        return opts

    def explain_options(self) -> Optional[Dict[str, Any]]:
        """The request's ``explain`` object, or None when no method is chosen."""
        if not self.methods:
            return None
        common = dict(self.common)
        if self.seed is not None:
            common.setdefault("seed", self.seed)
        return {"methods": [{"name": m, "settings": dict(self.method_settings.get(m, {}))} for m in self.methods],
                "common": common, "roi": dict(self.roi), "slices": self.explain_slices,
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
                build(RoiConfig, self.roi, "roi")
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


def available_methods() -> List[Dict[str, Any]]:
    """Every registered explanation method as the panel lists it: name, title, limits, whether it
    perturbs, its requirements and its own settings (name, type, default, help, choices)."""
    import dataclasses

    from xaiseg.explain import EXPLAINERS
    from xaiseg.settings import hints

    out = []
    for name, cls in EXPLAINERS.items():
        types = hints(cls.Settings)
        fields = []
        for f in cls.method_fields():
            meta = f.metadata or {}
            if not meta.get("cli", True):
                continue
            fields.append({"name": f.name, "type": getattr(types[f.name], "__name__", str(types[f.name])),
                           "default": None if f.default is dataclasses.MISSING else f.default,
                           "help": meta.get("help", ""), "choices": meta.get("choices"),
                           "minimum": meta.get("minimum"), "maximum": meta.get("maximum")})
        out.append({"name": name, "title": cls.title, "limits": cls.limits, "perturbs": cls.perturbs,
                    "requirements": [r.spec for r in cls.requirements], "settings": fields})
    return out


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
    seconds: float = 0.0

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


@dataclass
class RunResult:
    """Nodes a finished run created (all in ``folder_item``)."""

    folder_item: int
    segmentation: Any = None
    saliency: Dict[str, Any] = field(default_factory=dict)
    labels: Dict[str, Any] = field(default_factory=dict)
    extra_volumes: List[Any] = field(default_factory=list)
    roi: Any = None
    table: Any = None
    narrative: Any = None
    record_text: Any = None
    metrics: Dict[str, Any] = field(default_factory=dict)
    record: Dict[str, Any] = field(default_factory=dict)

    def nodes(self) -> List[Any]:
        out = [self.segmentation, self.roi, self.table, self.narrative, self.record_text]
        out += list(self.saliency.values()) + list(self.labels.values()) + list(self.extra_volumes)
        return [n for n in out if n is not None]


class XAISegLogic:
    """Runs segmentation and explanation through the worker and turns results into nodes.

    ``scene``: the MRML scene (default ``slicer.mrmlScene``); ``python``: the interpreter for the
    worker (default: Slicer's Python).  ``progressCallback(state)`` and ``logCallback(text)`` are
    called from :meth:`poll`; ``keepFiles`` keeps the worker's folder after loading.
    """

    def __init__(self, scene=None, python: Optional[str] = None) -> None:
        self._scene = scene
        self.python = python
        self.progressCallback: Optional[Callable[[RunState], None]] = None
        self.logCallback: Optional[Callable[[str], None]] = None
        self.keepFiles = False
        self.job: Optional[Job] = None
        self.state = RunState()
        self.result: Optional[RunResult] = None
        self.calibration: Dict[str, Dict[str, float]] = {}

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

    def start(self, inputVolume, prompt, settings: Optional[RunSettings] = None, negativePoints=None,
              target=None) -> Job:
        """Check the inputs, then start the worker; call :meth:`poll` until it is no longer running."""
        if self.running:
            raise RuntimeError("a run is in progress; cancel it or wait for it to finish")
        job = self.buildJob(inputVolume, prompt, settings, negativePoints, target)
        self.result = None
        self.state = RunState(status=RUNNING, message="starting the worker")
        for note in job.notes:
            self._log(note)
        job.process = WorkerProcess(job.workdir / "request.json", python=self.python)
        self.job = job
        self._notify()
        return job

    def poll(self) -> RunState:
        """Read the worker's new events; when it finished, load its results (once)."""
        job = self.job
        if job is None or job.process is None or self.state.status != RUNNING:
            return self.state
        proc = job.process
        for event in proc.poll():
            self._handle(event)
        if proc.finished and self.state.status == RUNNING:
            final = proc.final or {}
            kind = final.get("event")
            self.state.seconds = time.monotonic() - proc.started
            if kind == "result" and proc.returncode == 0:
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
                self.state.error = final.get("message") or (
                    f"the worker exited with status {proc.returncode}: {proc.stderr_tail(8)}")
            if self.state.error:
                self._log("ERROR: " + self.state.error)
            proc.close()
            self._cleanup(job)
        self._notify()
        return self.state

    def wait(self, timeout: float = 600.0, interval: float = 0.1) -> RunState:
        """Poll until the run ends (tests, the self-test and scripts); cancels it after ``timeout``."""
        end = time.monotonic() + timeout
        while self.poll().status == RUNNING:
            if time.monotonic() > end:
                self.cancel()
                raise TimeoutError(f"the run did not finish within {timeout:.0f} s and was cancelled")
            time.sleep(interval)
        return self.state

    def run(self, inputVolume, prompt, settings: Optional[RunSettings] = None, negativePoints=None,
            target=None, timeout: float = 600.0) -> RunResult:
        """Start, wait, and return the result nodes; raises ``RuntimeError`` with the worker's message."""
        self.start(inputVolume, prompt, settings, negativePoints, target)
        state = self.wait(timeout)
        if state.status != SUCCEEDED:
            raise RuntimeError(state.error or state.message)
        return self.result

    def cancel(self) -> RunState:
        """Stop the worker; nothing is added to the scene."""
        job = self.job
        if job is None or job.process is None or self.state.status != RUNNING:
            return self.state
        try:
            (job.workdir / "cancel").write_text("cancel", encoding="utf-8")
        except OSError:
            pass
        job.process.terminate()
        job.process.poll()
        self.state.status = CANCELLED
        self.state.message = "cancelled; the scene was not changed"
        self._log("cancelled by the user")
        self._cleanup(job)
        self._notify()
        return self.state

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
        elif kind == "error":
            self.state.error = str(event.get("message", "unknown error"))

    def _log(self, text: str) -> None:
        self.state.log.append(text)
        if self.logCallback is not None:
            self.logCallback(text)

    def _notify(self) -> None:
        if self.progressCallback is not None:
            self.progressCallback(self.state)

    # ------------------------------------------------------------------ results

    def loadResults(self, job: Job, outdir: Path, final: Optional[Dict[str, Any]] = None) -> RunResult:
        """Turn the worker's files into nodes in one subject-hierarchy folder (replacing an earlier
        folder of the same run)."""
        scene = self.scene
        input_node = scene.GetNodeByID(job.input_node_id)
        if input_node is None:
            raise InputError(f"the input volume ({job.input_node_id}) was removed from the scene during the run")
        name = job.request.name
        files = _read_json(outdir / f"{name}_metrics.json") or {}
        seg_record = _read_json(outdir / f"{name}_run.json") or {}
        record = dict(files.get("record") or seg_record)
        mask = _read_array(outdir / f"{name}_mask.nrrd", input_node)
        sh = mrml.subject_hierarchy(scene)
        old = mrml.find_run_folder(scene, job.run_key)
        if old:
            mrml.remove_run_folder(scene, old)
        folder = sh.CreateFolderItem(sh.GetSceneItemID(), f"XAISeg {job.base_name} - {job.settings.method_label()}")
        sh.SetItemAttribute(folder, mrml.RUN_KEY, job.run_key)
        result = RunResult(folder, metrics=files, record=record)
        structure = job.settings.name or "structure"
        result.segmentation = mrml.add_segmentation(scene, mask, input_node, f"{job.base_name} segmentation",
                                                    structure)
        loaded = {f"{name}_mask.nrrd"}
        roi_path = outdir / f"{name}_roi.nrrd"
        if roi_path.is_file():
            result.roi = mrml.add_volume(scene, _read_array(roi_path, input_node).astype(np.uint8), input_node,
                                         f"{job.base_name} explained ROI", labelmap=True)
            mrml.style_label(scene, result.roi)
            loaded.add(roi_path.name)
        for method, info in (files.get("methods") or {}).items():
            mfiles = info.get("files") or {}
            for key, value in mfiles.items():
                for fname in (value if isinstance(value, list) else [value]):
                    if not isinstance(fname, str) or not fname.endswith(".nrrd") or fname in loaded:
                        continue
                    path = outdir / fname
                    if not path.is_file():
                        continue
                    array = _read_array(path, input_node)
                    loaded.add(fname)
                    if key == "label":
                        node = mrml.add_volume(scene, array.astype(np.uint8), input_node,
                                               f"{job.base_name} {method} label", labelmap=True)
                        mrml.style_label(scene, node)
                        result.labels[method] = node
                    elif key == "saliency":
                        node = mrml.add_volume(scene, array.astype(np.float32), input_node,
                                               f"{job.base_name} {method} saliency")
                        mrml.style_saliency(scene, node)
                        result.saliency[method] = node
                    else:
                        node = mrml.add_volume(scene, array.astype(np.float32), input_node,
                                               f"{job.base_name} {method} {Path(fname).stem[len(name) + 1:]}")
                        mrml.style_saliency(scene, node)
                        result.extra_volumes.append(node)
        for path in sorted(outdir.glob("*.nrrd")):  # per-layer maps and anything else the engine wrote
            if path.name in loaded or path.name.startswith("."):
                continue
            node = mrml.add_volume(scene, _read_array(path, input_node).astype(np.float32), input_node,
                                   f"{job.base_name} {path.stem[len(name) + 1:] if path.stem.startswith(name) else path.stem}")
            mrml.style_saliency(scene, node)
            result.extra_volumes.append(node)
        narrative = files.get("narrative")
        if isinstance(narrative, dict):
            narrative = narrative.get("text")
        report = _read_json(outdir / f"{name}_report.json") or {}
        if not narrative and isinstance(report.get("narrative"), dict):
            narrative = report["narrative"].get("text")
        if narrative:
            result.narrative = mrml.add_text(scene, f"{job.base_name} narrative", str(narrative))
        result.table = mrml.add_metrics_table(scene, f"{job.base_name} metrics",
                                              metric_rows(mask, input_node, seg_record, files, final))
        result.record_text = mrml.add_text(scene, f"{job.base_name} run record",
                                           json.dumps({"request": job.request.to_dict(), "record": record,
                                                       "metrics": files}, indent=2, default=str))
        for node in result.nodes():
            mrml.place_in_folder(scene, folder, node)
            mrml.set_run_attributes(node, record, job.run_key)
        first = next(iter(result.saliency.values()), None)
        mrml.show_layers(scene, background=input_node, foreground=first, opacity=0.5)
        return result

    # ------------------------------------------------------------------ cost

    def calibrate(self, settings: Optional[RunSettings] = None, timeout: float = 300.0) -> Dict[str, float]:
        """Time one encoder and one decoder pass of the chosen segmenter on this machine (cached)."""
        settings = settings or RunSettings()
        key = json.dumps(settings.segmenter_options(), sort_keys=True)
        if key in self.calibration:
            return self.calibration[key]
        workdir = Path(tempfile.mkdtemp(prefix="xaiseg-calibrate-"))
        try:
            req = {"task": "calibrate", "segmenter": settings.segmenter_options(),
                   "threads": settings.threads}
            (workdir / "request.json").write_text(json.dumps(req), encoding="utf-8")
            proc = WorkerProcess(workdir / "request.json", python=self.python)
            end = time.monotonic() + timeout
            while not proc.finished:
                proc.poll()
                if time.monotonic() > end:
                    proc.terminate()
                    raise TimeoutError(f"calibration did not finish within {timeout:.0f} s")
                time.sleep(0.1)
            proc.poll()
            proc.close()
            final = proc.final or {}
            if final.get("event") != "result":
                raise RuntimeError(final.get("message") or proc.stderr_tail(8))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        out = {"seconds_encoder": float(final["seconds_encoder"]), "seconds_decoder": float(final["seconds_decoder"]),
               "seconds_load": float(final["seconds_load"])}
        self.calibration[key] = out
        return out

    def estimateCost(self, inputVolume, prompt, settings: Optional[RunSettings] = None, negativePoints=None,
                     calibration: Optional[Dict[str, float]] = None) -> Dict[str, Any]:
        """Model evaluations and minutes the run will take (from :meth:`calibrate` when given)."""
        from .cost import estimate

        job = self.buildJob(inputVolume, prompt, settings or RunSettings(), negativePoints, write=False)
        return estimate(job.request, mrml.volume_array_shape(inputVolume), mrml.geometry_of(inputVolume), calibration)


def metric_rows(mask: np.ndarray, input_node, record: Dict[str, Any], metrics: Dict[str, Any],
                final: Optional[Dict[str, Any]]) -> List[Tuple[str, str, str, Any]]:
    """Rows (method, slice, metric, value) of the metrics table: the segmentation first, then each
    method's per-slice figures and their summary."""
    spacing = mrml.geometry_of(input_node).spacing
    voxels = int(mask.sum())
    seg_slices = [s for s in (final or {}).get("slices", [])] or sorted(
        int(s.get("index")) for s in record.get("slices", []) if "index" in s)
    rows: List[Tuple[str, str, str, Any]] = [
        ("segmentation", "all", "voxels", voxels),
        ("segmentation", "all", "volume_ml", voxels * float(np.prod(spacing)) / 1000.0),
        ("segmentation", "all", "slices_prompted", len(seg_slices)),
        ("segmentation", "all", "slices_with_mask", int(np.count_nonzero(mask.any(axis=tuple(
            a for a in range(3) if a != int((final or {}).get("axis", metrics.get("axis", 0)))))))),
    ]
    for key, value in _flatten(record.get("evaluations") or {}).items():
        rows.append(("segmentation", "all", key, value))
    if record.get("seconds") is not None:
        rows.append(("segmentation", "all", "seconds", record["seconds"]))
    explain_record = metrics.get("record") or {}
    for key, value in _flatten(explain_record.get("evaluations") or {}).items():
        rows.append(("explanation", "all", key, value))
    if explain_record.get("seconds") is not None:
        rows.append(("explanation", "all", "seconds", explain_record["seconds"]))
    for method, info in (metrics.get("methods") or {}).items():
        for k, values in sorted((info.get("slices") or {}).items(), key=lambda kv: int(kv[0])):
            for metric, value in values.items():
                if isinstance(value, (int, float, bool, str)) or value is None:
                    rows.append((method, str(k), metric, value))
        for metric, value in (info.get("summary") or {}).items():
            if isinstance(value, (int, float, bool, str)) or value is None:
                rows.append((method, "mean", metric, value))
    roi = metrics.get("roi") or {}
    if roi:
        rows.append(("roi", "all", "source", roi.get("source")))
        rows.append(("roi", "all", "fallback_slices", len(roi.get("fallback_slices") or [])))
    return rows


def _flatten(d: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _read_json(path: Path) -> Optional[Dict[str, Any]]:
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _read_array(path: Path, reference_node) -> np.ndarray:
    """Voxels of a result file, refused unless it lies on the reference volume's grid."""
    from xaiseg.io import Geometry, read_image
    import SimpleITK as sitk

    image = read_image(path)
    geometry = Geometry.of(image)
    expected = mrml.geometry_of(reference_node)
    if not geometry.same_grid(expected, tol=1e-3):
        raise InputError(f"result {path.name} has a different voxel grid (size {geometry.size}, spacing "
                         f"{geometry.spacing}) than the input volume (size {expected.size}, spacing {expected.spacing})")
    return sitk.GetArrayFromImage(image)
