"""PNG snapshots of a slice without a screen: vtkMRMLSliceLogic blends the background volume, the
saliency (foreground layer, its colour map and threshold) and a label map (outlined) exactly as
a slice view does.  Used for the user guide's figures and for reports."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np


def render_slice(scene, path, background, foreground=None, label=None, ras_offset: Optional[float] = None,
                 orientation: str = "Axial", size: int = 512, opacity: float = 0.5, outline: bool = True,
                 field_of_view: Optional[Sequence[float]] = None, center: Optional[Sequence[float]] = None,
                 layout_name: str = "XAISegSnapshot") -> Path:
    """Write one slice view to ``path`` (PNG) and return it.

    ras_offset: the slice position in mm along the view's normal (default: the volume's centre);
    field_of_view/center: zoom to a region (mm) instead of fitting the whole background.
    """
    import slicer
    import vtk

    logic = slicer.vtkMRMLSliceLogic()
    logic.SetMRMLScene(scene)
    slice_node = logic.AddSliceNode(layout_name)
    composite = logic.GetSliceCompositeNode()
    try:
        if not slice_node.HasSliceOrientationPreset(orientation):  # slicer-core has no application presets
            for name in ("Axial", "Sagittal", "Coronal"):
                matrix = vtk.vtkMatrix3x3()
                getattr(slicer.vtkMRMLSliceNode, f"Get{name}SliceToRASMatrix")(matrix)
                slice_node.AddSliceOrientationPreset(name, matrix)
        slice_node.SetOrientation(orientation)
        slice_node.SetDimensions(size, size, 1)
        composite.SetBackgroundVolumeID(background.GetID())
        composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
        composite.SetForegroundOpacity(opacity if foreground is not None else 0.0)
        composite.SetLabelVolumeID(label.GetID() if label is not None else None)
        composite.SetLabelOpacity(1.0)
        slice_node.SetUseLabelOutline(bool(outline))
        logic.FitSliceToBackground(size, size)
        if field_of_view is not None:
            slice_node.SetFieldOfView(float(field_of_view[0]), float(field_of_view[1]), slice_node.GetFieldOfView()[2])
        if center is not None:
            slice_node.JumpSliceByCentering(*[float(c) for c in center])
        if ras_offset is not None:
            slice_node.SetSliceOffset(float(ras_offset))
        slice_node.UpdateMatrices()
        connection = logic.GetImageDataConnection()
        connection.GetProducer().Update()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = vtk.vtkPNGWriter()
        writer.SetFileName(str(path))
        writer.SetInputConnection(connection)
        writer.Write()
    finally:
        for node in (composite, slice_node):
            if node is not None and node.GetScene() is not None:
                scene.RemoveNode(node)
        logic.SetMRMLScene(None)
    return path


def png_pixels(path) -> np.ndarray:
    """RGB(A) pixels of a PNG (rows from the top), read with VTK."""
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    reader = vtk.vtkPNGReader()
    reader.SetFileName(str(path))
    reader.Update()
    image = reader.GetOutput()
    w, h, _ = image.GetDimensions()
    comps = image.GetPointData().GetScalars().GetNumberOfComponents()
    return vtk_to_numpy(image.GetPointData().GetScalars()).reshape(h, w, comps)[::-1]
