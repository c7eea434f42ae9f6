"""Slice views for reading a result: where the views are, jumping to explained slices centred on
the mask, which method is shown, and the "compare methods" and "metrics beside the views" layouts.

Pure MRML (slice, slice composite, layout and table view nodes), so it runs in 3D Slicer and on
slicer-core.  Positions are physical: a slice index along the volume's slicing axis becomes a
plane through that slice's voxel centres in world RAS, and back.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import mrml

COMPARE_LAYOUT_ID = 7301
READING_LAYOUT_ID = 7302
COMPARE_PREFIX = "XAISegCompare"
TABLE_TAG = "XAISegTable"
SNAPSHOT_PREFIX = "XAISegSnapshot"
VIEW_COLOURS = ("#F34A33", "#EDD54C", "#6EB04B", "#5B8DEE", "#B163D6", "#E58A3A", "#4FC1C0", "#C8C8C8")


# --------------------------------------------------------------------------- geometry


def world_from_ijk(volume_node) -> np.ndarray:
    """4x4 matrix from the volume's voxel indices (i, j, k) to world RAS (parent transform applied)."""
    return np.linalg.inv(mrml.world_to_local(volume_node)) @ mrml.ijk_to_ras(volume_node)


def kji_to_world(volume_node, kji) -> np.ndarray:
    k, j, i = (float(v) for v in kji)
    return (world_from_ijk(volume_node) @ np.array([i, j, k, 1.0]))[:3]


def slicing_axis(volume_node, orientation: str = "axial") -> int:
    """The array axis (0 = k, 1 = j, 2 = i) closest to the orientation's normal, as the engine picks it."""
    from xaiseg.volume import slicing_axis as engine_axis

    return int(engine_axis(mrml.geometry_of(volume_node), orientation))


def slice_index_at(volume_node, ras, axis: int) -> int:
    """The slice index along ``axis`` whose plane is nearest to world point ``ras`` (clipped to the volume)."""
    kji = mrml.world_to_kji(volume_node, np.asarray(ras, float))[0]
    n = mrml.volume_array_shape(volume_node)[axis]
    return int(min(max(int(np.floor(kji[axis] + 0.5)), 0), n - 1))


def mask_centre(mask: np.ndarray, axis: int, k: int) -> Tuple[float, float, float]:
    """(k, j, i) of the mask's centroid on slice ``k`` (the whole mask's, moved onto ``k``, when that
    slice is empty; the slice's centre when the mask is empty)."""
    sl = [slice(None)] * 3
    sl[axis] = k
    plane = np.asarray(mask[tuple(sl)])
    pts = np.argwhere(plane > 0)
    if len(pts):
        centre2 = pts.mean(axis=0)
    else:
        all_pts = np.argwhere(mask > 0)
        rest = [a for a in range(3) if a != axis]
        centre2 = all_pts.mean(axis=0)[rest] if len(all_pts) else (np.array(plane.shape, float) - 1) / 2.0
    out = list(centre2)
    out.insert(axis, float(k))
    return tuple(float(v) for v in out)


# --------------------------------------------------------------------------- views


def slice_nodes(scene, include_snapshots: bool = False) -> List:
    nodes = scene.GetNodesByClass("vtkMRMLSliceNode")
    out = [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]
    return [n for n in out if include_snapshots or not str(n.GetLayoutName()).startswith(SNAPSHOT_PREFIX)]


def slice_node(scene, name: str = "Red"):
    for node in slice_nodes(scene):
        if node.GetLayoutName() == name or node.GetName() == name:
            return node
    return None


def composite_node(scene, slice_node_):
    """The slice composite node of a view (created when the view has none yet, as on slicer-core)."""
    import slicer

    layout = slice_node_.GetLayoutName()
    nodes = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    for i in range(nodes.GetNumberOfItems()):
        c = nodes.GetItemAsObject(i)
        if c.GetLayoutName() == layout:
            return c
    c = slicer.vtkMRMLSliceCompositeNode()
    c.SetLayoutName(layout)
    c.SetSingletonTag(layout)
    return scene.AddNode(c)


