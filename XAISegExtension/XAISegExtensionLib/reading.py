"""The logic's reading workflow (a mixin of :class:`XAISegLogic`): jump to explained slices,
next/previous explained slice, the slice index under the Red view for "explain this slice" and
"from here to here", the method shown in every view, the layer browser, the compare and reading
layouts, Show 3D, and a box's top or bottom set from the current slice.

Everything goes through MRML nodes (see :mod:`views`), so the panel is a thin binding and the
tests run it on slicer-core.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from . import mrml, segment_output, views
from .results import RunResult, sequences_logic


class ReadingMixin:
    """Needs ``self.scene`` (the MRML scene)."""

    # ------------------------------------------------------------------ where the views are

    def currentSliceIndex(self, volumeNode, view: str = "Red", orientation: str = "axial") -> int:
        """The slice index (along the volume's slicing axis for ``orientation``) under view ``view``."""
        node = views.slice_node(self.scene, view)
        if node is None:
            raise mrml.InputError(f"there is no slice view '{view}' in the scene; expected Red, Yellow or Green")
        return views.slice_index_at(volumeNode, views.view_centre(node), views.slicing_axis(volumeNode, orientation))

    def jumpToSlice(self, result: RunResult, k: int) -> List:
        """Centre every slice view on the mask on slice ``k``; returns the views moved."""
        if k not in result.centres:
            mask_kji = result.centres[min(result.centres, key=lambda e: abs(e - k))] if result.centres else None
            kji = list(mask_kji) if mask_kji is not None else [
                (n - 1) / 2.0 for n in mrml.volume_array_shape(result.input_volume)]
            kji[result.axis] = float(k)
        else:
            kji = list(result.centres[k])
        ras = views.kji_to_world(result.input_volume, kji)
        return views.jump_views(self.scene, ras)

    def jumpToFirstExplainedSlice(self, result: RunResult, fit: bool = True) -> Optional[int]:
        """After a run: every view goes to the first explained slice, centred on the mask."""
        if not result.explained:
            return None
        if fit:
            for node in views.slice_nodes(self.scene):
                views.fit_to_volume(node, result.input_volume)
        k = result.explained[0]
        self.jumpToSlice(result, k)
        return k

    def explainedRangeText(self, result: Optional[RunResult]) -> str:
        if result is None or not result.explained:
            return "-"
        ks = result.explained
        span = f"slice {ks[0]}" if len(ks) == 1 else f"slices {ks[0]}-{ks[-1]}"
        return f"{span} ({len(ks)} explained)"

    def stepExplainedSlice(self, result: RunResult, step: int = 1, view: str = "Red") -> Optional[int]:
        """Go to the next (``step`` > 0) or previous explained slice from the one under ``view``;
        returns it, or None (views unchanged) when there is none in that direction."""
        current = self.currentSliceIndex(result.input_volume, view)
        ahead = [k for k in result.explained if (k > current if step > 0 else k < current)]
        if not ahead:
            return None
        k = min(ahead) if step > 0 else max(ahead)
        self.jumpToSlice(result, k)
        return k

    def sliceTrust(self, result: RunResult, method: str, k: Optional[int] = None, view: str = "Red") -> dict:
        """How far method ``method``'s map on slice ``k`` (default: the slice under ``view``) can be
        trusted: ``{"slice", "method", "explained", "marks", "text"}`` from the run's metrics
        (:func:`xaiseg.explain.trust.slice_trust`: the prompt drawing most of the mask, no evidence,
        not beating the trivial maps, RISE's low split-half reliability, a map that survives a
        re-drawn model).  The panel shows the text under the views' controls."""
        from xaiseg.explain import title_of
        from xaiseg.explain.trust import slice_row, slice_trust

        if method not in result.saliency:
            raise mrml.InputError(f"method {method!r} has no map in this result; it holds {result.methods()}")
        if k is None:  # along the run's own slicing axis
            node = views.slice_node(self.scene, view)
            if node is None:
                raise mrml.InputError(f"there is no slice view '{view}' in the scene; expected Red, Yellow or Green")
            k = views.slice_index_at(result.input_volume, views.view_centre(node), result.axis)
        return slice_trust(slice_row(result.metrics, method, int(k)), method, int(k), title_of(method))

    # ------------------------------------------------------------------ what the views show

    def showMethod(self, result: RunResult, name: str, opacity: float = 0.5, outline: bool = True) -> object:
        """Show method ``name``'s saliency as the foreground of every slice view, its high-saliency
        label map outlined, over the input; returns the foreground node."""
        if name not in result.saliency:
            raise mrml.InputError(f"method {name!r} has no map in this result; it holds {result.methods()}")
        views.set_layers(self.scene, views.slice_nodes(self.scene), result.input_volume, result.saliency[name],
                         result.labels.get(name), opacity, outline)
        return result.saliency[name]

    def showLayer(self, result: RunResult, layer: Union[int, str], opacity: float = 0.5) -> str:
        """Select one per-layer map in the layer browser and show it in every view; returns its name."""
        names = result.layer_names()
        if not names:
            raise mrml.InputError("this result has no per-layer maps; run the 'layers' method")
        index = names.index(layer) if isinstance(layer, str) else int(layer)
        if not 0 <= index < len(names):
            raise mrml.InputError(f"layer {layer!r} is out of range; expected 0..{len(names) - 1} or one of {names}")
        result.layer_browser.SetSelectedItemNumber(index)
        sequences_logic(self.scene).UpdateProxyNodesFromSequences(result.layer_browser)
        views.set_layers(self.scene, views.slice_nodes(self.scene), result.input_volume, result.layer_proxy,
                         None, opacity)
        return names[index]

    def showCompareLayout(self, result: RunResult, methods: Optional[Sequence[str]] = None,
                          opacity: float = 0.5, orientation: str = "Axial") -> List:
        """One linked view per method over the same background, the metrics table underneath;
        returns the views in method order."""
        methods = list(methods or result.methods())
        if not methods:
            raise mrml.InputError("this result has no saliency maps to compare; run at least one method")
        unknown = [m for m in methods if m not in result.saliency]
        if unknown:
            raise mrml.InputError(f"methods {unknown} have no map in this result; it holds {result.methods()}")
        current = self._currentOrFirst(result)
        views.register_layout(self.scene, views.COMPARE_LAYOUT_ID, views.compare_layout_xml(len(methods), orientation))
        nodes = [views.ensure_slice_view(self.scene, f"{views.COMPARE_PREFIX}{i + 1}", orientation)
                 for i in range(len(methods))]
        for node, method in zip(nodes, methods):
            views.set_layers(self.scene, [node], result.input_volume, result.saliency[method],
                             result.labels.get(method), opacity)
            node.SetName(f"{views.COMPARE_PREFIX}{methods.index(method) + 1}")
            node.SetAttribute("XAISeg.method", method)
            views.fit_to_volume(node, result.input_volume)
        views.link_views(self.scene, nodes)
        views.ensure_table_view(self.scene)
        views.show_table(self.scene, result.table)
        if current is not None:
            self.jumpToSlice(result, current)
        return nodes

    def showReadingLayout(self, result: RunResult) -> object:
        """Red, Yellow and Green views with the metrics table beside them; returns the table view."""
        views.register_layout(self.scene, views.READING_LAYOUT_ID, views.reading_layout_xml())
        for name, orientation in (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal")):
            views.ensure_slice_view(self.scene, name, orientation)
        views.ensure_table_view(self.scene)
        return views.show_table(self.scene, result.table)

    def setShow3D(self, result: RunResult, visible: bool = True) -> int:
        """Show the segmentation as a closed surface in 3D views (or hide it)."""
        return segment_output.show_3d(result.segmentation, visible)

    def _currentOrFirst(self, result: RunResult) -> Optional[int]:
        try:
            k = self.currentSliceIndex(result.input_volume)
        except mrml.InputError:
            k = None
        return k if k in result.explained else (result.explained[0] if result.explained else None)

    # ------------------------------------------------------------------ the box from slices

    def setRoiFaceAtSlice(self, roiNode, volumeNode, which: str = "top", k: Optional[int] = None,
                          orientation: str = "axial") -> Tuple[int, int]:
        """Move the box's top (superior/anterior/left-most side) or bottom face onto slice ``k``
        (default: the slice under the Red view), the other face staying; returns the box's slice
        range (first, last) along the slicing axis."""
        if which not in ("top", "bottom"):
            raise mrml.InputError(f"face {which!r} is unknown; expected 'top' or 'bottom'")
        if roiNode is None or roiNode.GetNumberOfControlPoints() < 1:
            raise mrml.InputError("no box is placed; place a markups ROI first")
        axis = views.slicing_axis(volumeNode, orientation)
        k = self.currentSliceIndex(volumeNode, orientation=orientation) if k is None else int(k)
        m = views.world_from_ijk(volumeNode)
        ijk_axis = 2 - axis
        direction = m[:3, ijk_axis] / np.linalg.norm(m[:3, ijk_axis])
        up = direction * np.sign(direction[int(np.argmax(np.abs(direction)))])  # towards S, A or L
        origin = np.zeros(4)
        origin[ijk_axis], origin[3] = k, 1.0
        plane = float(up @ (m @ origin)[:3])
        to_world = np.array([[roiNode.GetObjectToWorldMatrix().GetElement(r, c) for c in range(4)] for r in range(4)])
        axes, centre = to_world[:3, :3], to_world[:3, 3]
        size = np.array(roiNode.GetSize(), float)
        b = int(np.argmax(np.abs(axes.T @ up)))
        along = float(axes[:, b] @ up)
        lo, hi = float(centre @ up) - size[b] / 2 * abs(along), float(centre @ up) + size[b] / 2 * abs(along)
        lo, hi = (lo, plane) if which == "top" else (plane, hi)
        lo, hi = min(lo, hi), max(lo, hi)
        shift = (lo + hi) / 2 - float(centre @ up)
        new_centre = centre + axes[:, b] * np.sign(along) * shift
        size[b] = max(hi - lo, 1e-3) / abs(along)
        roiNode.SetCenterWorld(*[float(v) for v in new_centre])
        roiNode.SetSize(*[float(v) for v in size])
        prompt, _notes = mrml.box_prompt_from_roi(roiNode, volumeNode)
        return int(prompt["lo_kji"][axis]), int(prompt["hi_kji"][axis])
