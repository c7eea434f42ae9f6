"""MRML adapters: volume nodes to files and prompts for the worker, worker files back to nodes.

Only MRML and ``slicer.util`` array helpers are used, so this runs on slicer-core and in Slicer.
Array order is numpy's ``(k, j, i)`` throughout, as in the engine; RAS is Slicer's world space.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

ATTRIBUTE_PREFIX = "XAISeg."
RUN_KEY = ATTRIBUTE_PREFIX + "runKey"
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class InputError(ValueError):
    """A node given to the logic is not usable; the message names it and says what was expected."""


# --------------------------------------------------------------------------- geometry


def ijk_to_ras(volume_node) -> np.ndarray:
    import vtk

    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def vtk_matrix(array: np.ndarray):
    import vtk

    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(array[r, c]))
    return m


def world_to_local(node) -> np.ndarray:
    """4x4 matrix from world RAS to the node's local RAS (its parent transform, linear only)."""
    transform = node.GetParentTransformNode()
    if transform is None:
        return np.eye(4)
    if not transform.IsTransformToWorldLinear():
        raise InputError(f"volume '{node.GetName()}' is under the non-linear transform '{transform.GetName()}'; "
                         "harden it (Data module, right-click, Harden transform) or use a linear transform")
    import vtk

    m = vtk.vtkMatrix4x4()
    transform.GetMatrixTransformToWorld(m)
    to_world = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
    return np.linalg.inv(to_world)


def geometry_of(volume_node):
    """The engine's :class:`xaiseg.io.Geometry` (LPS, SimpleITK conventions) of a volume node."""
    from xaiseg.io import Geometry

    m = LPS_FROM_RAS @ ijk_to_ras(volume_node)
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    direction = m[:3, :3] / spacing[None, :]
    dims = volume_node.GetImageData().GetDimensions()
    return Geometry(tuple(float(s) for s in spacing), tuple(float(v) for v in m[:3, 3]),
                    tuple(float(v) for v in direction.reshape(-1)), tuple(int(d) for d in dims))


def world_to_kji(volume_node, ras_points: np.ndarray) -> np.ndarray:
    """Continuous ``(k, j, i)`` indices of world RAS points, shape (N, 3)."""
    pts = np.atleast_2d(np.asarray(ras_points, dtype=float))
    hom = np.c_[pts, np.ones(len(pts))]
    local = (world_to_local(volume_node) @ hom.T)
    ijk = (np.linalg.inv(ijk_to_ras(volume_node)) @ local).T[:, :3]
    return ijk[:, ::-1]


# --------------------------------------------------------------------------- input checks and files


def check_input_volume(volume_node) -> Tuple[int, int, int]:
    """Raise :class:`InputError` unless ``volume_node`` is a 3D single-component scalar volume."""
    if volume_node is None:
        raise InputError("no input volume is selected; choose a scalar volume (for example a CT or MR series)")
    name = volume_node.GetName()
    if volume_node.IsA("vtkMRMLLabelMapVolumeNode") or not volume_node.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(f"input '{name}' is a {volume_node.GetClassName()}; expected a scalar volume "
                         "(vtkMRMLScalarVolumeNode), not a label map, vector or segmentation")
    image = volume_node.GetImageData()
    if image is None:
        raise InputError(f"input volume '{name}' has no image data; load or compute its voxels first")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(f"input volume '{name}' has {image.GetNumberOfScalarComponents()} components per voxel; "
                         "expected a single-component (grey-scale) volume")
    dims = tuple(int(d) for d in image.GetDimensions())
    if min(dims) < 2:
        raise InputError(f"input volume '{name}' is a 2D image ({dims[0]} x {dims[1]} x {dims[2]} voxels); "
                         "expected a 3D volume with at least 2 voxels along every axis")
    return dims


def volume_array(volume_node) -> np.ndarray:
    import slicer

    return np.array(slicer.util.arrayFromVolume(volume_node), copy=True)