def ensure_orientation_presets(slice_node_) -> None:
    """Axial/Sagittal/Coronal presets where the application did not add them (slicer-core)."""
    import slicer
    import vtk

    for name in ("Axial", "Sagittal", "Coronal"):
        if not slice_node_.HasSliceOrientationPreset(name):
            matrix = vtk.vtkMatrix3x3()
            getattr(slicer.vtkMRMLSliceNode, f"Get{name}SliceToRASMatrix")(matrix)
            slice_node_.AddSliceOrientationPreset(name, matrix)


def slice_offset_of(slice_node_, ras) -> float:
    """Offset (mm along the view's normal) of the plane through world point ``ras``."""
    m = slice_node_.GetSliceToRAS()
    normal = np.array([m.GetElement(r, 2) for r in range(3)])
    return float(normal @ np.asarray(ras, float))


def view_centre(slice_node_) -> np.ndarray:
    m = slice_node_.GetSliceToRAS()
    return np.array([m.GetElement(r, 3) for r in range(3)])


def fit_to_volume(slice_node_, volume_node) -> None:
    """Zoom a view so the volume's in-plane extent fits, like Slicer's fit-to-window."""
    dims = volume_node.GetImageData().GetDimensions()
    m = world_from_ijk(volume_node)
    corners = np.array([[i, j, k, 1.0] for i in (-0.5, dims[0] - 0.5) for j in (-0.5, dims[1] - 0.5)
                        for k in (-0.5, dims[2] - 0.5)])
    world = (m @ corners.T).T[:, :3]
    s = slice_node_.GetSliceToRAS()
    axes = np.array([[s.GetElement(r, c) for r in range(3)] for c in (0, 1)])
    extent = np.ptp(world @ axes.T, axis=0)
    w, h, _ = slice_node_.GetDimensions()
    w, h = max(int(w), 1), max(int(h), 1)
    fov_x = max(extent[0], extent[1] * w / h)
    depth = slice_node_.GetFieldOfView()[2]
    slice_node_.SetFieldOfView(float(fov_x), float(fov_x * h / w), depth)


def jump_views(scene, ras, names: Optional[Sequence[str]] = None, fit_volume=None) -> List:
    """Centre every slice view (or those named) on world point ``ras``; returns the views moved."""
    moved = []
    for node in slice_nodes(scene):
        if names is not None and node.GetLayoutName() not in names:
            continue
        if fit_volume is not None:
            fit_to_volume(node, fit_volume)
        node.JumpSliceByCentering(*[float(v) for v in ras])
        node.UpdateMatrices()
        moved.append(node)
    return moved


def set_layers(scene, nodes: Sequence, background=None, foreground=None, label=None, opacity: float = 0.5,
               outline: bool = True) -> None:
    """Background, foreground (saliency) and label (outlined) layers of the given views."""
    for node in nodes:
        c = composite_node(scene, node)
        if background is not None:
            c.SetBackgroundVolumeID(background.GetID())
        c.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
        c.SetForegroundOpacity(opacity if foreground is not None else 0.0)
        c.SetLabelVolumeID(label.GetID() if label is not None else None)
        c.SetLabelOpacity(1.0)
        node.SetUseLabelOutline(bool(outline))


# --------------------------------------------------------------------------- layouts


def layout_node(scene):
    """The application's layout node (created on slicer-core, where there is none)."""
    import slicer

    node = scene.GetSingletonNode("vtkMRMLLayoutNode", "vtkMRMLLayoutNode") if hasattr(scene, "GetSingletonNode") \
        else None
    if node is None:
        nodes = scene.GetNodesByClass("vtkMRMLLayoutNode")
        node = nodes.GetItemAsObject(0) if nodes.GetNumberOfItems() else None
    if node is None:
        node = scene.AddNode(slicer.vtkMRMLLayoutNode())
    return node


def _slice_view_xml(tag: str, label: str, colour: str, orientation: str = "Axial") -> str:
    return (f'<view class="vtkMRMLSliceNode" singletontag="{tag}">'
            f'<property name="orientation" action="default">{orientation}</property>'
            f'<property name="viewlabel" action="default">{label}</property>'
            f'<property name="viewcolor" action="default">{colour}</property></view>')


