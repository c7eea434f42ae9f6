"""Application-style screenshots rendered without a screen from the shared MNI152 run: the compare
layout (one linked view per method, the metrics table underneath), the layer browser, and the
three views with the metrics beside them.  Each view is rendered from the view node the logic
configured (vtkMRMLSliceLogic, as Slicer draws it).  With XAISEG_UPDATE_DOCS=1 the PNGs replace
docs/images/slicer_*.png (the user guide's figures and the Extensions Index screenshots)."""
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from XAISegExtensionLib import mrml, views
from XAISegExtensionLib.snapshot import HEADER, compose_views, png_pixels, render_slice, render_view

DOCS = Path(__file__).resolve().parents[2] / "docs" / "images"
METRICS = ("dice_drop", "deletion_auc", "insertion_auc", "roi_ratio")


@pytest.fixture
def run(mni_run):
    return mni_run


def publish(*paths):
    if os.environ.get("XAISEG_UPDATE_DOCS") == "1":
        for p in paths:
            shutil.copyfile(p, DOCS / p.name)


def zoom(nodes, run, k, fov=110.0):
    """Zoom views on the caudate region (the docs' framing) and centre them on the mask on slice k."""
    result = run["result"]
    for node in nodes:
        node.SetFieldOfView(fov, fov, node.GetFieldOfView()[2])
    ras = views.kji_to_world(run["volume"], result.centres[k])
    views.jump_views(run["scene"], ras, names=[n.GetLayoutName() for n in nodes])


def metric_table(result):
    rows = {(r[0], r[1], r[2]): r[4] for r in mrml.table_rows(result.table)}
    k = str(result.explained[0])
    body = [[m, k] + [rows.get((m, k, name), "") for name in METRICS] for m in result.methods()]
    return [["method", "slice", *METRICS]] + body


def test_compare_layout_screenshot(run, tmp_path):
    scene, logic, result, centre = run["scene"], run["logic"], run["result"], run["centre"]
    nodes = logic.showCompareLayout(result)
    zoom(nodes, run, centre)
    panels = []
    for i, (node, method) in enumerate(zip(nodes, result.methods())):
        png = render_view(scene, tmp_path / f"view{i}.png", node)
        panels.append((png, f"{i + 1}: {method}  (slice {centre})", views.VIEW_COLOURS[i]))
    out = compose_views(tmp_path / "slicer_compare_layout.png", panels, metric_table(result),
                        "MNI152 left caudate metrics")
    a, b = (png_pixels(p)[..., :3].astype(int) for p, _, _ in panels)
    assert a.shape == b.shape == (384, 384, 3)
    assert (np.abs(a - b).sum(axis=-1) > 30).mean() > 0.005, "both views show the same map"
    image = png_pixels(out)[..., :3]
    assert image.shape[1] == 2 * 384 + 2 and image.shape[0] > 384 + HEADER
    header = tuple(int(views.VIEW_COLOURS[0][i:i + 2], 16) for i in (1, 3, 5))
    assert tuple(image[2, 380]) == header, "the first view's header bar has the view's colour"
    publish(out)


def test_layer_browser_screenshot(run, tmp_path):
    scene, logic, result, centre = run["scene"], run["logic"], run["result"], run["centre"]
    red = views.slice_node(scene, "Red")
    names = result.layer_names()
    picks = [0, 3, 7, 11, 15, len(names) - 1]
    panels, renders = [], []
    for n, index in enumerate(picks):
        name = logic.showLayer(result, index)
        zoom([red], run, centre)
        png = render_view(scene, tmp_path / f"layer{index}.png", red)
        renders.append(png_pixels(png)[..., :3].astype(int))
        panels.append((png, f"layer {index + 1}/{len(names)}: {name}", "#F34A33"))
    out = compose_views(tmp_path / "slicer_layer_browser.png", panels, columns=3,
                        footer=(picks[2], len(names), f"Encoder layer (one sequence, {len(names)} maps): "
                                                      f"{names[0]} ... {names[-1]}"))
    # shallow and deep layers light up different places
    assert (np.abs(renders[0] - renders[-1]).sum(axis=-1) > 30).mean() > 0.005
    assert png_pixels(out).shape[1] == 3 * 384 + 4
    logic.showMethod(result, "occlusion")
    publish(out)


def test_reading_layout_screenshot(run, tmp_path):
    scene, logic, result, centre = run["scene"], run["logic"], run["result"], run["centre"]
    logic.showReadingLayout(result)
    logic.showMethod(result, "occlusion")
    nodes = [views.slice_node(scene, n) for n in ("Red", "Yellow", "Green")]
    zoom(nodes, run, centre, fov=140.0)
    panels = [(render_view(scene, tmp_path / f"{n.GetLayoutName()}.png", n), f"{n.GetLayoutName()}: occlusion",
               colour) for n, colour in zip(nodes, ("#F34A33", "#EDD54C", "#6EB04B"))]
    out = compose_views(tmp_path / "slicer_reading_views.png", panels, metric_table(result),
                        "metrics (table view beside the slice views)")
    for node, (png, _, _) in zip(nodes, panels):  # each view shows more than the plain image
        c = views.composite_node(scene, node)
        plain = render_slice(scene, tmp_path / "plain.png", run["volume"], ras_offset=node.GetSliceOffset(),
                             orientation=node.GetOrientation(), size=384, field_of_view=node.GetFieldOfView()[:2],
                             center=views.view_centre(node))
        changed = np.abs(png_pixels(png)[..., :3].astype(int) - png_pixels(plain)[..., :3].astype(int)).sum(-1) > 30
        assert c.GetForegroundVolumeID() == result.saliency["occlusion"].GetID()
        assert changed.mean() > 0.001, f"{png.name}: the overlay does not show"
    assert png_pixels(out).shape[1] == 3 * 384 + 4
    publish(out)