def write_volume_file(volume_node, path, array: Optional[np.ndarray] = None) -> Path:
    """Write the node's voxels (or ``array`` on its grid) to ``path`` with its geometry (atomic)."""
    from xaiseg.io import Volume, write_volume

    arr = volume_array(volume_node) if array is None else array
    vol = Volume(arr, geometry_of(volume_node), volume_node.GetName())
    return write_volume(vol, arr, path)


# --------------------------------------------------------------------------- prompts


def box_prompt_from_roi(roi_node, volume_node) -> Tuple[Dict[str, Any], List[str]]:
    """The worker's box prompt (``lo_kji``/``hi_kji``) from a markups ROI, clipped to the volume.

    Returns the prompt and notes (for the log) about clipping.
    """
    if roi_node is None:
        raise InputError("no ROI is selected; place a markups ROI (box) around the structure")
    if roi_node.GetNumberOfControlPoints() < 1 or min(roi_node.GetSize()) <= 0:
        raise InputError(f"ROI '{roi_node.GetName()}' is not placed (size {tuple(roi_node.GetSize())}); "
                         "place it around the structure in a slice view")
    half = np.asarray(roi_node.GetSize()) / 2.0
    corners = np.array([[sx * half[0], sy * half[1], sz * half[2], 1.0]
                        for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
    to_world = np.array([[roi_node.GetObjectToWorldMatrix().GetElement(r, c) for c in range(4)] for r in range(4)])
    world = (to_world @ corners.T).T[:, :3]
    kji = world_to_kji(volume_node, world)
    shape = np.array(volume_array_shape(volume_node))
    lo = np.floor(kji.min(axis=0) + 0.5).astype(int)
    hi = np.floor(kji.max(axis=0) + 0.5).astype(int)
    if np.any(hi < 0) or np.any(lo > shape - 1):
        b = [0.0] * 6
        roi_node.GetRASBounds(b)
        raise InputError(f"ROI '{roi_node.GetName()}' (RAS x {b[0]:.1f}..{b[1]:.1f}, y {b[2]:.1f}..{b[3]:.1f}, "
                         f"z {b[4]:.1f}..{b[5]:.1f} mm) lies outside volume '{volume_node.GetName()}' "
                         f"(voxels k, j, i from {tuple(lo)} to {tuple(hi)}, volume shape {tuple(shape)}); "
                         "move the ROI onto the volume")
    notes = []
    clo, chi = np.maximum(lo, 0), np.minimum(hi, shape - 1)
    if np.any(clo != lo) or np.any(chi != hi):
        notes.append(f"ROI '{roi_node.GetName()}' extends beyond the volume; clipped to voxels (k, j, i) "
                     f"{tuple(int(v) for v in clo)}..{tuple(int(v) for v in chi)}")
    return {"type": "box", "lo_kji": [int(v) for v in clo], "hi_kji": [int(v) for v in chi]}, notes


def volume_array_shape(volume_node) -> Tuple[int, int, int]:
    dims = volume_node.GetImageData().GetDimensions()
    return int(dims[2]), int(dims[1]), int(dims[0])


def points_prompt_from_markups(positive_node, volume_node, negative_node=None) -> Dict[str, Any]:
    """The worker's points prompt from a positive (and optional negative) markups point list."""
    if positive_node is None or positive_node.GetNumberOfControlPoints() == 0:
        name = positive_node.GetName() if positive_node is not None else "none"
        raise InputError(f"point list '{name}' has no points; place at least one positive point on the structure")
    shape = np.array(volume_array_shape(volume_node))
    points, labels = [], []
    for node, label in ((positive_node, 1), (negative_node, 0)):
        if node is None:
            continue
        for n in range(node.GetNumberOfControlPoints()):
            world = [0.0, 0.0, 0.0]
            node.GetNthControlPointPositionWorld(n, world)
            kji = world_to_kji(volume_node, world)[0]
            if np.any(kji < -0.5) or np.any(kji > shape - 0.5):
                raise InputError(f"point '{node.GetNthControlPointLabel(n)}' of '{node.GetName()}' at RAS "
                                 f"({world[0]:.1f}, {world[1]:.1f}, {world[2]:.1f}) lies outside volume "
                                 f"'{volume_node.GetName()}' (voxel k, j, i = {tuple(np.round(kji, 1))}, "
                                 f"shape {tuple(shape)})")
            points.append([float(v) for v in kji])
            labels.append(label)
    return {"type": "points", "points_kji": points, "labels": labels}


def segment_labelmap(segmentation_node, segment_id: str, volume_node) -> np.ndarray:
    """The segment as a uint8 array on the volume's grid (for a box-per-slice prompt or an ROI mask)."""
    import slicer

    if segmentation_node is None:
        raise InputError("no segmentation is selected; choose a segmentation and one of its segments")
    segmentation = segmentation_node.GetSegmentation()
    if not segment_id or segmentation.GetSegment(segment_id) is None:
        ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
        raise InputError(f"segment {segment_id!r} is not in segmentation '{segmentation_node.GetName()}'; "
                         f"it holds {ids}")
    scene = segmentation_node.GetScene()
    before = _node_ids(scene)
    label_node = slicer.vtkMRMLLabelMapVolumeNode()
    scene.AddNode(label_node)
    try:
        ids = _string_array([segment_id])
        logic = slicer.vtkSlicerSegmentationsModuleLogic()
        logic.SetMRMLScene(scene)
        if not logic.ExportSegmentsToLabelmapNode(segmentation_node, ids, label_node, volume_node):
            raise InputError(f"segment {segment_id!r} of '{segmentation_node.GetName()}' could not be resampled "
                             f"onto volume '{volume_node.GetName()}'")
        array = (slicer.util.arrayFromVolume(label_node) > 0).astype(np.uint8)
    finally:
        remove_node(scene, label_node)
        for node_id in _node_ids(scene) - before:  # the colour table the export made, for instance
            node = scene.GetNodeByID(node_id)
            if node is not None:
                scene.RemoveNode(node)
    if not array.any():
        raise InputError(f"segment {segment_id!r} of '{segmentation_node.GetName()}' is empty inside volume "
                         f"'{volume_node.GetName()}'; paint it or choose another segment")
    return array


def _node_ids(scene) -> set:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def _string_array(values: Iterable[str]):
    import vtk

    arr = vtk.vtkStringArray()
    for v in values:
        arr.InsertNextValue(v)
    return arr


# --------------------------------------------------------------------------- nodes and subject hierarchy


def remove_node(scene, node) -> None:
    """Remove a node with its display and storage nodes and its subject-hierarchy item."""
    if node is None or node.GetScene() is None:
        return
    extra = []
    if node.IsA("vtkMRMLDisplayableNode"):
        extra += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
    if node.IsA("vtkMRMLStorableNode"):
        extra += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
    sh = subject_hierarchy(scene)
    item = sh.GetItemByDataNode(node)
    scene.RemoveNode(node)
    for other in extra:
        if other is not None and other.GetScene() is not None:
            scene.RemoveNode(other)
    if item and sh.GetItemDataNode(item) is None and sh.GetItemName(item) != "":
        sh.RemoveItem(item, False, False)


def subject_hierarchy(scene):
    import slicer

    return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)


def place_in_folder(scene, folder_item: int, node) -> int:
    sh = subject_hierarchy(scene)
    item = sh.GetItemByDataNode(node)
    if item:
        sh.SetItemParent(item, folder_item)
    else:
        item = sh.CreateItem(folder_item, node)
    return item


def find_run_folder(scene, run_key: str) -> int:
    """Subject-hierarchy folder item of an earlier run with this key, or 0."""
    import vtk

    sh = subject_hierarchy(scene)
    ids = vtk.vtkIdList()
    sh.GetItemChildren(sh.GetSceneItemID(), ids, True)
    for n in range(ids.GetNumberOfIds()):
        item = ids.GetId(n)
        if sh.GetItemAttribute(item, RUN_KEY) == run_key:
            return item
    return 0


def folder_nodes(scene, folder_item: int) -> List[Any]:
    import vtk

    sh = subject_hierarchy(scene)
    ids = vtk.vtkIdList()
    sh.GetItemChildren(folder_item, ids, True)
    nodes = [sh.GetItemDataNode(ids.GetId(n)) for n in range(ids.GetNumberOfIds())]
    return [n for n in nodes if n is not None]


def remove_run_folder(scene, folder_item: int) -> int:
    """Remove a run's folder and every node in it; returns how many data nodes were removed."""
    sh = subject_hierarchy(scene)
    nodes = folder_nodes(scene, folder_item)
    for node in nodes:
        remove_node(scene, node)
    if sh.GetItemName(folder_item) != "" or sh.GetItemAttribute(folder_item, RUN_KEY):
        sh.RemoveItem(folder_item, False, True)
    return len(nodes)


# --------------------------------------------------------------------------- result nodes


def add_volume(scene, array: np.ndarray, reference_node, name: str, labelmap: bool = False):
    """A scalar (or label map) volume with ``reference_node``'s IJK-to-RAS and parent transform."""
    import slicer

    cls = slicer.vtkMRMLLabelMapVolumeNode if labelmap else slicer.vtkMRMLScalarVolumeNode
    node = cls()
    node.SetName(name)
    scene.AddNode(node)
    node.SetIJKToRASMatrix(vtk_matrix(ijk_to_ras(reference_node)))
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    node.CreateDefaultDisplayNodes()
    transform = reference_node.GetParentTransformNode()
    if transform is not None:
        node.SetAndObserveTransformNodeID(transform.GetID())
    return node


#: the segmentation converter's rules Slicer's Segmentations module registers when it starts
CONVERSION_RULES = ("vtkBinaryLabelmapToClosedSurfaceConversionRule", "vtkClosedSurfaceToBinaryLabelmapConversionRule",
                    "vtkClosedSurfaceToFractionalLabelmapConversionRule",
                    "vtkFractionalLabelmapToClosedSurfaceConversionRule")


def conversion_rules() -> int:
    """Register the segmentation converter's rules where none are (MRML without the application, as
    in the tests, until a Segmentations logic gets a scene); a segmentation node keeps the rules there
    were when it was made, and without them Show 3D builds no surface.  Returns the rules added (none
    in Slicer)."""
    import slicer

    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if factory.GetConverterRules():
        return 0
    rules = [getattr(slicer, name)() for name in CONVERSION_RULES if hasattr(slicer, name)]
    for rule in rules:
        factory.RegisterConverterRule(rule)
    return len(rules)


def add_segmentation(scene, mask: np.ndarray, reference_node, name: str, segment_name: str,
                     color=(0.95, 0.85, 0.2)):
    """A segmentation node holding ``mask`` (on ``reference_node``'s grid) as one segment."""
    import slicer

    conversion_rules()
    label = add_volume(scene, mask.astype(np.uint8), reference_node, name + " (import)", labelmap=True)
    try:
        seg = slicer.vtkMRMLSegmentationNode()
        seg.SetName(name)
        scene.AddNode(seg)
        seg.CreateDefaultDisplayNodes()
        seg.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
        image = slicer.vtkSlicerSegmentationsModuleLogic.CreateOrientedImageDataFromVolumeNode(label)
        # an empty result is still shown (as an empty segment) rather than silently dropped
        segment_id = seg.AddSegmentFromBinaryLabelmapRepresentation(image, segment_name, list(color))
        if not segment_id:
            raise RuntimeError(f"could not add the mask to segmentation '{name}'")
        segment = seg.GetSegmentation().GetSegment(segment_id)
        segment.SetName(segment_name)
        segment.SetColor(*color)
        transform = reference_node.GetParentTransformNode()
        if transform is not None:
            seg.SetAndObserveTransformNodeID(transform.GetID())
    finally:
        remove_node(scene, label)
    return seg


def segmentation_mask(segmentation_node, reference_node) -> np.ndarray:
    """All segments of ``segmentation_node`` as a uint8 array on ``reference_node``'s grid."""
    seg = segmentation_node.GetSegmentation()
    ids = [seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())]
    return segment_labelmap(segmentation_node, ids[0], reference_node) if ids else None