def _table_view_xml() -> str:
    return (f'<view class="vtkMRMLTableViewNode" singletontag="{TABLE_TAG}">'
            '<property name="viewlabel" action="default">T</property></view>')


def compare_layout_xml(n: int, orientation: str = "Axial", table: bool = True) -> str:
    """``n`` linked slice views in a row (one per method), the metrics table underneath."""
    views = "".join(f"<item>{_slice_view_xml(f'{COMPARE_PREFIX}{i + 1}', str(i + 1), VIEW_COLOURS[i % 8], orientation)}"
                    "</item>" for i in range(n))
    row = f'<layout type="horizontal">{views}</layout>'
    if not table:
        return row
    return (f'<layout type="vertical" split="true"><item splitSize="700">{row}</item>'
            f'<item splitSize="300">{_table_view_xml()}</item></layout>')


def reading_layout_xml() -> str:
    """Red, Yellow and Green views with the metrics table beside them."""
    views = "".join(f"<item>{_slice_view_xml(name, label, colour, orient)}</item>" for name, label, colour, orient in (
        ("Red", "R", "#F34A33", "Axial"), ("Yellow", "Y", "#EDD54C", "Sagittal"), ("Green", "G", "#6EB04B", "Coronal")))
    return (f'<layout type="horizontal" split="true"><item splitSize="650"><layout type="vertical">{views}</layout>'
            f'</item><item splitSize="350">{_table_view_xml()}</item></layout>')


def register_layout(scene, layout_id: int, xml: str, show: bool = True):
    """Add (or update) a layout description and switch to it; returns the layout node."""
    node = layout_node(scene)
    if node.IsLayoutDescription(layout_id):
        node.SetLayoutDescription(layout_id, xml)
    else:
        node.AddLayoutDescription(layout_id, xml)
    if show:
        node.SetViewArrangement(layout_id)
    return node


def ensure_slice_view(scene, tag: str, orientation: str = "Axial"):
    """The slice node of view ``tag`` (created with its composite node where no layout manager
    made it, as on slicer-core; inside Slicer the layout manager finds it by its singleton tag)."""
    import slicer

    node = slice_node(scene, tag)
    if node is None:
        node = _add_view_node(scene, slicer.vtkMRMLSliceNode(), tag)
        node.SetDimensions(400, 400, 1)
    ensure_orientation_presets(node)
    node.SetOrientation(orientation)
    composite_node(scene, node)
    return node


def ensure_table_view(scene):
    import slicer

    view = table_view(scene)
    return view if view is not None else _add_view_node(scene, slicer.vtkMRMLTableViewNode(), TABLE_TAG)


def _add_view_node(scene, node, tag: str):
    """``node`` named, laid out and made a singleton as ``tag``, added to the scene."""
    node.SetName(tag)
    node.SetLayoutName(tag)
    node.SetSingletonTag(tag)
    return scene.AddNode(node)


def table_view(scene):
    nodes = scene.GetNodesByClass("vtkMRMLTableViewNode")
    for i in range(nodes.GetNumberOfItems()):
        node = nodes.GetItemAsObject(i)
        if node.GetSingletonTag() == TABLE_TAG:
            return node
    return None


def show_table(scene, table_node) -> Optional[object]:
    """Show ``table_node`` in the layout's table view; returns that view node (None without one)."""
    view = table_view(scene)
    if view is not None and table_node is not None:
        view.SetTableNodeID(table_node.GetID())
    return view


def link_views(scene, nodes: Sequence, linked: bool = True) -> List:
    """Link the composite nodes of these views (scrolling one moves the others)."""
    out = []
    for node in nodes:
        c = composite_node(scene, node)
        c.SetLinkedControl(bool(linked))
        c.SetHotLinkedControl(False)
        out.append(c)
    return out


def compare_views(scene, n: int) -> List:
    """The first ``n`` compare views, in order."""
    by_name: Dict[str, object] = {node.GetLayoutName(): node for node in slice_nodes(scene)}
    return [by_name[f"{COMPARE_PREFIX}{i + 1}"] for i in range(n) if f"{COMPARE_PREFIX}{i + 1}" in by_name]
