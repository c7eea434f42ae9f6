"""The worker's files as nodes, in one subject-hierarchy folder per run.

The mask becomes a segment (a new segmentation, or one more segment in a segmentation the user
chose), each method's saliency a volume with its high-saliency label map, the per-layer maps one
``vtkMRMLSequenceNode`` browsed by a ``vtkMRMLSequenceBrowserNode`` (one slider through the layers in
encoder order, to the neck), the metrics a table, the narrative and run record text nodes.  A second load of the same
run replaces the first one's nodes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from . import mrml, segment_output, views
from .mrml import InputError

#: the saliency node's attribute that lists the slices of each trust mark
TRUST_ATTRIBUTES = {"prompt_driven": "XAISeg.promptDrivenSlices", "no_evidence": "XAISeg.noEvidenceSlices",
                    "below_trivial": "XAISeg.belowTrivialSlices", "low_reliability": "XAISeg.lowReliabilitySlices",
                    "survives_randomisation": "XAISeg.survivesRandomisationSlices"}


@dataclass
class RunResult:
    """Nodes a finished run created (all in ``folder_item``, except an output segmentation the user
    chose, which only gained a segment) and where the explained slices are."""

    folder_item: int
    segmentation: Any = None
    segment_id: str = ""
    output_segmentation: bool = False
    saliency: Dict[str, Any] = field(default_factory=dict)
    labels: Dict[str, Any] = field(default_factory=dict)
    raw: Dict[str, Any] = field(default_factory=dict)  # method -> raw map in score units
    extra_volumes: List[Any] = field(default_factory=list)
    layers: Any = None
    layer_browser: Any = None
    layer_proxy: Any = None
    roi: Any = None
    table: Any = None
    narrative: Any = None
    record_text: Any = None
    metrics: Dict[str, Any] = field(default_factory=dict)
    record: Dict[str, Any] = field(default_factory=dict)
    input_volume: Any = None
    axis: int = 0
    explained: List[int] = field(default_factory=list)
    centres: Dict[int, Tuple[float, float, float]] = field(default_factory=dict)

    def nodes(self) -> List[Any]:
        """The nodes of the run's folder (the user's output segmentation is not one of them)."""
        out = [None if self.output_segmentation else self.segmentation, self.roi, self.table, self.narrative,
               self.record_text, self.layers, self.layer_browser, self.layer_proxy]
        out += list(self.saliency.values()) + list(self.labels.values()) + list(self.raw.values())
        out += list(self.extra_volumes)
        return [n for n in out if n is not None]

    def methods(self) -> List[str]:
        return list(self.saliency)

    def layer_names(self) -> List[str]:
        seq = self.layers
        return [seq.GetNthIndexValue(i) for i in range(seq.GetNumberOfDataNodes())] if seq is not None else []


def sequences_logic(scene, cache: Dict[int, Any] = {}):  # noqa: B006 - one logic per scene, kept alive
    """Slicer's Sequences module logic, or one of our own on slicer-core."""
    import slicer

    modules = getattr(slicer, "modules", None)
    if modules is not None and hasattr(modules, "sequences"):
        return modules.sequences.logic()
    key = id(scene)
    if key not in cache:
        logic = slicer.vtkSlicerSequencesLogic()
        logic.SetMRMLScene(scene)
        cache[key] = logic
    return cache[key]


def add_layer_sequence(scene, layer_files: Dict[str, Path], reference_node, base: str):
    """One sequence of the per-layer maps (index: layer name, in encoder order), its browser and
    the proxy volume the views show; returns ``(sequence, browser, proxy)``."""
    import slicer

    seq = slicer.vtkMRMLSequenceNode()
    seq.SetName(f"{base} layer maps")
    scene.AddNode(seq)
    seq.SetIndexName("layer")
    seq.SetIndexUnit("")
    seq.SetIndexType(slicer.vtkMRMLSequenceNode.TextIndex)
    for layer, path in layer_files.items():
        tmp = mrml.add_volume(scene, read_array(path, reference_node).astype(np.float32), reference_node,
                              f"{base} {layer}")
        try:
            seq.SetDataNodeAtValue(tmp, str(layer))
        finally:
            mrml.remove_node(scene, tmp)
    browser = slicer.vtkMRMLSequenceBrowserNode()
    browser.SetName(f"{base} layer browser")
    scene.AddNode(browser)
    browser.SetAndObserveMasterSequenceNodeID(seq.GetID())
    browser.SetPlaybackLooped(False)
    browser.SetSelectedItemNumber(0)
    sequences_logic(scene).UpdateProxyNodesFromSequences(browser)
    proxy = browser.GetProxyNode(seq)
    if proxy.GetDisplayNode() is None:
        proxy.CreateDefaultDisplayNodes()
    proxy.SetName(f"{base} layer map")
    browser.SetOverwriteProxyName(seq, False)
    mrml.style_saliency(scene, proxy)
    transform = reference_node.GetParentTransformNode()
    if transform is not None:
        proxy.SetAndObserveTransformNodeID(transform.GetID())
    return seq, browser, proxy