def style_saliency(scene, node, opacity_threshold: float = 0.2) -> None:
    """Inferno colours over the [0, 1] range; values below ``opacity_threshold`` are transparent."""
    from .colormaps import saliency_color_node

    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(saliency_color_node(scene).GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, 1.0)
    display.SetLowerThreshold(opacity_threshold)
    display.SetUpperThreshold(1.0e6)
    display.ApplyThresholdOn()
    display.SetInterpolate(True)


def style_label(scene, node) -> None:
    """Slicer's label colours (a small built-in table where the application's are missing)."""
    from .colormaps import label_color_node

    node.GetDisplayNode().SetAndObserveColorNodeID(label_color_node(scene).GetID())


def add_text(scene, name: str, text: str, encoding_utf8: bool = True):
    import slicer

    node = slicer.vtkMRMLTextNode()
    node.SetName(name)
    scene.AddNode(node)
    node.SetText(text)
    return node


def add_metrics_table(scene, name: str, rows: Sequence[Tuple[str, str, str, Any]]):
    """A table with columns method, slice, metric, value (value as a number where it is one)."""
    import slicer
    import vtk

    node = slicer.vtkMRMLTableNode()
    node.SetName(name)
    scene.AddNode(node)
    table = node.GetTable()
    cols = []
    for title in ("method", "slice", "metric"):
        arr = vtk.vtkStringArray()
        arr.SetName(title)
        cols.append(arr)
    values = vtk.vtkDoubleArray()
    values.SetName("value")
    text = vtk.vtkStringArray()
    text.SetName("text")
    for method, slice_, metric, value in rows:
        cols[0].InsertNextValue(str(method))
        cols[1].InsertNextValue(str(slice_))
        cols[2].InsertNextValue(str(metric))
        if isinstance(value, bool):
            values.InsertNextValue(1.0 if value else 0.0)
            text.InsertNextValue("yes" if value else "no")
        elif isinstance(value, (int, float, np.integer, np.floating)):
            values.InsertNextValue(float(value))
            text.InsertNextValue(f"{float(value):.4g}")
        else:
            values.InsertNextValue(float("nan"))
            text.InsertNextValue("" if value is None else str(value))
    for arr in cols + [values, text]:
        table.AddColumn(arr)
    node.SetUseColumnTitleAsColumnHeader(True)
    return node


