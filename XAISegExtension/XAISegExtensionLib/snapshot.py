"""PNG snapshots of a slice without a screen: vtkMRMLSliceLogic blends the background volume, the
saliency (foreground layer, its colour map and threshold) and a label map (outlined) exactly as
a slice view does.  :func:`render_view` renders what a view of the scene shows, and
:func:`compose_views` lays such renders out like Slicer's layouts (coloured view headers, a table
view, a slider) for the user guide's and the Extensions Index's screenshots (needs Pillow)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple

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


# --------------------------------------------------------------------------- application-style figures

HEADER = 24


def render_view(scene, path, slice_node, size: int = 384) -> Path:
    """Render what slice view ``slice_node`` shows (its composite node's layers, orientation,
    offset, centre, zoom and label outline) to a PNG, without a screen."""
    from . import views

    c = views.composite_node(scene, slice_node)

    def node(node_id):
        return scene.GetNodeByID(node_id) if node_id else None

    return render_slice(scene, path, node(c.GetBackgroundVolumeID()), foreground=node(c.GetForegroundVolumeID()),
                        label=node(c.GetLabelVolumeID()), ras_offset=slice_node.GetSliceOffset(),
                        orientation=slice_node.GetOrientation(), size=size, opacity=c.GetForegroundOpacity(),
                        outline=slice_node.GetUseLabelOutline(), field_of_view=slice_node.GetFieldOfView()[:2],
                        center=views.view_centre(slice_node))


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _hex(colour: str):
    return tuple(int(colour.lstrip("#")[i:i + 2], 16) for i in (0, 2, 4))


def compose_views(path, panels: Sequence[Tuple[Path, str, str]], table: Optional[Sequence[Sequence[str]]] = None,
                  table_title: str = "", columns: int = 0, footer: Optional[Tuple[int, int, str]] = None) -> Path:
    """Lay view renders out like Slicer's layout: each under a coloured header bar with its label
    (``panels``: (png, title, colour)), optionally a table view (rows of strings, first row the
    header) and a slider-like footer (position, count, text)."""
    from PIL import Image, ImageDraw

    images = [Image.open(p).convert("RGB") for p, _, _ in panels]
    w, h = images[0].size
    columns = columns or len(images)
    rows = (len(images) + columns - 1) // columns
    grid_w, grid_h = columns * w + (columns - 1) * 2, rows * (h + HEADER) + (rows - 1) * 2
    font, small = _font(15), _font(13)
    table_h = 0 if not table else HEADER + 20 * len(table) + 10
    footer_h = 0 if footer is None else 40
    canvas = Image.new("RGB", (grid_w, grid_h + table_h + footer_h), (40, 40, 44))
    draw = ImageDraw.Draw(canvas)
    for n, (image, (_, title, colour)) in enumerate(zip(images, panels)):
        x, y = (n % columns) * (w + 2), (n // columns) * (h + HEADER + 2)
        draw.rectangle([x, y, x + w - 1, y + HEADER - 1], fill=_hex(colour))
        draw.text((x + 6, y + 4), title, fill=(255, 255, 255), font=font)
        canvas.paste(image, (x, y + HEADER))
    y0 = grid_h
    if footer is not None:
        position, count, text = footer
        left, right = 12, grid_w - 12
        draw.line([left, y0 + 22, right, y0 + 22], fill=(150, 150, 150), width=3)
        knob = left + (right - left) * position / max(1, count - 1)
        draw.rectangle([knob - 5, y0 + 14, knob + 5, y0 + 30], fill=(230, 230, 230))
        draw.text((left, y0 + 1), text, fill=(230, 230, 230), font=small)
        y0 += footer_h
    if table:
        draw.rectangle([0, y0, grid_w - 1, y0 + HEADER - 1], fill=(90, 90, 100))
        draw.text((6, y0 + 4), table_title, fill=(255, 255, 255), font=font)
        widths = [max(len(str(r[c])) for r in table) for c in range(len(table[0]))]
        for r, row in enumerate(table):
            y = y0 + HEADER + 6 + 20 * r
            if r % 2 == 0:
                draw.rectangle([0, y - 2, grid_w - 1, y + 16], fill=(52, 52, 58) if r else (70, 70, 80))
            x = 8
            for c, value in enumerate(row):
                draw.text((x, y), str(value), fill=(235, 235, 235), font=small)
                x += widths[c] * 8 + 24
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