def load_results(scene, job, outdir: Path, final: Optional[Dict[str, Any]] = None, *, outputSegmentation=None,
                 show3D: bool = False) -> RunResult:
    """Turn the worker's files into nodes in one subject-hierarchy folder (replacing an earlier
    folder of the same run).  outputSegmentation: a segmentation node to add the mask to as one
    more segment (default: a new segmentation node); show3D: build and show its closed surface."""
    input_node = scene.GetNodeByID(job.input_node_id)
    if input_node is None:
        raise InputError(f"the input volume ({job.input_node_id}) was removed from the scene during the run")
    name = job.request.name
    files = read_json(outdir / f"{name}_metrics.json") or {}
    seg_record = read_json(outdir / f"{name}_run.json") or {}
    record = dict(files.get("record") or seg_record)
    mask = read_array(outdir / f"{name}_mask.nrrd", input_node)
    folder = _run_folder(scene, job)
    result = RunResult(folder, metrics=files, record=record, input_volume=input_node)
    result.segmentation, result.segment_id = segment_output.write_mask(
        scene, mask, input_node, job.settings.name or "structure", run_key=job.run_key,
        node_name=f"{job.base_name} segmentation", segmentation=outputSegmentation)
    result.output_segmentation = outputSegmentation is not None
    if show3D:
        segment_output.show_3d(result.segmentation)
    loaded = {f"{name}_mask.nrrd"} | _load_maps(scene, job, outdir, files, input_node, result)
    for path in _manifest_volumes(outdir, final, files):  # anything else the engine wrote
        if path.name not in loaded:
            stem = path.stem[len(name) + 1:] if path.stem.startswith(name) else path.stem
            node = mrml.add_volume(scene, read_array(path, input_node).astype(np.float32), input_node,
                                   f"{job.base_name} {stem}")
            mrml.style_saliency(scene, node)
            result.extra_volumes.append(node)
    _add_texts(scene, job, outdir, files, seg_record, record, mask, input_node, final, result)
    for node in result.nodes():
        mrml.place_in_folder(scene, folder, node)
        mrml.set_run_attributes(node, record, job.run_key)
    _where_to_read(result, mask, files, final)
    return result


def _run_folder(scene, job) -> int:
    """A new subject-hierarchy folder for the run, replacing the folder of an earlier run of it."""
    sh = mrml.subject_hierarchy(scene)
    old = mrml.find_run_folder(scene, job.run_key)
    if old:
        mrml.remove_run_folder(scene, old)
    folder = sh.CreateFolderItem(sh.GetSceneItemID(), f"XAISeg {job.base_name} - {job.settings.method_label()}")
    sh.SetItemAttribute(folder, mrml.RUN_KEY, job.run_key)
    return folder


def _load_maps(scene, job, outdir: Path, files: Dict[str, Any], input_node, result: RunResult) -> set:
    """The ROI, each method's display map, label map and raw map, and the layer maps as a sequence;
    the names of the files loaded."""
    loaded = set()
    roi_path = outdir / f"{job.request.name}_roi.nrrd"
    if roi_path.is_file():
        result.roi = mrml.add_volume(scene, read_array(roi_path, input_node).astype(np.uint8), input_node,
                                     f"{job.base_name} explained ROI", labelmap=True)
        mrml.style_label(scene, result.roi)
        loaded.add(roi_path.name)
    for method, info in (files.get("methods") or {}).items():
        mfiles = info.get("files") or {}
        layer_files = mfiles.get("layers") or {}
        paths = {layer: outdir / f for layer, f in layer_files.items() if (outdir / f).is_file()} \
            if isinstance(layer_files, dict) else {}
        if paths:
            result.layers, result.layer_browser, result.layer_proxy = add_layer_sequence(
                scene, paths, input_node, f"{job.base_name} {method}")
            loaded.update(p.name for p in paths.values())
        for key in ("saliency", "label", "raw"):
            fname = mfiles.get(key)
            if isinstance(fname, str) and (outdir / fname).is_file():
                _add_map(scene, key, method, read_array(outdir / fname, input_node), input_node, job, info, result)
                loaded.add(fname)
    return loaded


