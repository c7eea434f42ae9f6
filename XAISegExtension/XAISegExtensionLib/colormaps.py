"""A perceptual colour map for saliency volumes.

Inside 3D Slicer the application's own ``Inferno`` colour table is used.  slicer-core ships no
colour files, so the same map is built here from 33 anchors of matplotlib's ``inferno`` (CC0),
linearly interpolated to 256 entries.
"""
from __future__ import annotations

from typing import List, Tuple

INFERNO_ANCHORS = (
    "000004 040312 0b0724 150b37 210c4a 2f0a5b 3d0965 4a0c6b 57106e 64156e 71196e 7d1e6d 8a226a 972766 "
    "a32c61 b0315b bc3754 c73e4c d24644 db503b e45a31 eb6628 f1731d f68013 f98e09 fb9d07 fcac11 fbbc21 "
    "f9cb35 f5db4c f2ea69 f3f68a fcffa4"
).split()
NODE_NAME = "XAISeg Inferno"


def inferno(n: int = 256) -> List[Tuple[float, float, float]]:
    """``n`` RGB colours in [0, 1] from black through purple and orange to light yellow."""
    anchors = [tuple(int(h[i:i + 2], 16) / 255.0 for i in (0, 2, 4)) for h in INFERNO_ANCHORS]
    out = []
    for k in range(n):
        t = k / (n - 1) * (len(anchors) - 1)
        a = min(int(t), len(anchors) - 2)
        f = t - a
        out.append(tuple(anchors[a][c] * (1 - f) + anchors[a + 1][c] * f for c in range(3)))
    return out


def saliency_color_node(scene):
    """Slicer's Inferno table when the application provides it, else an equivalent node (created once)."""
    for node_id in ("vtkMRMLColorTableNodeFileInferno.txt", "vtkMRMLColorTableNodeInferno"):
        node = scene.GetNodeByID(node_id)
        if node is not None:
            return node
    existing = scene.GetFirstNodeByName("Inferno")
    if existing is not None and existing.IsA("vtkMRMLColorNode"):
        return existing
    return _table_node(scene, NODE_NAME, [(f"inferno{i}", (r, g, b, 1.0)) for i, (r, g, b) in enumerate(inferno(256))])


def _table_node(scene, name: str, entries) -> object:
    """The scene's colour table called ``name``, or a new one with ``entries`` of (name, rgba)."""
    existing = scene.GetFirstNodeByName(name)
    if existing is not None:
        return existing
    import slicer

    node = slicer.vtkMRMLColorTableNode()
    node.SetName(name)
    node.SetTypeToUser()
    node.SetNumberOfColors(len(entries))
    node.GetLookupTable().SetTableRange(0, len(entries) - 1)
    for i, (label, rgba) in enumerate(entries):
        node.SetColor(i, label, *rgba)
    node.SetAttribute("Category", "XAISeg")
    scene.AddNode(node)
    return node


LABEL_NODE_NAME = "XAISeg Labels"


def label_color_node(scene):
    """Slicer's ``Labels`` table when present, else a small one: 0 transparent, 1 green, 2 blue, 3 yellow."""
    node = scene.GetNodeByID("vtkMRMLColorTableNodeLabels")
    if node is not None:
        return node
    return _table_node(scene, LABEL_NODE_NAME, [("background", (0, 0, 0, 0)), ("mask", (0.3, 0.9, 0.45, 1)),
                                                ("roi", (0.25, 0.6, 1.0, 1)), ("other", (1.0, 0.85, 0.2, 1))])