def table_rows(table_node) -> List[Tuple[str, str, str, float, str]]:
    """Rows of a metrics table as (method, slice, metric, value, text)."""
    t = table_node.GetTable()
    cols = [t.GetColumnByName(n) for n in ("method", "slice", "metric", "value", "text")]
    return [(cols[0].GetValue(r), cols[1].GetValue(r), cols[2].GetValue(r), cols[3].GetValue(r), cols[4].GetValue(r))
            for r in range(t.GetNumberOfRows())]


def set_run_attributes(node, record: Dict[str, Any], run_key: str) -> None:
    """The run record as node attributes (saved with the scene, MRB included)."""
    node.SetAttribute(RUN_KEY, run_key)
    model = record.get("model") or {}
    flat = {
        "model": model.get("name"), "weightsSHA256": model.get("weights_sha256"),
        "seed": record.get("seed"), "created": record.get("created"), "input": record.get("input"),
        "seconds": record.get("seconds"),
        "prompt": json.dumps(record.get("prompt")) if record.get("prompt") is not None else None,
        "preprocessing": json.dumps(record.get("preprocessing")) if record.get("preprocessing") else None,
        "settings": json.dumps(record.get("settings")) if record.get("settings") else None,
        "evaluations": json.dumps(record.get("evaluations")) if record.get("evaluations") else None,
        "versions": json.dumps(record.get("versions")) if record.get("versions") else None,
    }
    for key, value in flat.items():
        if value is not None:
            node.SetAttribute(ATTRIBUTE_PREFIX + key, str(value))


def show_layers(scene, background=None, foreground=None, label=None, opacity: float = 0.5) -> None:
    """Set every slice view's layers (pure MRML, so it works with and without the GUI)."""
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    for n in range(composites.GetNumberOfItems()):
        c = composites.GetItemAsObject(n)
        if background is not None:
            c.SetBackgroundVolumeID(background.GetID())
        c.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
        c.SetForegroundOpacity(opacity if foreground is not None else 0.0)
        c.SetLabelVolumeID(label.GetID() if label is not None else None)