def _add_map(scene, key: str, method: str, array: np.ndarray, input_node, job, info: Dict[str, Any],
             result: RunResult) -> None:
    base = f"{job.base_name} {method}"
    if key == "label":
        node = mrml.add_volume(scene, array.astype(np.uint8), input_node, f"{base} label", labelmap=True)
        mrml.style_label(scene, node)
        result.labels[method] = node
    elif key == "raw":  # the score lost per pixel, for reading values; shown as a plain volume
        result.raw[method] = mrml.add_volume(scene, array.astype(np.float32), input_node, f"{base} raw (score units)")
    else:
        node = mrml.add_volume(scene, array.astype(np.float32), input_node, f"{base} saliency")
        mrml.style_saliency(scene, node)
        result.saliency[method] = node
        from xaiseg.explain.trust import slices_by_mark

        # the slices each trust mark flags (xaiseg.explain.trust), for a reader or a script to find
        marked = slices_by_mark(info.get("slices") or {})
        for mark, attribute in TRUST_ATTRIBUTES.items():
            node.SetAttribute(attribute, ",".join(str(k) for k in marked[mark]))


def _add_texts(scene, job, outdir: Path, files, seg_record, record, mask, input_node, final, result: RunResult) -> None:
    """The narrative, the metrics table and the run record as text."""
    narrative = _narrative(outdir, job.request.name, files)
    if narrative:
        result.narrative = mrml.add_text(scene, f"{job.base_name} narrative", str(narrative))
    result.table = mrml.add_metrics_table(scene, f"{job.base_name} metrics",
                                          metric_rows(mask, input_node, seg_record, files, final))
    result.record_text = mrml.add_text(scene, f"{job.base_name} run record",
                                       json.dumps({"request": job.request.to_dict(), "record": record, "metrics": files},
                                                  indent=2, default=str))


def _where_to_read(result: RunResult, mask: np.ndarray, files: Dict[str, Any],
                   final: Optional[Dict[str, Any]]) -> None:
    """The slicing axis, the explained slices (else the slices with mask) and the mask's centre on each."""
    axis = files.get("axis", (final or {}).get("axis"))
    result.axis = int(axis) if axis is not None else views.slicing_axis(result.input_volume)
    explained = sorted({int(k) for k in files.get("slices") or []})
    if not explained:
        other = tuple(a for a in range(3) if a != result.axis)
        explained = [int(k) for k in np.nonzero(mask.any(axis=other))[0]]
        explained = [explained[len(explained) // 2]] if explained else []
    result.explained = explained
    result.centres = {k: views.mask_centre(mask, result.axis, k) for k in explained}


def _narrative(outdir: Path, name: str, files: Dict[str, Any]) -> Optional[str]:
    narrative = files.get("narrative")
    if isinstance(narrative, dict):
        narrative = narrative.get("text")
    report = read_json(outdir / f"{name}_report.json") or {}
    if not narrative and isinstance(report.get("narrative"), dict):
        narrative = report["narrative"].get("text")
    return narrative


def _manifest_volumes(outdir: Path, final: Optional[Dict[str, Any]], files: Dict[str, Any]) -> List[Path]:
    """The volume files the run wrote, from the worker's manifest (its last line), else from the
    file names in NAME_metrics.json; nothing is globbed, so nothing foreign is loaded."""
    names: List[str] = []

    def collect(value: Any) -> None:
        if isinstance(value, str):
            names.append(value)
        elif isinstance(value, (list, tuple)):
            for v in value:
                collect(v)
        elif isinstance(value, dict):
            for v in value.values():
                collect(v)

    collect((final or {}).get("files") or [info.get("files") for info in (files.get("methods") or {}).values()])
    seen, out = set(), []
    for n in names:
        path = outdir / Path(n).name
        if n.endswith((".nrrd", ".nii.gz", ".nii", ".mha")) and n not in seen and path.is_file():
            seen.add(n)
            out.append(path)
    return out


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


def read_json(path: Path) -> Optional[Dict[str, Any]]:
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def read_array(path: Path, reference_node) -> np.ndarray:
    """Voxels of a result file, refused unless it lies on the reference volume's grid."""
    import SimpleITK as sitk
    from xaiseg.io import Geometry, read_image

    image = read_image(path)
    geometry = Geometry.of(image)
    expected = mrml.geometry_of(reference_node)
    if not geometry.same_grid(expected, tol=1e-3):
        raise InputError(f"result {path.name} has a different voxel grid (size {geometry.size}, spacing "
                         f"{geometry.spacing}) than the input volume (size {expected.size}, spacing {expected.spacing})")
    return sitk.GetArrayFromImage(image)
